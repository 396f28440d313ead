/*
 * modes.S - a tour of the x86 operating modes, printing from each:
 *
 *   stage 1  32-bit protected mode     (the Multiboot hand-off)
 *   stage 2  real mode                 (16-bit code copied below 1 MiB, at 0x8000)
 *   stage 3  32-bit protected mode     (lgdt, CR0.PE=1, far jump)
 *   stage 4  64-bit long mode          (PAE, EFER.LME, CR0.PG, far jump to an L=1 CS)
 *
 * Self-contained: no C, no lib/ runtime beyond the Multiboot header. CR0, CR4 and EFER
 * are set to known values first, so the printed register values do not depend on what
 * the loader or the firmware left behind. Interrupts stay disabled throughout; no IDT is
 * needed (real mode gets an IVT pointer for form's sake).
 *
 * The serial routines are written once, as macros, and assembled three times: the same
 * source text becomes 16-, 32- and 64-bit machine code (lodsb reads DS:SI, ESI or RSI;
 * `loop` counts with CX, ECX or RCX), which is a lesson in itself.
 */
#include "x86.h"

#define TRAMPOLINE 0x8000                            /* real-mode code runs here */
#define T(sym) ((sym) - trampoline_start + TRAMPOLINE)  /* a trampoline symbol's run address */

/* GDT selectors (this file's own GDT, below) */
#define CODE32 0x08
#define DATA32 0x10
#define CODE16 0x18
#define DATA16 0x20
#define CODE64 0x28

/* ---- Serial output, mode-neutral ---------------------------------------------------- */
.macro PUTC_BL                     /* send BL to COM1 once THR is empty (LSR bit 5) */
    movw $(COM1 + 5), %dx
.Lwait\@:
    inb %dx, %al
    testb $0x20, %al
    jz .Lwait\@
    movw $COM1, %dx
    movb %bl, %al
    outb %al, %dx
.endm

.macro PUTS_BODY                   /* the NUL-terminated string at DS:(E/R)SI */
.Lnext\@:
    lodsb
    testb %al, %al
    jz .Ldone\@
    movb %al, %bl
    PUTC_BL
    jmp .Lnext\@
.Ldone\@:
    ret
.endm

.macro PUTHEX_BODY                 /* EDI as "0x" and 8 hex digits */
    movb $'0', %bl
    PUTC_BL
    movb $'x', %bl
    PUTC_BL
    movl $8, %ecx
.Ldigit\@:
    roll $4, %edi                  /* next nibble into the low 4 bits */
    movl %edi, %ebx
    andl $0xf, %ebx
    addb $'0', %bl
    cmpb $'9', %bl
    jbe .Lput\@
    addb $('a' - '0' - 10), %bl
.Lput\@:
    PUTC_BL
    loop .Ldigit\@
    ret
.endm

/* ==== Stage 1: 32-bit protected mode ================================================= */
    .section .text.entry, "ax"
    .code32
    .globl _start
_start:
    cli
    cld
    movl %eax, %ebp                /* multiboot magic, checked below */
    movl $__bss_start, %edi        /* clear .bss (page tables, stack) */
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl $stack_top, %esp

    lgdt gdt_ptr
    ljmp $CODE32, $1f
1:  movw $DATA32, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    movl $(CR0_PE | CR0_ET), %eax  /* known state: CR0=0x11, CR4=0, EFER=0 */
    movl %eax, %cr0
    xorl %eax, %eax
    movl %eax, %cr4
    movl $MSR_EFER, %ecx
    xorl %edx, %edx
    wrmsr

    movl $msg_stage1, %esi
    call puts32
    call print_cr0_efer32

    movl $msg_magic, %esi
    call puts32
    movl %ebp, %edi
    call puthex32
    movl $msg_ok, %esi
    cmpl $MB_BOOT_MAGIC, %ebp
    je 2f
    movl $msg_bad, %esi
2:  call puts32

/* ==== Stage 2: down to real mode (SDM vol. 3A, 10.9.2 "Switching Back to Real-Address
 * Mode") ===================================================================================
 * Real-mode code must lie below 1 MiB (20-bit addresses, 64 KiB segments), so the
 * trampoline is copied from the kernel image to 0x8000 first. */
    movl $trampoline_start, %esi
    movl $TRAMPOLINE, %edi
    movl $(trampoline_end - trampoline_start), %ecx
    rep movsb
    /* Step 3 of 10.9.2: jump to a 16-bit code segment with a 64 KiB limit, so that CS
     * already has real-mode-compatible attributes when PE goes off. */
    ljmp $CODE16, $T(pm16)

    .code16
trampoline_start:
pm16:                              /* 16-bit protected mode */
    movw $DATA16, %ax              /* step 4: 64 KiB, byte-granular, writable segments */
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    lidt T(ivt_ptr)                /* step 5: the real-mode interrupt vector table */
    movl %cr0, %eax                /* step 6: clear PE */
    andl $~CR0_PE, %eax
    movl %eax, %cr0
    ljmp $0, $T(real_mode)         /* step 7: a far jump loads a real-mode CS */

real_mode:
    xorw %ax, %ax                  /* step 8: segment = address >> 4 from now on */
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $TRAMPOLINE, %sp          /* the stack grows down from 0x8000 */

    movw $T(msg_stage2), %si
    call puts16
    movl %cr0, %edi
    call puthex16
    movw $T(msg_efer), %si
    call puts16
    movl $MSR_EFER, %ecx
    rdmsr
    movl %eax, %edi
    call puthex16
    movw $T(msg_newline), %si
    call puts16

    /* Real-mode addressing: linear = segment * 16 + offset, so 0x0800:0x0000 and
     * 0x0000:0x8000 name the same byte (the first byte of this trampoline). */
    movw $(TRAMPOLINE >> 4), %ax
    movw %ax, %es
    movb %es:0, %al
    cmpb T(trampoline_start), %al
    movw $T(msg_seg_ok), %si
    je 1f
    movw $T(msg_seg_bad), %si
