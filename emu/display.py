"""The VGA text screen on the user's terminal, drawn with ANSI escape sequences (ECMA-48).

When a raw disk boots and stdout is a terminal (and -nographic was not given), the 80x25 text
screen is what the guest's user looks at, as in QEMU's window. The terminal's top 25 rows show
it: every refresh compares the screen memory with what was drawn and rewrites the rows that
changed, in the 16 CGA colours of each cell's attribute (low nibble foreground, high nibble
background), then puts the terminal cursor where the CRT controller's cursor is. COM1 keeps
writing to stdout below, in a scrolling region (DECSTBM) from row 27 down, so both stay
readable. A terminal smaller than 80x30 gets no screen: the BIOS's teletype text goes to stdout
as with -nographic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .devices.vga import COLUMNS, ROWS, VgaText

# CGA colour order (blue=1, green=2, red=4) to ANSI (red=1, green=2, blue=4)
_ANSI = (0, 4, 2, 6, 1, 5, 3, 7)
REFRESH_NS = 50_000_000  # at most 20 redraws a second
MIN_LINES = ROWS + 5


def _sgr(attribute: int) -> str:
    fg, bg = attribute & 0x0F, (attribute >> 4) & 0x07
    bright = 90 if fg & 8 else 30
    return f"\x1b[0;{bright + _ANSI[fg & 7]};{40 + _ANSI[bg]}m"


def terminal_size(fd: int = 1) -> os.terminal_size:
    try:
        return os.get_terminal_size(fd)
    except OSError:
        return os.terminal_size((0, 0))


def terminal_fits(fd: int = 1) -> bool:
    size = terminal_size(fd)
    return os.isatty(fd) and size.columns >= COLUMNS and size.lines >= MIN_LINES


@dataclass
class TerminalScreen:
    vga: VgaText
    fd: int = 1
    _drawn: list[bytes | None] = field(default_factory=lambda: [None] * ROWS)
    _cursor: tuple[int, int] | None = None
    _last_ns: int = 0

    def start(self) -> None:
        lines = terminal_size(self.fd).lines
        # clear, then keep rows ROWS+2.. as the scrolling region for COM1, and park there
        self._write(f"\x1b[2J\x1b[{ROWS + 2};{lines}r\x1b[{ROWS + 2};1H")

    def refresh(self, now_ns: int, force: bool = False) -> None:
        if not force and now_ns - self._last_ns < REFRESH_NS:
            return
        self._last_ns = now_ns
        cells = self.vga.cells()
        out = []
        for row in range(ROWS):
            line = cells[row * 2 * COLUMNS : (row + 1) * 2 * COLUMNS]
            if line == self._drawn[row]:
                continue
            self._drawn[row] = line
            out.append(f"\x1b[{row + 1};1H")
            attribute = None
            for col in range(COLUMNS):
                char, attr = line[2 * col], line[2 * col + 1]
                if attr != attribute:
                    out.append(_sgr(attr))
                    attribute = attr
                out.append(bytes([char or 0x20]).decode("cp437"))
            out.append("\x1b[0m")
        cursor = self.vga.cursor
        if out or cursor != self._cursor:
            self._cursor = cursor
            row, col = cursor
            # save the COM1 cursor, draw, show where the guest's cursor is, then go back
            self._write("\x1b7" + "".join(out) + f"\x1b[{min(row, ROWS - 1) + 1};{col + 1}H" + "\x1b8")

    def stop(self) -> None:
        self.refresh(0, force=True)
        lines = terminal_size(self.fd).lines
        self._write(f"\x1b[r\x1b[{lines};1H\n")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        while data:
            try:
                data = data[os.write(self.fd, data) :]
            except BlockingIOError:
                continue
            except OSError:
                return
