"""A bare 64-bit CPL0 machine state in RAM: GDT, TSS, IDT location and identity page tables.

The fuzzer (emu.difftest.fuzz) runs short instruction sequences on both backends from exactly
this state; the tests build their small guests on it too (tests/guestenv.py). Layout
(guest-physical = linear, identity mapped with 2 MiB pages over the first GiB):
  0x1000 GDT   0x2000 IDT (256 x 16 bytes)   0x3000 TSS   0x4000 handler stubs
  0x10000 PML4, 0x11000 PDPT, 0x12000 PD; code at 0x100000, stacks below 0x80000.
"""

from __future__ import annotations

import struct

from ..accel import CpuState, DescriptorTable, Segment
from ..memory import GuestMemory

GDT, IDT, TSS, STUBS = 0x1000, 0x2000, 0x3000, 0x4000
PML4, PDPT, PD = 0x10000, 0x11000, 0x12000
TSS32 = TSS + 0x100
KERNEL_CS, KERNEL_DS, CODE32, USER_CS, USER_DS, TSS_SEL = 0x08, 0x10, 0x18, 0x23, 0x2B, 0x30
USER_CS32, TSS32_SEL = 0x43, 0x48


def descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    """An 8-byte segment descriptor (SDM vol. 3A §3.4.5): access byte, flags nibble (G, D/B, L, AVL)."""
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       ((limit >> 16) & 0xF) | (flags << 4), (base >> 24) & 0xFF)  # fmt: skip


def write_gdt(mem: GuestMemory) -> None:
    gdt = b"".join([
        bytes(8),
        descriptor(0, 0xFFFFF, 0x9A, 0xA),  # 0x08 64-bit code, DPL0 (G, L)
        descriptor(0, 0xFFFFF, 0x92, 0xC),  # 0x10 data, DPL0 (G, D)
        descriptor(0, 0xFFFFF, 0x9A, 0xC),  # 0x18 32-bit code, DPL0
        descriptor(0, 0xFFFFF, 0xFA, 0xA),  # 0x20 64-bit code, DPL3
        descriptor(0, 0xFFFFF, 0xF2, 0xC),  # 0x28 data, DPL3
        descriptor(TSS, 0x67, 0x89, 0x0), bytes(8),  # 0x30 64-bit TSS (16 bytes)
        descriptor(0, 0xFFFFF, 0xFA, 0xC),  # 0x40 32-bit code, DPL3
        descriptor(TSS32, 0x67, 0x89, 0x0),  # 0x48 32-bit TSS
    ])  # fmt: skip
    mem.write(GDT, gdt)


def write_page_tables(mem: GuestMemory) -> None:
    mem.write_u64(PML4, PDPT | 0x7)
    mem.write_u64(PDPT, PD | 0x7)
    mem.write(PD, b"".join(struct.pack("<Q", (i << 21) | 0x87) for i in range(512)))


def gate64(handler: int, selector: int = KERNEL_CS, dpl: int = 0, ist: int = 0, trap: bool = False) -> bytes:
    type_attr = 0x80 | (dpl << 5) | (0xF if trap else 0xE)
    return struct.pack("<HHBBHII", handler & 0xFFFF, selector, ist, type_attr, (handler >> 16) & 0xFFFF,
                       handler >> 32, 0)  # fmt: skip


def kernel_segments(state: CpuState) -> None:
    state.cs = Segment(selector=KERNEL_CS, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1)
    for name in ("ds", "es", "ss"):
        setattr(state, name, Segment(selector=KERNEL_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1))
    state.fs = Segment(selector=KERNEL_DS, base=0x12345000, limit=0xFFFFFFFF, type=3, db=1, g=1)
    state.gs = Segment(selector=KERNEL_DS, base=0x67890000, limit=0xFFFFFFFF, type=3, db=1, g=1)


def long_mode_state(mem: GuestMemory, rip: int = 0x100000, rsp: int = 0x80000) -> CpuState:
    """A 64-bit CPL0 state with GDT, TSS, IDT and identity page tables in place."""
    write_gdt(mem)
    write_page_tables(mem)
    mem.write_u64(TSS + 4, 0x70000)  # RSP0
    state = CpuState()
    kernel_segments(state)
    state.tr = Segment(selector=TSS_SEL, base=TSS, limit=0x67, type=0xB, s=0)
    state.ldt = Segment(selector=0, base=0, limit=0xFFFF, type=2, s=0, present=1)
    state.gdt = DescriptorTable(GDT, 10 * 8 - 1)
    state.idt = DescriptorTable(IDT, 256 * 16 - 1)
    state.cr0 = 0x80050033  # PG, AM, WP, NE, ET, MP, PE
    state.cr3 = PML4
    state.cr4 = 0x220  # PAE, OSFXSR
    state.efer = 0x501  # LMA, LME, SCE
    state.rip, state.rsp, state.rflags = rip, rsp, 0x2
    return state
