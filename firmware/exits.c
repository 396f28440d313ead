/*
 * exits - each instruction a hypervisor may have to see, a known number of times.
 *
 * A VMM counts VM exits by reason (KVM's kvm_run.exit_reason; emu's `--stats`). Which
 * instructions exit, and to whom (the CPU's microcode, KVM in the host kernel, or the VMM in
 * user space), is what docs/labs/01-rings.md and 02-vm-exits.md are about. This guest runs
 * each of the instructions below `count` times in a row (100 unless the command line says
 * count=N, 1..100000), all at CPL0 in long mode, so that the counts emu prints can be read
 * against the program:
 *
 *   out %al, $0x80         port write: the POST-code port, which nothing answers (SDM vol. 1
 *                          §19.4 "I/O instructions"; IN/OUT exit unconditionally or by the
 *                          I/O bitmaps, SDM vol. 3C §26.1.3, APM vol. 2 §15.10)
 *   in $0x61, %al          port read: system control port B (its value is not printed: bit 4
 *                          toggles with the refresh clock)
 *   cpuid                  leaf 0 (CPUID always exits under VT-x, SDM vol. 3C §26.1.2)
 *   rdmsr                  IA32_APIC_BASE (0x1B)
 *   mov %rax, %cr8         the task priority: 1, then 0, alternately (CR8 = TPR[7:4],
 *                          SDM vol. 3A §11.8.6)
 *   mov (%rax), %eax       an MMIO read: the local APIC's version register at 0xFEE00030
 *   mov %eax, (%rax)       an MMIO write: the local APIC's task priority register, 0
 *   ud2                    #UD, whose handler steps over it
 *   rdtsc                  the time-stamp counter
 *
 * Each loop is its own function (exit_out, exit_in, ...), so that `python -m emu trace` shows
 * which one an instruction belongs to. Nothing printed depends on the machine but the
 * values architecture or the PC define (the APIC base and version), so QEMU prints the same.
 *
 * The local APIC sits above the 1 GiB that lib/entry64.S maps: its 2 MiB page is mapped
 * uncached through a page directory of this guest's own in PDPT entry 3, as apic64 does.
 */
#include "lib.h"

#define MSR_APIC_BASE 0x1b
#define LAPIC 0xfee00000ul
#define LAPIC_VERSION 0x030
#define LAPIC_TPR 0x080
#define MAX_COUNT 100000

static u64 apic_pd[512] __attribute__((aligned(4096)));
static volatile ulong skipped;   /* ud2s the #UD handler stepped over */

static void map_apic_page(void)
{
    u64 *pml4 = (u64 *)(read_cr3() & ~0xffful);
    u64 *pdpt = (u64 *)(pml4[0] & 0x000ffffffffff000ul);
    apic_pd[(LAPIC >> 21) & 511] = LAPIC | PTE_P | PTE_W | PTE_PS | 0x18;   /* PWT | PCD */
    pdpt[3] = (u64)apic_pd | PTE_P | PTE_W;
    write_cr3(read_cr3());
}

int guest_trap(struct trap_frame *f)
{
    if (f->vector != 6 || (f->cs & 3) != 0)
        return 0;
    skipped++;
    f->ip += 2;                                  /* ud2 is 0F 0B */
    return 1;
}

static __attribute__((noinline)) void exit_out(ulong n)
{
    for (ulong i = 0; i < n; i++)
        __asm__ volatile("outb %%al, $0x80" : : "a"(0x42));
}

static __attribute__((noinline)) void exit_in(ulong n)
{
    for (ulong i = 0; i < n; i++) {
        u8 v;
        __asm__ volatile("inb $0x61, %%al" : "=a"(v));
    }
}

static __attribute__((noinline)) void exit_cpuid(ulong n)
{
    for (ulong i = 0; i < n; i++) {
        u32 a = 0, b, c = 0, d;
        __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    }
}

static __attribute__((noinline)) u64 exit_rdmsr(ulong n)
{
    u64 v = 0;
    for (ulong i = 0; i < n; i++)
        v = rdmsr(MSR_APIC_BASE);
    return v;
}

static __attribute__((noinline)) void exit_cr8(ulong n)
{
    for (ulong i = 0; i < n; i++)
        __asm__ volatile("mov %0, %%cr8" : : "r"((ulong)(~i & 1)) : "memory");   /* 1, 0, 1, 0, ... */
}

static __attribute__((noinline)) u32 exit_mmio_read(ulong n)
{
    u32 v = 0;
    for (ulong i = 0; i < n; i++)
        v = *(volatile u32 *)(LAPIC + LAPIC_VERSION);
    return v;
}

static __attribute__((noinline)) void exit_mmio_write(ulong n)
{
    for (ulong i = 0; i < n; i++)
        *(volatile u32 *)(LAPIC + LAPIC_TPR) = 0;
}

static __attribute__((noinline)) void exit_ud2(ulong n)
{
    for (ulong i = 0; i < n; i++)
        __asm__ volatile("ud2" ::: "memory");
}

static __attribute__((noinline)) void exit_rdtsc(ulong n)
{
    for (ulong i = 0; i < n; i++) {
        u32 lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    }
}

static ulong parse_count(struct multiboot_info *mbi)
{
    if (!(mbi->flags & MB_INFO_CMDLINE))
        return 100;
    for (const char *s = (const char *)(ulong)mbi->cmdline; *s; s++) {
        if (s[0] != 'c' || s[1] != 'o' || s[2] != 'u' || s[3] != 'n' || s[4] != 't' || s[5] != '=')
            continue;
        ulong v = 0;
        for (s += 6; *s >= '0' && *s <= '9'; s++)
            v = v * 10 + (ulong)(*s - '0');
        return v;
    }
    return 100;
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    ulong n = parse_count(mbi);
    if (n < 1 || n > MAX_COUNT) {
        kprintf("exits64: count=%lu: give 1 to %u\n", n, MAX_COUNT);
        return 1;
    }
    map_apic_page();
    kprintf("exits64: each instruction %lu times, at CPL%u in long mode\n", n, read_cs() & 3);

    exit_out(n);
    kprintf("  %-22s port write, 0x42 to the POST-code port\n", "out %al, $0x80");
    exit_in(n);
    kprintf("  %-22s port read, system control port B\n", "in $0x61, %al");
    exit_cpuid(n);
    kprintf("  %-22s leaf 0\n", "cpuid");
    u64 base = exit_rdmsr(n);
    kprintf("  %-22s IA32_APIC_BASE = 0x%lx\n", "rdmsr", (ulong)base);
    exit_cr8(n);
    kprintf("  %-22s TPR 1, 0, 1, 0, ... (CR8 = TPR[7:4])\n", "mov %rax, %cr8");
    u32 version = exit_mmio_read(n);
    kprintf("  %-22s MMIO read, local APIC version 0x%x (%u LVT entries)\n", "mov (%rax), %eax",
            version & 0xff, ((version >> 16) & 0xff) + 1);
    exit_mmio_write(n);
    kprintf("  %-22s MMIO write, 0 to the local APIC's TPR\n", "mov %eax, (%rax)");
    exit_ud2(n);
    kprintf("  %-22s #UD, the handler stepped over %lu of them\n", "ud2", skipped);
    exit_rdtsc(n);
    kprintf("  %-22s the time-stamp counter\n", "rdtsc");

    int ok = base == 0xfee00900 && skipped == n;
    kputs(ok ? "exits64: done\n" : "exits64: FAILED\n");
    return ok ? 0 : 1;
}
