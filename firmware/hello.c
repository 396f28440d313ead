/*
 * hello - the smallest useful guest: banner, the multiboot hand-off, exit 0.
 *
 * Built twice: hello32.elf stays in 32-bit protected mode (lib/entry32.S), hello64.elf
 * switches to long mode first (lib/entry64.S). Both print the same lines apart from the
 * mode line.
 *
 * The command line a multiboot loader passes is "<kernel path> <arguments>" (QEMU's -kernel
 * and -append build it that way); the path differs between emulators and machines, so
 * only the part after the first space is printed.
 */
#include "lib.h"

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    int bad = 0;

#ifdef __x86_64__
    kputs("Hello from emu guest hello64 (long mode, 64-bit code)\n");
#else
    kputs("Hello from emu guest hello32 (32-bit protected mode)\n");
#endif

    kprintf("multiboot magic: 0x%08x %s\n", magic, magic == MB_BOOT_MAGIC ? "ok" : "BAD");
    if (magic != MB_BOOT_MAGIC)
        return 1;

    if (mbi->flags & MB_INFO_MEM)
        kprintf("mem_lower: %u KiB, mem_upper: %u KiB\n", mbi->mem_lower, mbi->mem_upper);
    else {
        kputs("mem_lower/mem_upper: not provided\n");
        bad = 1;
    }

    if (mbi->flags & MB_INFO_CMDLINE) {
        const char *s = (const char *)(ulong)mbi->cmdline;
        while (*s && *s != ' ')    /* skip the kernel path */
            s++;
        if (*s == ' ')
            s++;
        kprintf("command line arguments: \"%s\"\n", s);
    } else {
        kputs("command line: not provided\n");
        bad = 1;
    }

    kprintf("CPL %u, CS 0x%02x\n", read_cs() & 3, read_cs());
    kputs(bad ? "hello: FAILED\n" : "hello: done, exiting with code 0\n");
    return bad;
}
