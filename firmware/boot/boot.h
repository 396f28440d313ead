/*
 * boot.h - constants and macros shared by the boot-sector guests (firmware/boot/).
 *
 * Included by the .S files (they go through the C preprocessor). The macros that talk to
 * COM1 and dump the text screen are written once and assembled in 16-, 32- and 64-bit
 * code (boot-modes needs the screen dump in long mode): the pointer registers are macro
 * arguments (si/esi/rsi, di/edi/rdi), the rest uses 8/16-bit registers only.
 */
#ifndef FW_BOOT_H
#define FW_BOOT_H

#define LOAD_ADDR   0x7C00          /* where the BIOS puts sector 0 */
#define CODE_ADDR   0x7E00          /* where the boot sector loads the rest of the guest */
#define COM1        0x3F8
#define COM1_LSR    (COM1 + 5)      /* line status: bit 5 = THR empty */
#define DEBUG_EXIT  0xF4            /* isa-debug-exit: QEMU exits with (value << 1) | 1 */
#define VGA_TEXT    0xB8000         /* 80x25 text mode, 2 bytes a cell (char, attribute) */
#define SCREEN_ROWS 25
#define SCREEN_COLS 80

#ifdef __ASSEMBLER__

/* ---- COM1, polled, no UART set-up (QEMU's and emu's UART work without it) ---------- */
.macro SERIAL_AL                    /* send AL; clobbers AH, DX */
    movb %al, %ah
    movw $COM1_LSR, %dx
.Lthr\@:
    inb %dx, %al
    testb $0x20, %al
    jz .Lthr\@
    movw $COM1, %dx
    movb %ah, %al
    outb %al, %dx
.endm

.macro SERIAL_STR si                /* the NUL-terminated string at DS:\si; clobbers AX, DX */
.Lnext\@:
    lodsb
    testb %al, %al
    jz .Ldone\@
    SERIAL_AL
    jmp .Lnext\@
.Ldone\@:
.endm

/*
 * Dump the 80x25 text screen to COM1, starting at DS:\si (the first cell): per row the 80
 * characters without their attribute bytes and without trailing spaces, then "\n".
 * Clobbers AX, BX, CH, DX, \si, \di.
 */
.macro SCREEN_DUMP si, di
    movb $SCREEN_ROWS, %ch
.Lrow\@:
    mov \si, \di                    /* the row's first cell */
    xorw %bx, %bx                   /* BL: cells seen, BH: length without trailing blanks */
.Lscan\@:
    lodsw
    incb %bl
    cmpb $' ', %al
    je .Lblank\@
    movb %bl, %bh
.Lblank\@:
    cmpb $SCREEN_COLS, %bl
    jb .Lscan\@
    mov \di, \si
    testb %bh, %bh
    jz .Leol\@
.Lput\@:
    lodsw
    SERIAL_AL
    decb %bh
    jnz .Lput\@
.Leol\@:
    movb $'\n', %al
    SERIAL_AL
    mov \di, \si
    add $(2 * SCREEN_COLS), \si
    decb %ch
    jnz .Lrow\@
.endm

.macro DEBUG_EXIT_AL                /* AL -> isa-debug-exit, then stop for good */
    movw $DEBUG_EXIT, %dx
    outb %al, %dx
    cli
.Lhalt\@:
    hlt
    jmp .Lhalt\@
.endm

/* ---- 16-bit printing through int 10h (lib.S), for the guests' main code ------------ */
/* PRINT "text": teletype the string (no newline); PRINTLN adds CR LF. All registers
 * and all flags are preserved (by these macros and by lib.S's routines). */
.macro PRINT text
    .pushsection .rodata
.Lstr\@:
    .asciz "\text"
    .popsection
    pushw %si
    movw $.Lstr\@, %si
    call puts
    popw %si
.endm
.macro PRINTLN text
    PRINT "\text"
    call newline
.endm
/* HEX8/HEX16/HEX32 operand: print the value as 2/4/8 upper-case hex digits (registers
 * and flags preserved; the operand must not be SP-relative). */
.macro HEX8 val
    pushl %eax
    movb \val, %al
    call hex8
    popl %eax
.endm
.macro HEX16 val
    pushl %eax
    movw \val, %ax
    call hex16
    popl %eax
.endm
.macro HEX32 val
    pushl %eax
    movl \val, %eax
    call hex32
    popl %eax
.endm
/* CFLAG: print "CF=0" or "CF=1" from the current carry flag (flags preserved). */
.macro CFLAG
    pushf
    pushw %ax
    movb $'0', %al
    adcb $0, %al
    PRINT "CF="
    call putc
    popw %ax
    popf
.endm

#endif /* __ASSEMBLER__ */
#endif /* FW_BOOT_H */
