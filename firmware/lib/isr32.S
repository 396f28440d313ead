/*
 * isr32.S - 32-bit interrupt entry stubs, and the way into and out of ring 3.
 *
 * Delivery in protected mode (SDM vol. 3A, 6.12.1 "Exception- or Interrupt-Handler
 * Procedures"): without a privilege change the CPU pushes EFLAGS, CS, EIP [, error code]
 * on the current stack; from ring 3 it first switches to SS0:ESP0 from the TSS and also
 * pushes the old SS and ESP (so trap_frame.sp/.ss are valid only when (cs & 3) == 3).
 * Vectors with an error code: 8, 10-14, 17, 21, 29, 30 (SDM vol. 3A, 6.15); the stubs
 * push a 0 for the others, then the vector number.
 */
#include "x86.h"

    .text
    .code32

.macro ISR vec
isr_\vec:
    .if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
    .else
    pushl $0
    .endif
    pushl $\vec
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

isr_common:
    pushal                         /* EAX, ECX, EDX, EBX, (ESP), EBP, ESI, EDI */
    movl %esp, %eax
    pushl %eax                     /* trap_dispatch(struct trap_frame *) */
    cld
    call trap_dispatch
    addl $4, %esp
    popal
    addl $8, %esp                  /* vector and error code */
    iret

.macro ISR_ADDR vec
    .long isr_\vec
.endm

    .section .rodata
    .balign 4
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
 * iret to a CS with RPL 3 pops EIP, CS, EFLAGS and then ESP, SS (SDM vol. 2A, IRET,
 * "RETURN-TO-OUTER-PRIVILEGE-LEVEL"). Data segment registers that hold a DPL0 selector
 * would be nulled by that return, so DS/ES are loaded with the DPL3 data selector first;
 * ring 0 can keep using it (a data segment is accessible when max(CPL, RPL) <= DPL).
 * TSS.ESP0 points just below the registers saved here; see isr64.S for the exit path.
 */
    .text
    .globl run_user
run_user:
    movl 4(%esp), %ecx             /* fn */
    movl 8(%esp), %edx             /* user stack top */
    pushl %ebx
    pushl %ebp
    pushl %esi
    pushl %edi
    movl %esp, kernel_saved_esp
    movl %esp, %eax                /* TSS.ESP0 (offset 4): just below the saved registers */
    andl $-16, %eax
    movl %eax, tss+4
    movw $(USER_DS | 3), %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    pushl $(USER_DS | 3)           /* SS */
    pushl %edx                     /* ESP */
    pushl $(FL_IF | 2)             /* EFLAGS = 0x202 (the PICs are masked) */
    pushl $(USER_CS | 3)           /* CS */
    pushl $user_trampoline         /* EIP */
    iret

user_trampoline:                   /* ring 3; ECX still holds fn */
    call *%ecx
    .globl user_exit
user_exit:
    ud2

    .globl return_to_kernel
return_to_kernel:
    movl kernel_saved_esp, %esp
    movw $KERNEL_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    popl %edi
    popl %esi
    popl %ebp
    popl %ebx
    ret

    .bss
    .balign 4
kernel_saved_esp: .long 0
    .balign 16
    .skip 4096
    .globl user_stack_top
user_stack_top:
