"""bench/virtio.py runs end to end with tiny sizes and prints its ratio lines (not a timed test:
the figures are not checked, only that each comparison was measured and printed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import requires_kvm

BENCH = Path(__file__).resolve().parents[1] / "bench" / "virtio.py"
TINY = ["--disk-mib", "1", "--count-4k", "20", "--count-rng", "20", "--runs", "1"]


def bench(*options: str) -> str:
    argv = [sys.executable, str(BENCH), *TINY, *options]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@requires_kvm
@pytest.mark.kvm
def test_bench_virtio_kvm_and_tcg():
    out = bench("--no-qemu")
    assert "dd bs=1M" in out and "dd bs=4k" in out
    for accel in ("tcg", "kvm"):
        assert sum(line.split()[:1] == [accel] for line in out.splitlines()) == 2, out  # blk-seq and blk-4k rows
    assert "ioeventfd on/off, irqchip user" in out and "irqchip kernel (irqfd) / user (KVM_INTERRUPT)" in out
    assert "notify exits 1.00" in out  # --ioeventfd off: the doorbell is an exit, one per request
    assert "irqfd_writes" in out and "KVM_INTERRUPT 1.00" in out


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_bench_virtio_tcg_against_qemu():
    out = bench("--accel", "tcg")
    assert "kvm: skipped (--accel tcg)" in out and "comparisons skipped" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  tcg")]
    assert len(rows) == 2 and all(len(row) == 6 and "-" not in row for row in rows), out  # emu, qemu, emu/qemu
