/*
 * hello.S - boot-hello: the first boot guest. int 10h teletype output, the BIOS data
 * answers of int 11h (equipment word) and int 12h (base memory), and the int 10h text
 * services a boot loader uses: AH=0Fh (get mode), AH=02h/03h (set/get cursor), AH=09h
 * (character + attribute, cursor not moved), AH=0Eh with CR, BS and line wrap, AH=06h
 * (scroll a window up; cells outside the window stay), and at the end AH=0Eh scrolling
 * the whole screen: a line feed on the last row (24) moves every row up by one, so the
 * first row printed is gone from the dump and every row named in the text (marker at
 * row 20, window rows 16-18) is found one row higher.
 */
#include "boot.h"

    .code16
    .text
    .globl main
main:
    PRINTLN "boot-hello: this row scrolls off the screen at the end"
    PRINTLN "Hello from a boot sector (int 10h)"

    int $0x11
    PRINT "int 11h equipment word: "
    HEX16 %ax
    call newline

    int $0x12
    PRINT "int 12h base memory: "
    HEX16 %ax
    PRINTLN " KiB"

    movb $0x0F, %ah                 /* get video mode: AL mode, AH columns, BH page */
    int $0x10
    PRINT "int 10h AH=0Fh: AL=mode "
    HEX8 %al
    PRINT " AH=columns "
    HEX8 %ah
    PRINT " BH=page "
    HEX8 %bh
    call newline

    /* AH=02h/03h: print a marker at row 20, col 30, read the cursor after it */
    PRINTLN "int 10h AH=02h: marker at row 20 (14h), col 30 (1Eh)"
    movb $0x03, %ah                 /* where the main text goes on */
    xorb %bh, %bh
    int $0x10
    movw %dx, saved_cursor
    movb $0x02, %ah
    xorb %bh, %bh
    movw $0x141E, %dx               /* DH row 20, DL col 30 */
    int $0x10
    PRINT "<marker>"
    movb $0x03, %ah
    xorb %bh, %bh
    int $0x10
    movw %dx, %cx
    movb $0x02, %ah
    xorb %bh, %bh
    movw saved_cursor, %dx
    int $0x10
    PRINT "int 10h AH=03h after the marker: DH=row "
    HEX8 %ch
    PRINT " DL=col "
    HEX8 %cl
    call newline

    /* AH=09h: five '*' with attribute 1Fh at the cursor, which does not move */
    PRINT "int 10h AH=09h: ["
    movw $0x092A, %ax               /* AL = '*' */
    movw $0x001F, %bx               /* page 0, white on blue */
    movw $5, %cx
    int $0x10
    movb $0x03, %ah
    xorb %bh, %bh
    int $0x10
    addb $5, %dl
    movb $0x02, %ah
    int $0x10
    PRINTLN "] (5 x '*', attribute 1Fh)"

    /* AH=0Eh control characters: CR returns to column 0, BS steps back one column */
    PRINT "xxxxxxxxxx\r"
    PRINTLN "int 10h AH=0Eh CR, BS: abc\bX"

    /* AH=0Eh line wrap: 80 characters fill the row, the next one goes to the next row */
    movw $78, %cx
    movb $'-', %al
1:  call putc
    loop 1b
    PRINT "->"
    PRINTLN "wrapped to the next row"

    /* AH=06h: three rows at col 40 (rows 16-18), then rows 16-18 x cols 40-59 scroll up
     * by one line: the window's last row is blanked, columns 60 and up stay. */
    PRINTLN "int 10h AH=06h: rows 16-18, cols 40-59 scrolled up one line:"
    movw $0x1028, %dx
    movw $window_a, %si
    call print_at
    movw $0x1128, %dx
    movw $window_b, %si
    call print_at
    movw $0x1228, %dx
    movw $window_c, %si
    call print_at
    movw $0x0601, %ax               /* scroll up 1 line */
    movb $0x07, %bh                 /* attribute of the blanked line */
    movw $0x1028, %cx               /* CH top row 16, CL left col 40 */
    movw $0x123B, %dx               /* DH bottom row 18, DL right col 59 */
    int $0x10

    /* AH=0Eh on the last row: the line feed after "hello: done" scrolls the screen */
    movb $0x02, %ah
    xorb %bh, %bh
    movw $0x1700, %dx               /* row 23, col 0 */
    int $0x10
    PRINTLN "int 10h AH=0Eh: LF on row 24 scrolls the whole screen up one row"
    PRINTLN "hello: done"
    jmp end

/* the string at SI at row DH, col DL */
print_at:
    movb $0x02, %ah
    xorb %bh, %bh
    int $0x10
    call puts
    ret

    .section .rodata
window_a: .asciz "window A 0123456789|aaaaaaaa"
window_b: .asciz "window B 0123456789|bbbbbbbb"
window_c: .asciz "window C 0123456789|cccccccc"
    .data
saved_cursor: .word 0
