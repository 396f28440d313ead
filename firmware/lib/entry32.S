/*
 * entry32.S - Multiboot entry for the 32-bit guests: stay in 32-bit protected mode,
 * load our own GDT, set up a stack and call kstart(magic, mbi).
 *
 * Machine state at entry (Multiboot Specification 0.6.96, 3.2): EAX = 0x2BADB002,
 * EBX = physical address of the multiboot information, flat 32-bit segments, paging off,
 * IF=0, GDTR/IDTR undefined. Paging, if a guest wants it, is the guest's business
 * (exceptions32 turns on 32-bit paging for its #PF tests).
 */
#include "x86.h"

#define CR0_BOOT (CR0_NE | CR0_ET | CR0_MP | CR0_PE)    /* 0x33 */
#define CR4_BOOT (CR4_OSFXSR | CR4_OSXMMEXCPT)           /* 0x600 */

    .section .text.entry, "ax"
    .code32
    .globl _start
_start:
    cli
    cld
    movl %eax, mb_magic            /* .data survives the .bss clear below */
    movl %ebx, mb_info

    movl $__bss_start, %edi        /* clear .bss (see entry64.S) */
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $boot_stack_top, %esp

    lgdt gdt_ptr                   /* our GDT; reload every segment register from it */
    ljmp $KERNEL_CS, $1f
1:  movw $KERNEL_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    /* A known CR0/CR4: no caching quirks from the firmware, native x87 errors (NE),
     * SSE allowed with #XM for unmasked SIMD exceptions. */
    movl $CR0_BOOT, %eax
    movl %eax, %cr0
    movl $CR4_BOOT, %eax
    movl %eax, %cr4

    pushl mb_info                  /* kstart(magic, mbi), cdecl */
    pushl mb_magic
    call kstart                    /* does not return */
2:  hlt
    jmp 2b

    .data
    .balign 4
    .globl mb_magic, mb_info
mb_magic: .long 0
mb_info:  .long 0

/* The GDT (SDM vol. 3A, 3.4.5). Base 0, limit 4 GiB (G=1) for every code/data segment.
 * 0x18/0x20 follow from SYSEXIT, which loads CS = SYSENTER_CS+16 and SS = SYSENTER_CS+24
 * (SDM vol. 2B, SYSEXIT). */
    .balign 16
    .globl gdt
gdt:
    .quad 0                        /* 0x00 null */
    .quad 0x00cf9a000000ffff       /* 0x08 KERNEL_CS: 32-bit code, DPL0 */
    .quad 0x00cf92000000ffff       /* 0x10 KERNEL_DS: data, DPL0 */
    .quad 0x00cffa000000ffff       /* 0x18 USER_CS: 32-bit code, DPL3 */
    .quad 0x00cff2000000ffff       /* 0x20 USER_DS: data, DPL3 */
    .quad 0                        /* 0x28 TSS_SEL: filled in by tss_init() */
    .quad 0                        /* 0x30 SMALL_TSS_SEL: filled in by exceptions32 */
    .quad 0                        /* 0x38 unused */
    .quad 0                        /* 0x40 unused (BOOT_CS32 in the 64-bit layout) */
    .quad 0x00cf12000000ffff       /* 0x48 NP_DS: writable data with P=0 (access 0x12) */
gdt_end:

    .balign 4
    .word 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .bss
    .balign 16
    .skip 16384
    .globl boot_stack_top
boot_stack_top:
