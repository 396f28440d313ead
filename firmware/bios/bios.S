/*
 * bios.S - emu's PC BIOS: power-on self test, then the real-mode services a boot loader calls.
 *
 * A PC starts executing 16 bytes below 4 GiB, in real mode, in ROM (SDM vol. 3A §9.1.4). The
 * ROM's last 64 KiB also appear at F0000-FFFFF, and that is where this image is linked: the
 * reset vector at F000:FFF0 jumps to `post`, which
 *   - fills the interrupt vector table (IVT, 256 far pointers at 0000:0000) and the BIOS data
 *     area (BDA, 0040:0000: COM ports, equipment word, memory size, video state, timer ticks,
 *     disk count; IBM PC/AT Technical Reference and Ralf Brown's list, "MEMORY.LST"),
 *   - reserves 1 KiB below 640 KiB as the extended BDA (EBDA) for its own data,
 *   - programs the PICs (IRQ 0-7 at vectors 08h-0Fh, IRQ 8-15 at 70h-77h) and the PIT
 *     (18.2 Hz, IRQ 0 counts ticks at 0040:006C),
 *   - clears the text screen, asks the ATA disk at 1F0h who it is (IDENTIFY DEVICE),
 *   - reads sector 0 to 0000:7C00 and, if it ends in 55 AA, jumps there with DL = 80h (BIOS
 *     Boot Specification 1.01 §6.5.1).
 * The services: int 10h video (80x25 text), 11h equipment, 12h memory size, 13h disk (CHS and
 * the EDD 3.0 extensions, over ATA PIO), 15h system (E820 map, E801, 88h, 86h wait, A20), 16h
 * keyboard (fed from COM1: emu has no PS/2 keyboard), 18h/19h boot, 1Ah time (RTC, ticks).
 * An unsupported function sets CF with the status its specification names and is reported to
 * emu (port EBh) so --stats can count it. Teletype output is mirrored to port E9h (the
 * firmware console) so it reaches stdout when nobody looks at the screen; E Ah ends the run
 * when the firmware cannot go on (emu/devices/debugcon.py).
 *
 * 386 instructions are used freely (32-bit registers, movzx); the ROM never writes itself.
 */
	.intel_syntax noprefix
	.code16
	.text

#define BDA_SEG		0x40
#define EBDA_SEG	0x9FC0		/* 639 KiB: 1 KiB EBDA up to 640 KiB */
#define VGA_SEG		0xB800
#define COLS		80
#define ROWS		25
#define COM1		0x3F8
#define ATA		0x1F0
#define ATA_CTL		0x3F6
#define CONSOLE		0xE9		/* firmware console (emu/devices/debugcon.py) */
#define FATAL		0xEA		/* "cannot go on": emu ends the run with the last console line */
#define UNSUPPORTED	0xEB		/* 16-bit write (vector << 8 | AH) of an unsupported call */

/* BDA offsets (segment 0040h) */
#define BDA_COM1	0x00
#define BDA_EBDA	0x0E
#define BDA_EQUIPMENT	0x10
#define BDA_MEMORY_KB	0x13
#define BDA_KBD_FLAGS	0x17
#define BDA_KBD_HEAD	0x1A
#define BDA_KBD_TAIL	0x1C
#define BDA_VIDEO_MODE	0x49
#define BDA_COLUMNS	0x4A
#define BDA_PAGE_SIZE	0x4C
#define BDA_CURSOR	0x50		/* page 0: column, then row */
#define BDA_CURSOR_SHAPE 0x60
#define BDA_PAGE	0x62
#define BDA_CRTC	0x63
#define BDA_TICKS	0x6C
#define BDA_MIDNIGHT	0x70
#define BDA_DISK_STATUS	0x74
#define BDA_DISK_COUNT	0x75
#define BDA_KBD_START	0x80
#define BDA_KBD_END	0x82
#define BDA_ROWS	0x84
#define BDA_CHAR_HEIGHT	0x85

/* EBDA offsets (segment 9FC0h): the BIOS's own variables */
#define EBDA_SIZE_KB	0x00
#define DISK_PRESENT	0x20		/* byte */
#define DISK_HEADS	0x22		/* word: CHS geometry from IDENTIFY words 1, 3, 6 */
#define DISK_SPT	0x24		/* word */
#define DISK_CYLS	0x26		/* word */
#define DISK_SECTORS	0x28		/* dword: total sectors (< 2 TiB) */
#define KEY_PENDING	0x30		/* word: the key int 16h AH=01h saw, or 0 */
#define E820_COUNT	0x38		/* word */
#define E820_TABLE	0x40		/* 8 entries x 20 bytes */

#define TICKS_PER_DAY	0x1800B0
#define US_PER_TICK	54925

/* Register frame built by ENTER (pushad, ds, es), addressed through BP */
#define F_ES	0
#define F_DS	2
#define F_DI	4
#define F_SI	8
#define F_BP	12
#define F_BX	20
#define F_BL	20
#define F_BH	21
#define F_DX	24
#define F_DL	24
#define F_DH	25
#define F_CX	28
#define F_CL	28
#define F_CH	29
#define F_AX	32
#define F_AL	32
#define F_AH	33
#define F_FLAGS	40
#define FLAG_CF	0x0001
#define FLAG_ZF	0x0040

.macro ENTER
	pushad
	push ds
	push es
	mov bp, sp
	cld
.endm

.macro LEAVE
	pop es
	pop ds
	popad
	iret
.endm

.macro BDA_DS
	push BDA_SEG
	pop ds
.endm

.macro EBDA_ES
	push EBDA_SEG
	pop es
.endm

.macro SET_CF
	or word ptr [bp+F_FLAGS], FLAG_CF
.endm

.macro CLEAR_CF
	and word ptr [bp+F_FLAGS], ~FLAG_CF
.endm

/* ---------------------------------------------------------------------------------------- */
/* Power-on self test                                                                        */
/* ---------------------------------------------------------------------------------------- */
	.org 0x0000
banner:
	.asciz "Booting from Hard Disk...\r\n"
msg_no_disk:
	.asciz "No bootable device.\r\n"
msg_not_bootable:
	.asciz "Boot failed: not a bootable disk\r\n"
msg_read_error:
	.asciz "Boot failed: could not read the boot disk\r\n"
msg_exception:
	.asciz "Unhandled CPU exception "
msg_at:
	.asciz " at "

post:
	cli
	cld
	xor ax, ax
	mov ss, ax
	mov sp, 0x7000
	mov ds, ax
	mov es, ax

	/* IVT: every vector to an iret, then the ones this BIOS serves */
	xor di, di
	mov cx, 256
1:	mov word ptr [di], offset default_iret
	mov word ptr [di+2], 0xF000
	add di, 4
	loop 1b
	mov si, offset vector_table
2:	movzx di, byte ptr cs:[si]
	cmp di, 0xFF
	je 3f
	shl di, 2
	mov ax, cs:[si+1]
	mov [di], ax
	mov word ptr [di+2], 0xF000
	add si, 3
	jmp 2b
