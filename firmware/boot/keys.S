/*
 * keys.S - boot-keys: the keyboard through int 16h.
 *
 * Prints "type: ", then for each key: polls AH=01h (check for a key, not removing it)
 * until ZF is clear, reads it with AH=00h, checks that both gave the same AX, and echoes
 * it with teletype; ends at CR (0Dh) or after 16 keys. Then prints every key's AX
 * (scan code in AH, ASCII in AL), calls AH=01h once more (no key waiting: ZF=1) and
 * "keys: done". Polling first keeps the transcript independent of when the keys arrive.
 *
 * The reference input is "emu" and Enter: QEMU's sendkey e, m, u, ret (PS/2 keyboard);
 * on emu the same keys arrive as "emu\r" on COM1 (stdin).
 */
#include "boot.h"

#define MAX_KEYS 16

    .code16
    .text
    .globl main
main:
    PRINTLN "boot-keys: int 16h"
    PRINT "type: "
    xorw %bp, %bp                   /* keys read */
    movb $1, peek_ok
next_key:
    movb $0x01, %ah                 /* a key waiting? ZF=0 and AX = the key if so */
    int $0x16
    jnz got_key
    hlt                             /* wait for the keyboard (or timer) interrupt */
    jmp next_key
got_key:
    movw %ax, %bx
    xorb %ah, %ah                   /* read it */
    int $0x16
    cmpw %ax, %bx
    je 1f
    movb $0, peek_ok
1:  movw %bp, %si
    shlw $1, %si
    movw %ax, keys(%si)
    incw %bp
    cmpb $0x0D, %al
    je keys_done
    call putc                       /* echo */
    cmpw $MAX_KEYS, %bp
    jb next_key
keys_done:
    call newline

    PRINT "keys (AX):"
    xorw %si, %si
1:  PRINT " "
    HEX16 keys(%si)
    addw $2, %si
    decw %bp
    jnz 1b
    call newline

    PRINT "AH=01h before each AH=00h: ZF=0, same AX: "
    cmpb $0, peek_ok
    je 2f
    PRINTLN "yes"
    jmp 3f
2:  PRINTLN "no"
3:
    movb $0x01, %ah
    int $0x16
    PRINT "AH=01h after the last key: "
    jz 4f
    PRINTLN "ZF=0 (a key is waiting)"
    jmp 5f
4:  PRINTLN "ZF=1 (no key)"
5:
    PRINTLN "keys: done"
    jmp end

    .data
peek_ok: .byte 0
    .balign 2
keys: .fill MAX_KEYS, 2, 0
