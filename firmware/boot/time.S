/*
 * time.S - boot-time: the BIOS clock services. Only deterministic facts are printed
 * (the time of day itself differs from run to run):
 *
 *   int 1Ah AH=00h   ticks since midnight (CX:DX): below 1800B0h, the ticks in a day
 *   int 1Ah AH=02h   RTC time (CH hours, CL minutes, DH seconds, BCD; DL DST flag): valid
 *   int 1Ah AH=04h   RTC date (CH century 19h or 20h, CL year, DH month, DL day, BCD): valid
 *   int 15h AH=86h   wait CX:DX = 100000 microseconds: the tick count advanced (>= 1)
 */
#include "boot.h"

    .code16
    .text
    .globl main
main:
    PRINTLN "boot-time: int 1Ah, int 15h AH=86h"

/* ---- AH=00h: ticks since midnight ---------------------------------------------------- */
    call ticks
    PRINT "int 1Ah AH=00h: ticks below 1800B0h (one day): "
    cmpl $0x1800B0, %eax
    jae 1f
    PRINTLN "yes"
    jmp 2f
1:  PRINTLN "no"
    movb $1, failed
2:

/* ---- AH=02h: RTC time ------------------------------------------------------------------ */
    movb $0x02, %ah
    xorw %cx, %cx
    movw $0xFFFF, %dx               /* DL: the DST flag comes back 0 or 1 */
    clc
    int $0x1A
    pushf
    PRINT "int 1Ah AH=02h: "
    popf
    CFLAG
    PRINT " DL="
    HEX8 %dl
    jc time_bad
    movb %ch, %al                   /* hours 00-23 */
    movb $0x24, %bl
    call bcd_below
    jc time_bad
    movb %cl, %al                   /* minutes 00-59 */
    movb $0x60, %bl
    call bcd_below
    jc time_bad
    movb %dh, %al                   /* seconds 00-59 */
    call bcd_below
    jc time_bad
    cmpb $1, %dl
    ja time_bad
    PRINTLN ", time: ok"
    jmp 1f
time_bad:
    PRINTLN ", time: BAD"
    movb $1, failed
1:

/* ---- AH=04h: RTC date ------------------------------------------------------------------ */
    movb $0x04, %ah
    xorw %cx, %cx
    xorw %dx, %dx
    clc
    int $0x1A
    pushf
    PRINT "int 1Ah AH=04h: "
    popf
    CFLAG
    jc date_bad
    cmpb $0x19, %ch                 /* century */
    je 2f
    cmpb $0x20, %ch
    jne date_bad
2:  movb %cl, %al                   /* year 00-99 */
    movb $0xA0, %bl
    call bcd_below
    jc date_bad
    movb %dh, %al                   /* month 01-12 */
    testb %al, %al
    jz date_bad
    movb $0x13, %bl
    call bcd_below
    jc date_bad
    movb %dl, %al                   /* day 01-31 */
    testb %al, %al
    jz date_bad
    movb $0x32, %bl
    call bcd_below
    jc date_bad
    PRINTLN ", date: ok"
    jmp 1f
date_bad:
    PRINTLN ", date: BAD"
    movb $1, failed
1:

/* ---- int 15h AH=86h: 100 ms ------------------------------------------------------------ */
    call ticks
    movl %eax, %esi
    movb $0x86, %ah
    movw $0x0001, %cx               /* CX:DX = 186A0h = 100000 microseconds */
    movw $0x86A0, %dx
    int $0x15
    pushf
    PRINT "int 15h AH=86h, 100000 us: "
    popf
    CFLAG
    call ticks
    subl %esi, %eax
    jns 1f
    addl $0x1800B0, %eax            /* midnight passed */
1:  PRINT ", ticks advanced: "
    testl %eax, %eax
    jz 2f
    PRINTLN "yes"
    jmp 3f
2:  PRINTLN "no"
    movb $1, failed
3:
    cmpb $0, failed
    jne 4f
    PRINTLN "time: done"
    jmp end
4:  PRINTLN "time: FAILED"
    jmp fail_end

/* ticks: int 1Ah AH=00h, EAX = CX:DX (clobbers CX, DX) */
ticks:
    xorb %ah, %ah
    int $0x1A
    movw %cx, %ax
    shll $16, %eax
    movw %dx, %ax
    ret

/* bcd_below: CF=0 if AL is two valid BCD digits and below the BCD limit BL */
bcd_below:
    pushw %ax
    movb %al, %ah
    andb $0x0F, %ah
    cmpb $9, %ah
    ja 1f
    movb %al, %ah
    shrb $4, %ah
    cmpb $9, %ah
    ja 1f
    cmpb %bl, %al
    jae 1f
    popw %ax
    clc
    ret
1:  popw %ax
    stc
    ret

    .data
failed: .byte 0
