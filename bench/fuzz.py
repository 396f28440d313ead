"""Differential fuzzing speed: sequences run on both backends and compared, per second per core.

One worker (one core) runs N random sequences of 8 instructions on tcg and kvm from the same
start (emu.difftest.fuzz), N at CPL0 and N at CPL3, and reports each ring's rate. The reference
for each ring, measured in the same run, is the two backends' bare `run` of an empty sequence
(a lone hlt; at CPL3 it raises #GP, delivered to its stub), the floor of any such comparison.
CPL0 compares tcg with KVM's instruction emulator; CPL3 (native on kvm_pvm hosts) with the CPU.

    python bench/fuzz.py [--count N]
"""

from __future__ import annotations

import argparse
import random
import time

from emu.difftest import fuzz


def measure(worker: fuzz.Worker, ring: int, count: int) -> tuple[float, float, int]:
    """(floor, rate, differences) at `ring`: empty runs per second, sequences per second."""
    rng = random.Random(ring)
    start = worker.start(rng, ring)
    begin = time.perf_counter()
    for _ in range(count):
        worker.tcg.run(b"", start)
        worker.kvm.run(b"", start)
    floor = count / (time.perf_counter() - begin)
    sequences = [(fuzz.generate(rng, 8), worker.start(rng, ring)) for _ in range(count)]
    begin = time.perf_counter()
    differences = sum(worker.verdict(sequence, start) is not None for sequence, start in sequences)
    return floor, count / (time.perf_counter() - begin), differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    worker = fuzz.Worker()
    try:
        results = {ring: measure(worker, ring, args.count) for ring in fuzz.RINGS}
    finally:
        worker.close()
    print(f"{args.count} sequences of 8 instructions per ring, one core")
    for ring, (floor, rate, differences) in results.items():
        print(f"  ring {ring}: empty sequence on both backends (floor) {floor:6.0f}/s;"
              f"  fuzz, generate-free run + compare {rate:6.0f}/s   ratio to floor {rate / floor:4.2f}"
              f"   ({differences} differences)")  # fmt: skip


if __name__ == "__main__":
    main()
