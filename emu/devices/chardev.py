"""Character backends (QEMU's `-chardev`): where a serial device's bytes go and come from.

`-chardev stdio,id=ID` is the terminal (output to stdout, typed keys to the device instead of
COM1). The other backend is a Unix socket, QEMU's
`-chardev socket,id=ID,path=PATH,server=on,wait=off`: emu listens at PATH and takes one client
at a time (`socat - UNIX-CONNECT:PATH`, `nc -U PATH`); what the guest writes goes to the
client, what the client sends is the guest's input. With no client, output is dropped, as QEMU
does with wait=off. The device's thread (emu.devices.virtio.iothread) watches the listener
and the client, so input reaches the device without passing the vCPU's loop.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import EmuError
from ..net.backend import Watcher


@dataclass
class UnixSocketChardev:
    id: str
    path: str
    listener: socket.socket | None = None
    client: socket.socket | None = None
    bytes_out: int = 0
    bytes_in: int = 0
    _watcher: Watcher | None = field(default=None, repr=False)
    _on_input: Callable[[bytes], None] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, chardev_id: str, path: str) -> UnixSocketChardev:
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a socket left by an earlier run (QEMU does the same)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
        except OSError as error:
            listener.close()
            raise EmuError(f"-chardev socket,path={path}: {error.strerror}") from None
        listener.listen(1)
        listener.setblocking(False)
        return cls(chardev_id, path, listener=listener)

    # OutputSink: the guest's output
    def write(self, data: bytes) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(data)
            self.bytes_out += len(data)
        except OSError:
            self._hang_up()

    def flush(self) -> None:
        pass

    # input, on the device's thread
    def attach(self, watcher: Watcher, on_input: Callable[[bytes], None]) -> None:
        self._watcher, self._on_input = watcher, on_input
        if self.listener is not None:
            watcher.watch(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        if self.client is not None:  # one client at a time: the newcomer is turned away
            client.close()
            return
        client.setblocking(False)
        self.client = client
        self._watcher.watch(client.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._hang_up()
            return
        self.bytes_in += len(data)
        self._on_input(data)

    def _hang_up(self) -> None:
        if self.client is not None:
            if self._watcher is not None:
                self._watcher.unwatch(self.client.fileno())
            self.client.close()
            self.client = None

    def close(self) -> None:
        self._hang_up()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass


@dataclass
class StdioChardev:
    """`-chardev stdio,id=ID`: the terminal; the machine routes stdout and stdin to the device."""

    id: str

    def close(self) -> None:
        pass


def parse_chardev(spec: str) -> UnixSocketChardev | StdioChardev:
    """`-chardev socket,id=ID,path=PATH,server=on,wait=off`, or `-chardev stdio,id=ID` (the
    terminal: a chardev with no path; the machine routes stdin and stdout)."""
    kind, *items = spec.split(",")
    options = dict(item.partition("=")[::2] for item in items)
    chardev_id, path = options.pop("id", ""), options.pop("path", "")
    if kind == "stdio" and chardev_id and not path and not options:
        return StdioChardev(chardev_id)
    if kind != "socket" or not chardev_id or not path:
        raise EmuError(f"-chardev {spec}: emu has socket,id=ID,path=PATH,server=on,wait=off (a Unix socket) "
                       "and stdio,id=ID (the terminal)")
    if options.pop("server", "on") != "on" or options.pop("wait", "off") != "off":
        raise EmuError(f"-chardev {spec}: emu listens (server=on) and does not wait for a client (wait=off)")
    if options:
        raise EmuError(f"-chardev {spec}: emu does not know {', '.join(sorted(options))}")
    return UnixSocketChardev.open(chardev_id, path)
