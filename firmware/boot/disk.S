/*
 * disk.S - boot-disk: int 13h on the boot drive (DL from the BIOS).
 *
 * Sectors 1..80 of the image hold a pattern (.pattern, placed by boot.ld before the code):
 * sector k = "emu-disk", the word k, the word 0xFFFF - k, then 500 bytes of k. With the
 * usual geometry for a 1 MiB disk (63 sectors per track, 16 heads) they span the first
 * track boundary (LBA 62 | 63).
 *
 *   AH=08h  drive parameters (registers printed as returned; BX and ES:DI zeroed before)
 *   AH=02h  LBA 1..80 to 1000:0000 in CHS reads: 1 sector, 4 sectors, then the other 75
 *           in reads that stop at track ends (geometry from AH=08h); pattern checked,
 *           byte sum printed
 *   AH=41h  extensions present (BX=55AAh in, AA55h out; AH version, CX API bits)
 *   AH=42h  LBA 1..80 to 2000:0000 (above 64 KiB) in one read: same bytes as the CHS read
 *   AH=48h  extended parameters (26-byte buffer): total sectors, bytes per sector
 *   AH=43h  LBA 1000 written (packet), read back with CHS AH=02h
 *   AH=03h  LBA 1001 written (CHS), read back with AH=42h, then both with one AH=42h
 *   AH=77h  no such function: CF and AH; AH=01h (last status); AH=00h (reset); AH=01h
 *
 * LBA 1000/1001 are within the first cylinder (16 x 63 = 1008 sectors), the only one a
 * BIOS that hides the last cylinder of a 2-cylinder disk reports through AH=08h.
 */
#include "boot.h"

#define NPAT      80                /* pattern sectors: LBA 1 .. NPAT (the text says 80) */
#define SEG_CHS   0x1000            /* CHS reads go here */
#define SEG_EXT   0x2000            /* AH=42h reads go here */
#define SEG_WR    0x3000            /* sectors written */
#define SEG_RD    0x4000            /* sectors read back */
#define LBA_W43   1000              /* scratch sector written with AH=43h */
#define LBA_W03   1001              /* scratch sector written with AH=03h */

    .section .pattern, "a"
    .set k, 1
    .rept NPAT
    .ascii "emu-disk"
    .word k, 0xFFFF - k
    .fill 500, 1, k
    .set k, k + 1
    .endr

    .code16
    .text
    .globl main
main:
    PRINT "boot-disk: int 13h, boot drive DL="
    HEX8 boot_drive
    call newline

/* ---- AH=08h: drive parameters ------------------------------------------------------ */
    movb $0x08, %ah
    movb boot_drive, %dl
    xorw %bx, %bx
    xorw %di, %di
    movw %di, %es
    int $0x13
    pushf
    PRINT "AH=08h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    PRINT " CH="
    HEX8 %ch
    PRINT " CL="
    HEX8 %cl
    PRINT " DH="
    HEX8 %dh
    PRINT " DL="
    HEX8 %dl
    PRINT " BL="
    HEX8 %bl
    call newline
    jc fail_08
    movw %cx, %ax
    andw $0x3F, %ax
    jz fail_08
    movw %ax, spt
    movb %dh, %al
    xorb %ah, %ah
    incw %ax
    movw %ax, heads

/* ---- AH=02h: the pattern through CHS reads ------------------------------------------ */
    movw $SEG_CHS, %ax
    movw %ax, %es
    movw $1, %ax                    /* LBA 1, one sector */
    movw $1, %cx
    xorw %bx, %bx
    call chs_read
    movw $2, %ax                    /* LBA 2..5, one 4-sector read */
    movw $4, %cx
    movw $(1 * 512), %bx
    call chs_read
    movw $6, %ax                    /* LBA 6..80, up to the track ends */
    movw $(NPAT - 5), %cx
    movw $(5 * 512), %bx
    call chs_read
    call check_pattern
    jc fail_pattern
    PRINT "AH=02h: LBA 1-80 to 1000:0000 (CHS): pattern ok, byte sum "
    HEX32 %edx
    call newline

/* ---- AH=41h: extensions ------------------------------------------------------------- */
    movb $0x41, %ah
    movw $0x55AA, %bx
    movb boot_drive, %dl
    xorw %cx, %cx
    int $0x13
    pushf
    PRINT "AH=41h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    PRINT " BX="
    HEX16 %bx
    PRINT " CX="
    HEX16 %cx
    call newline
    jc fail_41
    cmpw $0xAA55, %bx
    jne fail_41

/* ---- AH=42h: the pattern again, one read above 64 KiB ------------------------------ */
    movw $NPAT, dap_count
    movw $0, dap_off
    movw $SEG_EXT, dap_seg
    movl $1, dap_lba
    movl $0, dap_lba + 4
    movb $0x42, %ah
    movb boot_drive, %dl
    movw $dap, %si
    int $0x13
    pushf
    PRINT "AH=42h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    jc fail_42
    PRINT ", "
    HEX16 dap_count
    PRINT "h sectors from LBA 1 to 2000:0000"
    movw $SEG_CHS, %ax
    movw $SEG_EXT, %dx
    movw $(NPAT * 512), %cx
    call compare
    jne fail_42
    PRINTLN ", same as CHS"

/* ---- AH=48h: extended drive parameters ---------------------------------------------- */
    movw $26, edd_size
    movb $0x48, %ah
    movb boot_drive, %dl
    movw $edd_size, %si
    int $0x13
    pushf
    PRINT "AH=48h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    jc fail_48
    PRINT " size "
    HEX16 edd_size
    PRINT " sectors "
    HEX32 edd_sectors + 4
    HEX32 edd_sectors
    PRINT " bytes/sector "
    HEX16 edd_bps
    call newline

/* ---- AH=43h: write LBA 1000, read it back with CHS ---------------------------------- */
    movb $0x43, %al
    call fill_wr
    movw $1, dap_count
    movw $0, dap_off
    movw $SEG_WR, dap_seg
    movl $LBA_W43, dap_lba
    movw $0x4300, %ax               /* AL=0: write without verify */
    movb boot_drive, %dl
    movw $dap, %si
    int $0x13
    pushf
    PRINT "AH=43h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    jc fail_43
    call clear_rd
    movw $SEG_RD, %ax
    movw %ax, %es
    movw $LBA_W43, %ax
    movw $1, %cx
    xorw %bx, %bx
    call chs_read
    movw $SEG_WR, %ax
    movw $SEG_RD, %dx
    movw $512, %cx
    call compare
    jne fail_43
    PRINTLN ", LBA 1000 written, read back with AH=02h: ok"

/* ---- AH=03h: write LBA 1001 with CHS, read it back with AH=42h ---------------------- */
    movb $0x03, %al
    call fill_wr
    movw $SEG_WR, %ax
    movw %ax, %es
    xorw %bx, %bx
    movw $LBA_W03, %ax
    call lba_to_chs
    movw $0x0301, %ax
    int $0x13
    pushf
    PRINT "AH=03h: "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    PRINT " AL="
    HEX8 %al
    jc fail_03
    call clear_rd
    movw $1, dap_count
    movw $0, dap_off
    movw $SEG_RD, dap_seg
    movl $LBA_W03, dap_lba
    call ext_read
    jc fail_03
    movw $SEG_WR, %ax
    movw $SEG_RD, %dx
    movw $512, %cx
    call compare
    jne fail_03
    PRINTLN ", LBA 1001 written, read back with AH=42h: ok"

    /* both sectors in one read: the first write survived the second */
    call clear_rd
    movw $2, dap_count
    movw $LBA_W43, dap_lba
    call ext_read
    jc fail_both
    movb $0x43, %al
    call fill_wr
    movw $SEG_WR, %ax
    movw $SEG_RD, %dx
    movw $512, %cx
    call compare
    jne fail_both
    movb $0x03, %al
    call fill_wr
    movw $SEG_WR, %ax
    movw $(SEG_RD + 512 / 16), %dx
    movw $512, %cx
    call compare
    jne fail_both
    PRINTLN "AH=42h: LBA 1000-1001 in one read: both as written"