3:
	/* BDA (0400-04FF) and 0500-05FF cleared, then filled */
	mov di, 0x400
	mov cx, 0x100
	xor ax, ax
	rep stosw
	BDA_DS
	mov word ptr [BDA_COM1], COM1
	mov word ptr [BDA_EBDA], EBDA_SEG
	mov word ptr [BDA_EQUIPMENT], 0x0222	/* one serial port (bits 11-9), 80x25 colour (5-4), x87 (1) */
	mov word ptr [BDA_MEMORY_KB], 639
	mov word ptr [BDA_KBD_HEAD], 0x1E
	mov word ptr [BDA_KBD_TAIL], 0x1E
	mov word ptr [BDA_KBD_START], 0x1E
	mov word ptr [BDA_KBD_END], 0x3E
	mov byte ptr [BDA_DISK_COUNT], 1
	mov word ptr [BDA_CRTC], 0x3D4

	/* EBDA: 1 KiB, cleared */
	EBDA_ES
	xor di, di
	mov cx, 0x200
	xor ax, ax
	rep stosw
	mov byte ptr es:[EBDA_SIZE_KB], 1

	/* 8259A pair: edge triggered, cascade on IRQ 2, vectors 08h and 70h; IRQ 0 and 2 open */
	mov al, 0x11
	out 0x20, al
	out 0xA0, al
	mov al, 0x08
	out 0x21, al
	mov al, 0x70
	out 0xA1, al
	mov al, 0x04
	out 0x21, al
	mov al, 0x02
	out 0xA1, al
	mov al, 0x01
	out 0x21, al
	out 0xA1, al
	mov al, 0xFA
	out 0x21, al
	mov al, 0xFF
	out 0xA1, al

	/* 8254 channel 0: rate generator, divisor 65536 (18.2 Hz) */
	mov al, 0x34
	out 0x43, al
	xor al, al
	out 0x40, al
	out 0x40, al

	call build_e820
	mov ax, 0x0003		/* 80x25 text, screen cleared */
	int 0x10
	call ata_identify
	sti
	mov si, offset banner
	call print_rom
	/* fall into int 19h: load the boot sector and jump */

int19:
	sti
	xor ax, ax
	mov ds, ax
	mov es, ax
	mov ss, ax
	mov sp, 0x7000
	EBDA_ES
	cmp byte ptr es:[DISK_PRESENT], 0
	je int18
	xor ax, ax
	mov es, ax
	mov di, 0x7C00
	xor eax, eax
	mov cx, 1
	xor bl, bl
	call ata_transfer
	jc boot_read_error
	cmp word ptr [0x7DFE], 0xAA55
	jne boot_not_bootable
	xor eax, eax
	xor ebx, ebx
	xor ecx, ecx
	xor esi, esi
	xor edi, edi
	xor ebp, ebp
	mov edx, 0x80
	mov sp, 0x7C00
	.byte 0xEA		/* jmp far 0000:7C00 */
	.word 0x7C00, 0x0000
boot_read_error:
	mov si, offset msg_read_error
	jmp fatal
boot_not_bootable:
	mov si, offset msg_not_bootable
	jmp fatal

int18:				/* no bootable device (also what a failed boot loader calls) */
	mov si, offset msg_no_disk
fatal:				/* print the ROM string at SI and stop the machine (port EAh) */
	call print_rom
	mov al, 1
	out FATAL, al
1:	cli
	hlt
	jmp 1b

/* print_rom: the NUL-terminated string at CS:SI, through int 10h teletype */
print_rom:
	push ax
	push bx
	push si
1:	mov al, cs:[si]
	test al, al
	jz 2f
	mov ah, 0x0E
	xor bx, bx
	int 0x10
	inc si
	jmp 1b
2:	pop si
	pop bx
	pop ax
	ret

/* print_hex16: AX as four hex digits */
print_hex16:
	push ax
	push bx
	push cx
	mov cx, 4
	mov bx, ax
1:	rol bx, 4
	mov al, bl
	and al, 0x0F
	add al, '0'
	cmp al, '9'
	jbe 2f
	add al, 7
2:	mov ah, 0x0E
	push bx
	xor bx, bx
	int 0x10
	pop bx
	loop 1b
	pop cx
	pop bx
	pop ax
	ret

/* report_unsupported: tell emu (port EBh) that int AL, function AH is not supported */
report_unsupported:
	push dx
	push ax
	xchg al, ah		/* AH = vector, AL = function */
	mov dx, UNSUPPORTED
	out dx, ax
	pop ax
	pop dx
	ret

/* ---------------------------------------------------------------------------------------- */
/* Interrupt handlers that are not services                                                 */
/* ---------------------------------------------------------------------------------------- */
default_iret:
	iret

irq_master:			/* IRQ 1, 3-7: acknowledge at the master PIC */
	push ax
	mov al, 0x20
	out 0x20, al
	pop ax
	iret

irq_slave:			/* IRQ 8-15: acknowledge at both PICs */
	push ax
	mov al, 0x20
	out 0xA0, al
	out 0x20, al
	pop ax
	iret

irq_ata:			/* IRQ 14: reading the status register releases the line */
	push ax
	push dx
	mov dx, ATA+7
	in al, dx
	mov al, 0x20
	out 0xA0, al
	out 0x20, al
	pop dx
	pop ax
	iret

int08:				/* IRQ 0: the 18.2 Hz tick */
	push ds
	push eax
	BDA_DS
	mov eax, [BDA_TICKS]
	inc eax
	cmp eax, TICKS_PER_DAY
	jb 1f
	xor eax, eax
	mov byte ptr [BDA_MIDNIGHT], 1
1:	mov [BDA_TICKS], eax
	int 0x1C
	mov al, 0x20
	out 0x20, al
	pop eax
	pop ds
	iret

/* CPU exceptions nobody else handles in real mode: divide error, invalid opcode, no FPU */
exc_de:
	push 0
	jmp exception
exc_ud:
	push 6
	jmp exception
exc_nm:
	push 7
exception:
	mov bp, sp
	mov si, offset msg_exception
	call print_rom
	mov ax, [bp]
	call print_hex16
	mov si, offset msg_at
	call print_rom
	mov ax, [bp+4]		/* the faulting CS:IP */
	call print_hex16
	mov ax, 0x0E3A
	xor bx, bx
	int 0x10
	mov ax, [bp+2]
	call print_hex16
	mov ax, 0x0E0D
	int 0x10
	mov ax, 0x0E0A
	int 0x10
	mov al, 2
	out FATAL, al
1:	cli
	hlt
	jmp 1b

/* ---------------------------------------------------------------------------------------- */
/* int 11h, 12h: equipment word and base memory                                             */
/* ---------------------------------------------------------------------------------------- */
int11:
	push ds
	BDA_DS
	mov ax, [BDA_EQUIPMENT]
	pop ds
	iret

int12:
	push ds
	BDA_DS
	mov ax, [BDA_MEMORY_KB]
	pop ds
	iret

/* ---------------------------------------------------------------------------------------- */
/* int 10h: video, 80x25 text at B800:0000                                                  */
/* ---------------------------------------------------------------------------------------- */
int10:
	ENTER
	BDA_DS
	mov al, [bp+F_AH]
	cmp al, 0x00
	je v_set_mode
	cmp al, 0x01
	je v_cursor_shape
	cmp al, 0x02
	je v_set_cursor
	cmp al, 0x03
	je v_get_cursor
	cmp al, 0x05
	je v_set_page
	cmp al, 0x06
	je v_scroll_up
	cmp al, 0x07
	je v_scroll_down
	cmp al, 0x08
	je v_read_char
	cmp al, 0x09
	je v_write_char_attr
	cmp al, 0x0A
	je v_write_char
	cmp al, 0x0E
	je v_teletype
	cmp al, 0x0F
	je v_get_mode
	cmp al, 0x12
	je v_alternate
	cmp al, 0x13
	je v_write_string
	cmp al, 0x1A
	je v_display_combination
	cmp al, 0x4F
	je v_vbe
	mov ah, [bp+F_AH]
	mov al, 0x10
	call report_unsupported
v_done:
	mov sp, bp
	LEAVE

v_set_mode:			/* AL = mode (bit 7: keep the screen); text modes 2, 3 and 7 */
	mov al, [bp+F_AL]
	and al, 0x7F
	cmp al, 0x02
	je 1f
	cmp al, 0x03
	je 1f
	cmp al, 0x07
	je 1f
	mov ax, 0x0010		/* AH = 00h of int 10h */
	call report_unsupported
	jmp v_done
1:	mov [BDA_VIDEO_MODE], al
	mov word ptr [BDA_COLUMNS], COLS
	mov word ptr [BDA_PAGE_SIZE], 0x1000
	mov byte ptr [BDA_ROWS], ROWS-1
	mov byte ptr [BDA_CHAR_HEIGHT], 16
	mov word ptr [BDA_CURSOR_SHAPE], 0x0607
	mov byte ptr [BDA_PAGE], 0
	mov word ptr [BDA_CURSOR], 0
	test byte ptr [bp+F_AL], 0x80
	jnz 2f
	push es
	push VGA_SEG
	pop es
	xor di, di
	mov cx, COLS*ROWS
	mov ax, 0x0720
	rep stosw
	pop es
2:	mov dx, 0x3D4		/* start address 0, cursor shape lines 13-14 */
	mov ax, 0x000C
	out dx, ax
	mov ax, 0x000D
	out dx, ax
	mov ax, 0x0D0A
	out dx, ax
	mov ax, 0x0E0B
	out dx, ax
	call update_cursor
	jmp v_done

v_cursor_shape:			/* CH = start line, CL = end line */
	mov cx, [bp+F_CX]
	mov [BDA_CURSOR_SHAPE], cx
	mov dx, 0x3D4
	mov al, 0x0A
	mov ah, ch
	out dx, ax
	mov al, 0x0B
	mov ah, cl
	out dx, ax
	jmp v_done

v_set_cursor:			/* DH = row, DL = column (page 0) */
	mov dx, [bp+F_DX]
	mov [BDA_CURSOR], dl
	mov [BDA_CURSOR+1], dh
	call update_cursor
	jmp v_done

v_get_cursor:			/* -> DH row, DL column, CX shape */
	mov dl, [BDA_CURSOR]
	mov dh, [BDA_CURSOR+1]
	mov [bp+F_DX], dx
	mov cx, [BDA_CURSOR_SHAPE]
	mov [bp+F_CX], cx
	jmp v_done

v_set_page:
	mov al, [bp+F_AL]
	mov [BDA_PAGE], al
	jmp v_done

v_get_mode:			/* -> AL mode, AH columns, BH page */
	mov al, [BDA_VIDEO_MODE]
	mov ah, COLS
	mov [bp+F_AX], ax
	mov al, [BDA_PAGE]
	mov [bp+F_BH], al
	jmp v_done

v_alternate:			/* AH=12h BL=10h: EGA/VGA information */
	cmp byte ptr [bp+F_BL], 0x10
	jne v_done
	mov word ptr [bp+F_BX], 0x0003	/* colour, 256 KiB */
	mov word ptr [bp+F_CX], 0x0009	/* switch settings */
	jmp v_done

v_display_combination:		/* AX=1A00h: -> AL=1Ah, BL=08h (VGA, colour) */
	cmp byte ptr [bp+F_AL], 0
	jne v_done
	mov byte ptr [bp+F_AL], 0x1A
	mov word ptr [bp+F_BX], 0x0008
	jmp v_done

/* VESA BIOS Extensions (VBE 3.0 §4): enough for a loader to learn there is no linear
 * framebuffer here: 4F00h describes a controller with an empty mode list, 4F03h says the
 * current mode is text mode 3. Other functions fail (AX=014Fh) and are counted. */
v_vbe:
	mov al, [bp+F_AL]
	cmp al, 0x00
	je vbe_info
	cmp al, 0x03
	je vbe_current_mode
	mov ah, 0x4F
	mov al, 0x10
	call report_unsupported
	mov word ptr [bp+F_AX], 0x014F	/* supported call, failed */
	jmp v_done
vbe_info:			/* ES:DI = VbeInfoBlock: 256 bytes, 512 when the caller put "VBE2" there */
	mov es, [bp+F_ES]
	mov di, [bp+F_DI]
	mov cx, 128
	cmp dword ptr es:[di], 0x32454256	/* "VBE2" */
	jne 1f
	mov cx, 256
1:	push di
	xor ax, ax
	rep stosw
	pop di
	mov dword ptr es:[di], 0x41534556	/* "VESA" */
	mov word ptr es:[di+4], 0x0200	/* VBE 2.0 */
	mov word ptr es:[di+6], offset vbe_oem
	mov word ptr es:[di+8], 0xF000
	mov word ptr es:[di+14], offset vbe_no_modes
	mov word ptr es:[di+16], 0xF000
	mov word ptr es:[di+18], 4	/* 256 KiB of video memory, in 64 KiB units */
	mov word ptr [bp+F_AX], 0x004F
	jmp v_done
vbe_current_mode:
	mov word ptr [bp+F_BX], 0x0003
	mov word ptr [bp+F_AX], 0x004F
	jmp v_done
vbe_oem:
	.asciz "emu BIOS (text mode only)"
vbe_no_modes:
	.word 0xFFFF

v_scroll_up:			/* AL lines (0: clear), BH attribute, CH,CL top left, DH,DL bottom right */
	mov bl, 0
	jmp scroll
v_scroll_down:
	mov bl, 1
scroll:
	sub sp, 16		/* locals below the frame */
	mov [bp-14], bl		/* direction */
	mov al, [bp+F_CH]
	mov [bp-2], al		/* top */
	mov al, [bp+F_DH]
	cmp al, ROWS-1
	jbe 1f
	mov al, ROWS-1
1:	mov [bp-4], al		/* bottom */
	mov al, [bp+F_CL]
	mov [bp-6], al		/* left */
	mov ah, [bp+F_DL]
	cmp ah, COLS-1
	jbe 2f
	mov ah, COLS-1
2:	sub ah, al
	jb v_done		/* right < left */
	inc ah
	mov [bp-8], ah		/* width */
	mov al, [bp-4]
	sub al, [bp-2]
	jb v_done		/* bottom < top */
	inc al
	mov [bp-10], al		/* height */
	mov ah, [bp+F_AL]
	test ah, ah
	jz 3f
	cmp ah, al
	jbe 4f
3:	mov ah, al
4:	mov [bp-12], ah		/* lines */
	push VGA_SEG
	pop ds
	push VGA_SEG
	pop es
	mov byte ptr [bp-16], 0	/* i */
5:	mov al, [bp-16]
	cmp al, [bp-10]
	jae v_done
	/* destination row: up top+i, down bottom-i; source row: dst+lines or dst-lines */
	movzx bx, byte ptr [bp-2]
	movzx ax, byte ptr [bp-16]
	add bx, ax
	movzx dx, byte ptr [bp-12]
	cmp byte ptr [bp-14], 0
	je 6f
	movzx bx, byte ptr [bp-4]
	sub bx, ax
	neg dx
