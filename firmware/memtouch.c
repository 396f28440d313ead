/*
 * memtouch - touch N MiB of guest RAM, one write per 4 KiB page, through 2 MiB or 4 KiB
 * guest pages: the workload of docs/labs/05-thp-hugetlbfs.md.
 *
 * Guest RAM is host memory (emu.memory): the host backs a guest-physical page only when the
 * guest first touches it, and with which host page size (4 KiB, a transparent huge page, a
 * hugetlbfs page) is the VMM's choice (`--mem-backing`). This guest makes the touching
 * deterministic: it writes one 64-bit word to every 4 KiB page of `mib` MiB from 16 MiB up
 * (the word is the page's own address XOR 0x5a5a5a5a), then reads every word back.
 *
 * Command line: mib=N (default 64; the region must lie in RAM and below 1 GiB, the part
 * lib/entry64.S maps) and pages=2m (default: the runtime's own 2 MiB pages) or pages=4k
 * (this guest replaces the 2 MiB entries over the region with 4 KiB page tables, built at
 * 8 MiB). A 2 MiB page in the guest lets a second-stage translation (EPT/NPT, or KVM's shadow
 * page tables) map it with one 2 MiB entry too, if the host backs it with a 2 MiB page: both
 * sizes must agree (Documentation/virt/kvm/x86/mmu.rst, "Large pages").
 *
 * Everything printed is fixed by the command line, so QEMU prints the same lines.
 */
#include "lib.h"

#define REGION 0x1000000ul            /* 16 MiB */
#define TABLES 0x800000ul             /* 8 MiB: the 4 KiB page tables, up to 8 MiB of them */
#define LIMIT 0x40000000ul            /* the 1 GiB lib/entry64.S maps */
#define MIB 0x100000ul

extern u64 page_dir[512];

static const char *after_key(const char *s, const char *key)
{
    for (; *s; s++) {
        int i = 0;
        while (key[i] && s[i] == key[i])
            i++;
        if (!key[i])
            return s + i;
    }
    return 0;
}

static ulong number_after(const char *cmdline, const char *key, ulong otherwise)
{
    const char *p = after_key(cmdline, key);
    if (!p || *p < '0' || *p > '9')
        return otherwise;
    ulong v = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (ulong)(*p - '0');
    return v;
}

static ulong region_end;
static volatile ulong touched, wrong;

/* Ring 3, where a hardware-assisted guest runs without the hypervisor, even on hosts whose KVM
 * emulates ring 0 (kvm_pvm: /work/shared/notes/host-kvm.md), so the cost of a first touch is the
 * host's page fault and the second-stage fill, not instruction emulation. */
static void touch(void)
{
    ulong n = 0, bad = 0;
    for (ulong a = REGION; a < region_end; a += 4096, n++)
        *(volatile u64 *)a = a ^ 0x5a5a5a5aul;
    for (ulong a = REGION; a < region_end; a += 4096)
        bad += *(volatile u64 *)a != (a ^ 0x5a5a5a5aul);
    touched = n;
    wrong = bad;
}

/* Replace the 2 MiB entries over [start, end) with page tables of 4 KiB pages. */
static ulong map_with_4k_pages(ulong start, ulong end)
{
    ulong tables = 0;
    for (ulong chunk = start; chunk < end; chunk += 0x200000ul, tables++) {
        u64 *pt = (u64 *)(TABLES + tables * 4096);
        for (int i = 0; i < 512; i++)
            pt[i] = (chunk + (ulong)i * 4096) | PTE_P | PTE_W | PTE_U;
        page_dir[chunk >> 21] = (ulong)pt | PTE_P | PTE_W | PTE_U;
    }
    write_cr3(read_cr3());
    return tables;
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    const char *cmdline = (mbi->flags & MB_INFO_CMDLINE) ? (const char *)(ulong)mbi->cmdline : "";
    ulong mib = number_after(cmdline, "mib=", 64);
    const char *pages = after_key(cmdline, "pages=");
    int small = pages && pages[0] == '4' && pages[1] == 'k';
    ulong ram_end = MIB + (ulong)mbi->mem_upper * 1024;
    ulong end = REGION + mib * MIB;
    if (mib < 1 || end > ram_end || end > LIMIT) {
        kprintf("memtouch64: mib=%lu does not fit: the region starts at 16 MiB and must end in RAM (%lu MiB) "
                "and below 1 GiB\n", mib, ram_end / MIB);
        return 1;
    }
    if (pages && !small && !(pages[0] == '2' && pages[1] == 'm')) {
        kputs("memtouch64: pages=2m or pages=4k\n");
        return 1;
    }
    if (small) {
        ulong tables = map_with_4k_pages(REGION & ~0x1ffffful, (end + 0x1ffffful) & ~0x1ffffful);
        kprintf("memtouch64: %lu MiB at 0x%lx-0x%lx through 4 KiB pages (%lu page tables at 0x%lx)\n", mib,
                REGION, end - 1, tables, TABLES);
    } else {
        kprintf("memtouch64: %lu MiB at 0x%lx-0x%lx through 2 MiB pages\n", mib, REGION, end - 1);
    }
    region_end = end;
    run_user(touch, user_stack_top);
    kprintf("ring 3 wrote one word to each of %lu pages of 4 KiB, read back: %s\n", touched,
            wrong ? "WRONG" : "all match");
    return wrong ? 1 : 0;
}
