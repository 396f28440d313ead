"""`python -m emu fuzz`: random instruction sequences on tcg and kvm from the same state."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import requires_kvm

from emu.difftest import fuzz

pytestmark = [requires_kvm, pytest.mark.kvm]


def test_the_table_gives_valid_instructions_of_every_class() -> None:
    rng = random.Random(7)
    sequence = fuzz.generate(rng, 400)  # generate() checks each encoding with capstone
    assert {i.klass for i in sequence} == {k for k, _, _ in fuzz.TABLE}


def test_a_difference_is_found_and_reduced_to_its_instruction() -> None:
    """A planted bug (kvm's result has rbx flipped after any bswap) is reported at the bswap,
    and the sequence is reduced to it alone."""
    worker = fuzz.Worker()
    try:
        real_run = worker.kvm.run

        def buggy(code: bytes, state):
            result = real_run(code, state)
            if any(code[k] == 0x0F and 0xC8 <= code[k + 1] <= 0xCF for k in range(len(code) - 1)):
                result.rbx ^= 1
            return result

        worker.kvm.run = buggy
        for n in range(400):
            rng = random.Random(n)
            sequence = fuzz.generate(rng, 8)
            state = worker.initial_state(rng)
            if any(i.mnemonic == "bswap" for i in sequence):
                break
        found = worker.verdict(sequence, state)
        assert found is not None and found["instruction"].startswith("bswap") and set(found["fields"]) == {"rbx"}
        reduced = worker.reduce(sequence, state)
        assert [i.mnemonic for i in reduced] == ["bswap"]
    finally:
        worker.close()


def test_a_campaign_runs_and_resumes(tmp_path: Path) -> None:
    def campaign(count: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emu", "fuzz", "--count", str(count), "--workers", "2",
                               "--corpus", str(tmp_path)], capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip

    first = campaign(300)
    assert first.returncode == 0, first.stdout + first.stderr  # no findings: none are known today
    assert "300 sequences of 8 instructions" in first.stdout and "shift-cl" in first.stdout
    assert json.loads((tmp_path / "campaign.json").read_text())["done"] == 300
    second = campaign(500)
    assert "200 sequences of 8 instructions" in second.stdout  # resumed where the first stopped
    assert json.loads((tmp_path / "campaign.json").read_text())["done"] == 500


def test_a_reproducer_image_runs_under_diff(tmp_path: Path) -> None:
    """A finding's sequence and registers, as a multiboot image: long mode, the registers, the
    sequence, exit. `emu diff` runs it to the end (here the sequence is one without a bug)."""
    from emu.difftest import reproducer

    state = {r: (i + 1) * 0x0101_0101_0101 for i, r in enumerate(reproducer.REGISTERS)} | {"rflags": 0x2}
    image = tmp_path / "finding.elf"
    if not reproducer.build(bytes.fromhex("48c1e005480fc8"), state, image):  # shl rax, 5; bswap rax
        pytest.skip("GNU as/ld not installed")
    result = subprocess.run([sys.executable, "-m", "emu", "diff", str(image)], capture_output=True, text=True,
                            timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0 and "the guest ended (exit status 1)" in result.stdout, result.stdout
    traced = subprocess.run([sys.executable, "-m", "emu", "trace", "--format", "jsonl", str(image)],
                            capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    records = [json.loads(line) for line in traced.stdout.splitlines()]
    shl = next(r for r in records if r["asm"] == "shl rax, 5")
    assert records[records.index(shl) + 1]["asm"] == "bswap rax"
    assert json.loads(traced.stdout.splitlines()[records.index(shl) - 10])["asm"].startswith("movabs")
