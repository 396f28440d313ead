/*
 * irqs - hardware interrupts through the legacy PC devices:
 *   8259A PICs (remapped to vectors 0x20-0x2f), PIT channel 0 as a 1 kHz tick,
 *   the 16550 UART's transmit and receive interrupts (IRQ 4), PIT channel 2 through
 *   port 0x61, and the MC146818 RTC's registers.
 *
 * Everything printed is fixed by construction - counts that the code itself bounds, not
 * times or dates: the tick handler masks IRQ 0 itself at the 20th tick, the UART handler
 * serves one event per interrupt, and of the RTC only the format bits and a range check
 * of the year are shown.
 *
 * Same code for irqs32.elf and irqs64.elf. Interrupts are enabled only inside the
 * `sti; hlt` waits: STI delays interrupt recognition by one instruction (SDM vol. 2B,
 * STI), so an interrupt that is already pending wakes the HLT instead of being taken
 * just before it and leaving the CPU asleep.
 */
#include "lib.h"

#ifdef __x86_64__
#define NAME "irqs64"
#else
#define NAME "irqs32"
#endif

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define IRQ_BASE 0x20           /* IRQ n -> vector 0x20 + n */

#define UART_THR (COM1 + 0)     /* write */
#define UART_RBR (COM1 + 0)     /* read */
#define UART_IER (COM1 + 1)
#define UART_IIR (COM1 + 2)
#define UART_MCR (COM1 + 4)
#define UART_LSR (COM1 + 5)
#define IER_RDA  0x01           /* received data available */
#define IER_THRE 0x02           /* transmit holding register empty */
#define MCR_DTR_RTS 0x03
#define MCR_OUT2 0x08           /* on PCs, gates the UART's interrupt line to the PIC */
#define MCR_LOOP 0x10           /* loopback: the transmitter feeds the receiver */

#define TICKS 20

static volatile int ticks;
static volatile int tick_limit = TICKS;  /* the tick handler masks IRQ 0 when it gets here */
static volatile int uart_irqs;
static const char tx_message[] = "this line was sent one character per THRE interrupt\n";
static volatile const char *tx_next;
static volatile int tx_done;
static volatile char rx_buf[8];
static volatile int rx_len;
static int failures;

/* ---- 8259A (Intel 8259A data sheet; "Programmable Interrupt Controller") ------------ */
static void pic_init(void)
{
    outb(PIC1_CMD, 0x11);       /* ICW1: edge triggered, cascaded, ICW4 follows */
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, IRQ_BASE);  /* ICW2: vector of IRQ 0 / IRQ 8 - above the exceptions */
    outb(PIC2_DATA, IRQ_BASE + 8);
    outb(PIC1_DATA, 0x04);      /* ICW3: master has a slave on IRQ 2 (bit mask) */
    outb(PIC2_DATA, 0x02);      /*       slave's cascade identity is 2 */
    outb(PIC1_DATA, 0x01);      /* ICW4: 8086 mode, normal (not automatic) EOI */
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xff);      /* OCW1: every line masked for now */
    outb(PIC2_DATA, 0xff);
}

static void pic_mask(int irq, int masked)
{
    u16 port = irq < 8 ? PIC1_DATA : PIC2_DATA;
    u8 bit = 1 << (irq & 7);
    outb(port, masked ? (inb(port) | bit) : (inb(port) & ~bit));
}

static void pic_eoi(int irq)
{
    if (irq >= 8)
        outb(PIC2_CMD, 0x20);   /* OCW2: non-specific EOI, to the slave first */
    outb(PIC1_CMD, 0x20);
}

/* Read the in-service register (OCW3 = 0x0b selects it). */
static u8 pic_isr(u16 cmd_port)
{
    outb(cmd_port, 0x0b);
    return inb(cmd_port);
}

/* ---- Interrupt handlers ------------------------------------------------------------ */
static void uart_interrupt(void)
{
    /* One event per interrupt, on purpose: IIR names the highest-priority pending cause
     * and reading it (for THRE) or reading RBR (for RDA) acknowledges it. A new event
     * then raises the line again, a new edge for the PIC, a new interrupt. */
    u8 iir = inb(UART_IIR);
    uart_irqs++;
    switch (iir & 0x0f) {
    case 0x02:                  /* THR empty: send the next character, or stop */
        if (*tx_next)
            outb(UART_THR, *tx_next++);
        else {
            outb(UART_IER, 0);
            tx_done = 1;
        }
        break;
    case 0x04:                  /* received data available: drain it, as Linux's 8250 does
                                 * (the line stays high while data is left, so an edge-
                                 * triggered PIC would not interrupt again for it) */
        while (inb(UART_LSR) & 0x01) {
            u8 c = inb(UART_RBR);
            if (rx_len < (int)sizeof(rx_buf) - 1)
                rx_buf[rx_len++] = c;
        }
        break;
    default:                    /* 0x01: nothing pending; others: not enabled here */
        break;
    }
}

int guest_trap(struct trap_frame *f)
{
    if (f->vector < IRQ_BASE || f->vector >= IRQ_BASE + 16)
        return 0;
    int irq = f->vector - IRQ_BASE;
    /* IRQ 7 / 15 without the ISR bit set is a spurious interrupt: no EOI for it. */
    if (irq == 7 && !(pic_isr(PIC1_CMD) & 0x80))
        return 1;
    if (irq == 15 && !(pic_isr(PIC2_CMD) & 0x80)) {
        pic_eoi(0);             /* the master did see an IRQ 2 */
        return 1;
    }
    switch (irq) {
    case 0:
        if (++ticks == tick_limit)
            pic_mask(0, 1);     /* the count cannot overshoot, whatever the speed */
        break;
    case 4:
        uart_interrupt();
        break;
    default:
        kprintf("unexpected IRQ %d\n", irq);
        failures++;
        break;
    }
    pic_eoi(irq);
    return 1;
}

static void wait_for_interrupt(void)
{
    __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void check(int ok, const char *what)
{
    if (!ok) {
        kprintf("  <-- MISMATCH: %s\n", what);
        failures++;
    }
}

/* ---- Tests ------------------------------------------------------------------------- */
static void test_timer(void)
{
    /* PIT (Intel 8254): input clock 1.193182 MHz; divisor 1193 -> 1000.15 Hz.
     * Control word 0x34: channel 0, lobyte then hibyte, mode 2 (rate generator), binary. */
    outb(0x43, 0x34);
    outb(0x40, 1193 & 0xff);
    outb(0x40, 1193 >> 8);
    pic_mask(0, 0);
    while (ticks < TICKS)
        wait_for_interrupt();
    kprintf("timer: %d ticks (PIT channel 0, mode 2, divisor 1193, IRQ 0 -> vector 0x%x)\n",
            ticks, IRQ_BASE);
    check(ticks == TICKS, "tick count");
}

static void test_uart_tx(void)
{
    kputs("uart tx: IER.THRE=1, MCR.OUT2=1, IRQ 4 unmasked; the handler prints:\n");
    tx_next = tx_message;
    uart_irqs = 0;
    outb(UART_MCR, MCR_DTR_RTS | MCR_OUT2);
    pic_mask(4, 0);
    outb(UART_IER, IER_THRE);   /* THR is empty already: this interrupts at once */
    while (!tx_done)
        wait_for_interrupt();
    int n = sizeof(tx_message) - 1;
    kprintf("uart tx: %d characters in %d interrupts (one per character, one to stop)\n",
            n, uart_irqs);
    check(uart_irqs == n + 1, "interrupt count");
}

/* Receive from the terminal: bytes typed or piped into the emulator's stdin (COM1 is
 * -serial stdio on QEMU, stdin on emu) arrive in RBR and raise IRQ 4 (IER.RDA, MCR.OUT2).
 * The tests pipe "emu"; by hand, type it within 2 seconds. The PIT, still at 1 kHz from
 * test_timer, bounds the wait. */
static void test_uart_rx_terminal(void)
{
    uart_irqs = 0;
    rx_len = 0;
    outb(UART_MCR, MCR_DTR_RTS | MCR_OUT2);
    outb(UART_IER, IER_RDA);
    pic_mask(4, 0);
    ticks = 0;
    tick_limit = 2000;
    pic_mask(0, 0);
    while (rx_len < 3 && ticks < tick_limit)
        wait_for_interrupt();
    pic_mask(0, 1);
    pic_mask(4, 1);
    outb(UART_IER, 0);
    rx_buf[rx_len] = 0;
    if (rx_len == 0) {
        kputs("uart rx: no terminal input within 2 s (pipe \"emu\" into stdin to test IRQ 4)\n");
        return;
    }
    kprintf("uart rx: terminal input through IRQ 4: \"%s\"\n", (const char *)rx_buf);
    check(uart_irqs >= 1 && rx_len == 3 && rx_buf[0] == 'e' && rx_buf[1] == 'm' && rx_buf[2] == 'u',
          "\"emu\" from the terminal");
}

static void test_uart_rx(void)
{
    static const char sent[] = "emu";
    int rda = 0;
    /* Loopback (MCR bit 4): each transmitted byte arrives in RBR and the UART's interrupt
     * logic reports "received data available" in IIR. The IRQ 4 line itself is another
     * matter: in loopback the chip forces its OUT2 pin inactive, and a PC gates IRQ 4 with
     * OUT2, so real hardware (and emu) raise no interrupt here while QEMU does. So this test
     * reads IIR, which every 16550 agrees on, instead of waiting for IRQ 4. Nothing is
     * printed meanwhile: output would loop back too. */
    rx_len = 0;
    outb(UART_MCR, MCR_DTR_RTS | MCR_OUT2 | MCR_LOOP);
    while (inb(UART_LSR) & 0x01)  /* drop anything the terminal sent meanwhile */
        inb(UART_RBR);
    outb(UART_IER, IER_RDA);
    for (int i = 0; sent[i]; i++) {
        while (!(inb(UART_LSR) & 0x20))
            ;
        outb(UART_THR, sent[i]);
        for (int spin = 0; spin < 1000 && (inb(UART_IIR) & 0x0f) != 0x04; spin++)
            ;
        if ((inb(UART_IIR) & 0x0f) == 0x04) {
            rda++;
            rx_buf[rx_len++] = inb(UART_RBR);
        }
    }
    outb(UART_IER, 0);
    outb(UART_MCR, MCR_DTR_RTS);
    rx_buf[rx_len < 7 ? rx_len : 7] = 0;
    kprintf("uart rx: loopback, IER.RDA=1: received \"%s\", IIR said RX data %d times\n",
            (const char *)rx_buf, rda);
    check(rx_len == 3 && rx_buf[0] == 'e' && rx_buf[1] == 'm' && rx_buf[2] == 'u' && rda == 3,
          "\"emu\" with 3 RX-data indications");
}

static void test_pit_channel2(void)
{
    /* Port 0x61 (system control port B): bit 0 = channel 2 gate, bit 1 = speaker data
     * (kept off), bit 5 = channel 2 OUT, readable. In mode 0 ("interrupt on terminal
     * count") OUT goes low when the count is written and high when it reaches 0.
     * 65535 counts = 55 ms: ample time for OUT to be still low when first read, even on
     * a loaded host, and still a short wait (a few thousand port reads under KVM). */
    outb(0x61, (inb(0x61) & 0x0c) | 0x01);
    outb(0x43, 0xb0);           /* channel 2, lobyte/hibyte, mode 0, binary */
    outb(0x42, 0xff);
    outb(0x42, 0xff);
    int low_first = !(inb(0x61) & 0x20);
    long polls = 0;
    while (!(inb(0x61) & 0x20) && polls < 10000000)
        polls++;
    int high = (inb(0x61) & 0x20) != 0;
    outb(0x61, inb(0x61) & 0x0c);   /* gate off */
    kprintf("pit channel 2: OUT2 %s after loading, %s after the count: %s\n",
            low_first ? "low" : "HIGH", high ? "high" : "LOW",
            low_first && high ? "ch2 ok" : "ch2 FAILED");
    check(low_first && high, "OUT2 low, then high");
}

static u8 cmos_read(u8 reg)
{
    outb(0x70, reg);            /* bit 7 of the index would disable NMI; left 0 */
    return inb(0x71);
}

static unsigned from_bcd(u8 v) { return (v >> 4) * 10 + (v & 0x0f); }

static void test_rtc(void)
{
    /* Wait until no update is in progress (status A bit 7, UIP), so that the date
     * registers are read while stable (MC146818 data sheet). */
    long polls = 0;
    while ((cmos_read(0x0a) & 0x80) && polls < 1000000)
        polls++;
    u8 status_b = cmos_read(0x0b);
    u8 year = cmos_read(0x09), century = cmos_read(0x32);
    unsigned full = (status_b & 0x04) ? century * 100u + year
                                      : from_bcd(century) * 100 + from_bcd(year);
    int ok = full >= 2020 && full <= 2099;
    kprintf("rtc: status B=0x%02x (%s, %s), year in range 2020-2099 %s\n", status_b,
            (status_b & 0x02) ? "24-hour" : "12-hour", (status_b & 0x04) ? "binary" : "BCD",
            ok ? "ok" : "FAILED");
    check(ok, "year");
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
#ifdef __x86_64__
    kputs(NAME ": long mode\n");
#else
    kputs(NAME ": 32-bit protected mode\n");
#endif
    pic_init();
    kprintf("pic: ICW1-4 sent, IRQ 0-7 -> 0x%x-0x%x, IRQ 8-15 -> 0x%x-0x%x, all masked\n",
            IRQ_BASE, IRQ_BASE + 7, IRQ_BASE + 8, IRQ_BASE + 15);
    test_timer();
    test_uart_tx();
    test_uart_rx_terminal();
    test_uart_rx();
    test_pit_channel2();
    test_rtc();

    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    kprintf("pic: masks 0x%02x 0x%02x\n", inb(PIC1_DATA), inb(PIC2_DATA));
    kputs(failures ? NAME ": FAILED\n" : NAME ": all checks passed\n");
    return failures ? 1 : 0;
}
