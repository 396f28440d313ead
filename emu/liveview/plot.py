"""A plot of a run's rates over time, drawn pixel by pixel into a PNG (emu.liveview.png).

Three panels share the time axis: exits per second by reason (the few most frequent over the
run, on a logarithmic scale, since `io` may be a thousand times `hlt`), TLB fills per second
(tcg's shadow MMU; on kvm the hardware or KVM fills the TLB, unseen by emu) and interrupts per
second. Each point is the rate over one sampling interval, placed at the interval's end.

Drawing is rasterization at its simplest: a canvas of RGB bytes, lines by Bresenham's algorithm
(each step moves one pixel along the major axis and keeps the error term to decide the minor
one; Bresenham, IBM Systems Journal 4(1), 1965), text from a 5x7 bitmap font (the dot-matrix
size of character LCDs and printers: each glyph below is 7 rows of 5 bits, the leftmost pixel
the highest bit, written as 7 hex bytes; upper case only, lower case is drawn as upper case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from .png import encode_png
from .rates import human

Colour = tuple[int, int, int]
WHITE, BLACK, GRID, AXIS = (255, 255, 255), (0, 0, 0), (225, 225, 225), (90, 90, 90)
SERIES_COLOURS: list[Colour] = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189)]
TLB_COLOUR: Colour = (23, 190, 207)
INTERRUPT_COLOUR: Colour = (227, 119, 194)
MAX_REASONS = len(SERIES_COLOURS)  # exit reasons drawn: the most frequent over the run

_FONT_SOURCE = {
    "0": "0E1113151911 0E", "1": "040C04040404 0E", "2": "0E1101020408 1F", "3": "1F0204020111 0E",
    "4": "02060A121F02 02", "5": "1F101E010111 0E", "6": "0608101E1111 0E", "7": "1F0102040808 08",
    "8": "0E11110E1111 0E", "9": "0E11110F0102 0C", "A": "0E11111F1111 11", "B": "1E11111E1111 1E",
    "C": "0E1110101011 0E", "D": "1C1211111112 1C", "E": "1F10101E1010 1F", "F": "1F10101E1010 10",
    "G": "0E1110171111 0F", "H": "1111111F1111 11", "I": "0E0404040404 0E", "J": "070202020212 0C",
    "K": "111214181412 11", "L": "101010101010 1F", "M": "111B15151111 11", "N": "111119151311 11",
    "O": "0E1111111111 0E", "P": "1E11111E1010 10", "Q": "0E1111111512 0D", "R": "1E11111E1412 11",
    "S": "0F10100E0101 1E", "T": "1F0404040404 04", "U": "111111111111 0E", "V": "11111111110A 04",
    "W": "111111151515 0A", "X": "11110A040A11 11", "Y": "1111110A0404 04", "Z": "1F0102040810 1F",
    " ": "000000000000 00", ".": "00000000000C 0C", ",": "000000000C04 08", "-": "0000001F0000 00",
    "/": "000102040810 00", "%": "181902040813 03", "(": "020408080804 02", ")": "080402020204 08",
    "_": "000000000000 1F", ":": "000C0C000C0C 00", "+": "0004041F0404 00", "=": "00001F001F00 00",
    "#": "0A0A1F0A1F0A 0A", ";": "000C0C000C04 08", "?": "0E1101020400 04", "'": "040408000000 00",
}
FONT: dict[str, bytes] = {ch: bytes.fromhex(rows.replace(" ", "")) for ch, rows in _FONT_SOURCE.items()}
GLYPH_W, GLYPH_H = 5, 7


@dataclass
class Canvas:
    """RGB pixels, white to begin with; (0, 0) is the top left corner."""

    width: int
    height: int
    pixels: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.pixels = bytearray(WHITE * (self.width * self.height))

    def set(self, x: int, y: int, colour: Colour) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(colour)

    def get(self, x: int, y: int) -> Colour:
        i = (y * self.width + x) * 3
        return self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]

    def fill(self, x0: int, y0: int, x1: int, y1: int, colour: Colour) -> None:
        """The rectangle from (x0, y0) to (x1, y1), both included."""
        x0, x1 = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        row = bytes(colour) * (x1 - x0 + 1)
        for y in range(max(0, min(y0, y1)), min(self.height - 1, max(y0, y1)) + 1):
            i = (y * self.width + x0) * 3
            self.pixels[i : i + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, colour: Colour, width: int = 1) -> None:
        """Bresenham's line; `width` > 1 repeats it below (fine for the gentle slopes of a plot)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error = dx + dy
        while True:
            for k in range(width):
                self.set(x0, y0 + k, colour)
            if x0 == x1 and y0 == y1:
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += sx
            if doubled <= dx:
                error += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, colour: Colour = BLACK, scale: int = 1) -> int:
        """`text` with its top left corner at (x, y); returns the x after it."""
        for ch in text.upper():
            glyph = FONT.get(ch, FONT["?"])
            for row, bits in enumerate(glyph):
                for col in range(GLYPH_W):
                    if bits & (0x10 >> col):
                        self.fill(x + col * scale, y + row * scale, x + col * scale + scale - 1,
                                  y + row * scale + scale - 1, colour)  # fmt: skip
            x += (GLYPH_W + 1) * scale
        return x

    def png(self) -> bytes:
        return encode_png(self.width, self.height, self.pixels)


