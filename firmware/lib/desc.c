/*
 * desc.c - the IDT and the TSS, for both widths.
 *
 * Gate descriptors: SDM vol. 3A, 6.11 (32-bit, 8 bytes) and 6.14.1 (64-bit, 16 bytes).
 * TSS: SDM vol. 3A, 8.2.1 (32-bit) and 8.7 (64-bit). In protected mode the TSS supplies
 * SS0:ESP0 for a switch to ring 0; in IA-32e mode it supplies RSP0 and the seven
 * Interrupt Stack Table pointers (IST1..7, SDM vol. 3A, 6.14.5), used here for #DF.
 */
#include "lib.h"

#ifdef __x86_64__
struct gate {
    u16 off_lo, sel;
    u8 ist, type_attr;   /* ist: bits 0-2; type_attr: P | DPL << 5 | type */
    u16 off_mid;
    u32 off_hi, zero;
} __attribute__((packed));

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3, iomap_base;
} __attribute__((packed));
static u8 ist1_stack[4096] __attribute__((aligned(16)));   /* #DF runs here */
#else
struct gate {
    u16 off_lo, sel;
    u8 zero, type_attr;
    u16 off_hi;
} __attribute__((packed));

struct tss {
    u32 prev_link;
    u32 esp0, ss0, esp1, ss1, esp2, ss2;
    u32 cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    u32 es, cs, ss, ds, fs, gs, ldt;
    u16 trap, iomap_base;
} __attribute__((packed));
#endif

static struct gate idt[256] __attribute__((aligned(16)));
/* Global: run_user (isr32.S/isr64.S) and rings64.S use RSP0/ESP0 at offset 4. */
struct tss tss __attribute__((aligned(16)));

void idt_set_gate(int vec, void (*handler)(void), int type, int dpl, int ist)
{
    ulong off = (ulong)handler;
    struct gate *g = &idt[vec];
    g->off_lo = off & 0xffff;
    g->sel = KERNEL_CS;
    g->type_attr = 0x80 | (dpl << 5) | type;
#ifdef __x86_64__
    g->ist = ist;
    g->off_mid = (off >> 16) & 0xffff;
    g->off_hi = off >> 32;
    g->zero = 0;
#else
    (void)ist;
    g->zero = 0;
    g->off_hi = off >> 16;
#endif
}

void idt_set_present(int vec, int present)
{
    if (present)
        idt[vec].type_attr |= 0x80;
    else
        idt[vec].type_attr &= ~0x80;
}

void idt_init(void)
{
    struct { u16 limit; ulong base; } __attribute__((packed)) idtr;

    for (int v = 0; v < 48; v++)
        idt_set_gate(v, isr_table[v], GATE_INT, 0, 0);
#ifdef __x86_64__
    /* A double fault gets a known-good stack of its own: the fault that led to it may
     * have been caused by a bad RSP (SDM vol. 3A, 6.14.5). 32-bit kernels use a task gate
     * for the same purpose; these guests keep an interrupt gate there. */
    idt[8].ist = 1;
#endif
    idtr.limit = sizeof(idt) - 1;
    idtr.base = (ulong)idt;
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

/* Write a TSS descriptor into the GDT: type 9 = available 32/64-bit TSS, P=1, DPL0.
 * In IA-32e mode the descriptor is 16 bytes, the second quadword holding base[63:32]
 * (SDM vol. 3A, 8.2.3). Also used by exceptions32 for its deliberately short TSS. */
void gdt_set_tss(int sel, ulong base, u32 limit)
{
    u64 d = (limit & 0xffff) | ((u64)(base & 0xffffff) << 16) | (0x89ull << 40)
          | ((u64)((limit >> 16) & 0xf) << 48) | ((u64)((base >> 24) & 0xff) << 56);
    gdt[sel / 8] = d;
#ifdef __x86_64__
    gdt[sel / 8 + 1] = (u64)base >> 32;
#endif
}

void tss_init(void)
{
    tss.iomap_base = sizeof(tss);    /* no I/O permission bitmap */
#ifdef __x86_64__
    tss.ist[0] = (ulong)ist1_stack + sizeof(ist1_stack);
#else
    tss.ss0 = KERNEL_DS;
#endif
    gdt_set_tss(TSS_SEL, (ulong)&tss, sizeof(tss) - 1);
    __asm__ volatile("ltr %w0" : : "r"(TSS_SEL));   /* marks the descriptor busy (type 0xB) */
}
