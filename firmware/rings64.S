/*
 * rings64.S - SYSCALL/SYSRET, and the ring-3 side of both system call paths.
 *
 * SYSCALL (SDM vol. 2B, SYSCALL; AMD APM vol. 2, 6.1.1) is a jump, not an interrupt:
 *   RCX <- RIP of the next instruction, R11 <- RFLAGS, RFLAGS &= ~IA32_FMASK,
 *   CS <- STAR[47:32] (flat, DPL0), SS <- STAR[47:32] + 8, RIP <- IA32_LSTAR.
 * Nothing is pushed and RSP is still the user's: the kernel must switch stacks itself.
 * (SFMASK clears IF, so no interrupt can arrive while RSP points at user memory.)
 * SYSRETQ reverses it: RIP <- RCX, RFLAGS <- R11, CS <- STAR[63:48] + 16 with RPL 3,
 * SS <- STAR[63:48] + 8 with RPL 3.
 */
#include "x86.h"

    .text
    .code64

/* long user_int80(long nr, long a, long b, long c) - ring 3, through IDT gate 0x80 (DPL3).
 * Register convention (ours): RAX = request, RDI/RSI/RDX = arguments, RAX = result. */
    .globl user_int80, user_int80_insn
user_int80:
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
user_int80_insn:
    int $0x80
    ret

/* long user_syscall(long nr, long a, long b, long c) - ring 3, same convention. */
    .globl user_syscall, user_syscall_return
user_syscall:
    movq %rdi, %rax
    movq %rsi, %rdi
    movq %rdx, %rsi
    movq %rcx, %rdx
    syscall                        /* clobbers RCX and R11 */
user_syscall_return:
    ret

/* The kernel side: IA32_LSTAR points here. */
    .globl syscall_entry, sysret_insn, syscall_in_ring3
syscall_entry:
    /* Not needed on a CPU: this project's nested KVM host (kvm_pvm) arrives here still
     * in ring 3 (CS=0x33). Then no port I/O works; trap into a real ring-0 handler with
     * ud2 so that rings.c can report it. R10 is free: the user stubs do not keep it. */
    movl %cs, %r10d
    testb $3, %r10b
    jnz syscall_in_ring3
    movq %rsp, user_rsp(%rip)      /* keep the user stack pointer ... */
    movq tss+4(%rip), %rsp         /* ... and run on TSS.RSP0, like a trap from ring 3 */
    pushq %rcx                     /* struct syscall_frame, see rings.c */
    pushq %r11
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rax
    movq %rsp, %rdi                /* 6 pushes: RSP stays 16-byte aligned for the call */
    call syscall_handler           /* result in RAX */
    addq $8, %rsp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %r11
    popq %rcx
    movq user_rsp(%rip), %rsp
sysret_insn:
    sysretq
syscall_in_ring3:
    ud2

    .bss
    .balign 8
user_rsp: .quad 0
