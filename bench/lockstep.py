"""Lockstep comparison speed: instructions compared per second by `python -m emu diff`.

The reference, measured in the same run, is the host KVM's bare single-step rate: the same
guest stepped with KVM_GUESTDBG_SINGLESTEP and nothing else (one KVM_RUN per instruction, no
register reads), which bounds any lockstep that uses KVM single-steps. Also printed: emu's
single-step rate on each backend alone (Machine.step plus one get_state) and the cost of the
memory comparison's KVM_GET_DIRTY_LOG and the state reads (the kvm side's ioctls bound any
lockstep that compares the full state and memory after each step), and a steady-state window
(irqs64 after its start-up) next to hello64's start (rep batches, page-wide memsets).

    python bench/lockstep.py [--max N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from emu.accel import DebugExit
from emu.difftest.lockstep import Lockstep
from emu.machine import Machine, MachineConfig

IMAGE = Path(__file__).resolve().parents[1] / "firmware" / "build" / "hello64.elf"


class _Discard:
    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def bare_kvm_steps(limit: int) -> float:
    machine = Machine(MachineConfig(kernel=IMAGE, accel="kvm"))
    machine.uart.sink = _Discard()
    machine.start_stepping()  # COM1 input for the guest's port reads (none)
    try:
        vcpu = machine.vcpu
        start = time.perf_counter()
        steps = 0
        while steps < limit and machine.exit_status is None:
            if isinstance(vcpu.step(), DebugExit):
                steps += 1
            else:
                break
        return steps / (time.perf_counter() - start)
    finally:
        machine.close()


def state_ioctls_us(n: int = 3000) -> float:
    """KVM_GET_REGS + KVM_GET_SREGS, the least a full-state comparison reads after each step."""
    machine = Machine(MachineConfig(kernel=IMAGE, accel="kvm"))
    try:
        vcpu = machine.vcpu
        start = time.perf_counter()
        for _ in range(n):
            vcpu._get_regs()
            vcpu._get_sregs()
        return (time.perf_counter() - start) / n * 1e6
    finally:
        machine.close()


def emu_steps(accel: str, limit: int) -> float:
    machine = Machine(MachineConfig(kernel=IMAGE, accel=accel))
    machine.uart.sink = _Discard()
    machine.start_stepping()
    try:
        start = time.perf_counter()
        steps = 0
        while steps < limit:
            result = machine.step()
            machine.vcpu.get_state(msrs=False)  # as the lockstep reads it
            steps += 1
            if result.finished:
                break
        return steps / (time.perf_counter() - start)
    finally:
        machine.close()


def lockstep_rate(limit: int, image: Path = IMAGE, skip: int = 0) -> tuple[float, int, float]:
    """Instructions compared per second (after `skip` steps), and the cost of one
    KVM_GET_DIRTY_LOG (the memory comparison's per-step ioctl, one per RAM slot) in µs."""
    lockstep = Lockstep(image)
    lockstep.leader.uart.sink = _Discard()
    try:
        if skip:
            lockstep.run(skip)
        start = time.perf_counter()
        report = lockstep.run(limit)
        rate = report.compared / (time.perf_counter() - start)
        slot = lockstep.memory.slots[-1]
        t0 = time.perf_counter()
        for _ in range(1000):
            lockstep.follower.accel.get_dirty_log(slot)
        dirty_us = (time.perf_counter() - t0) * 1000
        return rate, report.compared, dirty_us * len(lockstep.memory.slots)
    finally:
        lockstep.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=5000)
    args = parser.parse_args()
    bare = bare_kvm_steps(args.max)
    tcg = emu_steps("tcg", args.max)
    kvm = emu_steps("kvm", args.max)
    state_us = state_ioctls_us()
    rate, compared, dirty_us = lockstep_rate(args.max)
    steady, steady_compared, _ = lockstep_rate(args.max, IMAGE.with_name("irqs64.elf"), skip=3000)
    print(f"hello64, first {args.max} instructions")
    print(f"  bare KVM single-step (reference)      {bare:9.0f} steps/s   ({1e6 / bare:5.1f} µs)")
    print(f"  emu step + get_state, tcg             {tcg:9.0f} steps/s   ({1e6 / tcg:5.1f} µs)")
    print(f"  emu step + get_state, kvm             {kvm:9.0f} steps/s   ({1e6 / kvm:5.1f} µs)")
    print(f"  KVM_GET_REGS + KVM_GET_SREGS                             ({state_us:5.1f} µs per step)")
    print(f"  KVM_GET_DIRTY_LOG, all RAM slots                         ({dirty_us:5.1f} µs per step)")
    floor = 1e6 / bare + state_us + dirty_us
    print(f"  the kvm side's ioctls alone (step, state, dirty log)   ({floor:5.1f} µs: at most {1e6 / floor:7.0f}/s)")
    print(f"  emu diff, compared in lockstep        {rate:9.0f} instructions/s ({compared} compared)"
          f"   lockstep/bare {rate / bare:5.2f}   (goal >= 30000/s)")  # fmt: skip
    print(f"  emu diff, irqs64 after 3000 steps     {steady:9.0f} instructions/s ({steady_compared} compared)"
          f"   lockstep/bare {steady / bare:5.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
