"""One CpuState, two backends: set a state, read it back, compare (real, 32-bit, long mode)."""

from __future__ import annotations

import dataclasses

import pytest
from guestenv import ACCELS, RecordingIo, long_mode_state, protected32_state, real_mode_state

from emu.accel import MSR_LSTAR, MSR_SFMASK, MSR_STAR, MemoryRegion
from emu.memory import GuestMemory

SEGMENT_FIELDS = ("selector", "base", "limit", "type", "s", "dpl", "present", "l", "db")


def make_vcpu(accel: str, memory: GuestMemory):
    if accel == "tcg":
        from emu.tcg.accel import TcgAccelerator

        acc = TcgAccelerator(memory)
    else:
        from emu.kvm_accel.vm import KvmAccelerator

        acc = KvmAccelerator(memory)
    acc.add_memory_region(MemoryRegion(0, memory.size, memory.host_address))
    return acc, acc.create_vcpu(0, RecordingIo())


def fill_gprs(state) -> None:
    for i, name in enumerate(("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi")):
        setattr(state, name, 0x1111_0000 + i)
    for i in range(8, 16):
        setattr(state, f"r{i}", 0xFEDC_BA98_0000_0000 + i)


def assert_same(expected, actual, mode: str) -> None:
    for name in ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r15", "rip", "rflags"):
        got, want = getattr(actual, name), getattr(expected, name)
        if mode != "long" and name.startswith("r") and name[1:].isdigit():
            continue  # r8-r15 do not exist outside 64-bit mode; backends may keep or drop them
        assert got == want, f"{name}: {got:#x} != {want:#x}"
    for seg in ("cs", "ds", "es", "ss", "fs", "gs", "tr"):
        for f in SEGMENT_FIELDS:
            got, want = getattr(getattr(actual, seg), f), getattr(getattr(expected, seg), f)
            assert got == want, f"{seg}.{f}: {got:#x} != {want:#x}"
    assert (actual.gdt, actual.idt) == (expected.gdt, expected.idt)
    for cr in ("cr0", "cr3", "cr4", "efer"):
        assert getattr(actual, cr) == getattr(expected, cr), cr
    assert actual.cpl == expected.cpl
    assert actual.mode == expected.mode == mode


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("mode", ["real", "protected32", "long"])
def test_state_round_trip(accel: str, mode: str) -> None:
    memory = GuestMemory(4 << 20)
    acc, vcpu = make_vcpu(accel, memory)
    try:
        if mode == "real":
            state = real_mode_state()
        elif mode == "protected32":
            state = protected32_state(memory)
        else:
            state = long_mode_state(memory)
            state.msrs = {MSR_STAR: 0x0023_0008_0000_0000, MSR_LSTAR: 0xFFFF_8000_0010_0000, MSR_SFMASK: 0x700}
        fill_gprs(state)
        state.rflags = 0x246
        vcpu.set_state(state)
        back = vcpu.get_state()
        assert_same(state, back, mode)
        for index, value in state.msrs.items():
            assert back.msrs[index] == value, f"MSR {index:#x}"
        # A second round trip is a fixed point.
        vcpu.set_state(back)
        assert dataclasses.asdict(vcpu.get_state()) == dataclasses.asdict(back)
    finally:
        vcpu.close()
        acc.close()
