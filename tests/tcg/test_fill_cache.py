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


def test_c_walker_agrees_with_emus_walker() -> None:
    """fill_cache.c walks 4-level page tables itself (walk4). On random tables (present or not,
    R/W, U/S, XD, large pages, reserved bits, tables outside RAM), for every privilege and
    access kind: where it answers, emu.mmu.walk must give the same frame, rights and tables and
    leave the same A/D bits; where emu.mmu.walk faults, the C walker must not answer."""
    import ctypes
    import random

    from emu.accel import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_NXE
    from emu.memory import GuestMemory
    from emu.mmu.walk import CR4_SMEP, Access, PageFault, PagingMode, walk_page_tables

    library, why = fill_cache.load()
    if library is None:
        pytest.skip(why)
    memory = GuestMemory(4 << 20)
    rng = random.Random(1234)
    frames = memory.size >> 12
    handle = library.lib.fc_create(None, None, None, None, 0, 0, 0, 0, 0, 0, 0, 0, frames)
    front = fill_cache.FillCache(library, handle, frames)
    front.set_ram([(r.guest_address, r.end, memory.host_address + r.host_offset) for r in memory.ranges])
    out = (ctypes.c_uint64 * fill_cache.WALKED_WORDS)()

    def entry(table_frames: list[int]) -> int:
        kind = rng.random()
        value = rng.choice(table_frames) << 12 if kind < 0.85 else rng.randrange(1 << 40) & ~0xFFF
        value |= rng.getrandbits(3) | rng.choice([0, 0x20, 0x40, 0x60]) | (0x80 if rng.random() < 0.15 else 0)
        if rng.random() < 0.2:
            value |= 1 << 63
        if rng.random() < 0.03:
            value |= 1 << rng.randrange(40, 52)  # a reserved address bit
        if rng.random() < 0.7:
            value |= 1  # mostly present
        return value

    table_frames = list(range(0x100, 0x140))
    answered = faulted = 0
    try:
        for round_ in range(40):
            for frame in table_frames:  # fresh random tables each round
                memory.write(frame << 12, b"".join(entry(table_frames).to_bytes(8, "little") for _ in range(512)))
            for _ in range(300):
                cr0 = CR0_PG | CR0_PE | (CR0_WP if rng.random() < 0.7 else 0)
                cr4 = CR4_PAE | (CR4_SMEP if rng.random() < 0.5 else 0)
                efer = EFER_LMA | (EFER_NXE if rng.random() < 0.7 else 0)
                cr3 = rng.choice(table_frames) << 12
                linear = rng.randrange(1 << 48) & ~0xFFF
                linear = linear | (0xFFFF << 48) if linear >> 47 else linear
                access, user = rng.choice(list(Access)), rng.random() < 0.5
                before = memory.read(0x100000, 0x40000)
                got = library.lib.fc_walk(handle, cr0, cr3, cr4, efer, linear, (16, 17, 18)[access], user, out)
                after_c = memory.read(0x100000, 0x40000)
                memory.write(0x100000, before)
                try:
                    t = walk_page_tables(memory.page_walker_view(), PagingMode(cr0, cr3, cr4, efer), linear, access, user)
                except PageFault:
                    assert not got, (round_, hex(linear), access, user)
                    faulted += 1
                    continue
                if not got:
                    continue  # left to Python: allowed (it only answers plain walks)
                answered += 1
                assert memory.read(0x100000, 0x40000) == after_c, "A/D bits differ"
                ntables = out[5]
                assert out[3] == t.physical & ~0xFFF
                assert tuple(out[6 : 6 + ntables]) == t.tables
                assert bool(out[4] & 1) == t.writable and bool(out[4] & 2) == t.executable
                assert bool(out[4] & 8) == t.dirty
    finally:
        front.close()
    assert answered > 500 and faulted > 500, (answered, faulted)
