/*
 * memory.S - boot-memory: the BIOS's memory services.
 *
 *   int 15h EAX=E820h   the memory map, one line per entry: base, length, type (20-byte
 *                       entries asked for; the loop ends when EBX comes back 0)
 *   int 15h AX=E801h    AX/BX/CX/DX (KiB 1-16 MiB, 64 KiB blocks above 16 MiB, twice)
 *   int 15h AH=88h      AX = KiB above 1 MiB (capped at FFFFh)
 *   int 12h             AX = KiB of base memory
 *   int 15h AX=2402h    A20 status (AL), AX=2401h enable, 2402h again, AX=2403h support
 *                       (BX: bit 0 keyboard controller, bit 1 port 92h)
 *   and a look at memory: FFFF:0510 and 0000:0500 are different bytes once A20 is on.
 *
 * Registers the BIOS does not return are zeroed before each call, so every printed value
 * is the BIOS's answer or 0.
 */
#include "boot.h"

#define SMAP 0x534D4150             /* "SMAP" */
#define E820_MAX 32

    .code16
    .text
    .globl main
main:
    PRINTLN "boot-memory: int 15h, int 12h"

    int $0x12
    PRINT "int 12h: AX="
    HEX16 %ax
    call newline

/* ---- E820h: the memory map ---------------------------------------------------------- */
    PRINTLN "E820h: base             length           type"
    xorl %ebx, %ebx
    xorw %bp, %bp                   /* entries */
e820_next:
    movl $0xE820, %eax
    movl $SMAP, %edx
    movl $20, %ecx
    movw $e820_entry, %di
    int $0x15
    jc e820_cf
    cmpl $SMAP, %eax
    jne e820_fail
    incw %bp
    movl %ecx, e820_ecx
    PRINT "       "
    HEX32 e820_entry + 4
    HEX32 e820_entry
    PRINT " "
    HEX32 e820_entry + 12
    HEX32 e820_entry + 8
    PRINT " "
    HEX32 e820_entry + 16
    call newline
    testl %ebx, %ebx
    jz e820_done
    cmpw $E820_MAX, %bp
    jb e820_next
    PRINTLN "E820h: more than 32 entries"
    jmp fail_end
e820_cf:                            /* CF=1 ends the list too, but not on the first call */
    testw %bp, %bp
    jnz e820_done
e820_fail:
    PRINTLN "E820h: FAILED (CF=1 or EAX is not SMAP)"
    jmp fail_end
e820_done:
    PRINT "E820h: "
    HEX16 %bp
    PRINT "h entries, ECX="
    HEX32 e820_ecx
    PRINTLN " in the last"

/* ---- E801h, 88h ---------------------------------------------------------------------- */
    movw $0xE801, %ax
    xorw %bx, %bx
    xorw %cx, %cx
    xorw %dx, %dx
    int $0x15
    pushf
    PRINT "E801h: "
    popf
    CFLAG
    PRINT " AX="
    HEX16 %ax
    PRINT " BX="
    HEX16 %bx
    PRINT " CX="
    HEX16 %cx
    PRINT " DX="
    HEX16 %dx
    call newline

    movb $0x88, %ah
    int $0x15
    pushf
    PRINT "88h: "
    popf
    CFLAG
    PRINT " AX="
    HEX16 %ax
    call newline

/* ---- A20 ----------------------------------------------------------------------------- */
    movw $0x2402, %ax
    call a20
    movw $0x2401, %ax
    call a20
    movw $0x2402, %ax
    call a20
    movw $0x2403, %ax
    call a20

    /* With A20 on, FFFF:0510 (linear 100500h) and 0000:0500 are different bytes */
    pushw %es
    movw $0xFFFF, %ax
    movw %ax, %es
    movb 0x500, %cl                 /* save both */
    movb %es:0x510, %ch
    movb $0x5A, 0x500
    movb $0xA5, %es:0x510
    movb 0x500, %al
    movb %cl, 0x500
    movb %ch, %es:0x510
    popw %es
    PRINT "A20 check: 0000:0500 "
    cmpb $0x5A, %al
    jne 1f
    PRINTLN "and FFFF:0510 are different bytes: A20 on"
    jmp 2f
1:  PRINTLN "is FFFF:0510: A20 off"
    jmp fail_end
2:
    PRINTLN "memory: done"
    jmp end

/* a20: int 15h with AX = 24xxh, print "int 15h AX=24xxh: CF=c AH=..", plus AL for
 * 2402h (status) and BX for 2403h (support); AL and BX are inputs otherwise. */
a20:
    pushw %ax
    PRINT "int 15h AX="
    HEX16 %ax
    popw %ax
    movw %ax, %si
    xorw %bx, %bx
    int $0x15
    pushf
    PRINT "h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    cmpw $0x2402, %si
    jne 1f
    PRINT " AL="
    HEX8 %al
1:  cmpw $0x2403, %si
    jne 2f
    PRINT " BX="
    HEX16 %bx
2:  call newline
    ret

    .data
    .balign 4
e820_entry: .fill 24, 1, 0
e820_ecx:   .long 0
