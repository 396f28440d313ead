"""The C front of the TLB fill (emu.tcg.fill_cache): it changes where a fill is answered, never
the answer; without a compiler emu runs the same MMU in Python and says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emu.machine import Machine, MachineConfig
from emu.tcg import fill_cache

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "firmware" / "build"
EXPECTED = ROOT / "firmware" / "expected"


def run_counters(guest: str, mmu: str) -> tuple[dict, int | None]:
    machine = Machine(MachineConfig(kernel=BUILD / f"{guest}.elf", accel="tcg", mmu=mmu))
    try:
        machine.run()
        softmmu = machine.vcpu.softmmu
        return {"fill_path": softmmu.fill_path, **softmmu.counters.as_dict()}, machine.exit_status
    finally:
        machine.close()


@pytest.mark.parametrize("guest", ["mmu32", "mmu64"])
def test_front_serves_repeated_fills_with_python_answers(guest: str) -> None:
    """The MMU guests switch address spaces, edit live page tables and take #PF: the C front must
    serve most fills, and the guest must see the same faults as with every fill in Python."""
    if fill_cache.load()[0] is None:
        pytest.skip(fill_cache.load()[1])
    native, status = run_counters(guest, "shadow")
    python, python_status = run_counters(guest, "shadow-python")
    assert native["fill_path"] == "C" and python["fill_path"].startswith("python")
    assert status == python_status
    assert python["native_hits"] == 0 and native["native_hits"] > native["shadow_hits"] // 2
    for key in ("page_faults", "walker_disagreements"):
        assert native[key] == python[key], key
    # Page-table write traps depend on when the re-protecting flush ran, which is on a wall-clock
    # interval (softmmu.FLUSH_INTERVAL_NS): on a loaded host the two runs differ by a few.
    traps = native["pt_write_traps"], python["pt_write_traps"]
    assert min(traps) > 0 and abs(traps[0] - traps[1]) <= max(3, max(traps) // 10), traps
    assert native["walker_disagreements"] == 0


def test_build_is_cached_by_source_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        first = fill_cache.build()
    except OSError as error:
        pytest.skip(f"no C compiler: {error}")
    assert first.parent == tmp_path / "emu" and first.name.startswith("fill_cache-")
    mtime = first.stat().st_mtime_ns
    assert fill_cache.build() == first and first.stat().st_mtime_ns == mtime  # not rebuilt
    assert not list(first.parent.glob("*.partial"))


def test_without_a_compiler_the_same_mmu_runs_in_python(tmp_path: Path) -> None:
    """A host without cc: same guest output, and --stats says where fills are served."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path), CC=str(tmp_path / "no-such-cc"))
    stats = tmp_path / "stats.json"
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", "tcg", "--stats", "--stats-json", str(stats),
                             str(BUILD / "mmu64.elf")], capture_output=True, env=env, timeout=120, check=False)  # fmt: skip
    assert result.stdout == (EXPECTED / "mmu64.txt").read_bytes()
    mmu = json.loads(stats.read_text())["mmu"]
    assert mmu["fill_path"].startswith("python (C front unavailable:") and mmu["native_hits"] == 0
    assert "fills in python (C front unavailable:" in result.stderr.decode()
    assert not list((tmp_path / "emu").glob("*.so"))
