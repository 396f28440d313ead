/*
 * idle - a guest that is almost always halted: the PIT ticks at 100 Hz (the classic Linux
 * HZ) and the CPU sleeps in `hlt` between ticks, for 100 ticks (one second).
 *
 * This is the workload a VMM must make cheap: a halted vCPU should cost the host nothing
 * but the work of each tick. Under KVM a `hlt` exits to the VMM (KVM_EXIT_HLT with a
 * userspace irqchip), which sleeps until the next timer; under emu's tcg the same happens
 * when Unicorn returns at the `hlt`. tests/test_idle.py measures the host CPU it costs.
 *
 * With "spin" on the command line the guest busy-waits with interrupts enabled instead of
 * halting, so each tick must interrupt running guest code: the VMM has to kick the vCPU out
 * of emu_start / KVM_RUN at the timer's deadline (tests/test_cli_run.py). "seconds=N" makes it
 * last N seconds (1 to 9999) instead of one: long enough to look at it from the monitor.
 */
#include "lib.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xa0
#define PIC2_DATA 0xa1
#define IRQ_BASE 0x20
#define HZ 100
#define PIT_HZ 1193182

static volatile int ticks;
static int TICKS = HZ;

static int has_word(const char *s, const char *word)
{
    for (; *s; s++) {
        const char *a = s, *b = word;
        while (*b && *a == *b)
            a++, b++;
        if (!*b && (*a == 0 || *a == ' '))
            return 1;
    }
    return 0;
}

static int seconds_of(const char *s)
{
    for (; *s; s++) {
        const char *a = s, *b = "seconds=";
        while (*b && *a == *b)
            a++, b++;
        if (!*b) {
            int n = 0;
            while (*a >= '0' && *a <= '9' && n < 10000)
                n = n * 10 + (*a++ - '0');
            return n >= 1 && n <= 9999 ? n : 1;
        }
    }
    return 1;
}

int guest_trap(struct trap_frame *f)
{
    if (f->vector != IRQ_BASE)  /* IRQ 0, the only line unmasked */
        return 0;
    if (++ticks == TICKS)
        outb(PIC1_DATA, 0xff);  /* mask IRQ 0 from the handler: the count cannot overshoot */
    outb(PIC1_CMD, 0x20);       /* OCW2: non-specific EOI */
    return 1;
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    int spin = (mbi->flags & MB_INFO_CMDLINE) && has_word((const char *)(ulong)mbi->cmdline, "spin");
    if (mbi->flags & MB_INFO_CMDLINE)
        TICKS = HZ * seconds_of((const char *)(ulong)mbi->cmdline);
    outb(PIC1_CMD, 0x11);       /* ICW1..ICW4 as in irqs.c: vectors 0x20-0x2f, 8086 mode */
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, IRQ_BASE);
    outb(PIC2_DATA, IRQ_BASE + 8);
    outb(PIC1_DATA, 0x04);
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01);
    outb(PIC2_DATA, 0x01);
    outb(PIC2_DATA, 0xff);
    outb(PIC1_DATA, 0xfe);      /* only IRQ 0 */
    outb(0x43, 0x34);           /* PIT channel 0, lobyte/hibyte, mode 2 (rate generator) */
    outb(0x40, (PIT_HZ / HZ) & 0xff);
    outb(0x40, (PIT_HZ / HZ) >> 8);
    if (spin) {
        __asm__ volatile("sti" ::: "memory");
        while (ticks < TICKS)
            ;
        __asm__ volatile("cli" ::: "memory");
        kprintf("idle: %d ticks at %d Hz, spinning with interrupts on between them\n", ticks, HZ);
        return 0;
    }
    while (ticks < TICKS)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
    kprintf("idle: %d ticks at %d Hz, asleep in hlt between them\n", ticks, HZ);
    return 0;
}
