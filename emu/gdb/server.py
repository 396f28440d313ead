"""Where the gdb stub listens: a TCP port, one client at a time, on its own thread.

`-gdb tcp::1234` listens on port 1234 of every interface, `-gdb tcp:HOST:PORT` on one address,
and `-s` is short for `-gdb tcp::1234`, as with QEMU (whose `-gdb` takes a character device;
emu takes TCP only). gdb connects with `target remote :1234`. While a client is connected, the
listener is not watched, so a second one waits in the backlog until the first leaves.

The thread reads what gdb sends (emu.gdb.packets), acknowledges it, answers each packet
(emu.gdb.stub), and sends the stop replies that the vCPU's stops queue meanwhile; a pipe wakes
it for those. When gdb detaches or the connection drops, the breakpoints are removed and the
guest runs on. When emu ends while gdb waits for the target, gdb gets `W` and the exit status.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from typing import TYPE_CHECKING

from ..errors import EmuError
from .packets import Ack, BadPacket, Interrupt, Packet, PacketReader, frame
from .stub import Session

if TYPE_CHECKING:
    from ..machine import Machine

DEFAULT_PORT = 1234  # -s


def parse_gdb(spec: str) -> tuple[str, int]:
    """`tcp::PORT` or `tcp:HOST:PORT` (QEMU's `,server=on,wait=off` options are accepted and
    change nothing: emu always listens, and never waits before the guest starts; -S does that)."""
    address, *options = spec.split(",")
    kind, _, rest = address.partition(":")
    host, _, port = rest.rpartition(":")
    if kind != "tcp" or not port.isdigit() or not 0 < int(port) < 65536:
        raise EmuError(f"-gdb {spec}: emu's gdb stub listens on TCP: -gdb tcp::PORT or -gdb tcp:HOST:PORT")
    for option in options:
        if option not in ("server", "server=on", "nowait", "wait=off", "ipv4", "ipv4=on"):
            raise EmuError(f"-gdb {spec}: emu does not know {option}")
    return host.strip("[]"), int(port)


class GdbServer(threading.Thread):
    def __init__(self, machine: Machine, host: str, port: int) -> None:
        super().__init__(name="emu-gdb", daemon=True)
        self.machine = machine
        self.where = f"tcp:{host}:{port}"
        try:
            if not host and socket.has_dualstack_ipv6():  # every interface, IPv4 and IPv6, as QEMU
                self.listener = socket.create_server(("", port), family=socket.AF_INET6, backlog=1,
                                                     dualstack_ipv6=True)  # fmt: skip
            else:
                self.listener = socket.create_server((host, port), backlog=1)
        except OSError as error:
            why = os.strerror(error.errno) if error.errno else str(error)
            raise EmuError(f"-gdb {self.where}: cannot listen: {why}") from None
        self.listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector = selectors.DefaultSelector()
        self._status: int | None = None  # the machine's exit status, once it ended
        self.client: socket.socket | None = None
        self.session: Session | None = None
        self.packets = 0  # handled, for tests and curiosity

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def finish(self, status: int) -> None:
        """The machine ended: tell a waiting gdb (`W`), hang up, stop listening."""
        self._status = status
        self.wake()
        if self.is_alive():
            self.join(timeout=5)
        if not self.is_alive():
            self.close()

    # --- the thread -----------------------------------------------------------------------
    def run(self) -> None:
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        try:
            while self._status is None:
                for key, _ in self._selector.select():
                    key.data()
                    if self._status is not None:
                        break
            self._end()
        finally:
            self._selector.close()
            self.listener.close()

    def _end(self) -> None:
        if self.session is not None:
            reply = self.session.finished(self._status or 0)
            if reply is not None:
                self._send(reply)
            self._hang_up(resume=False)

    def _woken(self) -> None:
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
        if self.session is not None:
            for reply in self.session.take_stop_replies():
                self._send(reply)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client, self.reader = client, PacketReader()
        self.no_ack, self.last_sent = False, b""
        self.session = Session(self.machine, wake=self.wake)
        self._selector.unregister(self.listener)
        self._selector.register(client, selectors.EVENT_READ, self._readable)
        self.session.attach()

    def _readable(self) -> None:
        try:
            data = self.client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._hang_up(resume=True)
            return
        for event in self.reader.feed(data):
            if self.client is None:
                return
            if isinstance(event, Interrupt):
                self.session.interrupt()
            elif isinstance(event, Ack):
                if not event.ok and not self.no_ack and self.last_sent:
                    self._write(self.last_sent)  # gdb saw a bad checksum: again
            elif isinstance(event, BadPacket):
                if not self.no_ack:
                    self._write(b"-")
            elif isinstance(event, Packet):
                self._packet(event.payload)

    def _packet(self, payload: bytes) -> None:
        if not self.no_ack:
            self._write(b"+")
        self.packets += 1
        replies = self.session.handle(payload)
        for reply in replies:
            self._send(reply)
        if payload == b"QStartNoAckMode":
            self.no_ack = True
        if self.session.killed or payload[:1] == b"D":
            self._hang_up(resume=False)  # `D` resumed the guest already; `k` ends emu

    def _send(self, payload: bytes) -> None:
        self.last_sent = frame(payload)
        self._write(self.last_sent)

    def _write(self, data: bytes) -> None:
        if self.client is None:
            return
        try:
            self.client.sendall(data)
        except OSError:
            self._hang_up(resume=True)

    def _hang_up(self, resume: bool) -> None:
        """The client is gone (or told to go): the session ends, the listener is watched again."""
        if self.client is None:
            return
        client, session = self.client, self.session
        self.client = self.session = None
        self._selector.unregister(client)
        client.close()
        if resume and session is not None:
            session.close()  # breakpoints removed, the guest runs on
        if self._status is None:
            self._selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