/* ---- status and errors -------------------------------------------------------------- */
    movb $0x77, %ah                 /* no such function */
    movb boot_drive, %dl
    int $0x13
    pushf
    PRINT "AH=77h (invalid): "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    call newline
    call status
    movb $0x00, %ah                 /* reset */
    movb boot_drive, %dl
    int $0x13
    pushf
    PRINT "AH=00h (reset): "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    call newline
    call status

    PRINTLN "disk: ok"
    jmp end

status:                             /* AH=01h: status of the last operation */
    movb $0x01, %ah
    movb boot_drive, %dl
    int $0x13
    pushf
    PRINT "AH=01h (status): "
    popf
    CFLAG
    PRINT " AH="
    HEX8 %ah
    call newline
    ret

fail_08:
    PRINTLN "disk: FAILED at AH=08h"
    jmp fail_end
fail_pattern:
    PRINT "disk: FAILED: pattern wrong in LBA "
    HEX16 %ax
    call newline
    jmp fail_end
fail_41:
    PRINTLN "disk: FAILED at AH=41h"
    jmp fail_end
fail_42:
    call newline
    PRINTLN "disk: FAILED at AH=42h"
    jmp fail_end
fail_48:
    call newline
    PRINTLN "disk: FAILED at AH=48h"
    jmp fail_end
fail_43:
    call newline
    PRINTLN "disk: FAILED at AH=43h"
    jmp fail_end
fail_03:
    call newline
    PRINTLN "disk: FAILED at AH=03h"
    jmp fail_end
fail_both:
    PRINTLN "disk: FAILED: LBA 1000-1001 not as written"
    jmp fail_end

/*
 * chs_read: CX sectors from LBA AX to ES:BX with AH=02h, one read per track piece (a
 * read never crosses a track end). Prints and ends the run on an error.
 */
chs_read:
    pushaw
1:  pushw %ax
    pushw %cx
    xorw %dx, %dx
    divw spt                        /* DX = sector - 1 within the track */
    movw spt, %si
    subw %dx, %si                   /* SI = sectors left in this track */
    popw %cx
    popw %ax
    cmpw %cx, %si
    jbe 2f
    movw %cx, %si                   /* SI = sectors in this read */
2:  pushw %ax
    pushw %cx
    call lba_to_chs
    movw %si, %ax
    movb $0x02, %ah
    movw %si, %di
    int $0x13
    jc chs_error
    xorb %ah, %ah
    cmpw %ax, %di                   /* AL = sectors read */
    jne chs_error_count
    popw %cx
    popw %ax
    addw %si, %ax
    subw %si, %cx
    shlw $9, %si
    addw %si, %bx
    testw %cx, %cx
    jnz 1b
    popaw
    ret
chs_error:
    popw %cx
    popw %bx
    PRINT "disk: FAILED: AH=02h at LBA "
    HEX16 %bx
    PRINT " returned CF=1 AH="
    HEX8 %ah
    call newline
    jmp fail_end
chs_error_count:
    popw %cx
    popw %bx
    PRINT "disk: FAILED: AH=02h at LBA "
    HEX16 %bx
    PRINT " returned AL="
    HEX8 %al
    call newline
    jmp fail_end

/* lba_to_chs: LBA AX -> CH, CL, DH as int 13h wants them, DL = boot drive */
lba_to_chs:
    pushw %ax
    xorw %dx, %dx
    divw spt
    incw %dx
    movw %dx, %cx                   /* CL = sector (1-based) */
    xorw %dx, %dx
    divw heads                      /* AX = cylinder, DX = head */
    movb %al, %ch
    shlb $6, %ah
    orb %ah, %cl
    movb %dl, %dh
    movb boot_drive, %dl
    popw %ax
    ret

