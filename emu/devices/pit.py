"""The Intel 8254 programmable interval timer: three 16-bit down-counters at 1.193182 MHz.

Intel 8254 datasheet (order no. 231164), "Operational description" and "Modes". Each counter
is loaded with an initial count N written through its data port (0x40-0x42) in the byte order
chosen by the control word at 0x43 (RW: LSB only, MSB only, or LSB then MSB), and counts CLK
pulses in one of six modes, which shape its OUT pin:

  0  interrupt on terminal count  OUT low, high when the count reaches 0 (one-shot)
  1  hardware one-shot            GATE rising edge starts it; OUT low for N clocks
  2  rate generator               OUT high, low for the last clock of every N (periodic)
  3  square wave                  OUT high for ceil(N/2) clocks, low for floor(N/2)
  4  software strobe              OUT low for one clock after N clocks
  5  hardware strobe              as 4, started by a GATE rising edge

A count of 0 means 65536 (10000 in BCD). GATE low pauses modes 0, 2, 3 and 4 (and forces OUT
high in 2 and 3); a GATE rising edge restarts 1, 2, 3 and 5. A count written in mode 2 or 3
takes effect at the end of the current cycle (half-cycle in mode 3), in 0 and 4 at once. The
counter latch command and the read-back command (SC=11) freeze the count and/or a status byte
(OUT, NULL COUNT, RW, mode, BCD) in output latches until read.

On the PC, OUT0 drives IRQ 0 (the system tick), channel 1 once timed DRAM refresh, and channel
2's GATE and OUT are wired to system control port B (0x61, see emu.devices.port61) to drive
the speaker and to let firmware time short delays.

Emulation: nothing ticks. A counter remembers the CLK tick at which its count was loaded and
derives its value and OUT from `clock.now_ns()`, so a read anywhere is exact. Only a counter
wired to an IRQ arms a `Timer`, at OUT's next edge; if the loop comes late the edge is
delivered once and the next one scheduled after now (QEMU's "discard" lost-tick policy), and
the missed periods are counted in `lost_ticks`. The IRQ wire follows OUT; OUT's one-clock low
pulses (modes 2, 4, 5) are delivered as a low-high pulse at the clock where OUT rises again,
which is the edge the 8259A latches.

Deviations: a count is taken as loaded at the next CLK after it is written (as on the chip)
but the counting element's value is not modelled before that; in mode 3 with an odd count the
value read back follows the even-count sequence (OUT timing is exact). BCD counting is
modelled (counts and read-back in BCD, 0 = 10000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..clock import Clock, Timer
from .interfaces import IrqLine

PIT_BASE = 0x40
PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000

RW_LATCH, RW_LSB, RW_MSB, RW_WORD = 0, 1, 2, 3
READ_BACK_COUNT = 0x20  # active low: latch the count
READ_BACK_STATUS = 0x10  # active low: latch the status
STATUS_OUT = 0x80
STATUS_NULL_COUNT = 0x40


def tick_at(ns: int) -> int:
    """The number of the last CLK pulse at or before host time `ns`."""
    return ns * PIT_HZ // NS_PER_S


def ns_at(tick: int) -> int:
    """The first host nanosecond at which CLK pulse `tick` has happened."""
    return -(-tick * NS_PER_S // PIT_HZ)


def to_bcd(value: int) -> int:
    return int(str(value % 10000), 16)


def from_bcd(raw: int) -> int:
    return sum(((raw >> (4 * i)) & 0xF) * 10**i for i in range(4))


@dataclass
class PitChannel:
    """One counter: its programming, its counting element (as a start tick) and its latches."""

    index: int
    clock: Clock
    irq: IrqLine | None = None

    mode: int = 0
    rw: int = RW_WORD
    bcd: bool = False
    gate: bool = True
    cr: int = 0  # count register: the last complete count written (0 = none since the control word)
    count: int = 0  # N in the counting element
    start: int | None = None  # CLK tick at which the counting element was loaded with N
    paused_at: int | None = None  # GATE went low at this tick (modes 0, 2, 3, 4)
    paused_ticks: int = 0  # clocks spent paused since `start`
    pending: tuple[int, int, bool] | None = None  # mode 2/3 reload due: (N, tick, at a falling edge)
    load_tick: int | None = None  # when CR reaches the counting element (NULL COUNT until then)
    write_lsb: int | None = None  # first byte of an LSB-then-MSB write
    read_msb_next: bool = False
    latched_status: int | None = None
    latched_count: list[int] = field(default_factory=list)  # bytes left to read
    lost_ticks: int = 0
    edges: int = 0  # rising edges driven onto the IRQ wire
    _line: bool = False
    _planned: tuple[int, bool] | None = None  # (tick, rising) the timer is armed for
    _timer: Timer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.irq is not None:
            self._timer = self.clock.timer(self._on_timer, f"pit{self.index}")

    # -- the counting element, derived from time --------------------------------------------

    @property
    def modulus(self) -> int:
        return 10000 if self.bcd else 0x10000

    def _sync(self, now: int) -> None:
        """Apply a mode 2/3 reload that has come due."""
        if self.pending is not None and now >= self.pending[1]:
            n, at, falling = self.pending
            self.pending = None
            self.count = n
            # A mode 3 reload at the end of the high half starts the new count's low half.
            self.start = at - (n + 1) // 2 if falling else at
            self.paused_ticks = 0

    def _elapsed(self, now: int) -> int | None:
        """CLK pulses counted since the count was loaded, or None if not counting."""
        if self.start is None:
            return None
        end = self.paused_at if self.paused_at is not None else now
        return max(0, end - self.start - self.paused_ticks)

    def counter(self, now: int) -> int:
        """The counting element's value (binary) at tick `now`."""
        d = self._elapsed(now)
        n = self.count
        if d is None or not n:
            return n % self.modulus
        if self.mode == 2:
            return n - d % n
        if self.mode == 3:
            return n - (2 * d) % n
        return (n - d) % self.modulus

    def out(self, now: int) -> bool:
        """The OUT pin at tick `now`."""
        self._sync(now)
        mode, n = self.mode, self.count
        if mode in (2, 3) and not self.gate:
            return True
        d = self._elapsed(now)
        if d is None:
            return mode != 0
        if mode in (0, 1):
            return d >= n
        if mode == 2:
            return d % n != n - 1
        if mode == 3:
            return d % n < (n + 1) // 2
        return d != n  # modes 4, 5

    def _next_edge(self, now: int) -> tuple[int, bool] | None:
        """(tick, rising) of OUT's next edge after `now` that the IRQ wire must show."""
        d = self._elapsed(now)
        if d is None or self.start is None or self.paused_at is not None:
            return None
        mode, n = self.mode, self.count
        rising = True
        if mode in (0, 1):
            if d >= n:
                return None
            e = n
        elif mode in (4, 5):
            if d > n:
                return None
            e = n + 1
        elif n < 2:  # modes 2 and 3 with N = 1 are illegal (datasheet): no edges
            return None
        elif mode == 2:
            e = (d // n + 1) * n
        else:  # mode 3: rising at every reload, falling at the end of the high half
            e = (d // n + 1) * n
            fall = (d // n) * n + (n + 1) // 2
            if d < fall:
                e, rising = fall, False
        return self.start + self.paused_ticks + e, rising

    # -- the IRQ wire -----------------------------------------------------------------------

    def _set_line(self, level: bool) -> None:
        if self.irq is not None and level != self._line:
            self._line = level
            self.irq.set_level(level)
            if level:
                self.edges += 1

    def _reschedule(self, now: int) -> None:
        """Make the wire show OUT now and arm the timer for OUT's next edge."""
        if self._timer is None:
            return
        self._set_line(self.out(now))
        self._planned = self._next_edge(now)
        if self._planned is None:
            self._timer.cancel()
        else:
            self._timer.arm(ns_at(self._planned[0]))

    def _on_timer(self, now_ns: int) -> None:
        now = tick_at(now_ns)
        planned = self._planned
        self._sync(now)
        if planned is not None and planned[1]:
            self._set_line(False)  # the end of OUT's one-clock low pulse (modes 2, 4, 5)
            self._set_line(True)
            if self.mode in (2, 3) and self.count:
                self.lost_ticks += max(0, now - planned[0]) // self.count
        self._reschedule(now)

    # -- programming ------------------------------------------------------------------------

    def control(self, rw: int, mode: int, bcd: bool, now: int) -> None:
        """A control word: new mode and byte order; the counter waits for a new count."""
        self.rw, self.mode, self.bcd = rw, mode if mode < 6 else mode - 4, bcd
        self.cr = 0
        self.start = self.paused_at = self.pending = self.load_tick = self.write_lsb = None
        self.paused_ticks = 0
        self.read_msb_next = False
        self.latched_status = None
        self.latched_count = []
        self._reschedule(now)

    def write_data(self, value: int, now: int) -> None:
        if self.rw == RW_LSB:
            self._load(value, now)
        elif self.rw == RW_MSB:
            self._load(value << 8, now)
        elif self.write_lsb is None:
            self.write_lsb = value
            if self.mode == 0:  # mode 0: the first byte stops the count and drops OUT
                self.count = self.counter(now)
                self.start = self.load_tick = None
                self._reschedule(now)
        else:
            raw, self.write_lsb = self.write_lsb | value << 8, None
            self._load(raw, now)

    def _load(self, raw: int, now: int) -> None:
        """A complete count was written: it reaches the counting element as the mode says."""
        self._sync(now)
        n = (from_bcd(raw) if self.bcd else raw) or self.modulus
        self.cr = n
        mode = self.mode
        if mode in (1, 5):
            self.load_tick = None  # loaded by the next GATE trigger
        elif mode in (2, 3) and self.start is not None:
            d = self._elapsed(now)
            assert d is not None
            if self.paused_at is not None:
                self.load_tick = None  # loaded by the GATE rising edge that restarts counting
            else:
                c = self.count
                at, falling = (d // c + 1) * c, False
                if mode == 3 and d % c < (c + 1) // 2:
                    at, falling = (d // c) * c + (c + 1) // 2, True
                at += self.start + self.paused_ticks
                self.pending = (n, at, falling)
                self.load_tick = at
        else:
            self._start(n, now)
            if not self.gate:
                self.paused_at = self.start  # loaded, but GATE low holds the count
        self._reschedule(now)

    def _start(self, n: int, now: int) -> None:
        """Load N into the counting element at the next CLK and count from there."""
        self.count = n
        self.start = self.load_tick = now + 1
        self.paused_at, self.paused_ticks, self.pending = None, 0, None

    def set_gate(self, level: bool, now: int) -> None:
        if level == self.gate:
            return
        self._sync(now)
        self.gate = level
        mode = self.mode
        if level:
            if mode in (1, 5, 2, 3):  # a trigger: (re)load the count register
                if self.cr:
                    self._start(self.cr, now)
            elif self.paused_at is not None:  # modes 0, 4 resume
                self.paused_ticks += max(0, now - self.paused_at)
                self.paused_at = None
        elif mode in (0, 2, 3, 4) and self.start is not None:
            self.paused_at = max(now, self.start)
            if self.pending is not None:
                self.pending, self.load_tick = None, None
        self._reschedule(now)

    # -- reading ----------------------------------------------------------------------------

    def status(self, now: int) -> int:
        """The read-back status byte: OUT, NULL COUNT, RW, mode, BCD."""
        null = self.load_tick is None or now < self.load_tick
        return (
            (STATUS_OUT if self.out(now) else 0)
            | (STATUS_NULL_COUNT if null else 0)
            | self.rw << 4
            | self.mode << 1
            | int(self.bcd)
        )

    def _count_bytes(self, now: int) -> tuple[int, int]:
        value = self.counter(now) & 0xFFFF
        if self.bcd:
            value = to_bcd(value)
        return value & 0xFF, value >> 8

    def latch_count(self, now: int) -> None:
        if not self.latched_count:  # a second latch before the read is ignored
            self._sync(now)
            lsb, msb = self._count_bytes(now)
            self.latched_count = {RW_LSB: [lsb], RW_MSB: [msb]}.get(self.rw, [lsb, msb])

    def latch_status(self, now: int) -> None:
        if self.latched_status is None:
            self._sync(now)
            self.latched_status = self.status(now)

    def read_data(self, now: int) -> int:
        if self.latched_status is not None:
            value, self.latched_status = self.latched_status, None
            return value
        if self.latched_count:
            return self.latched_count.pop(0)
        self._sync(now)
        lsb, msb = self._count_bytes(now)
        if self.rw == RW_LSB:
            return lsb
        if self.rw == RW_MSB:
            return msb
        self.read_msb_next = not self.read_msb_next
        return lsb if self.read_msb_next else msb


@dataclass
class Pit8254:
    """The PC's 8254 at 0x40-0x43; channel 0's OUT drives `irq0`, channel 2's GATE is port 0x61's."""

    clock: Clock
    irq0: IrqLine | None = None
    channels: list[PitChannel] = field(init=False)

    max_access_size: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.channels = [PitChannel(i, self.clock, self.irq0 if i == 0 else None) for i in range(3)]

    def _now(self) -> int:
        return tick_at(self.clock.now_ns())

    def io_read(self, offset: int, size: int) -> int:
        if offset == 3:
            return 0xFF  # the control word register is write-only (the bus floats)
        return self.channels[offset].read_data(self._now())

    def io_write(self, offset: int, size: int, value: int) -> None:
        now = self._now()
        if offset < 3:
            self.channels[offset].write_data(value, now)
            return
        select, rw, mode, bcd = value >> 6, (value >> 4) & 3, (value >> 1) & 7, bool(value & 1)
        if select == 3:  # read-back: bits 1-3 select counters 0-2
            for i, ch in enumerate(self.channels):
                if value & (2 << i):
                    if not value & READ_BACK_STATUS:
                        ch.latch_status(now)
                    if not value & READ_BACK_COUNT:
                        ch.latch_count(now)
        elif rw == RW_LATCH:
            self.channels[select].latch_count(now)
        else:
            self.channels[select].control(rw, mode, bcd, now)

    def set_gate(self, channel: int, level: bool) -> None:
        self.channels[channel].set_gate(level, self._now())

    def reset(self) -> None:
        """System reset: every counter waits, in mode 0, for firmware to program it."""
        now = self._now()
        for ch in self.channels:
            ch.control(RW_WORD, 0, False, now)

    def out(self, channel: int) -> bool:
        """OUT of `channel` now (port 0x61 shows channel 2's)."""
        return self.channels[channel].out(self._now())

    @property
    def lost_ticks(self) -> int:
        """Channel 0 periods that passed while the loop was late and were not delivered."""
        return self.channels[0].lost_ticks