def text_width(text: str, scale: int = 1) -> int:
    return len(text) * (GLYPH_W + 1) * scale - scale


@dataclass(frozen=True)
class Series:
    label: str
    colour: Colour
    points: list[tuple[float, float]]  # (seconds, per second)


def series_from(history: list[dict]) -> tuple[list[Series], Series | None, Series, str]:
    """The three panels' data from a Sampler's history: exits by reason (the most frequent over
    the run), TLB fills (None without emu's shadow MMU), interrupts; and the accelerator's name."""
    pairs = [(a, b) for a, b in pairwise(history) if b["t_ns"] > a["t_ns"]]
    origin = history[0].get("started_ns") or history[0]["t_ns"]
    at = lambda s: (s["t_ns"] - origin) / 1e9
    per_s = lambda a, b, get: max(0, get(b) - get(a)) / ((b["t_ns"] - a["t_ns"]) / 1e9)
    last = history[-1]["exits"]
    first = history[0]["exits"]
    busiest = sorted((r for r in last if last[r] - first.get(r, 0) > 0), key=lambda r: -(last[r] - first.get(r, 0)))
    exits = [Series(reason, colour, [(at(b), per_s(a, b, lambda s, r=reason: s["exits"].get(r, 0))) for a, b in pairs])
             for reason, colour in zip(busiest[:MAX_REASONS], SERIES_COLOURS)]  # fmt: skip
    tlb = None
    if all(s.get("tlb") for s in history):
        tlb = Series("tlb fills", TLB_COLOUR, [(at(b), per_s(a, b, lambda s: s["tlb"]["fills"])) for a, b in pairs])
    kind = history[-1].get("interrupts_kind", "injected")
    interrupts = Series(f"interrupts ({kind})", INTERRUPT_COLOUR,
                        [(at(b), per_s(a, b, lambda s: s["interrupts"])) for a, b in pairs])  # fmt: skip
    return exits, tlb, interrupts, history[-1].get("accel", "?")


@dataclass
class Panel:
    """One chart: a frame at (left, top) of size (width, height), with its y scale."""

    canvas: Canvas
    left: int
    top: int
    width: int
    height: int
    t_max: float
    y_max: float
    log: bool = False

    def x(self, seconds: float) -> int:
        return self.left + round(self.width * seconds / self.t_max)

    def y(self, value: float) -> int:
        if self.log:
            share = math.log10(1 + value) / math.log10(1 + self.y_max)
        else:
            share = value / self.y_max
        return self.top + self.height - round(self.height * min(1.0, share))

    def frame(self, title: str, scale: bool = True) -> None:
        c = self.canvas
        ticks = [10**k for k in range(1, 10) if 10**k <= self.y_max] if self.log else _ticks(self.y_max, 6)[1:]
        if not scale:
            ticks = []
        for value in ticks:
            y = self.y(value)
            c.line(self.left, y, self.left + self.width, y, GRID)
            label = human(value)
            c.text(self.left - 6 - text_width(label), y - 3, label, AXIS)
        c.text(self.left - 6 - text_width("0"), self.top + self.height - 3, "0", AXIS)
        for seconds in _ticks(self.t_max, 8):
            x = self.x(seconds)
            c.line(x, self.top, x, self.top + self.height, GRID)
            label = f"{seconds:g}"
            c.text(x - text_width(label) // 2, self.top + self.height + 5, label, AXIS)
        c.line(self.left, self.top, self.left, self.top + self.height, AXIS)
        c.line(self.left, self.top + self.height, self.left + self.width, self.top + self.height, AXIS)
        c.text(self.left, self.top - 12, title, BLACK)

    def draw(self, series: Series, width: int = 2) -> None:
        points = [(self.x(t), self.y(v)) for t, v in series.points]
        for (x0, y0), (x1, y1) in pairwise(points):
            self.canvas.line(x0, y0, x1, y1, series.colour, width=width)
        if len(points) == 1:  # a single interval: a short mark, not nothing
            x, y = points[0]
            self.canvas.fill(x - 2, y - 1, x + 2, y + 1, series.colour)

    def legend(self, entries: list[Series]) -> None:
        """One row above the frame's right end: a box of each colour and its label."""
        x = self.left + self.width - sum(text_width(s.label) + 30 for s in entries)
        y = self.top - 12
        for s in entries:
            self.canvas.fill(x, y, x + 11, y + 6, s.colour)
            x = self.canvas.text(x + 16, y, s.label, BLACK) + 14


def _ticks(top: float, most: int) -> list[float]:
    """0 and round steps (1, 2 or 5 times a power of ten) up to `top`, at most `most` + 1 of them."""
    step = 10 ** math.floor(math.log10(top)) if top > 0 else 1.0
    for factor in (0.1, 0.2, 0.5, 1, 2, 5, 10):
        if top / (step * factor) <= most:
            step *= factor
            break
    return [round(k * step, 12) for k in range(int(top / step + 1e-9) + 1)]


def render(history: list[dict], width: int = 900, height: int = 660) -> Canvas:
    canvas = Canvas(width, height)
    left, right, top, gap = 64, 16, 34, 56
    panel_h = (height - top - 3 * gap + 24) // 3
    if len(history) < 2 or history[-1]["t_ns"] <= history[0]["t_ns"]:
        canvas.text(left, top, "emu: not enough samples for a plot (the run was shorter than one interval)")
        return canvas
    exits, tlb, interrupts, accel = series_from(history)
    t_max = max([p[0] for s in [*exits, interrupts] for p in s.points] + [1e-3])
    canvas.text(left, 8, f"emu ({accel}): rates over the run, per second; time in seconds", BLACK)
    panels = []
    for index in range(3):
        panels.append(Panel(canvas, left, top + 12 + index * (panel_h + gap), width - left - right, panel_h, t_max, 1))
    peak = max([v for s in exits for _, v in s.points] + [1.0])
    panels[0].y_max, panels[0].log = peak, True
    panels[0].frame("exits/s by reason (log scale)")
    for i, s in enumerate(exits):  # the busiest first and thickest: equal rates (hlt, interrupt) show as stripes
        panels[0].draw(s, width=1 + len(exits) - i)
    if exits:
        panels[0].legend(exits)
    if tlb is not None:
        panels[1].y_max = max([v for _, v in tlb.points] + [1.0])
        panels[1].frame("tlb fills/s (emu's shadow mmu)")
        panels[1].draw(tlb)
    else:
        panels[1].frame("tlb fills/s", scale=False)
        why = "no counters (--mmu unicorn)"
        if accel == "kvm":
            why = "kvm: the hardware or kvm fills the tlb, unseen by emu"
        canvas.text(panels[1].left + 12, panels[1].top + panel_h // 2, why, AXIS)
    panels[2].y_max = max([v for _, v in interrupts.points] + [1.0])
    panels[2].frame(f"{interrupts.label}/s")
    panels[2].draw(interrupts)
    return canvas


def write_plot(history: list[dict], path: str | Path) -> None:
    """Write the PNG of a Sampler's history (emu.liveview.sampler): the --plot file, or the run so
    far for a monitor command (pass Sampler.samples(), a copy, while the run goes on)."""
    Path(path).write_bytes(render(history).png())
