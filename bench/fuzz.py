"""Differential fuzzing speed: sequences run on both backends and compared, per second per core.

One worker (one core) runs N random sequences of 8 instructions on tcg and kvm from the same
state (emu.difftest.fuzz); the reference in the same run is the cost of the two backends'
bare `run` of an empty sequence (a lone hlt), the floor of any such comparison.

    python bench/fuzz.py [--count N]
"""

from __future__ import annotations

import argparse
import random
import time

from emu.difftest import fuzz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    worker = fuzz.Worker()
    try:
        rng = random.Random(1)
        state = worker.initial_state(rng)
        start = time.perf_counter()
        for _ in range(args.count):
            worker.tcg.run(b"", state)
            worker.kvm.run(b"", state)
        floor = args.count / (time.perf_counter() - start)
        sequences = [(fuzz.generate(rng, 8), worker.initial_state(rng)) for _ in range(args.count)]
        start = time.perf_counter()
        findings = sum(worker.verdict(sequence, state) is not None for sequence, state in sequences)
        rate = args.count / (time.perf_counter() - start)
    finally:
        worker.close()
    print(f"{args.count} sequences of 8 instructions, one core")
    print(f"  empty sequence on both backends (floor)   {floor:8.0f}/s")
    print(f"  fuzz: generate-free run + compare        {rate:8.0f}/s   ratio to floor {rate / floor:5.2f}"
          f"   ({findings} differences)")  # fmt: skip


if __name__ == "__main__":
    main()
