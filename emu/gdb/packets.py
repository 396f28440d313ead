"""The GDB Remote Serial Protocol on the wire: packets, checksums, acknowledgements, Ctrl-C.

gdb and its stub exchange packets `$payload#cs`, where `cs` is the sum of the payload's bytes
modulo 256 in two hex digits (GDB manual, Appendix E.1 "Overview"). The receiver answers each
packet with `+` (received correctly) or `-` (bad checksum: send it again), until
`QStartNoAckMode` turns acknowledgements off on both sides. In a payload, `$`, `#`, `}` and
`*` are escaped as `}` followed by the byte XOR 0x20 (binary data of the `X` packet, and
replies that carry binary data). A lone byte 0x03 outside any packet is gdb's Ctrl-C: stop the
running target (E.8 "Interrupts"). Numbers are hex everywhere, memory and registers are hex
bytes in target order (little-endian on x86).

This module only frames and unframes; what packets mean is emu.gdb.stub's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INTERRUPT = 0x03
MAX_PACKET = 0x4000  # PacketSize advertised in qSupported: the largest payload gdb may send
_ESCAPED = frozenset(b"$#}*")


def checksum(payload: bytes) -> int:
    return sum(payload) & 0xFF


def escape(payload: bytes) -> bytes:
    out = bytearray()
    for byte in payload:
        if byte in _ESCAPED:
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def frame(payload: bytes) -> bytes:
    """`$payload#cs`, with the payload escaped."""
    body = escape(payload)
    return b"$" + body + b"#" + b"%02x" % checksum(body)


@dataclass(frozen=True)
class Packet:
    payload: bytes  # unescaped


@dataclass(frozen=True)
class BadPacket:
    """A packet whose checksum did not match, or that was not a packet at all (too long, no
    checksum digits): the sender is asked to send it again with `-`."""

    why: str


@dataclass(frozen=True)
class Interrupt:
    """gdb's Ctrl-C (0x03 outside a packet)."""


@dataclass(frozen=True)
class Ack:
    ok: bool  # `+` or `-`


Event = Packet | BadPacket | Interrupt | Ack


@dataclass
class PacketReader:
    """Turns the bytes gdb sends into events, however the stream was split by the socket."""

    _state: str = "idle"  # idle, body, checksum
    _body: bytearray = field(default_factory=bytearray)
    _sum: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for byte in data:
            if self._state == "idle":
                if byte == ord("$"):
                    self._state, self._body = "body", bytearray()
                elif byte == INTERRUPT:
                    events.append(Interrupt())
                elif byte in b"+-":
                    events.append(Ack(byte == ord("+")))
                # anything else between packets is noise, and ignored (as gdbserver does)
            elif self._state == "body":
                if byte == ord("#"):
                    self._state, self._sum = "checksum", bytearray()
                elif byte == ord("$"):  # a new packet started: the previous one was cut off
                    events.append(BadPacket("packet cut off by a new '$'"))
                    self._body = bytearray()
                elif len(self._body) >= 2 * MAX_PACKET:
                    events.append(BadPacket(f"packet longer than {2 * MAX_PACKET} bytes"))
                    self._state = "idle"
                else:
                    self._body.append(byte)
            else:
                self._sum.append(byte)
                if len(self._sum) == 2:
                    self._state = "idle"
                    events.append(self._finish())
        return events

    def _finish(self) -> Event:
        try:
            expected = int(self._sum.decode("ascii"), 16)
        except (UnicodeDecodeError, ValueError):
            return BadPacket(f"checksum {bytes(self._sum)!r} is not two hex digits")
        if expected != checksum(self._body):
            return BadPacket(f"checksum {expected:02x}, the bytes sum to {checksum(self._body):02x}")
        return Packet(unescape(bytes(self._body)))


def unescape(body: bytes) -> bytes:
    out = bytearray()
    escaped = False
    for byte in body:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == 0x7D:
            escaped = True
        else:
            out.append(byte)
    return bytes(out)
