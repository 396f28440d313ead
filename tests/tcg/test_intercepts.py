"""RDMSR/WRMSR of IA32_APIC_BASE and MOV CR8 reach emu's local APIC on tcg (emu.tcg.intercepts).

Unicorn 2.1.4 has no RDMSR/WRMSR hook; emu puts the vCPU in QEMU's SVM guest mode with only
these intercepts on. This checks the trick on a bare vCPU: the patched CPU-state offsets are
right for this unicorn wheel (a wrong one would leave the instructions un-intercepted), other
MSRs still run in Unicorn, and a software interrupt before the intercept (which leaves Unicorn's
exception_is_int set) does not move RIP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from guestenv import RecordingIo

from emu.accel import CpuState, DescriptorTable, ExitReason, HaltExit, Segment
from emu.memory import GuestMemory
from emu.tcg.accel import TcgAccelerator

CODE, GDT = 0x10000, 0x30000
# 64-bit code at CODE (flat, paging off is fine for Unicorn's UC_MODE_64 with emu's context):
PROGRAM = bytes.fromhex(
    "b91b000000"  # mov ecx, 0x1b
    "0f32"  # rdmsr                  -> rax:rdx = 0xfee00900
    "4889c3"  # mov rbx, rax
    "b8000b00fe"  # mov eax, 0xfe000b00 (relocation: refused by emu's APIC, recorded)
    "31d2"  # xor edx, edx
    "0f30"  # wrmsr
    "b974010000"  # mov ecx, 0x174 (SYSENTER_CS: Unicorn's own, not intercepted)
    "b82a000000"  # mov eax, 42
    "0f30"  # wrmsr
    "0f32"  # rdmsr                  -> eax = 42
    "4989c4"  # mov r12, rax
    "b805000000"  # mov eax, 5
    "440f22c0"  # mov cr8, rax
    "440f20c6"  # mov rsi, cr8
    "f4"  # hlt
)


@dataclass
class FakeApic:
    tpr: int = 0
    base: int = 0xFEE00900
    writes: list[int] = field(default_factory=list)

    @property
    def cr8(self) -> int:
        return self.tpr >> 4

    def write_cr8(self, value: int) -> None:
        self.tpr = (value & 0xF) << 4

    def read_base_msr(self) -> int:
        return self.base

    def write_base_msr(self, value: int) -> None:
        self.writes.append(value)


def run_program(program: bytes, extra: dict[int, bytes] | None = None) -> tuple[CpuState, FakeApic, object]:
    """Run 64-bit `program` at CODE (paging off, a flat GDT at GDT) to its `hlt`."""
    memory = GuestMemory.pc(16 << 20)
    accel = TcgAccelerator(memory, mmu="unicorn")
    for region in memory.regions():
        accel.add_memory_region(region)
    vcpu = accel.create_vcpu(0, RecordingIo())
    apic = FakeApic()
    vcpu.attach_apic(apic)
    memory.write(CODE, program)
    memory.write(GDT, bytes(8) + (0x00AF9A000000FFFF).to_bytes(8, "little") + (0x00CF92000000FFFF).to_bytes(8, "little"))
    for address, data in (extra or {}).items():
        memory.write(address, data)
    code = Segment(selector=8, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1)
    data = Segment(selector=0x10, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1)
    vcpu.set_state(CpuState(rip=CODE, cs=code, ss=data, ds=data, es=data, cr0=0x11, efer=0x500, rsp=0x8000,
                            gdt=DescriptorTable(GDT, 23)))  # fmt: skip
    vcpu.set_deadline(time.monotonic_ns() + 5_000_000_000)  # a loop (RIP moved back) ends as a KickExit
    try:
        event = vcpu.run()
        assert isinstance(event, HaltExit), event
        return vcpu.get_state(), apic, vcpu.stats
    finally:
        accel.close()
        memory.close()


def test_apic_base_msr_and_cr8_reach_the_apic() -> None:
    state, apic, stats = run_program(PROGRAM)
    assert state.rbx == 0xFEE00900  # rdmsr 0x1B answered by emu's APIC
    assert apic.writes == [0xFE000B00]  # wrmsr 0x1B reached it
    assert state.r12 == 42  # another MSR: Unicorn's own
    assert apic.tpr == 0x50 and state.rsi == 5 and state.cr8 == 5
    assert stats.counts[ExitReason.MSR] == 2 and stats.counts[ExitReason.TPR] == 2


def test_an_intercept_after_a_software_interrupt_keeps_its_rip() -> None:
    """`int 0x80` leaves QEMU's exception_is_int set; a #VMEXIT does not clear it, and Unicorn
    would then move RIP to the int's return address before the hook (emu clears it)."""
    idt, handler = 0x20000, 0x21000
    gate = (handler & 0xFFFF) | 8 << 16 | 0x8E00 << 32 | ((handler >> 16) & 0xFFFF) << 48
    body = bytes.fromhex("cd80" "b91b000000" "0f32" "4889c3" "f4")  # int 0x80; rdmsr 0x1B; mov rbx, rax; hlt
    lidt = bytes.fromhex("0f011d") + len(body).to_bytes(4, "little")  # lidt [rip + len(body)]: the IDTR below
    idtr = (0xFFF).to_bytes(2, "little") + idt.to_bytes(8, "little")
    state, _, _ = run_program(lidt + body + idtr, {idt + 0x80 * 16: gate.to_bytes(16, "little"),
                                                   handler: bytes.fromhex("48cf")})  # fmt: skip  # iretq
    assert state.rbx == 0xFEE00900 and state.rip == CODE + len(lidt) + len(body)


def test_interrupt_window_opens_after_the_instruction_that_follows_sti() -> None:
    """The block hook stops the run where RFLAGS.IF becomes 1 (last_block.c): with an interrupt
    waiting, `sti; nop; nop; cli` is interrupted after the first `nop` (the STI shadow), as on
    a CPU, not at the next time slice or after the `cli`."""
    memory = GuestMemory.pc(16 << 20)
    accel = TcgAccelerator(memory, mmu="unicorn")
    for region in memory.regions():
        accel.add_memory_region(region)
    vcpu = accel.create_vcpu(0, RecordingIo())
    vcpu.install_block_hook()
    program = bytes.fromhex("90" * 8 + "fb" "90" "90" "fa" "f4")  # nops; sti; nop; nop; cli; hlt
    memory.write(CODE, program)
    memory.write(GDT, bytes(8) + (0x00AF9A000000FFFF).to_bytes(8, "little") + (0x00CF92000000FFFF).to_bytes(8, "little"))
    code = Segment(selector=8, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1)
    data = Segment(selector=0x10, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1)
    vcpu.set_state(CpuState(rip=CODE, cs=code, ss=data, ds=data, es=data, cr0=0x11, efer=0x500, rsp=0x8000,
                            gdt=DescriptorTable(GDT, 23)))  # fmt: skip
    vcpu.request_interrupt_window(True)
    try:
        event = vcpu.run()
        assert type(event).__name__ == "InterruptWindowExit", event
        state = vcpu.get_state()
        assert state.rip == CODE + 10 and state.rflags & 0x200  # after sti and one nop
    finally:
        accel.close()
        memory.close()
