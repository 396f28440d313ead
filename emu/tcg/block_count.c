/* block_count.c: count guest instructions for --stats, one C call per translated block run.
 *
 * Unicorn has no instruction counter. emu counts with a UC_HOOK_BLOCK hook: Unicorn gives the
 * address and size of each block it starts; the number of instructions in it is found once by
 * decoding (capstone, in Python: emu.tcg.vcpu.TcgVCpu._count_instructions) and then added on
 * every run of the block. Crossing from C into Python on every block costs microseconds, and a
 * Linux boot runs blocks of a few instructions hundreds of millions of times; here the lookup
 * of a block already seen stays in C (an open-addressing table keyed by address and size), and
 * only a block never seen before calls back into Python to be decoded.
 *
 * The key is the block's virtual address and size, as in the Python hook it replaces: code
 * replaced at the same address with a block of the same size keeps its first count (rare: two
 * programs whose blocks coincide in address and length).
 */
#include <stdint.h>

struct entry {
    uint64_t address;
    uint32_t size;
    uint32_t instructions; /* 0: a free slot (a block has at least one instruction) */
};

struct counter {
    uint64_t instructions;            /* the total, read by emu */
    uint64_t decoded;                 /* blocks decoded (calls into Python) */
    uint32_t mask;                    /* slots - 1, slots a power of two */
    uint32_t used;
    uint32_t (*decode)(uint64_t address, uint32_t size); /* Python: instructions in a new block */
    struct entry *slots;
};

void bc_hook(void *uc, uint64_t address, uint32_t size, void *user_data) {
    struct counter *c = user_data;
    uint64_t h = (address ^ ((uint64_t)size << 52)) * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 32) & c->mask;
    struct entry *e;
    (void)uc;
    for (;;) {
        e = &c->slots[i];
        if (e->instructions == 0)
            break;
        if (e->address == address && e->size == size) {
            c->instructions += e->instructions;
            return;
        }
        i = (i + 1) & c->mask;
    }
    uint32_t n = c->decode(address, size);
    if (n == 0)
        n = 1;
    c->instructions += n;
    c->decoded++;
    if ((uint64_t)c->used * 4 < ((uint64_t)c->mask + 1) * 3) { /* at most 3/4 full: else decode each time */
        e->address = address;
        e->size = size;
        e->instructions = n;
        c->used++;
    }
}
