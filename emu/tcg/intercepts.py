"""Trapping RDMSR/WRMSR of IA32_APIC_BASE and MOV to/from CR8 on tcg, with QEMU's SVM intercepts.

A hypervisor must see some instructions that have no VM exit in Unicorn: the local APIC lives in
emu, so `rdmsr` of IA32_APIC_BASE (0x1B) must read emu's APIC and `wrmsr` must reach it, and CR8
is the APIC's task priority (SDM vol. 3A §11.8.6). IA32_ARCH_CAPABILITIES (0x10A), which QEMU's
TCG reads as 0, is emu's declaration of the flaws its CPU has not (emu.cpuid). Unicorn 2.1.4 accepts UC_HOOK_INSN only for
IN, OUT, SYSCALL, SYSENTER, CPUID, RDTSC and RDTSCP (`x86_insn_hook_validate`; RDMSR/WRMSR hooks
came upstream in 2026, unicorn-engine/unicorn#2297 and PR #2298), its RDMSR of 0x1B returns 0 and
its CR8 reads return 0.

QEMU itself has a mechanism for exactly this: AMD SVM, which it emulates for nested guests
(AMD64 APM vol. 2 §15.9-15.11 "Intercept operation"). While the CPU is in SVM guest mode
(`hflags & HF_GUEST_MASK`), each sensitive instruction first asks
`cpu_svm_check_intercept_param` whether the VMCB asks to intercept it: CR8 reads and writes by
the CR intercept bitmaps, RDMSR/WRMSR by the intercept word and then, per MSR, by the 8 KiB MSR
permission map (two bits per MSR, read and write) whose address is in the VMCB. An intercepted
instruction makes a #VMEXIT, which QEMU raises as exception EXCP_VMEXIT + exit code, with RIP
still at the instruction and the read/write direction in the error code; Unicorn reports every
exception to UC_HOOK_INTR before anything else happens, so emu's interrupt hook sees it, serves
the instruction, moves RIP past it and lets the run go on. No other instruction is intercepted.

So emu puts the tcg vCPU in SVM guest mode for good: it patches HF_GUEST_MASK, the intercept
words and `vm_vmcb` into the CPU state (the saved-context layout of emu.tcg.context, for the
unicorn 2.1.4 wheel only; tests/tcg/test_intercepts.py checks it), and maps one page of its
own beyond the guest's 40-bit physical address space that holds both the VMCB field QEMU reads
(msrpm_base_pa, at 72) and the MSR permission map (bits for MSR 0x1B in byte 6, 0x10A in 66). The guest
cannot reach that page, and nothing else of SVM is on: the guest's own CPUID says no SVM.
"""

from __future__ import annotations

import struct

from unicorn import UC_PROT_READ, Uc

from .context import HEADER, OFF_HFLAGS, SavedContext

# CPUX86State fields after old_exception (QEMU 5.0's target/i386/cpu.h, as in unicorn 2.1.4)
OFF_VM_VMCB = 5504
OFF_INTERCEPT = 5520
OFF_INTERCEPT_CR_READ = 5528  # u16, bit n: intercept reads of CRn
OFF_INTERCEPT_CR_WRITE = 5530
HF_GUEST_MASK = 1 << 21

EXCP_VMEXIT = 0x100  # QEMU's exception number for #VMEXIT, plus the SVM exit code
SVM_EXIT_READ_CR8 = 0x008
SVM_EXIT_WRITE_CR8 = 0x018
SVM_EXIT_INTR = 0x060  # the intercept word's bit 0
SVM_EXIT_MSR = 0x07C
VMEXIT_READ_CR8 = EXCP_VMEXIT + SVM_EXIT_READ_CR8
VMEXIT_WRITE_CR8 = EXCP_VMEXIT + SVM_EXIT_WRITE_CR8
VMEXIT_MSR = EXCP_VMEXIT + SVM_EXIT_MSR

VMCB_MSRPM_BASE_PA = 72  # offset of msrpm_base_pa in the VMCB control area (APM vol. 2 table B-1)
CONTROL_PAGE = 1 << 40  # just beyond the 40-bit physical addresses of emu's CPU model (emu.cpuid)

INTERCEPTED_MSRS = (0x1B, 0x10A)  # IA32_APIC_BASE, IA32_ARCH_CAPABILITIES (emu.cpuid)


def msr_permission_bits(msr: int) -> tuple[int, int]:
    """(byte offset, bit mask for read and write) of `msr` (0-0x1FFF) in the MSR permission map:
    two bits per MSR, read then write (APM vol. 2 §15.11)."""
    byte, shift = divmod(2 * msr, 8)
    return byte, 0b11 << shift


def install(uc: Uc, ctx: SavedContext) -> None:
    """Map the control page and put the vCPU in SVM guest mode with only our intercepts on."""
    page = bytearray(0x1000)
    struct.pack_into("<Q", page, VMCB_MSRPM_BASE_PA, CONTROL_PAGE)  # the map starts at the page too
    for msr in INTERCEPTED_MSRS:
        byte, bits = msr_permission_bits(msr)
        assert byte < VMCB_MSRPM_BASE_PA  # the map's bytes must not overlap the VMCB field
        page[byte] |= bits
    uc.mem_map(CONTROL_PAGE, len(page), UC_PROT_READ)
    uc.mem_write(CONTROL_PAGE, bytes(page))
    ctx.save()
    raw = ctx.raw
    ctx.hflags |= HF_GUEST_MASK
    struct.pack_into("<Q", raw, HEADER + OFF_VM_VMCB, CONTROL_PAGE)
    struct.pack_into("<Q", raw, HEADER + OFF_INTERCEPT, 1 << (SVM_EXIT_MSR - SVM_EXIT_INTR))
    struct.pack_into("<HH", raw, HEADER + OFF_INTERCEPT_CR_READ, 1 << 8, 1 << 8)
    ctx.restore()