6:	imul di, bx, COLS
	movzx ax, byte ptr [bp-6]
	add di, ax
	shl di, 1		/* destination cell offset */
	movzx cx, byte ptr [bp-8]
	mov al, [bp-10]
	sub al, [bp-12]
	cmp [bp-16], al
	jae 7f			/* the last `lines` rows are blanked */
	imul si, dx, COLS*2
	add si, di
	rep movsw
	jmp 8f
7:	mov ah, [bp+F_BH]
	mov al, ' '
	rep stosw
8:	inc byte ptr [bp-16]
	jmp 5b

/* update_cursor: move the CRTC cursor to the BDA's page-0 position */
update_cursor:
	push ax
	push bx
	push dx
	movzx ax, byte ptr [BDA_CURSOR+1]
	mov bl, COLS
	mul bl
	movzx bx, byte ptr [BDA_CURSOR]
	add bx, ax
	mov dx, 0x3D4
	mov al, 0x0E
	mov ah, bh
	out dx, ax
	mov al, 0x0F
	mov ah, bl
	out dx, ax
	pop dx
	pop bx
	pop ax
	ret

/* cursor_offset: DI = the cell offset of the page-0 cursor */
cursor_offset:
	push ax
	push bx
	movzx ax, byte ptr [BDA_CURSOR+1]
	imul di, ax, COLS
	movzx bx, byte ptr [BDA_CURSOR]
	add di, bx
	shl di, 1
	pop bx
	pop ax
	ret

v_read_char:			/* -> AL character, AH attribute at the cursor */
	call cursor_offset
	push VGA_SEG
	pop es
	mov ax, es:[di]
	mov [bp+F_AX], ax
	jmp v_done

v_write_char_attr:		/* AL char, BL attribute, CX count; the cursor does not move */
	call cursor_offset
	push VGA_SEG
	pop es
	mov al, [bp+F_AL]
	mov ah, [bp+F_BL]
	mov cx, [bp+F_CX]
1:	test cx, cx
	jz v_done
	cmp di, COLS*ROWS*2
	jae v_done
	stosw
	dec cx
	jmp 1b

v_write_char:			/* AL char, CX count, attributes kept */
	call cursor_offset
	push VGA_SEG
	pop es
	mov al, [bp+F_AL]
	mov cx, [bp+F_CX]
1:	test cx, cx
	jz v_done
	cmp di, COLS*ROWS*2
	jae v_done
	stosb
	inc di
	dec cx
	jmp 1b

v_teletype:			/* AL char: CR, LF, BS and BEL act, others are written; scrolls */
	mov al, [bp+F_AL]
	call teletype
	jmp v_done

v_write_string:			/* AL mode, BL attr, CX length, DH,DL position, ES:BP string */
	mov ax, [BDA_CURSOR]
	push ax			/* the cursor to restore when AL bit 0 is clear */
	mov dx, [bp+F_DX]
	mov [BDA_CURSOR], dl
	mov [BDA_CURSOR+1], dh
	mov cx, [bp+F_CX]
	mov si, [bp+F_BP]
	mov es, [bp+F_ES]
1:	test cx, cx
	jz 3f
	mov al, es:[si]
	inc si
	mov bl, [bp+F_BL]
	test byte ptr [bp+F_AL], 2
	jz 2f
	mov bl, es:[si]		/* the string holds character, attribute pairs */
	inc si
2:	push es
	push cx
	call teletype_attr
	pop cx
	pop es
	dec cx
	jmp 1b
3:	pop ax
	test byte ptr [bp+F_AL], 1
	jnz 4f
	mov [BDA_CURSOR], ax
4:	call update_cursor
	jmp v_done

/* teletype: AL, with the attribute already in the cell; teletype_attr: AL with attribute BL.
 * DS = BDA. Mirrors the byte to the firmware console. */
teletype:
	mov bl, 0
	jmp 1f
teletype_attr:
	mov bh, 1
	jmp 2f
1:	mov bh, 0
2:	push ax
	push bx
	push cx
	push si
	push di
	push es
	out CONSOLE, al
	push VGA_SEG
	pop es
	cmp al, 0x0D
	je t_cr
	cmp al, 0x0A
	je t_lf
	cmp al, 0x08
	je t_bs
	cmp al, 0x07
	je t_out
	call cursor_offset
	stosb
	test bh, bh
	jz 3f
	mov es:[di], bl
3:	inc byte ptr [BDA_CURSOR]
	cmp byte ptr [BDA_CURSOR], COLS
	jb t_out
	mov byte ptr [BDA_CURSOR], 0
t_lf:
	inc byte ptr [BDA_CURSOR+1]
	cmp byte ptr [BDA_CURSOR+1], ROWS
	jb t_out
	mov byte ptr [BDA_CURSOR+1], ROWS-1
	push ds			/* scroll the whole screen up one line */
	push VGA_SEG
	pop ds
	mov si, COLS*2
	xor di, di
	mov cx, COLS*(ROWS-1)
	rep movsw
	mov ax, 0x0720
	mov cx, COLS
	rep stosw
	pop ds
	jmp t_out
t_cr:
	mov byte ptr [BDA_CURSOR], 0
	jmp t_out
t_bs:
	cmp byte ptr [BDA_CURSOR], 0
	je t_out
	dec byte ptr [BDA_CURSOR]
t_out:
	call update_cursor
	pop es
	pop di
	pop si
	pop cx
	pop bx
	pop ax
	ret

/* ---------------------------------------------------------------------------------------- */
/* ATA PIO: the disk int 13h serves, master on the primary channel                          */
/* ---------------------------------------------------------------------------------------- */

/* ata_wait: until BSY clears; -> AL status, CF set on ERR or a missing drive */
ata_wait:
	push cx
	push dx
	mov dx, ATA+7
	mov cx, 0xFFFF
1:	in al, dx
	cmp al, 0xFF
	je 3f			/* nothing on the bus */
	test al, 0x80
	jz 2f
	loop 1b
	jmp 3f
2:	test al, 0x01
	jnz 3f
	clc
	pop dx
	pop cx
	ret
3:	stc
	pop dx
	pop cx
	ret

/* ata_identify: IDENTIFY DEVICE; fills the EBDA's disk variables (DISK_PRESENT = 0 if none) */
ata_identify:
	push es
	pushad
	mov dx, ATA_CTL
	mov al, 0x02		/* nIEN: the BIOS polls, IRQ 14 stays quiet */
	out dx, al
	mov dx, ATA+6
	mov al, 0xA0
	out dx, al
	mov dx, ATA+7
	in al, dx
	test al, al
	jz 9f			/* no drive: status reads 0 */
	cmp al, 0xFF
	je 9f
	mov al, 0xEC
	out dx, al
	call ata_wait
	jc 9f
	test al, 0x08
	jz 9f
	xor ax, ax		/* the 512 bytes go to 0000:0600 (free during POST) */
	mov es, ax
	mov di, 0x600
	mov cx, 256
	mov dx, ATA
	rep insw
	push ds
	xor ax, ax
	mov ds, ax
	EBDA_ES
	mov byte ptr es:[DISK_PRESENT], 1
	mov ax, [0x600+2*3]
	mov es:[DISK_HEADS], ax
	mov ax, [0x600+2*6]
	mov es:[DISK_SPT], ax
	mov ax, [0x600+2*1]
	mov es:[DISK_CYLS], ax
	mov eax, [0x600+2*60]
	test byte ptr [0x600+2*83+1], 0x04	/* LBA48 supported: words 100-103 */
	jz 1f
	mov eax, [0x600+2*100]
	cmp dword ptr [0x600+2*102], 0
	je 1f
	mov eax, 0xFFFFFFFF
1:	mov es:[DISK_SECTORS], eax
	pop ds
9:	popad
	pop es
	ret

/* ata_transfer: CX sectors from LBA EAX, to (BL=0) or from (BL=1) ES:DI; one command per
 * sector, the buffer advanced through ES so that no transfer wraps inside a segment.
 * -> CF and AH = int 13h status, CX = sectors done. */
ata_transfer:
	push ebx
	push ecx
	push edx
	push esi
	push edi
	push es
	mov esi, eax		/* LBA */
	movzx ecx, cx
	shl ecx, 16		/* CX = sectors done, the high half = sectors asked for */
1:	mov eax, ecx
	shr eax, 16
	cmp cx, ax
	jae 8f
	push es			/* bounds: LBA < DISK_SECTORS */
	EBDA_ES
	cmp esi, es:[DISK_SECTORS]
	pop es
	jae 7f
	call ata_wait
	jc 6f
	mov eax, esi
	cmp eax, 0x0FFFFFFF
	jae 2f
	shr eax, 24		/* LBA28: device register holds LBA 27:24 */
	or al, 0xE0
	mov dx, ATA+6
	out dx, al
	call ata_lba_low
	mov al, 0x20		/* READ SECTORS */
	test bl, bl
	jz 3f
	mov al, 0x30		/* WRITE SECTORS */
	jmp 3f
2:	mov dx, ATA+6		/* LBA48: the previous ("HOB") bytes first: count 0, LBA 47:24 */
	mov al, 0x40
	out dx, al
	mov dx, ATA+2
	xor al, al
	out dx, al
	mov eax, esi
	shr eax, 24
	inc dx
	out dx, al
	xor al, al
	inc dx
	out dx, al
	inc dx
	out dx, al
	call ata_lba_low
	mov al, 0x24		/* READ SECTORS EXT */
	test bl, bl
	jz 3f
	mov al, 0x34		/* WRITE SECTORS EXT */
3:	mov dx, ATA+7
	out dx, al
	call ata_wait
	jc 6f
	test al, 0x08		/* DRQ: the sector is ready to move */
	jz 6f
	push ecx
	mov dx, ATA
	mov cx, 256
	test bl, bl
	jnz 4f
	push di
	rep insw
	pop di			/* the buffer moves on through ES, not DI */
	pop ecx
	jmp 5f
4:	push ds
	push es
	pop ds
	push si
	mov si, di
	rep outsw
	pop si
	pop ds
	pop ecx
	call ata_wait
	jc 6f
5:	mov ax, es		/* the next 512 bytes */
	add ax, 0x20
	mov es, ax
	inc esi
	inc cx
	jmp 1b
6:	mov ah, 0x20		/* controller failure */
	jmp 9f
7:	mov ah, 0x04		/* sector not found */
	jmp 9f
8:	xor ah, ah
9:	mov dx, cx		/* sectors done */
	pop es
	pop edi
	pop esi
	mov cx, dx
	pop edx
	add sp, 4		/* the caller's ECX is replaced by the count done */
	pop ebx
	cmp ah, 1		/* CF = (AH != 0) */
	cmc
	ret

/* ata_lba_low: sector count 1 and LBA 23:0 from ESI into ports 1F2-1F5 */
ata_lba_low:
	mov dx, ATA+2
	mov al, 1
	out dx, al
	mov eax, esi
	inc dx
	out dx, al
	shr eax, 8
	inc dx
	out dx, al
	shr eax, 8
	inc dx
	out dx, al
	ret

/* ---------------------------------------------------------------------------------------- */
/* int 13h: disk services for drive 80h (Phoenix "Enhanced Disk Drive Specification" 3.0)  */
/* ---------------------------------------------------------------------------------------- */
int13:
	sti
	ENTER
	BDA_DS
	mov ah, [bp+F_AH]
	cmp byte ptr [bp+F_DL], 0x80
	jne d_no_drive
	EBDA_ES
	cmp byte ptr es:[DISK_PRESENT], 0
	je d_no_drive
	cmp ah, 0x00
	je d_ok			/* reset */
	cmp ah, 0x01
	je d_status
	cmp ah, 0x02
	je d_chs_read
	cmp ah, 0x03
	je d_chs_write
	cmp ah, 0x04
	je d_chs_verify
	cmp ah, 0x08
	je d_parameters
	cmp ah, 0x0C
	je d_ok			/* seek */
	cmp ah, 0x0D
	je d_ok			/* alternate reset */
	cmp ah, 0x10
	je d_ok			/* test ready */
	cmp ah, 0x11
	je d_ok			/* recalibrate */
	cmp ah, 0x15
	je d_type
	cmp ah, 0x41
	je d_ext_check
	cmp ah, 0x42
	je d_ext_read
	cmp ah, 0x43
	je d_ext_write
	cmp ah, 0x44
	je d_ext_verify
	cmp ah, 0x47
	je d_ok			/* extended seek */
	cmp ah, 0x48
	je d_ext_parameters
	mov al, 0x13
	call report_unsupported
	mov ah, 0x01		/* invalid function */
	jmp d_error
d_no_drive:
d_bad_parameter:
	mov ah, 0x01
	jmp d_error
d_status:			/* -> AH = AL = the last status; CF if it was an error */
	mov al, [BDA_DISK_STATUS]
	mov [bp+F_AL], al
	mov ah, al
	test al, al
	jnz d_return
	jmp d_ok
d_ok:
	xor ah, ah
d_return:			/* AH = status: store it, CF = (AH != 0) */
	mov [bp+F_AH], ah
	mov [BDA_DISK_STATUS], ah
	CLEAR_CF
	test ah, ah
	jz 1f
	SET_CF
1:	LEAVE
d_error:
	jmp d_return

/* chs_to_lba: CH, CL, DH of the frame -> EAX = LBA, CF on an address outside the geometry */
chs_to_lba:
	EBDA_ES
	movzx eax, byte ptr [bp+F_CL]
	and al, 0x3F		/* sector, from 1 */
	jz 9f
	cmp ax, es:[DISK_SPT]
	ja 9f
	movzx ebx, byte ptr [bp+F_CL]	/* cylinder: CL bits 7-6 above CH */
	shl bx, 2
	and bx, 0x300
	mov bl, [bp+F_CH]
	cmp bx, es:[DISK_CYLS]
	jae 9f
	movzx ecx, byte ptr [bp+F_DH]
	cmp cx, es:[DISK_HEADS]
	jae 9f
	movzx edx, word ptr es:[DISK_HEADS]
	imul ebx, edx		/* (C * heads + H) * spt + S - 1 */
	add ebx, ecx
	movzx edx, word ptr es:[DISK_SPT]
	imul ebx, edx
	lea eax, [ebx+eax-1]
	clc
	ret
9:	stc
	ret

d_chs_read:
	xor dl, dl
	jmp d_chs
d_chs_write:
	mov dl, 1
	jmp d_chs
d_chs_verify:
	mov dl, 2
d_chs:
	push dx
	call chs_to_lba
	pop dx
	jc d_bad_parameter
	movzx cx, byte ptr [bp+F_AL]
	cmp dl, 2
	je 1f
	mov es, [bp+F_ES]
	mov di, [bp+F_BX]
	mov bl, dl
	call ata_transfer
	mov [bp+F_AL], cl	/* sectors transferred */
	jmp d_return
