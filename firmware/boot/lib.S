/*
 * lib.S - the 16-bit runtime of the boot guests: printing through int 10h AH=0Eh
 * (teletype) and the common END routine.
 *
 *   putc      AL                      one character
 *   puts      DS:SI                   a NUL-terminated string
 *   newline                           CR LF
 *   hex4/hex8/hex16/hex32  AL/AL/AX/EAX   upper-case hex digits, no prefix
 *   end                               screen dump to COM1, exit code 0 (QEMU status 1)
 *   fail_end                          the same with exit code 1 (QEMU status 3)
 *
 * All routines except end/fail_end preserve every register (32-bit) and the flags, so
 * a result can be printed before its carry flag is tested. They expect DS = 0.
 *
 * END: "--- screen ---\n" on COM1, then the 80x25 text screen at B800:0000, row by row,
 * characters only (no attributes), trailing spaces removed, each row ended by "\n"
 * (LF only); then the exit code to port 0xF4 (isa-debug-exit), then cli; hlt forever.
 */
#include "boot.h"

    .code16
    .text

    .globl putc
putc:
    pushfw
    pushal
    movb $0x0E, %ah                 /* teletype output: AL, page BH, colour BL */
    xorw %bx, %bx
    int $0x10
    popal
    popfw
    ret

    .globl puts
puts:
    pushfw
    pushw %ax
    pushw %si
1:  lodsb
    testb %al, %al
    jz 2f
    call putc
    jmp 1b
2:  popw %si
    popw %ax
    popfw
    ret

    .globl newline
newline:
    pushw %ax
    movb $'\r', %al
    call putc
    movb $'\n', %al
    call putc
    popw %ax
    ret                             /* (mov does not change flags) */

    .globl hex4
hex4:
    pushfw
    pushw %ax
    andb $0x0F, %al
    addb $'0', %al
    cmpb $'9', %al
    jbe 1f
    addb $('A' - '0' - 10), %al
1:  call putc
    popw %ax
    popfw
    ret

    .globl hex8
hex8:
    pushfw
    pushw %ax
    rorb $4, %al
    call hex4
    rorb $4, %al
    call hex4
    popw %ax
    popfw
    ret

    .globl hex16
hex16:
    pushfw
    xchgb %al, %ah
    call hex8
    xchgb %al, %ah
    call hex8
    popfw
    ret

    .globl hex32
hex32:
    pushfw
    rorl $16, %eax
    call hex16
    rorl $16, %eax
    call hex16
    popfw
    ret

    .globl end, fail_end, screen_marker
fail_end:
    movb $1, %cl
    jmp 1f
end:
    movb $0, %cl
1:  cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw $screen_marker, %si
    SERIAL_STR %si
    movw $(VGA_TEXT >> 4), %ax
    movw %ax, %ds
    xorw %si, %si
    pushw %cx
    SCREEN_DUMP %si, %di
    popw %cx
    movb %cl, %al
    DEBUG_EXIT_AL

    .section .rodata
screen_marker: .asciz "--- screen ---\n"
