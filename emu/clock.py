"""Host time for device models: a monotonic clock and a queue of timer deadlines.

Devices that count time (the 8254 PIT, the RTC's periodic interrupt, the UART's transmitter)
arm `Timer`s instead of running threads of their own. The machine's run loop fires the due
timers between guest runs and, while the guest runs, has the vCPU kicked at the next deadline,
so every device callback runs on the vCPU thread and device state needs no locks. This is the
shape of QEMU's QEMUTimer lists on one main loop.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Timer:
    """A one-shot deadline that calls `callback(now_ns)`; re-arm it from the callback to repeat."""

    clock: Clock
    callback: Callable[[int], None]
    name: str = ""
    deadline_ns: int | None = None
    _generation: int = 0

    def arm(self, deadline_ns: int) -> None:
        self.deadline_ns = deadline_ns
        self._generation += 1
        self.clock._push(self)

    def cancel(self) -> None:
        self.deadline_ns = None
        self._generation += 1

    @property
    def armed(self) -> bool:
        return self.deadline_ns is not None


@dataclass
class Clock:
    """Monotonic host time in nanoseconds plus the pending timers (a heap, lazily pruned)."""

    _heap: list[tuple[int, int, int, Timer]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)
    fired: int = 0
    on_armed: Callable[[int], None] | None = None  # told of each new deadline (a kicker to move earlier)

    @staticmethod
    def now_ns() -> int:
        return time.monotonic_ns()

    def timer(self, callback: Callable[[int], None], name: str = "") -> Timer:
        return Timer(self, callback, name)

    def _push(self, timer: Timer) -> None:
        assert timer.deadline_ns is not None
        heapq.heappush(self._heap, (timer.deadline_ns, next(self._seq), timer._generation, timer))
        if self.on_armed is not None:
            self.on_armed(timer.deadline_ns)

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap:
            deadline, _, gen, timer = heap[0]
            if gen == timer._generation and timer.deadline_ns == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def run_due(self, now_ns: int | None = None) -> int:
        """Fire every timer whose deadline has passed; returns how many fired."""
        now = self.now_ns() if now_ns is None else now_ns
        count = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, gen, timer = heapq.heappop(heap)
            if gen != timer._generation or timer.deadline_ns != deadline:
                continue
            timer.deadline_ns = None
            timer.callback(now)
            count += 1
        self.fired += count
        return count


@dataclass
class InstructionClock(Clock):
    """Virtual time from the instruction count (QEMU's `-icount shift=N`): 2**shift ns per
    instruction, advanced by whoever runs the guest one instruction at a time, and jumped to the
    next deadline while the guest halts. Timers then fire at the same instruction on every run
    and every backend, which makes traces repeatable."""

    shift: int = 3
    instructions: int = 0

    def now_ns(self) -> int:  # type: ignore[override]
        return self.instructions << self.shift

    def advance(self, instructions: int = 1) -> None:
        self.instructions += instructions

    def skip_to_next_deadline(self) -> bool:
        """A halted guest: move time to the next timer (False if none is armed)."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.instructions = max(self.instructions, -(-deadline >> self.shift))
        return True