1:  call puts16

/* ==== Stage 3: back to protected mode (SDM vol. 3A, 10.9.1) ============================ */
    lgdtl T(gdt_ptr_copy)          /* 32-bit operand size: the full 32-bit GDT base */
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $CODE32, $pm32_again     /* 0x66 prefix: 32-bit offset, to the image at 1 MiB */

puts16: PUTS_BODY
puthex16: PUTHEX_BODY

    .balign 4
ivt_ptr:
    .word 0x3ff                    /* 256 vectors x 4 bytes (segment:offset) */
    .long 0
gdt_ptr_copy:                      /* the same GDT, reachable from real mode (DS=0) */
    .word gdt_end - gdt - 1
    .long gdt
msg_stage2:  .asciz "modes: stage 2: real mode, 16-bit code at 0x8000, CR0="
msg_efer:    .asciz " EFER="
msg_newline: .asciz "\n"
msg_seg_ok:  .asciz "modes: real-mode addressing: 0x0800:0x0000 == 0x0000:0x8000 ok\n"
msg_seg_bad: .asciz "modes: real-mode addressing: 0x0800:0x0000 != 0x0000:0x8000 FAILED\n"
trampoline_end:

    .code32
pm32_again:
    movw $DATA32, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $stack_top, %esp
    movl $msg_stage3, %esi
    call puts32
    call print_cr0_efer32

/* ==== Stage 4: long mode (SDM vol. 3A, 10.8.5 "Initializing IA-32e Mode") ============= */
    /* 4-level identity map of the first 1 GiB with 2 MiB pages (see lib/entry64.S). */
    movl $pdpt, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, pml4
    movl $page_dir, %eax
    orl $(PTE_P | PTE_W), %eax
    movl %eax, pdpt
    movl $page_dir, %edi
    movl $(PTE_P | PTE_W | PTE_PS), %eax
    movl $512, %ecx
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

    movl $CR4_PAE, %eax            /* 1. PAE */
    movl %eax, %cr4
    movl $pml4, %eax               /* 2. CR3 */
    movl %eax, %cr3
    movl $MSR_EFER, %ecx           /* 3. EFER.LME */
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax                /* 4. CR0.PG: the CPU sets EFER.LMA */
    orl $CR0_PG, %eax
    movl %eax, %cr0
    ljmp $CODE64, $long_mode       /* 5. a code segment with L=1 */

    .code64
long_mode:
    movw $DATA32, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $stack_top, %rsp
    movq $msg_stage4, %rsi
    call puts64
    movq %cr0, %rdi
    call puthex64
    movq $msg_cr4, %rsi
    call puts64
    movq %cr4, %rdi
    call puthex64
    movq $msg_efer32, %rsi
    call puts64
    movl $MSR_EFER, %ecx
    rdmsr
    movl %eax, %edi
    call puthex64
    movq $msg_done, %rsi
    call puts64

    movw $DEBUG_EXIT_PORT, %dx     /* exit code 0: QEMU exits with status 1 */
    xorl %eax, %eax
    outl %eax, %dx
2:  cli
    hlt
    jmp 2b

puts64: PUTS_BODY
puthex64: PUTHEX_BODY

    .code32
print_cr0_efer32:                  /* "CR0=... EFER=...\n" */
    movl %cr0, %edi
    call puthex32
    movl $msg_efer32, %esi
    call puts32
    movl $MSR_EFER, %ecx
    rdmsr
    movl %eax, %edi
    call puthex32
    movl $msg_newline32, %esi
    jmp puts32

puts32: PUTS_BODY
puthex32: PUTHEX_BODY

/* ---- Data ------------------------------------------------------------------------------ */
    .section .rodata
msg_stage1:    .asciz "modes: stage 1: 32-bit protected mode (multiboot entry), CR0="
msg_magic:     .asciz "modes: multiboot magic "
msg_ok:        .asciz " ok\n"
msg_bad:       .asciz " BAD\n"
msg_stage3:    .asciz "modes: stage 3: back in 32-bit protected mode, CR0="
msg_stage4:    .asciz "modes: stage 4: 64-bit long mode, CR0="
msg_cr4:       .asciz " CR4="
msg_efer32:    .asciz " EFER="
msg_newline32: .asciz "\n"
msg_done:      .asciz "\nmodes: done\n"

    .data
/* Flat 4 GiB segments for 32-bit code/data, 64 KiB byte-granular ones (G=0, D=0) for
 * the 16-bit step, and a 64-bit code segment (L=1). SDM vol. 3A, 3.4.5. */
    .balign 16
gdt:
    .quad 0                        /* 0x00 null */
    .quad 0x00cf9a000000ffff       /* 0x08 CODE32 */
    .quad 0x00cf92000000ffff       /* 0x10 DATA32 */
    .quad 0x00009a000000ffff       /* 0x18 CODE16: base 0, limit 0xffff */
    .quad 0x000092000000ffff       /* 0x20 DATA16 */
    .quad 0x00af9a000000ffff       /* 0x28 CODE64 */
gdt_end:
    .balign 4
    .word 0
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .bss
    .balign 4096
pml4:     .skip 4096
pdpt:     .skip 4096
page_dir: .skip 4096
    .balign 16
    .skip 4096
stack_top:
