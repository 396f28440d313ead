/*
 * serial.c - polled output on COM1, an 8250/16550 UART at I/O port 0x3f8.
 *
 * Registers (offset from 0x3f8): 0 THR (write) / RBR (read), 1 IER, 2 IIR (read) /
 * FCR (write), 3 LCR, 4 MCR, 5 LSR. With LCR.DLAB=1, offsets 0/1 are the baud divisor.
 * A character may be written to THR when LSR bit 5 (THR empty) is set.
 */
#include "lib.h"

void serial_init(void)
{
    outb(COM1 + 1, 0x00);   /* IER: no interrupts */
    outb(COM1 + 3, 0x80);   /* LCR: DLAB=1 to reach the divisor latch */
    outb(COM1 + 0, 0x01);   /* divisor 1 = 115200 baud */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* LCR: 8 data bits, no parity, 1 stop bit, DLAB=0 */
    outb(COM1 + 2, 0x00);   /* FCR: FIFOs off (plain 8250 behaviour, one byte at a time) */
    outb(COM1 + 4, 0x03);   /* MCR: DTR | RTS; OUT2=0 keeps the IRQ line off */
}

void serial_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))   /* LSR.THRE */
        ;
    outb(COM1, c);
}

void kputs(const char *s)
{
    while (*s)
        serial_putc(*s++);
}
