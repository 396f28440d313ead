"""emu's interrupt and exception delivery on tcg, checked against the SDM's rules.

Each test places one faulting or trapping instruction, runs it, and lets a handler report what
the CPU pushed (ports 0x10-0x16) before it halts.
"""

from __future__ import annotations

import functools

import pytest
from asm import assemble, requires_as
from guestenv import (IDT, STUBS, TSS, TSS32, USER_CS, USER_CS32, USER_DS, RecordingIo, gate32,
                      gate64, long_mode_state, protected32_state, real_mode_state)  # fmt: skip

from emu.accel import HaltExit, MemoryRegion, Segment, ShutdownExit
from emu.memory import GuestMemory
from emu.tcg.accel import TcgAccelerator

pytestmark = requires_as
CODE = 0x100000
HAS_CODE = {8, 10, 11, 12, 13, 14, 17}
# ports the handlers report on
P_VECTOR, P_ERROR, P_CR2, P_RIP, P_CS, P_RSP, P_HANDLER_CS = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16


def handler64(vector: int) -> str:
    pop = "pop %rax; out %eax, $0x11\n" if vector in HAS_CODE else ""
    return f"""{pop}
        mov ${vector}, %al; out %al, $0x10
        mov %cr2, %rax; out %eax, $0x12
        mov (%rsp), %rax; out %eax, $0x13
        mov 8(%rsp), %rax; out %eax, $0x14
        mov %rsp, %rax; out %eax, $0x15
        xor %eax, %eax; mov %cs, %ax; out %eax, $0x16
        hlt"""


def handler32(vector: int) -> str:
    pop = "pop %eax; out %eax, $0x11\n" if vector in HAS_CODE else ""
    return f"""{pop}
        mov ${vector}, %al; out %al, $0x10
        mov (%esp), %eax; out %eax, $0x13
        mov 4(%esp), %eax; out %eax, $0x14
        mov %esp, %eax; out %eax, $0x15
        xor %eax, %eax; mov %cs, %ax; out %eax, $0x16
        hlt"""


@functools.cache
def stubs64() -> bytes:
    """One 64-byte handler per vector, assembled in one go."""
    return assemble("\n".join(f".org {v * 64}\n{handler64(v)}" for v in range(256)), STUBS)


class Rig:
    def __init__(self) -> None:
        self.memory = GuestMemory(4 << 20)
        self.accel = TcgAccelerator(self.memory)
        self.accel.add_memory_region(MemoryRegion(0, self.memory.size, self.memory.host_address))
        self.io = RecordingIo()
        self.vcpu = self.accel.create_vcpu(0, self.io)

    def long_mode(self, code: str, user: bool = False, gates: dict[int, bytes] | None = None):
        state = long_mode_state(self.memory, rip=CODE)
        self.memory.write(STUBS, stubs64())
        idt = bytearray(b"".join(gate64(STUBS + v * 64) for v in range(256)))
        for v, gate in (gates or {}).items():
            idt[v * 16 : v * 16 + 16] = gate
        self.memory.write(IDT, bytes(idt))
        self.memory.write(CODE, assemble(code, CODE))
        if user:
            state.cs = Segment(selector=USER_CS, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1, dpl=3)
            state.ss = Segment(selector=USER_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1, dpl=3)
            state.rsp = 0x60000
        return state

    def run(self, state):
        self.vcpu.set_state(state)
        return self.vcpu.run()

    def report(self) -> dict[str, int]:
        names = {P_VECTOR: "vector", P_ERROR: "error", P_CR2: "cr2", P_RIP: "rip", P_CS: "cs", P_RSP: "rsp",
                 P_HANDLER_CS: "handler_cs"}  # fmt: skip
        return {names[e[1]]: e[3] for e in self.io.log if e[0] == "out" and e[1] in names}


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.accel.close()


def test_invalid_opcode_reports_faulting_rip(rig: Rig) -> None:
    assert isinstance(rig.run(rig.long_mode("nop; ud2")), HaltExit)
    assert rig.report() == {"vector": 6, "cr2": 0, "rip": CODE + 1, "cs": 0x08, "rsp": 0x80000 - 40,
                            "handler_cs": 0x08}  # fmt: skip


