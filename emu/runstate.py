"""Run state: who may stop the vCPU, and how other threads look at a CPU that only one thread may touch.

A VMM's vCPU thread owns its CPU. KVM's vCPU ioctls must come from the thread that runs KVM_RUN
(Documentation/virt/kvm/api.rst, "vcpu ioctls ... must be issued from the same thread that
created the vcpu"), and Unicorn is not thread-safe at all. A monitor (`info registers`, `x`) or a
debugger (gdb reading memory, setting a breakpoint, single-stepping) lives on another thread, so
it cannot read the CPU itself: it asks the vCPU thread to do it, between two runs, and waits for
the answer. QEMU does the same with run_on_cpu() (cpus-common.c): the caller queues a function,
kicks the vCPU out of guest mode (qemu_cpu_kick: a signal on kvm, cpu_exit on TCG) and sleeps
until the vCPU thread has run it.

The run state says whether the vCPU may run guest code at all, in QEMU's words
(qapi/run-state.json): `running`; `paused` after the monitor's `stop`; `debug` when a debugger
stopped it (a breakpoint, a single step, gdb's Ctrl-C); `prelaunch` before the first
instruction with `-S`. A stopped vCPU thread waits in `checkpoint()` and still serves calls, so
gdb and the monitor can inspect and change the stopped machine; `cont` lets it go on.

Only the machine's loop (the vCPU thread) calls `checkpoint()`, between two runs: before it
starts a run and while the guest is halted. Every other method may be called from any thread.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class RunState(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"  # the monitor's `stop`
    DEBUG = "debug"  # stopped by a debugger: a breakpoint, a step, gdb's interrupt
    PRELAUNCH = "prelaunch"  # -S: before the first instruction

    @property
    def stopped(self) -> bool:
        return self is not RunState.RUNNING


@dataclass
class _Call:
    function: Callable[[], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class RunControl:
    """The vCPU's run state and the queue of functions other threads want run on it.

    `kick` stops the vCPU's current run (exactly, at an instruction boundary: VCpu.kick) and
    `wake` wakes the loop from a halt; `lock` is the device lock (Machine.lock), held while a
    queued function runs so that it sees the devices between two accesses, never inside one.
    """

    kick: Callable[[], None]
    wake: Callable[[], None]
    lock: threading.RLock
    state: RunState = RunState.RUNNING
    reason: str = ""  # why the vCPU stopped: "stop", "breakpoint", "step", "interrupt", "prelaunch"
    listeners: list[Callable[[RunState, str], None]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _calls: deque[_Call] = field(default_factory=deque)
    _thread: int | None = None  # the vCPU thread, while its loop runs
    _parked: bool = False  # the vCPU thread waits in checkpoint() with the vCPU stopped
    _ended: bool = False  # the loop has ended: calls run on the caller's thread

    # --- any thread ------------------------------------------------------------------------
    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the vCPU thread between two runs, under the device lock, and return
        what it returns (or raise what it raised). Before the loop starts and after it ends
        there is no vCPU thread to ask: then the caller runs it, under the lock."""
        with self._cond:
            direct = self._thread is None or self._ended or self._thread == threading.get_ident()
            if not direct:
                call = _Call(function)
                self._calls.append(call)
                self._cond.notify_all()
                parked = self._parked  # waiting in checkpoint(): the notify wakes it, no kick to leave behind
        if direct:
            with self.lock:
                return function()
        if not parked:  # running guest code, or halted: stop the run or the halt's sleep
            self.kick()
            self.wake()
        while not call.done.wait(0.5):
            with self._cond:
                if self._ended and not call.done.is_set():  # the loop ended before it got to it
                    self._calls.remove(call) if call in self._calls else None
                    break
        if not call.done.is_set():
            with self.lock:
                return function()
        if call.error is not None:
            raise call.error
        return call.result

    def stop(self, state: RunState = RunState.PAUSED, reason: str = "stop") -> None:
        """Stop the vCPU (the monitor's `stop`, gdb's interrupt) and return once it is stopped,
        so that what the caller does next sees a CPU that stands still."""
        with self._cond:
            if self.state is RunState.RUNNING:
                self.state, self.reason = state, reason
                notify = True
            else:
                notify = False
        if notify:
            self._notify(state, reason)
        self.call(lambda: None)  # returns when the vCPU thread has come back to checkpoint()

    def cont(self) -> None:
        """Let the vCPU run again (the monitor's `cont`, gdb's `c`)."""
        with self._cond:
            if self.state is RunState.RUNNING:
                return
            self.state, self.reason = RunState.RUNNING, ""
            self._cond.notify_all()
        self._notify(RunState.RUNNING, "")

    @property
    def stopped(self) -> bool:
        return self.state.stopped

    # --- the vCPU thread -------------------------------------------------------------------
    def start(self) -> None:
        """The loop starts on this thread: from now on calls come here."""
        with self._cond:
            self._thread, self._ended = threading.get_ident(), False

    def end(self) -> None:
        """The loop ended: serve what is queued (no one may wait forever), then run calls directly."""
        self._serve()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def enter(self, state: RunState, reason: str) -> None:
        """The vCPU thread stops itself (a breakpoint hit, a step done): the next checkpoint()
        parks it. Listeners (the gdb stub) hear of it now."""
        with self._cond:
            self.state, self.reason = state, reason
        self._notify(state, reason)

    def checkpoint(self, still: Callable[[], bool] = lambda: False) -> None:
        """Between two runs: run what other threads queued; while stopped, wait and serve.
        `still()` ends a wait early even when stopped (the machine must exit)."""
        while True:
            self._serve()
            with self._cond:
                if self._calls:
                    continue  # queued while parked, so without a kick: served before leaving
                if not self.state.stopped or still():
                    self._parked = False
                    return
                self._parked = True
                self._cond.wait(0.5)

    def _serve(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                call = self._calls.popleft()
            try:
                with self.lock:
                    call.result = call.function()
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
                call.error = error
            call.done.set()

    @property
    def parked(self) -> bool:
        return self._parked

    def pending(self) -> bool:
        """Something for checkpoint() to do: a queued call, or a stop to honour."""
        return bool(self._calls) or self.state.stopped

    def _notify(self, state: RunState, reason: str) -> None:
        for listener in list(self.listeners):
            listener(state, reason)

    def wake_waiters(self) -> None:
        """From any thread, and from a signal handler: a parked checkpoint() looks again (the
        machine must exit). It never blocks: a handler that interrupted this very thread inside
        the condition's lock would otherwise wait for itself; checkpoint() looks every 0.5 s anyway."""
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()
