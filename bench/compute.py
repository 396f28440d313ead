"""Guest compute on tcg: emu's whole machine against raw Unicorn running the same code.

A `dec ecx; jnz` loop of N iterations runs (1) under emu (`Machine.run()`, every device and
thread in place) and (2) on a bare Unicorn instance with nothing but memory mapped, in the same
process. The ratio raw/emu is the fraction of Unicorn's speed emu keeps (goal: >= 0.9).
With QEMU installed, QEMU's TCG runs the same image too (its start-up time subtracted).

    python bench/compute.py [--iterations N] [--runs R]
"""

from __future__ import annotations

import argparse

from common import ENTRY, best_of, emu_seconds, exit_offset, loop_code, qemu_seconds, tempdir, timed, write_image
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc





def raw_unicorn_seconds(code: bytes) -> float:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 128 << 20)
    uc.mem_write(ENTRY, code)
    return timed(lambda: uc.emu_start(ENTRY, exit_offset(code)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.iterations
    code = loop_code(n)
    image = write_image(code, tempdir(), "compute.elf")
    raw = best_of(args.runs, lambda: raw_unicorn_seconds(code))
    emu = best_of(args.runs, lambda: emu_seconds(image))
    print(f"compute loop, {n} iterations ({2 * n} instructions), best of {args.runs}")
    print(f"  raw Unicorn     {raw:8.3f} s  {2 * n / raw / 1e6:8.1f} M insn/s")
    print(f"  emu --accel tcg {emu:8.3f} s  {2 * n / emu / 1e6:8.1f} M insn/s")
    print(f"  ratio raw/emu   {raw / emu:8.3f}   (goal >= 0.9)")
    # The same loop while the PIT ticks at 1 kHz: a timer thread ends the run at each deadline,
    # at the next block boundary (exact preemption: emu/tcg/last_block.c), and the PIT's
    # interrupts are delivered through the guest's IDT by emu.
    pit_1khz = bytes.fromhex("b034 e643 b0a9 e640 b004 e640")  # channel 0, mode 2, divisor 1193
    timed_image = write_image(pit_1khz + code, tempdir(), "compute-pit.elf")
    sliced = best_of(args.runs, lambda: emu_seconds(timed_image))
    print(f"  emu, 1 kHz PIT  {sliced:8.3f} s  {2 * n / sliced / 1e6:8.1f} M insn/s   ratio raw/emu {raw / sliced:.3f}"
          "  (runs preempted at each deadline, interrupts delivered)")
    qemu = qemu_seconds(image)
    if qemu is not None:
        trivial = qemu_seconds(write_image(loop_code(1), tempdir(), "trivial.elf"))
        net = max(qemu - trivial, 1e-9)
        print(f"  QEMU tcg        {net:8.3f} s net of {trivial:.3f} s start-up; ratio QEMU/emu {net / emu:.3f}")
    else:
        print("  QEMU tcg        not installed (apt-get install qemu-system-x86 for the reference)")


if __name__ == "__main__":
    main()