1:	call verify_range
	jmp d_return

/* verify_range: sectors EAX .. EAX+CX-1 exist? -> AH status */
verify_range:
	push es
	EBDA_ES
	movzx ecx, cx
	add eax, ecx
	jc 1f
	cmp eax, es:[DISK_SECTORS]
	ja 1f
	xor ah, ah
	pop es
	ret
1:	mov ah, 0x04
	pop es
	ret

d_parameters:			/* -> CH,CL max cylinder and sectors, DH max head, DL drives, BL 0 */
	mov ax, es:[DISK_CYLS]
	sub ax, 2		/* the highest cylinder, less the one AT BIOSes keep for diagnostics */
	jnc 1f
	xor ax, ax
1:
	mov [bp+F_CH], al
	shr ax, 2
	and al, 0xC0
	or al, es:[DISK_SPT]
	mov [bp+F_CL], al
	mov al, es:[DISK_HEADS]
	dec al
	mov [bp+F_DH], al
	mov byte ptr [bp+F_DL], 1
	mov word ptr [bp+F_AX], 0
	mov byte ptr [bp+F_BL], 0
	jmp d_ok

d_type:				/* -> AH = 3 (fixed disk), CX:DX = sectors */
	mov eax, es:[DISK_SECTORS]
	mov [bp+F_DX], ax
	shr eax, 16
	mov [bp+F_CX], ax
	mov byte ptr [bp+F_AH], 0x03
	CLEAR_CF
	LEAVE

d_ext_check:			/* BX = 55AAh -> BX = AA55h, AH = version 3.0, CX = subsets */
	cmp word ptr [bp+F_BX], 0x55AA
	mov ah, 0x01
	jne d_return
	mov word ptr [bp+F_BX], 0xAA55
	mov word ptr [bp+F_CX], 0x0007	/* fixed disk access, locking/ejecting, EDD */
	mov byte ptr [bp+F_AH], 0x30
	CLEAR_CF
	LEAVE

/* The disk address packet at DS:SI: size, 0, count (word), buffer offset:segment, LBA (qword) */
d_ext_read:
	xor bl, bl
	jmp d_ext
d_ext_write:
	mov bl, 1
	jmp d_ext
d_ext_verify:
	mov bl, 2
d_ext:
	mov ds, [bp+F_DS]
	mov si, [bp+F_SI]
	mov ah, 0x01
	cmp byte ptr [si], 0x10
	jb 2f
	cmp dword ptr [si+12], 0	/* LBA above 2 TiB */
	mov ah, 0x04
	jne 2f
	mov eax, [si+8]
	mov cx, [si+2]
	cmp bl, 2
	je 1f
	les di, [si+4]
	call ata_transfer
	mov [si+2], cx		/* blocks transferred */
	BDA_DS
	jmp d_return
1:	call verify_range
2:	BDA_DS
	jmp d_return

d_ext_parameters:		/* DS:SI = result buffer: size, flags, C, H, S, sectors, bytes/sector */
	mov ds, [bp+F_DS]
	mov si, [bp+F_SI]
	mov ax, [si]
	cmp ax, 0x1A
	mov ah, 0x01
	jb 2f
	mov word ptr [si+2], 0x0002	/* the CHS information is valid */
	movzx eax, word ptr es:[DISK_CYLS]
	mov [si+4], eax
	movzx eax, word ptr es:[DISK_HEADS]
	mov [si+8], eax
	movzx eax, word ptr es:[DISK_SPT]
	mov [si+12], eax
	mov eax, es:[DISK_SECTORS]
	mov [si+16], eax
	mov dword ptr [si+20], 0
	mov word ptr [si+24], 512
	mov bx, 0x1A
	cmp word ptr [si], 0x1E
	jb 1f
	mov dword ptr [si+26], 0xFFFFFFFF	/* no EDD configuration parameters */
	mov bx, 0x1E
1:	mov [si], bx
	xor ah, ah
2:	BDA_DS
	jmp d_return

/* ---------------------------------------------------------------------------------------- */
/* int 15h: system services                                                                  */
/* ---------------------------------------------------------------------------------------- */
int15:
	sti
	ENTER
	BDA_DS
	mov ax, [bp+F_AX]
	cmp ax, 0xE820
	je s_e820
	cmp ax, 0xE801
	je s_e801
	cmp ah, 0x88
	je s_extended
	cmp ah, 0x86
	je s_wait
	cmp ah, 0x24
	je s_a20
	cmp ah, 0xC0
	je s_config
	cmp ah, 0xC1
	je s_ebda
	cmp ah, 0x4F
	je s_keyboard_intercept
	cmp ah, 0x90
	je s_ok
	cmp ah, 0x91
	je s_ok
	mov al, 0x15
	call report_unsupported
	mov byte ptr [bp+F_AH], 0x86	/* function not supported */
s_fail:
	SET_CF
	LEAVE
s_ok:
	mov byte ptr [bp+F_AH], 0
	CLEAR_CF
	LEAVE
s_keyboard_intercept:		/* the key in AL goes on unchanged */
	SET_CF
	LEAVE

s_e820:				/* EBX continuation, ECX buffer size, EDX 'SMAP', ES:DI buffer */
	cmp dword ptr [bp+F_DX], 0x534D4150
	jne 9f
	cmp dword ptr [bp+F_CX], 20
	jb 9f
	EBDA_ES
	mov ebx, [bp+F_BX]
	cmp ebx, es:[E820_COUNT]
	jae 9f
	push es
	pop ds
	imul si, bx, 20
	add si, E820_TABLE
	mov es, [bp+F_ES]
	mov di, [bp+F_DI]
	mov cx, 10
	rep movsw
	inc ebx
	cmp bx, ds:[E820_COUNT]
	jb 1f
	xor ebx, ebx		/* that was the last entry */
1:	mov [bp+F_BX], ebx
	mov dword ptr [bp+F_AX], 0x534D4150
	mov dword ptr [bp+F_CX], 20
	CLEAR_CF
	LEAVE
9:	mov byte ptr [bp+F_AH], 0x86
	jmp s_fail

/* below_4g_kb: EAX = KiB of RAM from 1 MiB up to where RAM ends below 4 GiB (CMOS 30h/31h or 34h/35h) */
extended_kb:
	mov al, 0x35
	call cmos_read
	mov ah, al
	mov al, 0x34
	call cmos_read
	movzx eax, ax		/* 64 KiB units above 16 MiB */
	test eax, eax
	jz 1f
	shl eax, 6
	add eax, 15*1024
	ret
1:	mov al, 0x31
	call cmos_read
	mov ah, al
	mov al, 0x30
	call cmos_read
	movzx eax, ax
	ret

s_e801:				/* AX=CX: KiB from 1 to 16 MiB; BX=DX: 64 KiB blocks above 16 MiB */
	call extended_kb
	sub eax, 128		/* the top 128 KiB are the firmware's (E820 type 2), as in SeaBIOS */
	mov ebx, eax
	cmp eax, 15*1024
	jbe 1f
	mov eax, 15*1024
1:	mov [bp+F_AX], ax
	mov [bp+F_CX], ax
	xor eax, eax
	sub ebx, 15*1024
	jbe 2f
	mov eax, ebx
	shr eax, 6
2:	mov [bp+F_BX], ax
	mov [bp+F_DX], ax
	CLEAR_CF
	LEAVE

