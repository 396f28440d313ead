"""KVM memory slots against the real /dev/kvm: one slot per RAM range, ROM as a read-only slot,
dirty-page logging, and what --stats says about KVM's memory management."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from asm import assemble, requires_as
from memguest import CODE, RESULTS, make_guest

from emu.kvm_accel import api
from emu.kvm_accel.vm import DIRTY_LOG_INTERVAL_NS, KvmAccelerator, second_stage_translation
from emu.memory import FOUR_GIB, GuestMemory, Rom

pytestmark = pytest.mark.kvm

MIB, GIB = 1 << 20, 1 << 30
FIRMWARE = Path(__file__).resolve().parents[2] / "firmware" / "build"


def test_one_slot_per_ram_range() -> None:
    memory = GuestMemory.pc(5000 * MIB)
    accel = KvmAccelerator(memory)
    try:
        for region in memory.regions():
            accel.add_memory_region(region)
        slots = [(s.slot, s.region.guest_address, s.region.size, s.region.host_address - memory.host_address, s.flags)
                 for s in accel.slots]  # fmt: skip
        assert slots == [
            (0, 0, 0xA0000, 0, 0),
            (1, 0x100000, 3 * GIB - 0x100000, 0x100000, 0),
            (2, FOUR_GIB, 5000 * MIB - 3 * GIB, 3 * GIB, 0),
        ]
        memory.write_u32(FOUR_GIB + 0x10, 0x600DF00D)
        assert accel.read_guest_physical(FOUR_GIB + 0x10, 4) == (0x600DF00D).to_bytes(4, "little")
    finally:
        accel.close()
        memory.close()


@requires_as
def test_rom_is_a_readonly_slot_and_a_store_is_an_mmio_exit() -> None:
    """A ROM in the legacy hole at 0xF0000 (where the BIOS sits): the guest reads it without an
    exit; its store comes out as KVM_EXIT_MMIO and the ROM keeps its bytes."""
    rom = Rom(0xF0000, (0x0123_4567_89AB_CDEF).to_bytes(8, "little") + b"BIOS", name="bios")
    guest = make_guest("kvm", GuestMemory.pc(16 * MIB), extra_regions=(rom.region(),))
    try:
        assert guest.accel.slots[-1].flags == api.KVM_MEM_READONLY
        guest.start(assemble(f"""
            mov 0xf0000, %rax
            mov %rax, {RESULTS:#x}
            movq $0x1234, 0xf0000
            mov 0xf0000, %rcx
            mov %rcx, {RESULTS + 8:#x}
            hlt
        """, CODE))  # fmt: skip
        guest.run_to_halt()
        assert guest.io.mmio == [("write", 0xF0000, 8, 0x1234)]  # reads were served from the slot
        assert guest.memory.read_u64(RESULTS) == guest.memory.read_u64(RESULTS + 8) == 0x0123_4567_89AB_CDEF
        assert rom.read(0, 12) == (0x0123_4567_89AB_CDEF).to_bytes(8, "little") + b"BIOS"
        assert rom.read(12, 4) == b"\xff" * 4  # padding to the page
    finally:
        guest.close()
        rom.close()


@requires_as
def test_dirty_log_counts_exactly_the_pages_the_guest_wrote() -> None:
    """Six stores to five pages in two slots give five dirty pages; a second run adds what it
    wrote; host writes (loader, page tables) are not logged; a read clears KVM's bitmap."""
    guest = make_guest("kvm", GuestMemory.pc(16 * MIB))
    accel: KvmAccelerator = guest.accel  # type: ignore[assignment]
    try:
        accel.enable_dirty_log()
        assert [s.flags for s in accel.slots] == [api.KVM_MEM_LOG_DIRTY_PAGES] * 2
        guest.start(assemble("""
            movq $1, 0x50000
            movq $2, 0x300000
            movq $3, 0x300ff8
            movq $4, 0x301000
            movq $5, 0x5ff000
            movq $6, 0xe00000
            hlt
        """, CODE))  # fmt: skip
        guest.run_to_halt()
        accel.sync_dirty_log(final=True)
        assert accel.dirty_pages() == [0x50000, 0x300000, 0x301000, 0x5FF000, 0xE00000]
        assert (accel.dirty.pages, accel.dirty.reported_pages, accel.dirty.reads) == (5, 5, 1)
        assert all(accel.get_dirty_log(slot) == 0 for slot in accel.slots)  # cleared by the read

        guest.memory.write(0x700000, b"host write")  # the VMM's own writes are not logged
        code2 = assemble("movq $7, 0x300000\n movq $8, 0x9f000\n hlt", CODE + 0x1000)
        guest.memory.write(CODE + 0x1000, code2)
        state = guest.vcpu.get_state()
        state.rip = CODE + 0x1000
        guest.vcpu.set_state(state)
        guest.run_to_halt()
        accel.sync_dirty_log(final=True)
        assert accel.dirty_pages() == [0x50000, 0x9F000, 0x300000, 0x301000, 0x5FF000, 0xE00000]
        assert (accel.dirty.pages, accel.dirty.reported_pages, accel.dirty.reads) == (6, 7, 2)
        assert accel.dirty.pages_per_second > 0
    finally:
        guest.close()


def test_dirty_log_rounds_are_rate_limited() -> None:
    memory = GuestMemory(2 * MIB)
    accel = KvmAccelerator(memory)
    try:
        accel.sync_dirty_log(final=True)  # logging off: nothing happens
        assert accel.dirty_log_stats() is None and accel.dirty.reads == 0
        for region in memory.regions():
            accel.add_memory_region(region)
        accel.enable_dirty_log()
        accel.sync_dirty_log()  # less than 100 ms after enabling: not yet
        assert accel.dirty.reads == 0 and DIRTY_LOG_INTERVAL_NS == 100_000_000
        accel._dirty_synced_ns -= DIRTY_LOG_INTERVAL_NS
        accel.sync_dirty_log()
        assert accel.dirty.reads == 1
    finally:
        accel.close()
        memory.close()


def run_emu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)  # fmt: skip


def test_dirty_log_and_mmu_in_stats(tmp_path: Path, kvm_pvm: bool) -> None:
    stats = tmp_path / "stats.json"
    result = run_emu("--accel", "kvm", "--dirty-log", "--stats", "--stats-json", str(stats), str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 1, result.stderr
    data = json.loads(stats.read_text())
    memory = data["memory"]
    assert memory["dirty_log"] is True and memory["dirty_log_reads"] >= 1
    assert 0 < memory["dirty_pages"] <= memory["dirty_pages_reported"] and memory["dirty_pages_per_second"] > 0
    assert f"dirty log: {memory['dirty_pages']} pages written" in result.stderr
    assert data["mmu"] == second_stage_translation() and data["mmu"]["translation"] == "kvm"
    if kvm_pvm:
        assert data["mmu"] == {"translation": "kvm", "second_stage": "shadow", "module": "kvm_pvm", "tdp_mmu": False}
        assert "mmu: second-stage translation by KVM's shadow page tables (kvm_pvm, no EPT/NPT; kvm.tdp_mmu=N)" in (
            result.stderr)


def test_second_stage_translation_reads_module_parameters(tmp_path: Path) -> None:
    def host(**params: str) -> Path:
        root = tmp_path / "-".join(sorted(params)) / "module"
        for key, value in params.items():
            module, name = key.split("__")
            (root / module / "parameters").mkdir(parents=True, exist_ok=True)
            (root / module / "parameters" / name).write_text(value + "\n")
        return root

    assert second_stage_translation(host(kvm__tdp_mmu="Y", kvm_intel__ept="Y")) == {
        "translation": "kvm", "second_stage": "ept", "module": "kvm_intel", "tdp_mmu": True}  # fmt: skip
    assert second_stage_translation(host(kvm__tdp_mmu="Y", kvm_amd__npt="1"))["second_stage"] == "npt"
    assert second_stage_translation(host(kvm__tdp_mmu="N", kvm_intel__ept="N")) == {
        "translation": "kvm", "second_stage": "shadow", "module": "kvm_intel", "tdp_mmu": False}  # fmt: skip
