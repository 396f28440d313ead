"""Lockstep comparison speed: instructions compared per second by `python -m emu diff`.

The reference, measured in the same run, is the host KVM's bare single-step rate: the same
guest stepped with KVM_GUESTDBG_SINGLESTEP and nothing else (one KVM_RUN per instruction, no
register reads), which bounds any lockstep that uses KVM single-steps. Also printed: emu's
single-step rate on each backend alone (Machine.step plus one get_state), to show where the
time goes.

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


def emu_steps(accel: str, limit: int) -> float:
    machine = Machine(MachineConfig(kernel=IMAGE, accel=accel))
    machine.uart.sink = _Discard()
    machine.start_stepping()
    try:
        start = time.perf_counter()
        steps = 0
        while steps < limit:
            result = machine.step()
            machine.vcpu.get_state()
            steps += 1
            if result.finished:
                break
        return steps / (time.perf_counter() - start)
    finally:
        machine.close()


def lockstep_rate(limit: int) -> tuple[float, int]:
    lockstep = Lockstep(IMAGE)
    lockstep.leader.uart.sink = _Discard()
    try:
        start = time.perf_counter()
        report = lockstep.run(limit)
        return report.compared / (time.perf_counter() - start), report.compared
    finally:
        lockstep.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=5000)
    args = parser.parse_args()
    bare = bare_kvm_steps(args.max)
    tcg = emu_steps("tcg", args.max)
    kvm = emu_steps("kvm", args.max)
    rate, compared = lockstep_rate(args.max)
    print(f"hello64, first {args.max} instructions")
    print(f"  bare KVM single-step (reference)      {bare:9.0f} steps/s")
    print(f"  emu step + get_state, tcg             {tcg:9.0f} steps/s")
    print(f"  emu step + get_state, kvm             {kvm:9.0f} steps/s")
    print(f"  emu diff, compared in lockstep        {rate:9.0f} instructions/s ({compared} compared)"
          f"   lockstep/bare {rate / bare:5.2f}   (goal >= 30000/s)")  # fmt: skip


if __name__ == "__main__":
    main()