def test_divide_error(rig: Rig) -> None:
    rig.run(rig.long_mode("xor %ecx, %ecx; mov $1, %eax; div %ecx"))
    assert rig.report()["vector"] == 0 and rig.report()["rip"] == CODE + 7


def test_general_protection_on_non_canonical_address(rig: Rig) -> None:
    rig.run(rig.long_mode("movabs $0x8000000000000000, %rbx; mov (%rbx), %rax"))
    r = rig.report()
    assert (r["vector"], r["error"], r["rip"]) == (13, 0, CODE + 10)


@pytest.mark.parametrize("insn,error", [("mov 0x40000000, %eax", 0), ("movl $1, 0x40000000", 2)])
def test_page_fault_sets_cr2_and_error_code(rig: Rig, insn: str, error: int) -> None:
    rig.run(rig.long_mode(insn))
    r = rig.report()
    assert (r["vector"], r["error"], r["cr2"], r["rip"]) == (14, error, 0x40000000, CODE)


def test_int_from_ring3_switches_to_rsp0(rig: Rig) -> None:
    stub = STUBS + 0x80 * 64
    state = rig.long_mode("int $0x80", user=True, gates={0x80: gate64(stub, dpl=3)})
    rig.run(state)
    r = rig.report()
    # frame: SS, RSP, RFLAGS, CS, RIP pushed on the RSP0 stack from the TSS (0x70000)
    assert (r["vector"], r["rip"], r["cs"], r["handler_cs"]) == (0x80, CODE + 2, USER_CS, 0x08)
    assert r["rsp"] == 0x70000 - 40
    assert rig.memory.read_u64(0x70000 - 8) == USER_DS  # old SS
    assert rig.memory.read_u64(0x70000 - 16) == 0x60000  # old RSP


def test_int_from_ring3_to_dpl0_gate_is_general_protection(rig: Rig) -> None:
    rig.run(rig.long_mode("int $0x80", user=True))
    r = rig.report()
    assert (r["vector"], r["error"], r["cs"]) == (13, 0x80 * 8 + 2, USER_CS)


def test_interrupt_stack_table(rig: Rig) -> None:
    rig.memory.write_u64(TSS + 0x24 + 8, 0x50000)  # IST2
    stub = STUBS + 6 * 64
    rig.run(rig.long_mode("ud2", gates={6: gate64(stub, ist=2)}))
    assert rig.report()["rsp"] == 0x50000 - 40


def test_fault_during_delivery_becomes_double_fault(rig: Rig) -> None:
    gp_not_present = bytearray(gate64(STUBS + 13 * 64))
    gp_not_present[5] &= 0x7F
    rig.run(rig.long_mode("movabs $0x8000000000000000, %rbx; mov (%rbx), %rax", gates={13: bytes(gp_not_present)}))
    r = rig.report()
    assert (r["vector"], r["error"]) == (8, 0)


def test_triple_fault_is_a_shutdown_with_the_chain(rig: Rig) -> None:
    state = rig.long_mode("ud2")
    state.idt.limit = 0
    event = rig.run(state)
    assert isinstance(event, ShutdownExit)
    assert "#UD -> #GP(0x32) -> #DF(0x0) -> #GP(0x42)" in event.reason
    assert "RIP=0x100000" in event.reason


def test_external_interrupt_injection(rig: Rig) -> None:
    state = rig.long_mode("hlt")
    state.rflags = 0x2
    rig.vcpu.set_state(state)
    assert not rig.vcpu.interrupts_allowed()
    state.rflags = 0x202
    rig.vcpu.set_state(state)
    assert rig.vcpu.interrupts_allowed()
    rig.vcpu.inject_interrupt(0x20)
    rig.vcpu.run()
    r = rig.report()
    assert (r["vector"], r["rip"]) == (0x20, CODE)
    assert not rig.vcpu.get_state().rflags & 0x200  # interrupt gate cleared IF


