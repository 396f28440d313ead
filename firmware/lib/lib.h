/*
 * lib.h - the small runtime every test guest links against.
 *
 *   entry32.S / entry64.S  multiboot entry, GDT, (long mode), stack, calls kstart()
 *   isr32.S / isr64.S      interrupt stubs -> trap_dispatch(), run_user()/return_to_kernel()
 *   kstart.c               serial, PIC mask, TSS, IDT, then guest_main(), then exit
 *   serial.c, print.c      polled COM1 output and a tiny printf
 *   desc.c                 IDT gates and the TSS (both widths)
 *
 * A guest provides guest_main() and, if it expects traps, guest_trap().
 */
#ifndef FW_LIB_H
#define FW_LIB_H

#include "x86.h"

/* ---- Multiboot information (Multiboot Specification 0.6.96, 3.3) --------------------- */
struct multiboot_info {
    u32 flags;
    u32 mem_lower;   /* KiB of conventional memory below 1 MiB */
    u32 mem_upper;   /* KiB of memory from 1 MiB up to the first hole */
    u32 boot_device;
    u32 cmdline;     /* physical address of a NUL-terminated string */
    /* ... modules, symbols, memory map: not used here */
};

/* ---- What the interrupt stubs save (lib/isr32.S, lib/isr64.S) -------------------------- */
#ifdef __x86_64__
struct trap_frame {
    ulong r15, r14, r13, r12, r11, r10, r9, r8;
    ulong di, si, bp, bx, dx, cx, ax;
    ulong vector, error;            /* error is 0 for vectors without one */
    ulong ip, cs, flags, sp, ss;    /* pushed by the CPU; 64-bit mode always pushes SS:RSP */
};
#else
struct trap_frame {
    ulong di, si, bp, esp_unused, bx, dx, cx, ax;   /* pushal order */
    ulong vector, error;
    ulong ip, cs, flags;
    ulong sp, ss;                   /* pushed only on a privilege change (from ring 3) */
};
#endif

/* ---- serial.c / print.c ------------------------------------------------------------ */
void serial_init(void);
void serial_putc(char c);
void kputs(const char *s);
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- desc.c ---------------------------------------------------------------------------- */
#define GATE_INT  0xE    /* interrupt gate: clears IF on entry */
#define GATE_TRAP 0xF    /* trap gate: leaves IF alone */
void idt_init(void);                                   /* vectors 0..47 -> isr stubs, DPL0 */
void idt_set_gate(int vec, void (*handler)(void), int type, int dpl, int ist);
void idt_set_present(int vec, int present);
void tss_init(void);
void gdt_set_tss(int sel, ulong base, u32 limit);      /* write a TSS descriptor */
extern void (*const isr_table[48])(void);              /* the stubs for vectors 0..47 */
extern void isr_128(void);                             /* stub for vector 0x80 */
extern u64 gdt[];                                      /* the GDT (entry32.S / entry64.S) */

/* ---- user mode (isr32.S / isr64.S) ------------------------------------------------- */
/* Enter ring 3 with iret(q) at fn, on user_stack_top. Returns when the user code returns
 * (its trampoline then executes ud2 at user_exit, which trap_dispatch turns into
 * return_to_kernel()). */
void run_user(void (*fn)(void), void *user_stack_top);
void return_to_kernel(void) __attribute__((noreturn));
extern char user_exit[];
extern char user_stack_top[];                          /* a 4 KiB stack for ring 3 */

/* ---- kstart.c ------------------------------------------------------------------------ */
int guest_main(u32 magic, struct multiboot_info *mbi);  /* return value = exit code */
int guest_trap(struct trap_frame *f);                    /* nonzero: handled */
void qemu_exit(u32 code) __attribute__((noreturn));      /* 0 = success */
const char *exception_name(ulong vector);                /* "#GP" ... */
int vector_has_error_code(ulong vector);

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

#endif
