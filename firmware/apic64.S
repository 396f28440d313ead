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
    jmp isr_common                 /* lib/isr64.S: the same trap frame, then trap_dispatch */
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

