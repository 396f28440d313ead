"""Test doubles shared by the device tests: a clock the test drives, a wire that records."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from emu.clock import Clock


@dataclass
class FakeClock(Clock):
    """A Clock whose time only moves when the test says so."""

    t: int = 1_000_000_000_000  # 1000 s of host uptime

    def now_ns(self) -> int:  # type: ignore[override]
        return self.t

    def set(self, t: int) -> int:
        """Jump to time `t` (a late loop) and fire whatever is due, once each."""
        self.t = t
        return self.run_due(t)

    def advance(self, ns: int) -> int:
        return self.set(self.t + ns)

    def run_until(self, t: int) -> int:
        """Move to `t` firing each timer exactly at its deadline (a loop that is never late)."""
        fired = 0
        while (deadline := self.next_deadline()) is not None and deadline <= t:
            self.t = max(self.t, deadline)
            fired += self.run_due(self.t)
        self.t = t
        return fired


@dataclass
class Wire:
    """An IrqLine that records what the device drove onto it."""

    clock: Clock | None = None
    level: bool = False
    rises: int = 0
    history: list[tuple[int, bool]] = field(default_factory=list)

    def set_level(self, level: bool) -> None:
        if level and not self.level:
            self.rises += 1
        self.level = level
        self.history.append((self.clock.now_ns() if self.clock else 0, level))


@dataclass
class FakeSystem:
    exits: list[int] = field(default_factory=list)
    resets: int = 0

    def request_exit(self, status: int) -> None:
        self.exits.append(status)

    def request_reset(self) -> None:
        self.resets += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def wire(clock: FakeClock) -> Wire:
    return Wire(clock)


@pytest.fixture
def system() -> FakeSystem:
    return FakeSystem()


@pytest.fixture
def make_wire(clock: FakeClock):
    return lambda: Wire(clock)
