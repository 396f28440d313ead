/*
 * rings32.S - SYSENTER/SYSEXIT, and the ring-3 side of both system call paths.
 *
 * SYSENTER (SDM vol. 2B, SYSENTER) is a jump to a fixed kernel entry:
 *   CS <- IA32_SYSENTER_CS (flat, DPL0), SS <- IA32_SYSENTER_CS + 8,
 *   EIP <- IA32_SYSENTER_EIP, ESP <- IA32_SYSENTER_ESP, EFLAGS.IF/VM/RF <- 0.
 * It saves nothing: by convention the caller passes its return EIP in EDX and its ESP
 * in ECX, which SYSEXIT (executed at CPL0) loads back, together with
 *   CS <- IA32_SYSENTER_CS + 16 | 3, SS <- IA32_SYSENTER_CS + 24 | 3.
 * That is why USER_CS = 0x18 and USER_DS = 0x20 follow KERNEL_CS = 0x08 in the GDT.
 */
#include "x86.h"

    .text
    .code32

/* long user_int80(long nr, long a, long b, long c) - ring 3, through IDT gate 0x80 (DPL3).
 * Register convention (as Linux i386): EAX = request, EBX/ECX/EDX = arguments,
 * EAX = result. */
    .globl user_int80, user_int80_insn
user_int80:
    pushl %ebx
    movl 8(%esp), %eax
    movl 12(%esp), %ebx
    movl 16(%esp), %ecx
    movl 20(%esp), %edx
user_int80_insn:
    int $0x80
    popl %ebx
    ret

/* long user_sysenter(long nr, long a, long b, long c) - ring 3: EAX = request,
 * EBX/ESI/EDI = arguments (EDX and ECX carry the return EIP and ESP). */
    .globl user_sysenter, user_sysenter_return
user_sysenter:
    pushl %ebx
    pushl %esi
    pushl %edi
    movl 16(%esp), %eax
    movl 20(%esp), %ebx
    movl 24(%esp), %esi
    movl 28(%esp), %edi
    movl $user_sysenter_return, %edx   /* where SYSEXIT will resume */
    movl %esp, %ecx                    /* and on which stack */
    sysenter
user_sysenter_return:
    popl %edi
    popl %esi
    popl %ebx
    ret

/* The kernel side: IA32_SYSENTER_EIP points here, ESP = IA32_SYSENTER_ESP. */
    .globl sysenter_entry, sysexit_insn
sysenter_entry:
    pushl %ecx                     /* struct sysenter_frame, see rings.c */
    pushl %edx
    pushl %edi
    pushl %esi
    pushl %ebx
    pushl %eax
    pushl %esp
    call sysenter_handler          /* cdecl: result in EAX */
    addl $8, %esp                  /* the argument and the saved EAX */
    popl %ebx
    popl %esi
    popl %edi
    popl %edx
    popl %ecx
sysexit_insn:
    sysexit
