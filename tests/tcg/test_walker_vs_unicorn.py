"""emu's page-table walker against Unicorn's (QEMU's) on random page tables.

For random page-table layouts in all three paging modes, every sampled linear address and
access kind (read, write, fetch; user and supervisor) must give the same guest-physical address
from both walkers, or a fault from both. Unicorn's walker is reached through
`uc_vmem_translate` (libunicorn 2.1, not wrapped by the Python binding), with the CPU in
UC_TLB_CPU mode and the same control registers, as the SDM-defined reference implementation
emu's shadow MMU is checked against.
"""

from __future__ import annotations

import ctypes
import struct

import pytest
from guestenv import RecordingIo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from unicorn import UC_TLB_CPU
from unicorn.unicorn_py3.unicorn import uclib

from emu.accel import CpuState, MemoryRegion, Segment
from emu.memory import GuestMemory
from emu.mmu.walk import Access, PageFault, PagingMode, walk_page_tables
from emu.tcg.accel import TcgAccelerator

RAM = 8 << 20
TABLES = 0x100000  # page tables live in 1-2 MiB; leaves point anywhere in 0-16 MiB (some outside RAM)
PROT = {Access.READ: 1, Access.WRITE: 2, Access.FETCH: 4}
MODES = {
    # name: (cr0, cr4, efer, entry size, levels)
    "32-bit": (0x80000011, 0x10, 0, 4, 2),
    "PAE": (0x80000011, 0x20, 0x800, 8, 3),
    "4-level": (0x80000011, 0x20, 0xD00, 8, 4),
}

_rig: dict = {}


def rig():
    if not _rig:
        memory = GuestMemory(RAM)
        accel = TcgAccelerator(memory, mmu="unicorn")
        accel.add_memory_region(MemoryRegion(0, RAM, memory.host_address))
        vcpu = accel.create_vcpu(0, RecordingIo(read_value=0))  # unassigned memory reads as zeros
        accel.uc.ctl_set_tlb_mode(UC_TLB_CPU)
        _rig.update(memory=memory, accel=accel, vcpu=vcpu)
    return _rig["memory"], _rig["vcpu"]


def unicorn_translate(vcpu, linear: int, access: Access) -> int | None:
    physical = ctypes.c_uint64()
    status = uclib.uc_vmem_translate(vcpu._handle, ctypes.c_uint64(linear), PROT[access], ctypes.byref(physical))
    return physical.value if status == 0 else None


present_flags = st.integers(0, 0x1FF).map(lambda f: f | 1)  # P RW US PWT PCD A D PS G, mostly present
entry_flags = st.one_of(present_flags, present_flags, st.integers(0, 0x1FF))
frames = st.integers(0, 0xFFF)  # up to 16 MiB of frames: some beyond RAM


@st.composite
def layouts(draw):
    """Paths of entries from CR3 down: each path is the table indices of one linear address."""
    mode = draw(st.sampled_from(sorted(MODES)))
    cr0, cr4, efer, size, levels = MODES[mode]
    cr0 |= draw(st.sampled_from([0, 0x10000]))  # CR0.WP
    if size == 8:
        efer &= ~0x800 | draw(st.sampled_from([0, 0x800]))  # NXE on or off
    cr4 |= draw(st.sampled_from([0, 0x100000]))  # SMEP
    ntables = draw(st.integers(levels, 8))
    tables = [TABLES + i * 0x1000 for i in range(ntables)]
    per_table = 4 if mode == "PAE" else (512 if size == 8 else 1024)
    bits = {"32-bit": (22, 12), "PAE": (30, 21, 12), "4-level": (39, 30, 21, 12)}[mode]
    entries: dict[tuple[int, int], int] = {}  # (table, index) -> entry value
    probes = []
    for _ in range(draw(st.integers(1, 6))):
        table, linear = tables[0], 0
        for depth, shift in enumerate(bits):
            index = draw(st.integers(0, (per_table if depth == 0 else 1 << (9 if size == 8 else 10)) - 1))
            linear |= index << shift
            last = depth == len(bits) - 1
            if (table, index) not in entries:
                target = draw(frames.map(lambda f: f << 12)) if last else draw(
                    st.one_of(st.sampled_from(tables[1:] or tables), frames.map(lambda f: f << 12)))
                value = target | draw(entry_flags)
                if size == 8:
                    value |= draw(st.sampled_from([0, 0, 0, 1 << 63, 1 << 45, 1 << 51]))
                if mode == "PAE" and depth == 0:
                    value &= ~0x1E6 if draw(st.booleans()) else ~0  # PDPTE: usually legal
                entries[(table, index)] = value
            value = entries[(table, index)]
            if last or value & 0x80 or (value & ~0xFFF) & ((1 << 40) - 1) not in tables:
                break
            table = (value & ~0xFFF) & ((1 << 40) - 1)
        offset = draw(st.integers(0, (1 << 12) - 1))
        for access in Access:
            probes.append((linear | offset, access))
    user = draw(st.booleans())
    return mode, cr0, cr4, efer, size, tables, entries, user, probes


def canonical(address: int) -> int:
    return address | (0xFFFF << 48) if address & (1 << 47) else address


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_same_translation_or_fault_as_unicorn(layout) -> None:
    mode, cr0, cr4, efer, size, tables, entries, user, probes = layout
    memory, vcpu = rig()
    memory.write(TABLES, bytes(0x10000))
    for (table, index), value in entries.items():
        if size == 8:
            memory.write(table + index * 8, struct.pack("<Q", value))
        else:
            memory.write(table + index * 4, struct.pack("<I", value & 0xFFFFFFFF))
    addresses = [(canonical(a) if mode == "4-level" else a & 0xFFFFFFFF, acc) for a, acc in probes]
    state = CpuState()
    dpl = 3 if user else 0
    state.cs = Segment(selector=0x08 | dpl, base=0, limit=0xFFFFFFFF, type=0xB, db=mode != "4-level",
                       l=mode == "4-level", g=1, dpl=dpl)  # fmt: skip
    for name in ("ds", "es", "ss", "fs", "gs"):
        setattr(state, name, Segment(selector=0x10 | dpl, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1, dpl=dpl))
    state.cr0, state.cr3, state.cr4, state.efer = cr0, tables[0], cr4, efer
    vcpu.set_state(state)
    paging = PagingMode(cr0, tables[0], cr4, efer)
    for linear, access in addresses:
        try:
            ours: int | None = walk_page_tables(memory, paging, linear, access, user).physical
        except PageFault:
            ours = None
        theirs = unicorn_translate(vcpu, linear, access)
        assert ours == theirs, (
            f"{mode} cr0={cr0:#x} cr4={cr4:#x} efer={efer:#x} {'user' if user else 'supervisor'} {access.name} {linear:#x}: emu "
            f"{'fault' if ours is None else hex(ours)}, unicorn {'fault' if theirs is None else hex(theirs)}"
        )


@pytest.fixture(scope="module", autouse=True)
def _close_rig():
    yield
    if _rig:
        _rig["accel"].close()
        _rig.clear()