s_extended:			/* AX = KiB above 1 MiB, at most 63 MiB */
	call extended_kb
	cmp eax, 0xFC00
	jbe 1f
	mov eax, 0xFC00
1:	mov [bp+F_AX], ax
	CLEAR_CF
	LEAVE

s_wait:				/* CX:DX microseconds, waited in timer ticks with interrupts on */
	mov ax, [bp+F_CX]
	shl eax, 16
	mov ax, [bp+F_DX]
	xor edx, edx
	add eax, US_PER_TICK-1
	adc edx, 0
	mov ecx, US_PER_TICK
	div ecx
	inc eax			/* the current tick is partly gone: one more */
	mov ecx, eax
	mov ebx, [BDA_TICKS]
1:	sti
	hlt
	mov eax, [BDA_TICKS]
	sub eax, ebx
	jae 2f
	add eax, TICKS_PER_DAY	/* midnight passed */
2:	cmp eax, ecx
	jb 1b
	jmp s_ok

s_a20:				/* AL: 0 disable, 1 enable, 2 status, 3 support (port 92h) */
	mov al, [bp+F_AL]
	cmp al, 3
	je 3f
	cmp al, 2
	je 2f
	ja 9f
	mov ah, al
	in al, 0x92
	and al, 0xFC		/* never reset (bit 0) */
	shl ah, 1
	or al, ah
	out 0x92, al
	jmp s_ok
2:	in al, 0x92
	shr al, 1
	and al, 1
	mov [bp+F_AL], al
	jmp s_ok
3:	mov word ptr [bp+F_BX], 0x0002	/* fast A20 through port 92h */
	jmp s_ok
9:	mov byte ptr [bp+F_AH], 0x86
	jmp s_fail

s_config:			/* ES:BX = the system configuration table */
	mov word ptr [bp+F_ES], 0xF000
	mov word ptr [bp+F_BX], offset config_table
	jmp s_ok

s_ebda:				/* ES = EBDA segment */
	mov word ptr [bp+F_ES], EBDA_SEG
	CLEAR_CF
	LEAVE

config_table:
	.word 8			/* bytes that follow */
	.byte 0xFC, 0x00, 0x00	/* model (AT), submodel, revision */
	.byte 0x70		/* second PIC, RTC, int 15h/4Fh keyboard intercept */
	.byte 0x00, 0x00, 0x00, 0x00

/* cmos_read: AL = register -> AL = value */
cmos_read:
	out 0x70, al
	in al, 0x71
	ret

/* build_e820: the memory map, from the CMOS sizes, into the EBDA (as emu/loader/multiboot.py
 * describes the same PC): conventional memory to the EBDA, the EBDA, the BIOS, extended
 * memory less the top 128 KiB, that top, the ROM alias below 4 GiB, RAM above 4 GiB. */
build_e820:
	push es
	pushad
	EBDA_ES
	mov di, E820_TABLE
	xor eax, eax
	mov ebx, 0x9FC00
	mov dl, 1
	call e820_entry
	mov eax, 0x9FC00
	mov ebx, 0x400
	mov dl, 2
	call e820_entry
	mov eax, 0xF0000
	mov ebx, 0x10000
	mov dl, 2
	call e820_entry
	call extended_kb
	shl eax, 10
	add eax, 0x100000	/* where RAM ends below 4 GiB */
	push eax
	mov ebx, eax
	sub ebx, 0x20000+0x100000
	mov eax, 0x100000
	mov dl, 1
	call e820_entry
	pop eax
	sub eax, 0x20000
	mov ebx, 0x20000
	mov dl, 2
	call e820_entry
	mov eax, 0xFFFC0000
	mov ebx, 0x40000
	mov dl, 2
	call e820_entry
	mov al, 0x5D		/* 64 KiB units above 4 GiB */
	call cmos_read
	movzx ebx, al
	shl ebx, 16
	mov al, 0x5C
	call cmos_read
	mov bh, al
	mov al, 0x5B
	call cmos_read
	mov bl, al
	test ebx, ebx
	jz 1f
	/* base 4 GiB, length EBX * 64 KiB (64-bit) */
	mov dword ptr es:[di], 0
	mov dword ptr es:[di+4], 1
	mov eax, ebx
	shl eax, 16
	mov es:[di+8], eax
	mov eax, ebx
	shr eax, 16
	mov es:[di+12], eax
	mov dword ptr es:[di+16], 1
	add di, 20
1:	mov ax, di
	sub ax, E820_TABLE
	mov bl, 20
	div bl
	xor ah, ah
	mov es:[E820_COUNT], ax
	popad
	pop es
	ret

/* e820_entry: base EAX, length EBX (both below 4 GiB), type DL -> ES:DI, DI advanced */
e820_entry:
	mov es:[di], eax
	mov dword ptr es:[di+4], 0
	mov es:[di+8], ebx
	mov dword ptr es:[di+12], 0
	movzx edx, dl
	mov es:[di+16], edx
	add di, 20
	ret

/* ---------------------------------------------------------------------------------------- */
/* int 16h: keyboard, fed from COM1 (emu's terminal input arrives there)                     */
/* ---------------------------------------------------------------------------------------- */
int16:
	sti
	ENTER
	BDA_DS
	mov ah, [bp+F_AH]
	and ah, 0xEF		/* 10h-12h: the same as 00h-02h for this keyboard */
	cmp ah, 0x00
	je k_read
	cmp ah, 0x01
	je k_check
	cmp ah, 0x02
	je k_flags
	cmp ah, 0x03
	je k_done		/* typematic rate */
	cmp ah, 0x05
	je k_store
	mov ah, [bp+F_AH]
	mov al, 0x16
	call report_unsupported
k_done:
	LEAVE
k_read:				/* wait for a key -> AH scan code, AL character */
	call key_poll
	jnz 1f
	sti
	hlt			/* the next tick (or a kick from emu) looks again */
	jmp k_read
1:	mov [bp+F_AX], ax
	EBDA_ES
	mov word ptr es:[KEY_PENDING], 0
	LEAVE
k_check:			/* ZF clear and AX = the key if one waits (it stays) */
	call key_poll
	jz 1f
	mov [bp+F_AX], ax
	and word ptr [bp+F_FLAGS], ~FLAG_ZF
	LEAVE
1:	or word ptr [bp+F_FLAGS], FLAG_ZF
	LEAVE
k_flags:
	mov al, [BDA_KBD_FLAGS]
	mov [bp+F_AL], al
	LEAVE
k_store:			/* CX = key to put in the buffer -> AL 0, or 1 if it is full */
	EBDA_ES
	mov al, 1
	cmp word ptr es:[KEY_PENDING], 0
	jne 1f
	mov ax, [bp+F_CX]
	mov es:[KEY_PENDING], ax
	xor al, al
1:	mov [bp+F_AL], al
	LEAVE

/* key_poll: -> ZF clear and AX = key if one is waiting (kept pending), ZF set if none */
key_poll:
	push es
	push dx
	push bx
	EBDA_ES
	mov ax, es:[KEY_PENDING]
	test ax, ax
	jnz 9f
	mov dx, COM1+5
	in al, dx
	test al, 0x01		/* data ready */
	jz 8f
	mov dx, COM1
	in al, dx
	cmp al, 0x0A		/* a newline from a pipe is the Enter key */
	jne 1f
	mov al, 0x0D
1:	cmp al, 0x7F		/* DEL from a terminal is Backspace */
	jne 2f
	mov al, 0x08
