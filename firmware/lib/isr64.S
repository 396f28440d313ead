/*
 * isr64.S - 64-bit interrupt entry stubs, and the way into and out of ring 3.
 *
 * Interrupt/exception delivery in IA-32e mode (SDM vol. 3A, 6.14 "Exception and Interrupt
 * Handling in 64-bit Mode"): the CPU aligns RSP to 16 bytes (or switches to the IST stack
 * named by the gate, or to TSS.RSP0 on a change to CPL0), then always pushes
 *     SS, RSP, RFLAGS, CS, RIP [, error code]
 * The error code exists only for vectors 8, 10-14, 17, 21, 29, 30 (SDM vol. 3A, 6.15);
 * each stub pushes a 0 in its place for the others, then the vector number, so that
 * isr_common always sees one layout: struct trap_frame in lib.h.
 *
 * Stack alignment: 5 CPU words + error + vector + 15 registers = 22 quadwords = 176
 * bytes, a multiple of 16, so RSP is 16-byte aligned at the `call` as the SysV ABI wants.
 */
#include "x86.h"

    .text
    .code64

.macro ISR vec
isr_\vec:
    .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    /* the CPU pushed an error code */
    .else
    pushq $0
    .endif
    pushq $\vec
    jmp isr_common
.endm

    .altmacro
    .set i, 0
    .rept 48
    ISR %i
    .set i, i + 1
    .endr
    .globl isr_128
    ISR 128

    .globl isr_common              /* also the tail of apic64.S's APIC vectors */
isr_common:
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
    iretq                          /* pops RIP, CS, RFLAGS, RSP, SS */

/* The table idt_init() walks: the stub addresses for vectors 0..47. */
.macro ISR_ADDR vec
    .quad isr_\vec
.endm

    .section .rodata
    .balign 8
    .globl isr_table
isr_table:
    .set i, 0
    .rept 48
    ISR_ADDR %i
    .set i, i + 1
    .endr
    .noaltmacro

/* ---- Ring 3 ------------------------------------------------------------------------- */
/*
 * void run_user(void (*fn)(void), void *user_stack_top)
 *
 * The only way to lower the privilege level is a return: iretq (or sysretq) with a frame
 * whose CS has RPL 3 (SDM vol. 3A, 6.14.3 / IRET in vol. 2A). We save the kernel's
 * callee-saved registers, point TSS.RSP0 just below them (so traps from ring 3 build
 * their frames underneath and leave them intact), and iretq to user_trampoline.
 * When fn returns, the trampoline executes ud2 at user_exit; trap_dispatch recognises
 * that #UD and calls return_to_kernel(), which unwinds to our caller like longjmp.
 */
    .text
    .globl run_user
run_user:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, kernel_saved_rsp(%rip)
    movq %rsp, %rax                /* TSS.RSP0 (offset 4): just below the saved registers */
    andq $-16, %rax
    movq %rax, tss+4(%rip)
    pushq $(USER_DS | 3)           /* SS */
    pushq %rsi                     /* RSP */
    pushq $(FL_IF | 2)             /* RFLAGS = 0x202 (the PICs are masked) */
    pushq $(USER_CS | 3)           /* CS: RPL 3 -> CPL 3 after iretq */
    leaq user_trampoline(%rip), %rax
    pushq %rax                     /* RIP */
    iretq

user_trampoline:                   /* ring 3 from here on; RDI still holds fn */
    call *%rdi
    .globl user_exit
user_exit:
    ud2                            /* trap_dispatch -> return_to_kernel() */

    .globl return_to_kernel
return_to_kernel:                  /* called at CPL0 from a trap handler */
    movq kernel_saved_rsp(%rip), %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret                            /* ... from run_user() */

    .bss
    .balign 8
kernel_saved_rsp: .quad 0
    .balign 16
    .skip 4096
    .globl user_stack_top
user_stack_top:
