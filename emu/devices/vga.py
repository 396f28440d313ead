"""VGA in 80x25 text mode: the screen is two bytes per cell in memory at B8000.

A VGA card in text mode (mode 3) shows 25 rows of 80 cells; cell (row, col) is the byte pair
at B8000 + 2 * (80 * row + col): the character (code page 437) and its attribute (low nibble
foreground, high nibble background; IBM VGA Technical Reference, "Alphanumeric Modes"). The
screen is memory, so the guest writes it with plain stores: emu maps the VGA window A0000-BFFFF
as RAM on both accelerators and reads the text from there when it shows or dumps the screen.

What is not memory are the registers, reached through index/data port pairs. The ones text
mode software touches are the CRT controller's (3D4/3D5): cursor start/end (0Ah/0Bh), start
address (0Ch/0Dh) and cursor location (0Eh/0Fh, a cell index). Input status 1 (3DA) toggles
its retrace bits on every read, so that loops waiting for vertical retrace end. The sequencer,
graphics controller, attribute controller and DAC keep what is written to them and nothing
more: emu draws no pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..memory import GuestMemory

TEXT_OFFSET = 0x18000  # B8000 inside the A0000 window
COLUMNS, ROWS = 80, 25
CRTC_CURSOR_START, CRTC_CURSOR_END = 0x0A, 0x0B
CRTC_START_HIGH, CRTC_START_LOW = 0x0C, 0x0D
CRTC_CURSOR_HIGH, CRTC_CURSOR_LOW = 0x0E, 0x0F
BASE = 0x3C0  # the device spans 3C0-3DF


@dataclass
class VgaText:
    vram: GuestMemory  # the A0000-BFFFF window
    crtc: bytearray = field(default_factory=lambda: bytearray(0x19))
    crtc_index: int = 0
    sequencer: bytearray = field(default_factory=lambda: bytearray(5))
    sequencer_index: int = 0
    graphics: bytearray = field(default_factory=lambda: bytearray(9))
    graphics_index: int = 0
    attribute: bytearray = field(default_factory=lambda: bytearray(0x15))
    attribute_index: int = 0
    attribute_flip_flop: bool = False  # False: the next write to 3C0 is an index
    misc_output: int = 0x67  # colour emulation (CRTC at 3D4), as the BIOS leaves it
    _status_toggle: int = 0

    def __post_init__(self) -> None:
        self.crtc[CRTC_CURSOR_START], self.crtc[CRTC_CURSOR_END] = 0x0D, 0x0E

    # ports 3C0-3DF (offset from 3C0) -----------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        port = BASE + offset
        if port in (0x3D5, 0x3B5):
            return self.crtc[self.crtc_index] if self.crtc_index < len(self.crtc) else 0xFF
        if port in (0x3D4, 0x3B4):
            return self.crtc_index
        if port in (0x3DA, 0x3BA):  # input status 1: reading it also resets the 3C0 flip-flop
            self.attribute_flip_flop = False
            self._status_toggle ^= 0x09  # vertical retrace (bit 3) and display disabled (bit 0)
            return self._status_toggle
        if port == 0x3CC:
            return self.misc_output
        if port == 0x3C5:
            return self.sequencer[self.sequencer_index] if self.sequencer_index < len(self.sequencer) else 0xFF
        if port == 0x3C4:
            return self.sequencer_index
        if port == 0x3CF:
            return self.graphics[self.graphics_index] if self.graphics_index < len(self.graphics) else 0xFF
        if port == 0x3CE:
            return self.graphics_index
        if port == 0x3C1:
            return self.attribute[self.attribute_index] if self.attribute_index < len(self.attribute) else 0xFF
        if port == 0x3C0:
            return self.attribute_index
        return 0xFF

    def io_write(self, offset: int, size: int, value: int) -> None:
        if size == 2:  # a 16-bit OUT to an index port writes the index and then the data
            self.io_write(offset, 1, value & 0xFF)
            self.io_write(offset + 1, 1, value >> 8)
            return
        port, value = BASE + offset, value & 0xFF
        if port in (0x3D4, 0x3B4):
            self.crtc_index = value & 0x3F
        elif port in (0x3D5, 0x3B5):
            if self.crtc_index < len(self.crtc):
                self.crtc[self.crtc_index] = value
        elif port == 0x3C2:
            self.misc_output = value
        elif port == 0x3C4:
            self.sequencer_index = value
        elif port == 0x3C5 and self.sequencer_index < len(self.sequencer):
            self.sequencer[self.sequencer_index] = value
        elif port == 0x3CE:
            self.graphics_index = value
        elif port == 0x3CF and self.graphics_index < len(self.graphics):
            self.graphics[self.graphics_index] = value
        elif port == 0x3C0:
            if not self.attribute_flip_flop:
                self.attribute_index = value & 0x1F
            elif self.attribute_index < len(self.attribute):
                self.attribute[self.attribute_index] = value
            self.attribute_flip_flop = not self.attribute_flip_flop

    # the screen ---------------------------------------------------------------------------
    @property
    def cursor(self) -> tuple[int, int]:
        """(row, column) of the hardware cursor."""
        cell = (self.crtc[CRTC_CURSOR_HIGH] << 8 | self.crtc[CRTC_CURSOR_LOW]) - self.start_address
        return divmod(max(cell, 0), COLUMNS)

    @property
    def start_address(self) -> int:
        return self.crtc[CRTC_START_HIGH] << 8 | self.crtc[CRTC_START_LOW]

    def cells(self) -> bytes:
        start = TEXT_OFFSET + 2 * self.start_address
        return self.vram.read(start, 2 * COLUMNS * ROWS)

    def text(self) -> str:
        """The screen as 25 lines of text, trailing blanks removed (code page 437 decoded)."""
        cells = self.cells()
        lines = []
        for row in range(ROWS):
            chars = cells[row * 2 * COLUMNS : (row + 1) * 2 * COLUMNS : 2]
            lines.append(chars.replace(b"\0", b" ").decode("cp437").rstrip())
        return "\n".join(lines) + "\n"
