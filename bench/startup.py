"""Start-up: from `python -m emu` to the guest's first instruction, on each backend.

The guest's first instruction is `out 0xf4` (exit), so the wall time of the whole process is
start-up plus tear-down. References in the same run: the bare interpreter (`python -c pass`),
and QEMU booting the same image with -kernel where QEMU is installed. In-process, the time from
`Machine(...)` to the first exit is measured too (no interpreter start, no imports).

    python bench/startup.py [--runs R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import best_of, kvm_available, qemu_seconds, tempdir, write_image

from emu.machine import Machine, MachineConfig

FIRST_IS_EXIT = b"\x31\xc0\xe6\xf4"  # xor eax, eax; out 0xf4, al


def process_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return time.perf_counter() - start


def in_process_seconds(image, accel: str) -> float:
    start = time.perf_counter()
    machine = Machine(MachineConfig(kernel=image, accel=accel))
    machine.run()
    elapsed = time.perf_counter() - start
    machine.close()
    return elapsed



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    image = write_image(FIRST_IS_EXIT, tempdir(), "first.elf")
    bare = best_of(args.runs, lambda: process_seconds([sys.executable, "-c", "pass"]))
    print(f"start-up to the first guest instruction, best of {args.runs}")
    print(f"  python -c pass (reference)           {bare:6.3f} s")
    accels = ["tcg"] + (["kvm"] if kvm_available() else [])
    for accel in accels:
        argv = [sys.executable, "-m", "emu", "--accel", accel, str(image)]
        total = best_of(args.runs, lambda argv=argv: process_seconds(argv))
        inproc = best_of(args.runs, lambda accel=accel: in_process_seconds(image, accel))
        print(f"  python -m emu --accel {accel}            {total:6.3f} s  = {total / bare:5.1f} x bare python"
              f"   (goal < 0.3 s)")  # fmt: skip
        print(f"    of which Machine() to first exit   {inproc * 1e3:6.1f} ms")
    if "kvm" not in accels:
        print("  --accel kvm: skipped (no usable /dev/kvm)")
    for accel in ("tcg",):
        q = qemu_seconds(image, accel, args.runs)
        if q is not None:
            ours = best_of(args.runs, lambda: process_seconds([sys.executable, "-m", "emu", str(image)]))
            print(f"  qemu-system-x86_64 -accel {accel} -kernel {q:6.3f} s  (emu tcg / QEMU = {ours / q:4.2f})")


if __name__ == "__main__":
    main()