2:	xor ah, ah
	cmp al, 0x80
	jae 3f
	movzx bx, al
	mov ah, cs:[scan_codes+bx]
3:	test ax, ax
	jnz 4f
	mov ax, 0x0300		/* NUL: Ctrl-2 */
4:	mov es:[KEY_PENDING], ax
	test ax, ax		/* ZF clear */
	jmp 9f
8:	xor ax, ax		/* ZF set */
9:	pop bx
	pop dx
	pop es
	ret

/* Set-1 scan codes of the US keyboard key that types each ASCII character */
scan_codes:
	.byte 0x03,0x1E,0x30,0x2E,0x20,0x12,0x21,0x22,0x0E,0x0F,0x24,0x25,0x26,0x1C,0x31,0x18	/* 00-0F */
	.byte 0x19,0x10,0x13,0x1F,0x14,0x16,0x2F,0x11,0x2D,0x15,0x2C,0x01,0x2B,0x1B,0x07,0x0C	/* 10-1F */
	.byte 0x39,0x02,0x28,0x04,0x05,0x06,0x08,0x28,0x0A,0x0B,0x09,0x0D,0x33,0x0C,0x34,0x35	/* 20-2F */
	.byte 0x0B,0x02,0x03,0x04,0x05,0x06,0x07,0x08,0x09,0x0A,0x27,0x27,0x33,0x0D,0x34,0x35	/* 30-3F */
	.byte 0x03,0x1E,0x30,0x2E,0x20,0x12,0x21,0x22,0x23,0x17,0x24,0x25,0x26,0x32,0x31,0x18	/* 40-4F */
	.byte 0x19,0x10,0x13,0x1F,0x14,0x16,0x2F,0x11,0x2D,0x15,0x2C,0x1A,0x2B,0x1B,0x07,0x0C	/* 50-5F */
	.byte 0x29,0x1E,0x30,0x2E,0x20,0x12,0x21,0x22,0x23,0x17,0x24,0x25,0x26,0x32,0x31,0x18	/* 60-6F */
	.byte 0x19,0x10,0x13,0x1F,0x14,0x16,0x2F,0x11,0x2D,0x15,0x2C,0x1A,0x2B,0x1B,0x29,0x0E	/* 70-7F */

/* ---------------------------------------------------------------------------------------- */
/* int 1Ah: time of day                                                                      */
/* ---------------------------------------------------------------------------------------- */
int1a:
	sti
	ENTER
	BDA_DS
	mov ah, [bp+F_AH]
	cmp ah, 0x00
	je t_ticks
	cmp ah, 0x01
	je t_set_ticks
	cmp ah, 0x02
	je t_time
	cmp ah, 0x03
	je t_set_time
	cmp ah, 0x04
	je t_date
	cmp ah, 0x05
	je t_set_date
	mov al, 0x1A
	call report_unsupported
	SET_CF
	LEAVE
t_ok:
	CLEAR_CF
	LEAVE
t_ticks:			/* -> CX:DX ticks since midnight, AL = midnight passed (then cleared) */
	cli
	mov eax, [BDA_TICKS]
	mov [bp+F_DX], ax
	shr eax, 16
	mov [bp+F_CX], ax
	mov al, 0
	xchg al, [BDA_MIDNIGHT]
	mov [bp+F_AL], al
	sti
	jmp t_ok
t_set_ticks:
	mov ax, [bp+F_CX]
	shl eax, 16
	mov ax, [bp+F_DX]
	mov [BDA_TICKS], eax
	mov byte ptr [BDA_MIDNIGHT], 0
	jmp t_ok
t_time:				/* -> CH hours, CL minutes, DH seconds (BCD), DL daylight saving */
	call rtc_wait
	mov al, 0x04
	call cmos_read
	mov [bp+F_CH], al
	mov al, 0x02
	call cmos_read
	mov [bp+F_CL], al
	mov al, 0x00
	call cmos_read
	mov [bp+F_DH], al
	mov al, 0x0B
	call cmos_read
	and al, 1
	mov [bp+F_DL], al
	mov byte ptr [bp+F_AH], 0
	jmp t_ok
t_set_time:
	call rtc_wait
	mov al, 0x04
	mov ah, [bp+F_CH]
	call cmos_write
	mov al, 0x02
	mov ah, [bp+F_CL]
	call cmos_write
	mov al, 0x00
	mov ah, [bp+F_DH]
	call cmos_write
	jmp t_ok
t_date:				/* -> CH century, CL year, DH month, DL day (BCD) */
	call rtc_wait
	mov al, 0x32
	call cmos_read
	mov [bp+F_CH], al
	mov al, 0x09
	call cmos_read
	mov [bp+F_CL], al
	mov al, 0x08
	call cmos_read
	mov [bp+F_DH], al
	mov al, 0x07
	call cmos_read
	mov [bp+F_DL], al
	mov byte ptr [bp+F_AH], 0
	jmp t_ok
t_set_date:
	call rtc_wait
	mov al, 0x32
	mov ah, [bp+F_CH]
	call cmos_write
	mov al, 0x09
	mov ah, [bp+F_CL]
	call cmos_write
	mov al, 0x08
	mov ah, [bp+F_DH]
	call cmos_write
	mov al, 0x07
	mov ah, [bp+F_DL]
	call cmos_write
	jmp t_ok

/* rtc_wait: until no update cycle is in progress (register A bit 7) */
rtc_wait:
	push ax
1:	mov al, 0x0A
	call cmos_read
	test al, 0x80
	jnz 1b
	pop ax
	ret

/* cmos_write: register AL <- AH */
cmos_write:
	out 0x70, al
	mov al, ah
	out 0x71, al
	ret

/* ---------------------------------------------------------------------------------------- */
/* The vectors POST installs: (vector, handler offset), ended by FFh                         */
/* ---------------------------------------------------------------------------------------- */
vector_table:
	.byte 0x00
	.word exc_de
	.byte 0x06
	.word exc_ud
	.byte 0x07
	.word exc_nm
	.byte 0x08
	.word int08
	.byte 0x09
	.word irq_master
	.byte 0x0A
	.word irq_master
	.byte 0x0B
	.word irq_master
	.byte 0x0C
	.word irq_master
	.byte 0x0D
	.word irq_master
	.byte 0x0E
	.word irq_master
	.byte 0x0F
	.word irq_master
	.byte 0x10
	.word int10
	.byte 0x11
	.word int11
	.byte 0x12
	.word int12
	.byte 0x13
	.word int13
	.byte 0x15
	.word int15
	.byte 0x16
	.word int16
	.byte 0x18
	.word int18
	.byte 0x19
	.word int19
	.byte 0x1A
	.word int1a
	.byte 0x70
	.word irq_slave
	.byte 0x71
	.word irq_slave
	.byte 0x72
	.word irq_slave
	.byte 0x73
	.word irq_slave
	.byte 0x74
	.word irq_slave
	.byte 0x75
	.word irq_slave
	.byte 0x76
	.word irq_ata
	.byte 0x77
	.word irq_slave
	.byte 0xFF

/* ---------------------------------------------------------------------------------------- */
/* The reset vector, the BIOS date and the model byte, at the architectural addresses        */
/* ---------------------------------------------------------------------------------------- */
	.org 0xFFF0
	.byte 0xEA		/* jmp far F000:post */
	.word post, 0xF000
	.ascii "11/25/26"	/* F000:FFF5: BIOS release date */
	.byte 0
	.byte 0xFC		/* F000:FFFE: model, PC/AT */
	.byte 0
