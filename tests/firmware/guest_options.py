"""What a firmware guest needs on the command line, the same for emu and for QEMU: the devices
it drives. firmware/capture-expected.sh asks this file too (`python3 guest_options.py GUEST`
prints the options), so there is one list.

virtio64 drives an entropy device, a memory balloon and a network card. The network card's
backend is a `-netdev socket` whose UDP socket sends to its own address, so the frame the guest
sends comes back to the guest's receive queue. That port must be free: every lookup picks a new
one (DEVICES[guest] and DEVICES.get(guest, []) are computed, not stored), and nothing the guest
prints depends on it.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator, Mapping

MAC = "52:54:00:12:34:56"  # the guest prints it: fixed


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nobody holds now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def devices(guest: str) -> list[str]:
    """The device options of `guest` (none for most), with a fresh UDP port where one is needed."""
    if guest != "virtio64":
        return []
    port = free_udp_port()
    return [
        "-device", "virtio-rng-pci",
        "-device", "virtio-balloon-pci",
        "-netdev", f"socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{port}",
        "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
    ]  # fmt: skip


class _Devices(Mapping[str, list[str]]):
    """DEVICES[guest]: devices(guest), for the guests that have any."""

    GUESTS = ("virtio64",)

    def __getitem__(self, guest: str) -> list[str]:
        if guest not in self.GUESTS:
            raise KeyError(guest)
        return devices(guest)

    def __iter__(self) -> Iterator[str]:
        return iter(self.GUESTS)

    def __len__(self) -> int:
        return len(self.GUESTS)


DEVICES: Mapping[str, list[str]] = _Devices()

if __name__ == "__main__":  # for firmware/capture-expected.sh: the options, one line
    print(" ".join(devices(sys.argv[1])))
