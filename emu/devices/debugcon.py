"""The firmware console: port 0xE9 (Bochs' "port E9 hack", QEMU's `-debugcon`), and 0xEA.

Firmware has text to show before any driver exists. Bochs introduced port 0xE9 for it: every
byte written there appears on the host's console, and a read returns 0xE9, so software can
tell the port is there; QEMU offers the same device as `-debugcon`, and SeaBIOS writes its log
to it. emu's BIOS mirrors everything int 10h puts on the screen to this port, so that a guest's
BIOS output reaches stdout when nobody looks at the VGA screen (`-nographic`, or stdout not a
terminal).

Ports 0xEA and 0xEB are emu's own. The BIOS writes a nonzero code to 0xEA when it cannot go on
(no bootable disk, an exception nobody handles): emu then ends the run with the last line the
firmware printed, as one error line, instead of leaving a guest spinning in a halt loop. And it
writes (vector << 8 | AH) to 0xEB, 16 bits, for each call of a BIOS function it does not
implement, which --stats counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

CONSOLE_PORT = 0xE9
FATAL_PORT = 0xEA
UNSUPPORTED_PORT = 0xEB


@dataclass
class FirmwareConsole:
    """Registered at 0xE9 with length 3: the console, the fatal-error port, unsupported calls."""

    write_out: Callable[[bytes], None] | None  # where console bytes go (None: discarded)
    on_fatal: Callable[[str], None]
    bytes_written: int = 0
    unsupported: dict[str, int] = field(default_factory=dict)  # "int 13h AH=77h" -> calls
    _line: bytearray = field(default_factory=bytearray)
    _last_line: str = ""

    def io_read(self, offset: int, size: int) -> int:
        return CONSOLE_PORT if offset == 0 else 0xFF

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 1:
            if value & 0xFF:
                self.on_fatal(self.last_line or f"firmware stopped with code {value & 0xFF:#x}")
            return
        if offset == 2:
            name = f"int {(value >> 8) & 0xFF:02X}h AH={value & 0xFF:02X}h"
            self.unsupported[name] = self.unsupported.get(name, 0) + 1
            return
        byte = value & 0xFF
        self.bytes_written += 1
        if self.write_out is not None:
            self.write_out(bytes([byte]))
        if byte == 0x0A:
            text = self._line.decode("ascii", "replace").strip()
            if text:
                self._last_line = text
            self._line.clear()
        elif byte != 0x0D and len(self._line) < 256:
            self._line.append(byte)

    @property
    def last_line(self) -> str:
        pending = self._line.decode("ascii", "replace").strip()
        return pending or self._last_line
