/*
 * start.S - sector 0 of every boot guest: a tiny loader.
 *
 * The BIOS loads sector 0 to 0:7C00 and jumps there with DL = boot drive (CS:IP may be
 * 0000:7C00 or 07C0:0000, so the first thing is a far jump to CS = 0). The loader sets up
 * DS = ES = SS = 0 and a stack below 0x7C00, sets video mode 3 (clearing the screen, so
 * no BIOS banner is left on it), asks int 13h AH=08h for the disk geometry and reads the
 * guest's code sectors (code_lba .. code_lba + code_sectors - 1, both defined by boot.ld)
 * one at a time with CHS int 13h AH=02h to 0:7E00, then jumps to main.
 *
 * Bytes 446-509 (the partition table) stay zero: QEMU guesses a disk's geometry from a
 * partition table when sector 0 ends in 55 AA, and code bytes there would change it.
 */
#include "boot.h"

    .code16
    .section .boot, "awx"
    .globl _start
_start:
    cli
    ljmp $0, $start0                /* normalize CS:IP to 0000:7Cxx */
start0:
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $LOAD_ADDR, %sp
    cld
    sti
    movb %dl, boot_drive

    movw $0x0003, %ax               /* video mode 3: 80x25 text, 16 colours, clears */
    int $0x10

    movb $0x08, %ah                 /* get drive parameters */
    movb boot_drive, %dl
    xorw %di, %di
    int $0x13
    jc 1f                           /* keep the defaults (63 sectors, 16 heads) */
    andw $0x3F, %cx
    jz 1f
    movw %cx, geom_spt
    movb %dh, %al
    xorb %ah, %ah
    incw %ax
    movw %ax, geom_heads
1:
    xorw %ax, %ax
    movw %ax, %es
    movw $code_lba, %ax             /* LBA of the next code sector */
    movw $code_sectors, %cx         /* sectors left */
    movw $CODE_ADDR, %bx            /* ES:BX: where it goes */
load:
    pushw %ax
    pushw %cx
    xorw %dx, %dx
    divw geom_spt                   /* AX = track, DX = sector - 1 */
    incw %dx
    movw %dx, %cx                   /* CL = sector */
    xorw %dx, %dx
    divw geom_heads                 /* AX = cylinder, DX = head */
    movb %al, %ch                   /* CH = cylinder bits 7..0 */
    shlb $6, %ah
    orb %ah, %cl                    /* CL bits 7..6 = cylinder bits 9..8 */
    movb %dl, %dh                   /* DH = head */
    movb boot_drive, %dl
    movw $0x0201, %ax               /* read 1 sector */
    int $0x13
    jc load_error
    popw %cx
    popw %ax
    addw $512, %bx
    incw %ax
    loop load
    jmp main

load_error:
    movw $msg_load_error, %si
2:  lodsb
    testb %al, %al
    jz 3f
    movb $0x0E, %ah
    xorw %bx, %bx
    int $0x10
    jmp 2b
3:  movb $2, %al                    /* QEMU exit status 5, as the other guests' traps */
    DEBUG_EXIT_AL

msg_load_error: .asciz "boot: int 13h AH=02h failed loading the guest"

    .globl boot_drive
boot_drive: .byte 0
    .balign 2
geom_spt:   .word 63
geom_heads: .word 16

    .org 446                        /* the partition table: empty */
    .fill 64, 1, 0
    .org 510
    .byte 0x55, 0xAA
