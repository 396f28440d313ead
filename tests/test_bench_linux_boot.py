"""bench/linux_boot.py parses its options and shows what it would run, without booting anything
(the boots themselves take minutes on tcg: the script is run by hand, not by the suite)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "linux_boot.py"


def bench(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *options], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def test_dry_run_shows_each_row_with_the_options() -> None:
    run = bench("--dry-run", "--mmu", "unicorn", "--append", "console=ttyS0 quiet", "--runs", "3")
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith(("  emu ", "  qemu "))]
    emu = [row for row in rows if row[0] == "emu"]
    assert [row[1] for row in emu] == ["bzImage", "PVH"]
    assert all("--mmu" in row and row[row.index("--mmu") + 1] == "unicorn" for row in emu)
    assert all("'console=ttyS0 quiet'" in line for line in run.stdout.splitlines() if line.startswith("  emu "))
    assert "$VMLINUX" in " ".join(emu[1]) and "$KERNEL" in " ".join(emu[0])
    qemu = [row for row in rows if row[0] == "qemu"]
    assert len(qemu) == (2 if shutil.which("qemu-system-x86_64") else 0)
    for row in qemu:
        assert {"-accel", "tcg", "-machine", "pc", "-nographic", "-no-reboot"} <= set(row)
    assert "3 run(s) of each" in run.stdout and "--stats-json" in run.stdout  # --count: one more boot, counted


def test_no_qemu_and_default_mmu() -> None:
    run = bench("--dry-run", "--no-qemu", "--no-count")
    assert run.returncode == 0, run.stderr
    assert "QEMU: --no-qemu" in run.stdout and "emu --mmu default" in run.stdout
    assert "qemu-system" not in run.stdout and "--mmu" not in run.stdout.split("\n", 1)[1]
    assert "--stats-json" not in run.stdout


def test_bad_options_are_refused() -> None:
    assert bench("--runs", "0", "--dry-run").returncode == 2
    assert bench("--mmu", "bogus", "--dry-run").returncode == 2


def test_boot_times_the_prompt_after_ready_and_ends_the_vm(monkeypatch) -> None:
    """boot() on a stand-in for a VM: a prompt before "emu-linux: ready" does not count, and the
    process is ended (SIGTERM) as soon as the real prompt is seen."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    import linux_boot  # bench/ is not a package: from its directory

    script = ("import sys, time\n"
              "sys.stdout.write('/ # early\\n'); sys.stdout.flush(); time.sleep(0.3)\n"
              "sys.stdout.write('emu-linux: ready\\n'); sys.stdout.flush(); time.sleep(0.3)\n"
              "sys.stdout.write('/ # '); sys.stdout.flush(); time.sleep(60)\n")  # fmt: skip
    start = time.perf_counter()
    b = linux_boot.boot([sys.executable, "-c", script], timeout=30)
    assert 0.3 <= b.ready < b.prompt < 10 and b.prompt - b.ready >= 0.25
    assert 0 < b.cpu < b.prompt  # the stand-in mostly sleeps
    assert time.perf_counter() - start < 15  # ended, not waited for


def test_a_kernel_panic_fails_the_row_at_once(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))
    import linux_boot  # bench/ is not a package: from its directory

    script = ("import sys, time\n"
              "sys.stdout.write('[ 1.0] Kernel panic - not syncing: VFS: Unable to mount root fs\\n')\n"
              "sys.stdout.flush(); time.sleep(60)\n")  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(linux_boot.BootFailed, match="kernel panic") as failed:
        linux_boot.boot([sys.executable, "-c", script], timeout=30)
    assert b"Unable to mount root fs" in failed.value.args[1]
    assert time.perf_counter() - start < 15
