/*
 * kstart.c - common C start-up, trap dispatch and exit.
 */
#include "lib.h"

/* isa-debug-exit: QEMU exits with status (code << 1) | 1, so 0 -> 1 means success.
 * On a machine without that device the write does nothing and we stop the CPU. */
void qemu_exit(u32 code)
{
    outl(DEBUG_EXIT_PORT, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void kstart(u32 magic, struct multiboot_info *mbi)
{
    serial_init();
    /* The BIOS leaves the 8259s programmed with IRQ 0-7 at vectors 8-15, which collide
     * with exceptions (IRQ 0 would look like #DF). Mask every line until a guest
     * reprograms the PICs (irqs does). */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    tss_init();
    idt_init();
    qemu_exit(guest_main(magic, mbi));
}

static const char *const names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
    "#DF", "#09", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
    "#24", "#25", "#26", "#27", "#28", "#HV", "#VC", "#SX",
};

const char *exception_name(ulong vector)
{
    return vector < 32 ? names[vector] : "IRQ";
}

int vector_has_error_code(ulong v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

/* Guests that expect no traps need not define guest_trap. */
__attribute__((weak)) int guest_trap(struct trap_frame *f)
{
    (void)f;
    return 0;
}

void trap_dispatch(struct trap_frame *f)
{
    /* The end of a run_user() call: ud2 at user_exit, executed in ring 3. */
    if (f->vector == 6 && f->ip == (ulong)user_exit && (f->cs & 3) == 3)
        return_to_kernel();
    if (guest_trap(f))
        return;
    kprintf("UNEXPECTED %s vector %u error 0x%lx at ip 0x%lx cs 0x%lx\n",
            exception_name(f->vector), (unsigned)f->vector, f->error, f->ip, f->cs);
    qemu_exit(2);
}

void *memset(void *d, int c, unsigned long n)
{
    u8 *p = d;
    while (n--)
        *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}
