"""Where the monitor listens: a Unix socket, or the user's terminal beside the serial console.

`-monitor unix:PATH,server=on,wait=off` (QEMU's older `server,nowait` spelling is also accepted)
is a Unix socket that takes one client at a time (`socat - UNIX-CONNECT:PATH`). QEMU turns "\\n"
into "\\r\\n" on the way out, and so does emu. emu does not echo what the client types: a
terminal client's own line discipline does that.

`-monitor stdio` puts the monitor on the terminal. COM1 stays on stdout, so the guest's output
and the monitor's share the screen, as under QEMU's `-serial mon:stdio`: what is typed goes to
the monitor, and on a terminal Ctrl-A c switches the keyboard between the monitor and the
serial console (emu.terminal); without `-monitor stdio`, Ctrl-A c opens the monitor on the
terminal too. From a pipe, every line of stdin is a command: `printf 'info registers\\nquit\\n'
| python -m emu -monitor stdio guest.elf`. `-monitor none` means no monitor.

Sources: QEMU 7.2 chardev/char-socket.c, chardev/char-mux.c (the multiplexer, Ctrl-A c) and
docs/system/monitor.rst.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading

from ..errors import EmuError
from .hmp import BANNER, PROMPT, Monitor

STDIO = "stdio"


def parse_monitor(spec: str) -> str | None:
    """`-monitor unix:PATH,server=on,wait=off` (or `,server,nowait`): the socket's path;
    `-monitor stdio`: "stdio"; `-monitor none`: None. Anything else is refused in one line."""
    if spec == "none":
        return None
    if spec == STDIO:
        return STDIO
    kind, _, rest = spec.partition(":")
    path, *items = rest.split(",")
    if kind != "unix" or not path:
        raise EmuError(f"-monitor {spec}: emu's monitor listens on a Unix socket or the terminal: "
                       "-monitor unix:PATH,server=on,wait=off or -monitor stdio")  # fmt: skip
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:  # QEMU's older boolean spelling: server is server=on, nowait is wait=off
            key, value = (key[2:], "off") if key.startswith("no") else (key, "on")
        options[key] = value
    if options.pop("server", "off") != "on":
        raise EmuError(f"-monitor {spec}: emu listens for the client (server=on); it does not connect")
    if options.pop("wait", "on") != "off":
        raise EmuError(f"-monitor {spec}: emu does not wait for a client before it starts the guest: add wait=off")
    if options:
        raise EmuError(f"-monitor {spec}: emu does not know {', '.join(sorted(options))}")
    return path


class MonitorServer(threading.Thread):
    """The monitor on a Unix socket: one client at a time, on its own thread. While a client is
    connected, the listener is not watched, so the next client waits in the backlog, as
    QEMU's socket chardev makes it wait."""

    def __init__(self, monitor: Monitor, path: str) -> None:
        super().__init__(name="emu-monitor", daemon=True)
        self.monitor, self.path = monitor, path
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a socket left by an earlier run (QEMU does the same)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(path)
        except OSError as error:
            self.listener.close()
            raise EmuError(f"-monitor unix:{path}: {error.strerror}") from None
        self.listener.listen(1)
        self.listener.setblocking(False)
        self._stop_r, self._stop_w = os.pipe()
        self._selector = selectors.DefaultSelector()
        self.client: socket.socket | None = None
        self._line = b""
        self.commands_run = 0

    def run(self) -> None:
        self._selector.register(self._stop_r, selectors.EVENT_READ, None)
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                key.data()

    def _send(self, text: str) -> None:
        try:
            self.client.sendall(text.replace("\n", "\r\n").encode())
        except OSError:
            self._hang_up()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.client, self._line = client, b""
        self._selector.unregister(self.listener)
        self._selector.register(client, selectors.EVENT_READ, self._readable)
        self._send(f"{BANNER}\n{PROMPT}")

    def _readable(self) -> None:
        try:
            data = self.client.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._hang_up()
            return
        self._line += data
        while self.client is not None and b"\n" in self._line:
            line, _, self._line = self._line.partition(b"\n")
            output = self.monitor.execute(line.decode(errors="replace").strip())
            self.commands_run += 1
            if self.monitor.quitting:
                self._hang_up()
                return
            self._send(output + PROMPT)

    def _hang_up(self) -> None:
        if self.client is None:
            return
        self._selector.unregister(self.client)
        self.client.close()
        self.client = None
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self.is_alive():
            self.join(timeout=5)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.listener.close()
        self._selector.close()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass
