"""Snapshots of a running machine's counters, taken from another thread, and their history.

A live view is what `kvm_stat` and `top` do: read cumulative counters now and again, and show
the differences divided by the time between the two reads. The counters only ever grow, so the
reader needs no lock and the vCPU pays nothing but the counting it already does; a rate is
(count now - count then) / (time now - time then).

What makes this delicate is the reader's thread. The vCPU thread changes these counters while
guest code runs, and the reader must not disturb it:
- Unicorn is not thread-safe: no call into it (registers, memory, emu_stop) from here.
- The shadow MMU's `counters` folds the C front's numbers into Python's as it reads them, and
  absorbs the C front's walk log into the shadow table: that is the vCPU thread's work. The
  sampler reads only plain values instead: the C front's hit and walk counters (C uint64 loads
  through ctypes) and two Python ints that only the vCPU thread writes (SoftMmu.fills_so_far).
- A count that lives in two places for a while (tcg's port IO, counted in the hook and folded
  into ExitStats after each emu_start; guest time, added after each run) is read so that a look
  between the two stores can miss a little for one sample, never count it twice: the next
  sample has it. A run or a halt in progress is counted up to now from a (total before, start)
  tuple the vCPU thread stores in one assignment (ExitStats.running, Machine.halted), so that
  the reader sees both halves of one state.
- ExitStats.counts is a dict whose keys never change; dict() copies it in one step under the GIL.

snapshot() is all of that as one JSON-ready dict; the monitor's `info stats json` returns it
(emu top reads it across processes). Sampler keeps a history of them at a fixed interval for
`--stats live` and `--plot`; it must stop before the machine closes (the C front is freed then).

Clocks: every timestamp is CLOCK_MONOTONIC in ns. tcg marks its runs with time.perf_counter_ns,
which on Linux is the same clock (time.get_clock_info says clock_gettime(CLOCK_MONOTONIC)).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..accel import ExitReason
from .cputime import cpu_times

if TYPE_CHECKING:
    from ..machine import Machine

SNAPSHOT_VERSION = 1
MAX_HISTORY = 2048  # samples kept for the plot; past that every other one is dropped (see Sampler)


def _so_far(mark: tuple[int, int] | None, total: int, now: int) -> int:
    """A time total including the stretch in progress: (total before it, its start) if one is."""
    return total if mark is None else mark[0] + max(0, now - mark[1])


def _interrupts(machine: Machine, exits: dict[ExitReason, int]) -> tuple[int, str]:
    if machine.irqchip is not None:  # KVM's irqchip injects by itself: emu sees the lines it drives
        counters = machine.irqchip.counters
        return counters.irq_line_ioctls + counters.irqfd_writes, "irq line changes (KVM irqchip)"
    return exits[ExitReason.INTERRUPT], "injected"


def snapshot(machine: Machine) -> dict:
    """The machine's cumulative counters now, safe to call from any thread while it runs: exits
    by reason, instructions (tcg with counting on), TLB fills (tcg's shadow MMU), interrupts,
    emu's guest and idle time, and the /proc times (emu.liveview.cputime). Timestamps in
    monotonic ns; JSON-ready (the monitor's `info stats json`)."""
    vcpu = machine.vcpu
    stats = vcpu.stats
    running, halted = stats.running, machine.halted  # the marks first, then the clock (see _so_far)
    exits = dict(stats.counts)
    if hasattr(vcpu, "io_exits_so_far"):  # tcg: port IO of the run in progress
        exits[ExitReason.IO] = vcpu.io_exits_so_far()
    now = time.monotonic_ns()
    instructions = vcpu.instructions_so_far() if hasattr(vcpu, "instructions_so_far") else stats.instructions
    interrupts, interrupts_kind = _interrupts(machine, exits)
    if hasattr(vcpu, "guest_ns_so_far"):  # tcg: less the hooks' time in the run so far
        guest_ns = vcpu.guest_ns_so_far(now)
    else:
        guest_ns = _so_far(running, stats.guest_ns, now)
    tlb = None
    softmmu = getattr(vcpu, "softmmu", None)
    if softmmu is not None:
        in_c, in_python, page_faults = softmmu.fills_so_far()
        tlb = {"fills": in_c + in_python, "fills_c": in_c, "fills_python": in_python, "page_faults": page_faults}
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    if machine.vcpu_tid is not None:
        names[machine.vcpu_tid] = f"vcpu ({names.get(machine.vcpu_tid, 'thread')})"
    return {
        "version": SNAPSHOT_VERSION,
        "pid": os.getpid(),
        "accel": machine.accel.name,
        "t_ns": now,
        "started_ns": machine.started_ns,
        "exits": {reason.value: n for reason, n in exits.items() if n},
        "instructions": instructions,
        "tlb": tlb,
        "interrupts": interrupts,
        "interrupts_kind": interrupts_kind,
        "guest_ns": guest_ns,
        "idle_ns": _so_far(halted, machine.idle_ns, now),
        "cpu": cpu_times(machine.vcpu_tid, names),
    }


@dataclass
class Sampler:
    """A daemon thread that takes a snapshot every `interval` seconds (from start() to stop(),
    one at each end too) into `history`, and hands each new one with its predecessor to
    `on_sample` (--stats live prints them). A long run keeps its whole span: when the history
    reaches MAX_HISTORY, every other sample goes, so the plot's resolution halves instead."""

    machine: Machine
    interval: float = 1.0
    on_sample: Callable[[dict, dict], None] | None = None
    history: list[dict] = field(default_factory=list)
    errors: int = 0  # samples that failed (a /proc read, a thread gone); the run goes on
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"sampling interval {self.interval}: must be above 0 s")

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._run, name="emu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take a last sample (the run's end). Idempotent."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._sample()

    def samples(self) -> list[dict]:
        """A copy of the history so far (for the monitor's `plot FILE` while the run goes on)."""
        with self._lock:
            return list(self.history)

    def _run(self) -> None:
        deadline = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            self._sample()
            deadline += self.interval
            if deadline < time.monotonic():  # fell behind (a stopped process): no burst to catch up
                deadline = time.monotonic() + self.interval

    def _sample(self) -> None:
        try:
            current = snapshot(self.machine)
        except (OSError, ValueError):
            self.errors += 1
            return
        with self._lock:
            previous = self.history[-1] if self.history else None
            self.history.append(current)
            if len(self.history) > MAX_HISTORY:
                self.history[:] = self.history[:-1:2] + self.history[-1:]  # every other, the newest kept
        if previous is not None and self.on_sample is not None:
            try:
                self.on_sample(previous, current)
            except (OSError, ValueError):  # stderr gone (a closed pipe), an interval of no length
                self.errors += 1
