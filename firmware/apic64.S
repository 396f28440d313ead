/*
 * apic64.S - interrupt stubs for the vectors the apic guest gives the local APIC and the
 * I/O APIC (0x40-0xff; lib/isr64.S has stubs for 0-47 only). Each pushes a zero error code
 * and its vector, then builds the same frame as lib/isr64.S (struct trap_frame) and calls
 * trap_dispatch, so guest_trap() sees the real vector.
 */
#include "x86.h"

    .text
    .code64

.macro APIC_ISR vec
    .globl apic_isr_\vec
apic_isr_\vec:
    pushq $0
    pushq $\vec
    jmp apic_isr_common
.endm

    APIC_ISR 0x40
    APIC_ISR 0x41
    APIC_ISR 0x50
    APIC_ISR 0x51
    APIC_ISR 0x52
    APIC_ISR 0x55
    APIC_ISR 0x60
    APIC_ISR 0x64
    APIC_ISR 0x74
    APIC_ISR 0xef

apic_isr_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rbx
    pushq %rbp
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi                /* trap_dispatch(struct trap_frame *) */
    cld
    call trap_dispatch
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rbp
    popq %rbx
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp                 /* vector and error code */
    iretq
