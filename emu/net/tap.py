"""The tap backend, QEMU's `-netdev tap,ifname=...`: the guest's NIC as a host interface.

A tap device (Documentation/networking/tuntap.rst) is a virtual Ethernet interface whose other
end is a file descriptor: a frame the host's stack sends out of `tap0` is read from the fd,
and a frame written to the fd arrives on `tap0` as if from a wire. Attached to a Linux bridge
(`ip link set tap0 master br0`), it puts the guest on that bridge's segment.

  open("/dev/net/tun") + TUNSETIFF(ifr_name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)

IFF_NO_PI drops the 4-byte packet-information prefix; IFF_VNET_HDR puts a struct
virtio_net_hdr (10 bytes) before every frame in both directions, the same header a virtio-net
driver writes, which is why a virtio NIC and a tap fit together: checksum and segmentation
offload requests would pass straight through (emu offers none, so the header stays zero).
Creating a tap needs CAP_NET_ADMIN; emu runs no ifup scripts (QEMU's script=), so the
interface is configured (up, on a bridge) by whoever runs emu.
"""

from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

from ..errors import EmuError
from .backend import VNET_HDR_SIZE, NetBackend

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
IFNAMSIZ = 16
MAX_FRAME = VNET_HDR_SIZE + 65536


@dataclass
class TapBackend(NetBackend):
    fd: int = -1
    ifname: str = ""

    @classmethod
    def open(cls, netdev_id: str, options: dict[str, str], spec: str) -> TapBackend:
        ifname = options.pop("ifname", "")
        for script in ("script", "downscript"):
            if options.pop(script, "no") != "no":
                raise EmuError(f"-netdev {spec}: emu runs no {script}s: configure the tap yourself, with {script}=no")
        vnet_hdr = options.pop("vnet_hdr", "on")
        if vnet_hdr not in ("on", "off"):
            raise EmuError(f"-netdev {spec}: vnet_hdr=on or vnet_hdr=off")
        if options:
            raise EmuError(f"-netdev {spec}: emu's tap backend does not know {', '.join(sorted(options))}")
        if len(ifname.encode()) >= IFNAMSIZ:
            raise EmuError(f"-netdev {spec}: interface name {ifname!r} is longer than {IFNAMSIZ - 1} bytes")
        flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr == "on" else 0)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise EmuError(f"-netdev {spec}: /dev/net/tun: {error.strerror}") from None
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), flags))
        except OSError as error:
            os.close(fd)
            hint = " (creating a tap needs CAP_NET_ADMIN)" if error.errno == 1 else ""
            raise EmuError(f"-netdev {spec}: TUNSETIFF {ifname or '(any)'}: {error.strerror}{hint}") from None
        name = ifr[:IFNAMSIZ].split(b"\0", 1)[0].decode()
        return cls(netdev_id, vnet_header=vnet_hdr == "on", fd=fd, ifname=name)

    def fileno(self) -> int:
        return self.fd

    def send(self, frame: bytes) -> None:
        try:
            os.write(self.fd, frame)
            self.frames_sent += 1
        except OSError:  # the interface is down (EIO) or its queue is full: a lost frame, as on a wire
            pass

    def receive(self) -> bytes | None:
        try:
            frame = os.read(self.fd, MAX_FRAME)
        except BlockingIOError:
            return None
        except OSError:
            return None
        self.frames_received += 1
        return frame

    def close(self) -> None:
        super().close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