def test_syscall_and_sysret(rig: Rig) -> None:
    from emu.accel import MSR_LSTAR, MSR_SFMASK, MSR_STAR

    kernel = CODE + 0x1000
    state = rig.long_mode("mov $0x1234, %rax; syscall; xor %eax, %eax; mov %cs, %ax; out %eax, $0x20; ud2", user=True)
    rig.memory.write(kernel, assemble("""
        mov %rcx, %rax; out %eax, $0x21
        mov %r11, %rax; out %eax, $0x22
        xor %eax, %eax; mov %cs, %ax; out %eax, $0x23
        sysretq""", kernel))
    state.msrs = {MSR_STAR: (0x10 << 48) | (0x08 << 32), MSR_LSTAR: kernel, MSR_SFMASK: 0x200}
    state.rflags = 0x202
    rig.run(state)
    assert rig.io.outs(0x21) == [CODE + 9]  # RCX = return address
    assert rig.io.outs(0x22) == [0x202]  # R11 = RFLAGS
    assert rig.io.outs(0x23) == [0x08]  # kernel CS from STAR[47:32]
    assert rig.io.outs(0x20) == [0x23]  # back in ring 3 after sysretq (STAR[63:48] + 16, RPL 3)
    assert rig.report()["vector"] == 6


def test_real_mode_ivt(rig: Rig) -> None:
    state = real_mode_state(rip=0x7000)
    rig.memory.write(0x7000, assemble("int $0x31; mov $0x77, %al; out %al, $0x10; hlt", 0x7000, 16))
    rig.memory.write(0x31 * 4, bytes.fromhex("0080 0000"))  # 0000:8000
    rig.memory.write(0x8000, assemble("mov %sp, %ax; out %ax, $0x15; mov $0x31, %al; out %al, $0x10; iret", 0x8000, 16))
    rig.run(state)
    assert rig.io.outs(P_VECTOR) == [0x31, 0x77]
    assert rig.io.outs(P_RSP) == [0x6000 - 6]


def test_protected_mode_ring_change_through_tss(rig: Rig) -> None:
    state = protected32_state(rig.memory, rip=CODE)
    rig.memory.write_u32(TSS32 + 4, 0x70000)  # ESP0
    rig.memory.write_u32(TSS32 + 8, 0x10)  # SS0
    stub = STUBS
    rig.memory.write(stub, assemble(handler32(0x80), stub, 32))
    rig.memory.write(IDT + 0x80 * 8, gate32(stub, dpl=3))
    rig.memory.write(CODE, assemble("int $0x80", CODE, 32))
    state.cs = Segment(selector=USER_CS32, base=0, limit=0xFFFFFFFF, type=0xB, db=1, g=1, dpl=3)
    state.ss = Segment(selector=USER_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1, dpl=3)
    state.rsp = 0x60000
    rig.run(state)
    r = rig.report()
    assert (r["vector"], r["rip"], r["cs"], r["handler_cs"]) == (0x80, CODE + 2, USER_CS32, 0x18)
    assert r["rsp"] == 0x70000 - 20  # SS, ESP, EFLAGS, CS, EIP
    assert rig.memory.read_u32(0x70000 - 4) == USER_DS


def test_page_fault_under_32bit_paging_keeps_cr2(rig: Rig) -> None:
    """Regression: emu_start must not probe an `until` page through the guest's tables."""
    import struct

    state = protected32_state(rig.memory, rip=CODE)
    rig.memory.write(STUBS, assemble("mov %cr2, %eax; out %eax, $0x12;" + handler32(14), STUBS, 32))
    rig.memory.write(IDT + 14 * 8, gate32(STUBS))
    rig.memory.write(0x10000, struct.pack("<I", 0x87) + bytes(4092))  # one 4 MiB page at 0 (PSE)
    rig.memory.write(CODE, assemble("mov 0x800000, %eax", CODE, 32))
    state.cr0, state.cr3, state.cr4 = 0x80000011, 0x10000, 0x10
    rig.run(state)
    r = rig.report()
    assert (r["vector"], r["error"], r["cr2"], r["rip"]) == (14, 0, 0x800000, CODE)
