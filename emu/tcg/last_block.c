/* last_block.c: remember the translated block Unicorn ran last (a UC_HOOK_BLOCK callback).
 *
 * emu preempts a tcg vCPU with instruction budgets (emu_start's count), and Unicorn also
 * returns from emu_start when the guest executes `hlt`. Both leave RIP after an instruction,
 * and the byte before RIP is F4 after a `hlt` but also after any instruction whose last byte
 * happens to be F4 (`mov edx, [ebp-0Ch]` is 8B 55 F4). The start of the last block executed is
 * an instruction boundary; decoding forward from it to RIP tells exactly which instruction ran
 * last. This hook only stores the block's address and size, at the cost of one call per block.
 */
#include <stdint.h>

struct last_block {
    uint64_t address;
    uint32_t size;
    uint32_t stop;                /* 1 from emu: stop at the next block boundary; 2: stopped;
                                     3: stop at the next block boundary where RFLAGS.IF = 1 */
    int (*emu_stop)(void *uc);    /* uc_emu_stop */
    int (*reg_read)(void *uc, int regid, void *value);  /* uc_reg_read */
    uint32_t first;               /* set by emu before each run: the next block is its first */
};

#define UC_X86_REG_RFLAGS 253
#define RFLAGS_IF 0x200

/* The second use: a device that raises an interrupt from inside an MMIO callback must make the
 * run return, but uc_emu_stop from inside that callback resumes the instruction from a stale
 * RIP and repeats its stores (Unicorn #1355). emu sets `stop` instead, and the run stops here,
 * before the next block, where RIP is exact. */
/* The third: an interrupt window. While an interrupt waits for RFLAGS.IF, emu asks for a stop
 * at a block boundary with IF=1, so that the interrupt is taken where a CPU takes it: right
 * after the instruction that follows `sti` (or after `popf`), not at the next time slice. QEMU
 * ends a block after `sti` and `popf`, and makes the block after `sti` a single instruction
 * (the STI shadow); the blocks that follow start where the previous one ended. So IF is looked
 * at (uc_reg_read, ~20 ns) only at such fall-through boundaries: a loop that jumps back to
 * itself with IF=0 and an interrupt waiting pays nothing per iteration. After `iret`, which
 * jumps, the stop comes at the next fall-through (or, as a backstop, emu's 200 us poll). The
 * first block of a run is never stopped at: the run may begin exactly where the previous one
 * stopped, inside the shadow (emu saw the shadow and went on). */
void lb_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct last_block *last = user_data;
    uint32_t first = last->first;
    uint64_t previous_end = last->address + last->size;
    last->address = address;
    last->size = size;
    last->first = 0;
    if (last->stop == 1) {
        last->stop = 2;           /* emu reads it: this run ended here, at a kick, not at hlt */
        last->emu_stop(uc);
    } else if (last->stop == 3 && !first && address == previous_end) {
        uint64_t rflags = 0;
        last->reg_read(uc, UC_X86_REG_RFLAGS, &rflags);
        if (rflags & RFLAGS_IF) {
            last->stop = 2;
            last->emu_stop(uc);
        }
    }
}
