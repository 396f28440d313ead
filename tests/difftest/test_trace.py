"""`python -m emu trace`: one record per instruction, text or JSON lines (tcg here; the kvm
side is compared with it in test_kvm_lockstep.py)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HELLO64 = ROOT / "firmware" / "build" / "hello64.elf"


def emu_trace(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", "trace", *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


def test_text_trace_with_symbols_and_changes() -> None:
    result = emu_trace("--max", "10", str(HELLO64))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 10
    assert lines[0].split() == ["0", "0010:0010000c", "<_start>", "fa", "cli", "rip=0x10000d"]
    assert "shr ecx, 2" in lines[7] and "rcx=0x2820" in lines[7]
    assert "10 instructions on tcg" in result.stderr


def test_jsonl_trace_to_a_file_until_the_guest_exits(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    result = emu_trace("--format", "jsonl", "-o", str(out), str(HELLO64))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["asm"] == "cli" and records[-1]["asm"] == "out 0xf4, eax"
    assert [r["i"] for r in records] == list(range(len(records)))
    assert "exit status 1" in result.stderr
    # each record's RIP is where the previous one left it (no instruction is missing)
    for previous, record in itertools.pairwise(records):
        if "rip" in previous["changes"]:
            assert previous["changes"]["rip"] == record["rip"]


def test_bad_image_is_one_line(tmp_path: Path) -> None:
    result = emu_trace(str(tmp_path / "missing.elf"))
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "no such file" in result.stderr


def test_deterministic_traces_repeat_exactly(tmp_path: Path) -> None:
    """With --deterministic, time is the instruction count (as qemu -icount): idle64's PIT
    interrupts arrive at the same instructions on every run, and the traces are identical."""
    idle64 = ROOT / "firmware" / "build" / "idle64.elf"
    traces = []
    for n in range(2):
        out = tmp_path / f"{n}.jsonl"
        result = emu_trace("--deterministic", "--format", "jsonl", "-o", str(out), str(idle64))
        assert result.returncode == 0 and "exit status 1" in result.stderr, result.stderr
        traces.append(out.read_text())
    assert traces[0] == traces[1]
    assert traces[0].count('"interrupt":32') >= 20
