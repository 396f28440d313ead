"""What a NIC model needs of a host network backend, and QEMU's `-netdev` spelling of one.

A backend is a file descriptor the device's thread watches (emu.devices.virtio.iothread) and
three calls: `send(frame)`, `receive()` (one frame, or None when none is ready), and
`pause`/`resume` of the watching, so that a guest with no receive buffers posted leaves frames
queued in the host kernel instead of emu reading and dropping them (QEMU's
`qemu_can_receive_packet`). A tap opened with IFF_VNET_HDR carries a struct virtio_net_hdr
(10 bytes, include/uapi/linux/virtio_net.h) before every frame: `vnet_header` says so, and
the NIC passes the guest's header through instead of dropping it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import EmuError

VNET_HDR_SIZE = 10  # struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset


class Watcher(Protocol):
    """The device thread, as a backend sees it."""

    def watch(self, fd: int, callback: Callable[[], None]) -> None: ...
    def unwatch(self, fd: int) -> None: ...


@dataclass
class NetBackend:
    """The shared part: attach to a device thread, pause and resume its watching of `fd`."""

    id: str
    vnet_header: bool = False
    frames_sent: int = 0
    frames_received: int = 0
    _watcher: Watcher | None = field(default=None, repr=False)
    _readable: Callable[[], None] | None = field(default=None, repr=False)
    _watching: int = -1  # the fd being watched, or -1

    def fileno(self) -> int:
        raise NotImplementedError

    def attach(self, watcher: Watcher, readable: Callable[[], None]) -> None:
        """From now on call `readable()` (on the device thread) when frames may be waiting."""
        self._watcher, self._readable = watcher, readable
        self.resume()

    def resume(self) -> None:
        fd = self.fileno()
        if self._watcher is None or self._readable is None or fd < 0 or self._watching == fd:
            return
        self.pause()
        self._watcher.watch(fd, self._readable)
        self._watching = fd

    def pause(self) -> None:
        if self._watcher is not None and self._watching >= 0:
            self._watcher.unwatch(self._watching)
        self._watching = -1

    def send(self, frame: bytes) -> None:
        raise NotImplementedError

    def receive(self) -> bytes | None:
        raise NotImplementedError

    def close(self) -> None:
        self.pause()


def _options(spec: str) -> tuple[str, dict[str, str]]:
    kind, *rest = spec.split(",")
    options: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep:
            raise EmuError(f"-netdev {spec}: {item!r} is not KEY=VALUE")
        options[key] = value
    return kind, options


def parse_netdev(spec: str) -> NetBackend:
    """`-netdev tap,id=n0,ifname=tap0[,script=no,downscript=no][,vnet_hdr=on|off]` or
    `-netdev socket,id=n0,udp=HOST:PORT,localaddr=HOST:PORT | listen=[HOST]:PORT |
    connect=HOST:PORT`: the backend, opened (a clear EmuError if it cannot be)."""
    kind, options = _options(spec)
    netdev_id = options.pop("id", "")
    if not netdev_id:
        raise EmuError(f"-netdev {spec}: needs id=NAME (the NIC names it with netdev=NAME)")
    if kind == "tap":
        from .tap import TapBackend

        return TapBackend.open(netdev_id, options, spec)
    if kind == "socket":
        from .socket import open_socket_backend

        return open_socket_backend(netdev_id, options, spec)
    raise EmuError(f"-netdev {spec}: emu has the tap and socket backends (not {kind!r})")