/* ext_read: AH=42h with the packet as set up; CF and AH as returned */
ext_read:
    pushw %si
    pushw %dx
    movb $0x42, %ah
    movb boot_drive, %dl
    movw $dap, %si
    int $0x13
    popw %dx
    popw %si
    ret

/* check_pattern: the NPAT sectors at SEG_CHS:0. CF=1 and AX = LBA on a mismatch;
 * else CF=0 and EDX = the sum of all bytes. */
check_pattern:
    pushw %ds
    movw $SEG_CHS, %ax
    movw %ax, %ds
    xorl %edx, %edx
    xorw %si, %si
    movw $1, %bx                    /* BX = LBA of the sector at DS:SI */
1:  cmpl $0x2D756D65, (%si)         /* "emu-" */
    jne 8f
    cmpl $0x6B736964, 4(%si)        /* "disk" */
    jne 8f
    cmpw %bx, 8(%si)
    jne 8f
    movw $0xFFFF, %ax
    subw %bx, %ax
    cmpw %ax, 10(%si)
    jne 8f
    leaw 512(%si), %cx              /* CX = end of the sector */
    leaw 12(%si), %di
2:  cmpb %bl, (%di)
    jne 8f
    incw %di
    cmpw %cx, %di
    jb 2b
    movw %si, %di                   /* add the sector's bytes */
    xorl %eax, %eax
3:  movb (%di), %al
    addl %eax, %edx
    incw %di
    cmpw %cx, %di
    jb 3b
    movw %cx, %si
    incw %bx
    cmpw $NPAT, %bx
    jbe 1b
    popw %ds
    clc
    ret
8:  movw %bx, %ax
    popw %ds
    stc
    ret

/* compare: CX bytes at AX:0000 and DX:0000; ZF=1 if equal */
compare:
    pushaw
    pushw %ds
    pushw %es
    movw %ax, %ds
    movw %dx, %es
    xorw %si, %si
    xorw %di, %di
    repe cmpsb
    popw %es
    popw %ds
    popaw
    ret

/* fill_wr: SEG_WR:0000 = 512 bytes "written by AH=..h" + counting bytes starting at AL */
fill_wr:
    pushaw
    pushw %es
    movw $SEG_WR, %bx
    movw %bx, %es
    xorw %di, %di
    movw $512, %cx
1:  stosb
    incb %al
    loop 1b
    movw $wr_tag, %si
    xorw %di, %di
    movw $(wr_tag_end - wr_tag), %cx
    rep movsb
    popw %es
    popaw
    ret

/* clear_rd: 2 sectors at SEG_RD:0000 = 0 */
clear_rd:
    pushaw
    pushw %es
    movw $SEG_RD, %ax
    movw %ax, %es
    xorw %di, %di
    xorw %ax, %ax
    movw $512, %cx
    rep stosw
    popw %es
    popaw
    ret

    .section .rodata
wr_tag: .ascii "written by boot-disk"
wr_tag_end:

    .data
    .balign 4
dap:                                /* disk address packet (EDD) */
    .byte 0x10, 0                   /* size, reserved */
dap_count: .word 0                  /* sectors (the BIOS writes back how many it did) */
dap_off:   .word 0                  /* buffer offset */
dap_seg:   .word 0                  /* buffer segment */
dap_lba:   .quad 0
    .balign 2
edd_size:    .word 0                /* AH=48h result buffer (EDD 1.1: 26 bytes) */
edd_flags:   .word 0
edd_cyls:    .long 0
edd_heads:   .long 0
edd_spt:     .long 0
edd_sectors: .quad 0
edd_bps:     .word 0
    .fill 64, 1, 0                  /* room for a BIOS that writes more */
spt:   .word 0
heads: .word 0
