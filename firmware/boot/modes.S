/*
 * modes.S - boot-modes: from the BIOS's real mode to protected mode and on to long mode.
 *
 *   real mode         prints through int 10h, sets CR0 to a known value (ET only), reads
 *                     the cursor (int 10h AH=03h) for the modes that have no BIOS
 *   protected mode    lgdt, CR0.PE, far jump to a 32-bit code segment; prints by writing
 *                     characters (attribute 07h) into video memory at B8000h
 *   long mode         PAE page tables identity-mapping the first 2 MiB with one 2 MiB page
 *                     (PML4 1000h, PDPT 2000h, PD 3000h), CR4.PAE, CR3, EFER.LME (wrmsr),
 *                     CR0.PG, far jump to a 64-bit code segment; prints the same way, then
 *                     runs the END routine in 64-bit code (screen dump to COM1, exit)
 *
 * Interrupts stay off from the switch on; no IDT is loaded. The video-memory printer is
 * written once as macros and assembled as 32- and 64-bit code (the same text: lodsb uses
 * ESI or RSI, the cell address uses 32-bit addressing in both); so is the END routine
 * (boot.h), which lib.S assembles as 16-bit code.
 */
#include "boot.h"

#define CODE32 0x08
#define DATA   0x10
#define CODE64 0x18
#define PML4   0x1000
#define PDPT   0x2000
#define PD     0x3000
#define MSR_EFER 0xC0000080
#define EFER_LME (1 << 8)
#define CR0_PE   (1 << 0)
#define CR0_ET   (1 << 4)
#define CR0_PG   (1 << 31)
#define CR4_PAE  (1 << 5)

/* Video-memory output: vid_line = first cell of the current row, vid_col = column. */
.macro VPUTC_BODY                   /* AL; clobbers EAX, ECX */
    cmpb $'\n', %al
    jne .Lchar\@
    addw $SCREEN_COLS, vid_line
    movw $0, vid_col
    ret
.Lchar\@:
    movb $0x07, %ah
    movw %ax, %cx
    movzwl vid_line, %eax
    addw vid_col, %ax
    movw %cx, VGA_TEXT(,%eax,2)
    incw vid_col
    ret
.endm
.macro VPUTS_BODY putc              /* the NUL-terminated string at (E/R)SI */
.Lnext\@:
    lodsb
    testb %al, %al
    jz .Ldone\@
    call \putc
    jmp .Lnext\@
.Ldone\@:
    ret
.endm

/* ==== Real mode ========================================================================= */
    .code16
    .text
    .globl main
main:
    PRINTLN "boot-modes: real mode, printing through int 10h"
    movl $CR0_ET, %eax              /* a known CR0: no PE, no PG, caches on */
    movl %eax, %cr0
    movl %cr0, %eax
    PRINT "real mode: CR0="
    HEX32 %eax
    PRINTLN ", the next rows are written to B8000h"

    movb $0x03, %ah                 /* where int 10h left the cursor */
    xorb %bh, %bh
    int $0x10
    movb %dh, %al
    movb $SCREEN_COLS, %bl
    mulb %bl
    movw %ax, vid_line
    xorb %dh, %dh
    movw %dx, vid_col

    cli
    lgdtl gdt_ptr
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $CODE32, $pm32

/* ==== Protected mode ==================================================================== */
    .code32
pm32:
    movw $DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $LOAD_ADDR, %esp

    movl $msg_pm, %esi
    call vputs32
    movw %cs, %dx
    shll $16, %edx
    movl $4, %ebx                   /* CS as 4 digits: the upper half of EDX */
    call vhex32_n
    movl $msg_cr0, %esi
    call vputs32
    movl %cr0, %edx
    call vhex32
    movl $msg_nl, %esi
    call vputs32

    /* page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0 */
    movl $PML4, %edi
    xorl %eax, %eax
    movl $(3 * 4096 / 4), %ecx
    rep stosl
    movl $(PDPT | 0x3), PML4        /* present, writable */
    movl $(PD | 0x3), PDPT
    movl $0x83, PD                  /* present, writable, 2 MiB page (PS) */

    movl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $PML4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    movl $EFER_LME, %eax
    xorl %edx, %edx
    wrmsr
    movl %cr0, %eax
    orl $CR0_PG, %eax
    movl %eax, %cr0                 /* EFER.LMA = 1 from here: compatibility mode */
    ljmp $CODE64, $lm64

vputc32: VPUTC_BODY
vputs32: VPUTS_BODY vputc32
vhex32:  movl $8, %ebx                /* EDX as hex: all 8 digits, or */
vhex32_n:                           /* the top EBX digits; clobbers EAX-EDX */
    roll $4, %edx
    movb %dl, %al
    andb $0x0F, %al
    addb $'0', %al
    cmpb $'9', %al
    jbe 1f
    addb $('A' - '0' - 10), %al
1:  call vputc32
    decl %ebx
    jnz vhex32_n
    ret

/* ==== Long mode ========================================================================= */
    .code64
lm64:
    movw $DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $LOAD_ADDR, %esp           /* RSP = 7C00h */

    movl $msg_lm, %esi
    call vputs64
    movw %cs, %dx
    shll $16, %edx
    movl $4, %ebx
    call vhex64_n
    movl $msg_cr0, %esi
    call vputs64
    movq %cr0, %rdx
    call vhex64
    movl $msg_cr4, %esi
    call vputs64
    movq %cr4, %rdx
    call vhex64
    movl $msg_efer, %esi
    call vputs64
    movl $MSR_EFER, %ecx
    rdmsr
    movl %eax, %edx
    call vhex64
    movl $msg_nl, %esi
    call vputs64
    movl $msg_done, %esi
    call vputs64

    /* END, in 64-bit code: the same macros as lib.S's 16-bit END */
    cld
    movl $screen_marker, %esi
    SERIAL_STR %rsi
    movl $VGA_TEXT, %esi
    SCREEN_DUMP %rsi, %rdi
    xorb %al, %al
    DEBUG_EXIT_AL

vputc64: VPUTC_BODY
vputs64: VPUTS_BODY vputc64
vhex64:  movl $8, %ebx
vhex64_n:
    roll $4, %edx
    movb %dl, %al
    andb $0x0F, %al
    addb $'0', %al
    cmpb $'9', %al
    jbe 1f
    addb $('A' - '0' - 10), %al
1:  call vputc64
    decl %ebx
    jnz vhex64_n
    ret

    .section .rodata
msg_pm:   .asciz "protected mode: 32-bit code, CS="
msg_lm:   .asciz "long mode: 64-bit code, CS="
msg_cr0:  .asciz " CR0="
msg_cr4:  .asciz " CR4="
msg_efer: .asciz " EFER="
msg_nl:   .asciz "\n"
msg_done: .asciz "modes: done\n"

    .balign 8
gdt:
    .quad 0                         /* null */
    .quad 0x00CF9A000000FFFF        /* 08h: 32-bit code, base 0, 4 GiB */
    .quad 0x00CF92000000FFFF        /* 10h: data, base 0, 4 GiB */
    .quad 0x00AF9A000000FFFF        /* 18h: 64-bit code (L=1) */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    .data
    .balign 2
vid_line: .word 0
vid_col:  .word 0
