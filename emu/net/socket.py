"""The socket backend, QEMU's `-netdev socket`: frames to another emulator process, no root.

Two forms, both as QEMU's net/socket.c frames them, so emu and QEMU guests can share a wire:

  udp=HOST:PORT,localaddr=HOST:PORT   one UDP datagram per Ethernet frame, sent to `udp`,
                                      received on `localaddr`. Two processes that name each
                                      other's ports are a point-to-point link; one whose two
                                      addresses are equal hears its own frames (a loopback).
  listen=[HOST]:PORT / connect=HOST:PORT
                                      a TCP stream, each frame behind its length as a 4-byte
                                      big-endian number. The listener takes one peer at a time
                                      and keeps listening; frames sent with no peer are dropped.

Nothing here leaves the host unless the addresses say so; tests use 127.0.0.1.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass, field

from ..errors import EmuError
from .backend import NetBackend

MAX_FRAME = 65536 + 14  # the largest frame either side may send (QEMU's NET_BUFSIZE is 68 KiB)


def _address(text: str, spec: str, default_host: str = "") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise EmuError(f"-netdev {spec}: {text!r} is not [HOST]:PORT")
    return host or default_host, int(port)


def open_socket_backend(netdev_id: str, options: dict[str, str], spec: str) -> NetBackend:
    modes = [k for k in ("udp", "listen", "connect") if k in options]
    if len(modes) != 1:
        raise EmuError(f"-netdev {spec}: give exactly one of udp=, listen= and connect=")
    mode = modes[0]
    allowed = {"udp": {"udp", "localaddr"}, "listen": {"listen"}, "connect": {"connect"}}[mode]
    if unknown := set(options) - allowed:
        raise EmuError(f"-netdev {spec}: emu's socket backend does not know {', '.join(sorted(unknown))}")
    try:
        if mode == "udp":
            if "localaddr" not in options:
                raise EmuError(f"-netdev {spec}: udp= needs localaddr=HOST:PORT to receive on")
            return UdpBackend.open(netdev_id, _address(options["localaddr"], spec, "0.0.0.0"),
                                   _address(options["udp"], spec))  # fmt: skip
        if mode == "listen":
            return StreamBackend.listen(netdev_id, _address(options["listen"], spec, "0.0.0.0"))
        return StreamBackend.connect(netdev_id, _address(options["connect"], spec))
    except OSError as error:
        raise EmuError(f"-netdev {spec}: {error.strerror or error}") from None


@dataclass
class UdpBackend(NetBackend):
    sock: socket.socket | None = None
    peer: tuple[str, int] = ("", 0)

    @classmethod
    def open(cls, netdev_id: str, local: tuple[str, int], peer: tuple[str, int]) -> UdpBackend:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(local)
        sock.setblocking(False)
        return cls(netdev_id, sock=sock, peer=peer)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def send(self, frame: bytes) -> None:
        try:
            self.sock.sendto(frame, self.peer)
            self.frames_sent += 1
        except OSError:  # no one listens there (ECONNREFUSED from an earlier datagram), buffer full: a lost frame
            pass

    def receive(self) -> bytes | None:
        while True:
            try:
                frame = self.sock.recv(MAX_FRAME)
            except BlockingIOError:
                return None
            except ConnectionRefusedError:  # an ICMP answer to an earlier send: not a frame
                continue
            self.frames_received += 1
            return frame

    def close(self) -> None:
        super().close()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class StreamBackend(NetBackend):
    listener: socket.socket | None = None
    peer: socket.socket | None = None
    _buffer: bytearray = field(default_factory=bytearray, repr=False)

    @classmethod
    def listen(cls, netdev_id: str, address: tuple[str, int]) -> StreamBackend:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(1)
        listener.setblocking(False)
        return cls(netdev_id, listener=listener)

    @classmethod
    def connect(cls, netdev_id: str, address: tuple[str, int]) -> StreamBackend:
        peer = socket.create_connection(address, timeout=10)
        peer.setblocking(False)
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(netdev_id, peer=peer)

    def fileno(self) -> int:
        """The peer once there is one; until then the listener, whose readiness is a peer waiting."""
        if self.peer is not None:
            return self.peer.fileno()
        return self.listener.fileno() if self.listener is not None else -1

    def send(self, frame: bytes) -> None:
        if self.peer is None:
            return  # no wire yet: the frame is lost, as on an unplugged cable
        try:
            self.peer.setblocking(True)  # a whole frame or none: the stream must stay framed
            self.peer.sendall(struct.pack(">I", len(frame)) + frame)
            self.frames_sent += 1
        except OSError:
            self._hang_up()
        finally:
            if self.peer is not None:
                self.peer.setblocking(False)

    def receive(self) -> bytes | None:
        if self.peer is None:
            self._accept()
            return None
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack_from(">I", self._buffer)
                if length > MAX_FRAME:
                    self._hang_up()  # not QEMU's framing: drop the peer rather than guess
                    return None
                if len(self._buffer) >= 4 + length:
                    frame = bytes(self._buffer[4 : 4 + length])
                    del self._buffer[: 4 + length]
                    self.frames_received += 1
                    return frame
            try:
                chunk = self.peer.recv(MAX_FRAME)
            except BlockingIOError:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self._hang_up()
                return None
            self._buffer += chunk

    def _accept(self) -> None:
        if self.listener is None:
            return
        try:
            peer, _ = self.listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return
            raise
        peer.setblocking(False)
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = peer
        self.resume()  # watch the peer now, not the listener

    def _hang_up(self) -> None:
        """The peer went away: back to listening (a connect= backend has no wire any more)."""
        if self.peer is not None:
            self.pause()
            self.peer.close()
            self.peer = None
            self._buffer.clear()
            self.resume()

    def close(self) -> None:
        super().close()
        for sock in (self.peer, self.listener):
            if sock is not None:
                sock.close()
        self.peer = self.listener = None
