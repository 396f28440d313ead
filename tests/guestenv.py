"""Builds tiny guest environments in RAM for tests: descriptor tables, page tables, CPU states.

Layout used by every helper here (guest-physical = linear, identity mapped):
  0x1000 GDT   0x2000 IDT (256 x 16 bytes)   0x3000 TSS   0x4000 handler stubs
  0x10000 PML4, 0x11000 PDPT, 0x12000 PD (2 MiB pages for the first GiB)
  0x7000 real-mode code, 0x100000 protected/long-mode code, stacks below 0x80000.
"""

from __future__ import annotations

import struct

import pytest

from emu.accel import CpuState, DescriptorTable, Segment
from emu.kvm_accel.api import kvm_usable
from emu.memory import GuestMemory

KVM_OK, KVM_WHY = kvm_usable()
requires_kvm = pytest.mark.skipif(not KVM_OK, reason=KVM_WHY)
ACCELS = [pytest.param("tcg", id="tcg"), pytest.param("kvm", id="kvm", marks=[requires_kvm, pytest.mark.kvm])]

from emu.difftest.environment import (  # noqa: F401 - re-exported for the tests
    CODE32, GDT, IDT, KERNEL_CS, KERNEL_DS, PD, PDPT, PML4, STUBS, TSS, TSS32, TSS32_SEL, TSS_SEL, USER_CS,
    USER_CS32, USER_DS, descriptor, gate64, kernel_segments, long_mode_state, write_gdt, write_page_tables)


def protected32_state(mem: GuestMemory, rip: int = 0x100000, rsp: int = 0x80000) -> CpuState:
    """A flat 32-bit CPL0 state without paging."""
    write_gdt(mem)
    state = CpuState()
    state.cs = Segment(selector=CODE32, base=0, limit=0xFFFFFFFF, type=0xB, db=1, g=1)
    for name in ("ds", "es", "ss", "fs", "gs"):
        setattr(state, name, Segment(selector=KERNEL_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1))
    state.tr = Segment(selector=TSS32_SEL, base=TSS32, limit=0x67, type=0xB, s=0)
    state.ldt = Segment(selector=0, base=0, limit=0xFFFF, type=2, s=0, present=1)
    state.gdt = DescriptorTable(GDT, 10 * 8 - 1)
    state.idt = DescriptorTable(IDT, 0x7FF)
    state.cr0 = 0x11
    state.rip, state.rsp, state.rflags = rip, rsp, 0x2
    return state


def real_mode_state(rip: int = 0x7000, cs: int = 0) -> CpuState:
    state = CpuState.reset()
    state.cs = Segment.real_mode(cs, code=True)
    for name in ("ds", "es", "ss", "fs", "gs"):
        setattr(state, name, Segment.real_mode(0x100))
    state.ldt = Segment(selector=0, base=0, limit=0xFFFF, type=2, s=0, present=1)
    state.tr = Segment(selector=0, base=0, limit=0xFFFF, type=0xB, s=0, present=1)
    state.gdt = DescriptorTable(0, 0xFFFF)
    state.idt = DescriptorTable(0, 0x3FF)
    state.cr0 = 0x10
    state.rip, state.rsp = rip, 0x6000
    return state


def gate32(handler: int, selector: int = CODE32, dpl: int = 0, trap: bool = False) -> bytes:
    type_attr = 0x80 | (dpl << 5) | (0xF if trap else 0xE)
    return struct.pack("<HHBBH", handler & 0xFFFF, selector, 0, type_attr, handler >> 16)


class RecordingIo:
    """An IoHandler that records every access; reads return `read_value`."""

    def __init__(self, read_value: int = 0xFF) -> None:
        self.log: list[tuple] = []
        self.read_value = read_value

    def port_read(self, port: int, size: int) -> int:
        self.log.append(("in", port, size))
        return self.read_value & ((1 << (8 * size)) - 1)

    def port_write(self, port: int, size: int, value: int) -> None:
        self.log.append(("out", port, size, value))

    def mmio_read(self, address: int, size: int) -> int:
        self.log.append(("mmio-read", address, size))
        return self.read_value & ((1 << (8 * size)) - 1)

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.log.append(("mmio-write", address, size, value))

    def outs(self, port: int) -> list[int]:
        return [e[3] for e in self.log if e[0] == "out" and e[1] == port]
