/* fill_cache.c: the hit path of emu's TLB fill, in C (a front for emu.mmu.shadow).
 *
 * Unicorn calls UC_HOOK_TLB_FILL for every (page, privilege) its software TLB misses. Most of
 * those misses are *repeats*: the translation is already in emu's shadow page table and only
 * fell out of Unicorn's small TLB. A shadow-paging hypervisor serves such a fault from its
 * shadow tables without walking the guest's; the cost that matters is then the trip into the
 * handler. Crossing from C into Python costs more than Unicorn's own walk, so this file keeps a
 * direct-mapped copy of the answers emu's Python MMU has already given, and serves a miss from
 * it without leaving C. Everything else (walks, faults, page-table write traps, CR3 loads,
 * paging-mode changes, SMAP, implicit supervisor accesses) falls through to Python, which stays
 * the single source of truth: it installs answers here and invalidates them.
 *
 * Invalidation follows the shadow table's, entry by entry: when a page-table write trap drops
 * translations, Python forgets exactly those slots (fc_forget); when a frame becomes a protected
 * page table, Python marks it in a byte map of guest frames (fc_protected_map), and a writable
 * answer for a marked frame goes to Python, which turns the store into a page-table write trap.
 * Only a full shadow flush (a paging-mode change) forgets everything, in O(1): every slot
 * carries the generation it was installed in. (Forgetting everything on each trap, as this
 * file first did, left the cache nearly empty: a Linux boot has thousands of traps, and only 13%
 * of its fills were served here.) Write grants are logged per TLB-flush epoch so that Python
 * still knows every frame Unicorn may hold a writable mapping of (emu.mmu.shadow,
 * `writable_frames`).
 *
 * Misses of 4-level paging (long mode: Linux) are walked here too (walk4, SDM vol. 3A §4.5),
 * when the walk succeeds, it is plain and its result is cacheable: the answer is installed,
 * its table frames are marked protected at once, and the new shadow entry is logged for Python,
 * which adds it to its table (with its reverse map) before it next looks at the table. A walk
 * that faults, meets a reserved bit, a table outside RAM or anything else unusual is left to
 * Python, which walks again and decides (emu.mmu.walk stays the reference; tests compare them).
 *
 * Built at first use by emu.tcg.fill_cache (cc -O2 -shared); without a compiler emu runs the
 * same MMU all in Python.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS (1u << 16)
#define LOG_MAX 4096u
#define WALK_LOG_MAX 4096u
#define RAM_RANGES 4

#define PROT_READ 1u
#define PROT_WRITE 2u
#define PROT_EXEC 4u
#define MEM_WRITE 17
#define MEM_FETCH 18
#define CR0_PG (1ull << 31)
#define EFER_LMA (1ull << 10)
#define CR4_SMAP (1ull << 21)
#define CR4_SMEP (1ull << 20)
#define CR0_WP (1ull << 16)
#define EFER_NXE (1ull << 11)
#define PTE_P 1ull
#define PTE_RW 2ull
#define PTE_US 4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_PS 0x80ull
#define PTE_XD (1ull << 63)
#define PHYS_MASK (((1ull << 40) - 1) & ~0xFFFull)   /* MAXPHYADDR 40 (emu.cpuid) */
#define RSVD_HIGH (((1ull << 52) - 1) & ~((1ull << 40) - 1))

typedef struct { uint64_t paddr; int perms; } tlb_entry;  /* unicorn.h: uc_tlb_entry */
typedef bool (*fill_hook)(void *uc, uint64_t vaddr, int type, tlb_entry *out, void *user_data);
typedef int (*context_save)(void *uc, void *context);

struct slot {
    uint64_t cr3;
    uint64_t key;   /* page | user */
    uint64_t paddr;
    uint32_t perms;
    uint32_t generation;
    uint32_t write_epoch;  /* the flush epoch in which a write grant was last logged */
    uint32_t pad;
};

/* A shadow entry walked here, for Python's table (emu.tcg.softmmu absorbs them). */
struct walked {
    uint64_t cr3, page, user, frame;
    uint64_t flags;         /* 1: writable (may be granted write), 2: executable, 4: fetched (a code frame) */
    uint64_t ntables, tables[4];
};

struct ram_range { uint64_t start, end; uint8_t *host; };

struct layout {  /* offsets into the saved context (emu.tcg.context) */
    uint32_t hflags, cr, efer, segs, seg_size;
};

struct fill_cache {
    void *context;         /* a uc_context that this file may save into */
    const uint8_t *state;  /* its CPUX86State bytes */
    context_save save;
    fill_hook slow;        /* emu.tcg.softmmu.SoftMmu._fill */
    struct layout at;
    uint64_t mask_cr0, mask_cr4, mask_efer;
    uint64_t cr0, cr4, efer, cr3;  /* the paging mode and address space Python last served */
    uint32_t space_known;
    uint32_t install_as;   /* set by Python during a slow fill: 1 + user key to repeat its answer */
    uint32_t generation, epoch;
    uint64_t hits, slow_calls;
    uint64_t frames;       /* guest-physical frames the protected map covers (above: all protected) */
    uint8_t *protected;    /* per frame: 1 if it holds a page table shadow entries depend on */
    uint32_t *granted;     /* per frame: the epoch in which Unicorn last got a writable mapping */
    struct ram_range ram[RAM_RANGES];
    uint32_t walking;      /* 1: walk 4-level misses here (fc_set_ram was called) */
    uint64_t walks, uncached, ad_writes;
    uint32_t walk_log_len;
    struct walked walk_log[WALK_LOG_MAX];
    uint32_t log_len;
    uint64_t log[LOG_MAX];
    struct slot slots[SLOTS];
};

static inline uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t rd32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline struct slot *slot_for(struct fill_cache *c, uint64_t cr3, uint64_t page, uint64_t user) {
    uint64_t h = (page >> 12) ^ (cr3 >> 12) * 0x9E3779B1u ^ (user << 15);
    return &c->slots[h & (SLOTS - 1)];
}

/* CPL3 accesses inside the GDT, LDT, IDT or TSS may be implicit supervisor accesses (see
 * emu.tcg.softmmu): Python decides those. */
static bool in_system_table(const struct fill_cache *c, uint64_t page) {
    for (int index = 6; index <= 9; index++) {
        const uint8_t *seg = c->state + c->at.segs + c->at.seg_size * index;
        uint64_t base = rd64(seg + 8);
        uint64_t limit = rd32(seg + 16);
        if (base <= page + 0xFFF && page <= base + limit)
            return true;
    }
    return false;
}

void fc_install(struct fill_cache *c, uint64_t cr3, uint64_t page, uint64_t user, uint64_t paddr, uint32_t perms);

static inline uint64_t *ram_at(struct fill_cache *c, uint64_t address) {
    for (int i = 0; i < RAM_RANGES; i++)
        if (c->ram[i].start <= address && address + 8 <= c->ram[i].end)
            return (uint64_t *)(c->ram[i].host + (address - c->ram[i].start));
    return NULL;
}

static inline bool frame_protected(const struct fill_cache *c, uint64_t frame) {
    return frame >> 12 >= c->frames || c->protected[frame >> 12];
}

static inline bool frame_granted(const struct fill_cache *c, uint64_t frame) {
    return frame >> 12 >= c->frames || c->granted[frame >> 12] == c->epoch;
}

static inline void grant_write(struct fill_cache *c, uint64_t frame) {
    if (frame >> 12 < c->frames)
        c->granted[frame >> 12] = c->epoch;
}

/* The walk of emu.mmu.walk.walk_page_tables for 4-level paging, success cases only: returns
 * false (Python walks) for a fault, a reserved bit, or a table outside RAM. */
static bool walk4(struct fill_cache *c, uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer,
                  uint64_t linear, int type, bool user, struct walked *w, bool *dirty) {
    static const int shifts[4] = {39, 30, 21, 12};
    bool nxe = (efer & EFER_NXE) != 0;
    bool write = type == MEM_WRITE, fetch = type == MEM_FETCH;
    uint64_t table = cr3 & PHYS_MASK, entry = 0, frame = 0;
    uint64_t *used[4];
    uint64_t values[4];
    bool writable = true, user_page = true, executable = true;
    int n = 0;
    for (int depth = 0; depth < 4; depth++) {
        int shift = shifts[depth];
        uint64_t *p = ram_at(c, table + ((linear >> shift) & 0x1FF) * 8);
        if (p == NULL)
            return false;
        w->tables[depth] = table;
        entry = __atomic_load_n(p, __ATOMIC_RELAXED);
        if (!(entry & PTE_P))
            return false;
        bool last = depth == 3, large = !last && (entry & PTE_PS);
        uint64_t reserved = RSVD_HIGH | (nxe ? 0 : PTE_XD);
        if (large && depth == 0)
            reserved |= PTE_PS;
        else if (large)
            reserved |= ((1ull << shift) - 1) & ~0x1FFFull;
        if (entry & reserved)
            return false;
        used[n] = p;
        values[n++] = entry;
        writable &= (entry & PTE_RW) != 0;
        user_page &= (entry & PTE_US) != 0;
        if (nxe && (entry & PTE_XD))
            executable = false;
        if (last || large) {
            uint64_t page_size = 1ull << shift;
            frame = (entry & PHYS_MASK & ~(page_size - 1)) | (linear & (page_size - 1) & ~0xFFFull);
            break;
        }
        table = entry & PHYS_MASK;
    }
    if ((user && !user_page) || (write && !writable && (user || (cr0 & CR0_WP))) || (fetch && !executable)
        || (!user && user_page && fetch && (cr4 & CR4_SMEP)))
        return false;  /* a #PF: Python raises it */
    for (int i = 0; i < n; i++) {
        uint64_t set = PTE_A | (write && i == n - 1 ? PTE_D : 0);
        if ((values[i] & set) != set) {
            __atomic_fetch_or(used[i], set, __ATOMIC_RELAXED);
            c->ad_writes++;
        }
    }
    *dirty = (entry & PTE_D) || write;
    w->ntables = (uint64_t)n;
    w->frame = frame;
    w->flags = ((writable || (!user && !(cr0 & CR0_WP))) ? 1 : 0) | (executable ? 2 : 0);
    return true;
}

/* A miss that the C front may walk itself: the answer as Python's _translate would give it. */
static bool walk_and_answer(struct fill_cache *c, uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer,
                            uint64_t vaddr, int type, uint64_t user, tlb_entry *out) {
    struct walked w;
    bool dirty;
    if (!walk4(c, cr0, cr3, cr4, efer, vaddr, type, user != 0, &w, &dirty))
        return false;
    bool cacheable = true;
    for (uint64_t i = 0; i < w.ntables; i++)
        cacheable &= !frame_granted(c, w.tables[i]);
    if (c->walk_log_len == WALK_LOG_MAX)
        cacheable = false;
    if (!cacheable && type == MEM_FETCH)
        return false;  /* Python records code frames of uncached fetches */
    uint32_t perms = PROT_READ;
    bool writable = (w.flags & 1) && dirty;
    if ((w.flags & 2) && type == MEM_FETCH)
        perms |= PROT_EXEC;
    if (writable) {
        if (frame_protected(c, w.frame)) {
            if (type == MEM_WRITE)
                return false;  /* a page-table write trap: Python's */
        } else {
            if (c->log_len == LOG_MAX)
                return false;
            perms |= PROT_WRITE;
            c->log[c->log_len++] = w.frame;  /* Python's writable_frames learns it */
            grant_write(c, w.frame);
        }
    }
    c->walks++;
    if (cacheable) {
        w.cr3 = cr3;
        w.page = vaddr;
        w.user = user;
        w.flags = (writable ? 1 : 0) | (w.flags & 2) | (perms & PROT_EXEC ? 4 : 0);
        for (uint64_t i = 0; i < w.ntables; i++)
            c->protected[w.tables[i] >> 12] = 1;
        c->walk_log[c->walk_log_len++] = w;
        fc_install(c, cr3, vaddr, user, w.frame, perms);
        if (perms & PROT_WRITE)
            slot_for(c, cr3, vaddr, user)->write_epoch = c->epoch;
    } else {
        c->uncached++;
    }
    out->paddr = w.frame;
    out->perms = (int)perms;
    return true;
}

bool fc_hook(void *uc, uint64_t vaddr, int type, tlb_entry *out, void *user_data) {
    struct fill_cache *c = user_data;
    c->save(uc, c->context);
    const uint8_t *s = c->state;
    uint64_t cr0 = rd64(s + c->at.cr), cr3 = rd64(s + c->at.cr + 24), cr4 = rd64(s + c->at.cr + 32);
    uint64_t efer = rd64(s + c->at.efer);
    if (!(cr0 & CR0_PG)) {  /* paging off: linear is physical (the A20 gate is Unicorn's concern) */
        out->paddr = vaddr & 0xFFFFFFFFull;
        out->perms = PROT_READ | PROT_WRITE | PROT_EXEC;
        return true;
    }
    if (!c->space_known || cr3 != c->cr3 || (cr0 & c->mask_cr0) != c->cr0 || (cr4 & c->mask_cr4) != c->cr4
        || (efer & c->mask_efer) != c->efer)
        goto slow;
    if ((efer & EFER_LMA) && (vaddr >> 47) != 0 && (vaddr >> 47) != 0x1FFFF)
        goto slow;
    uint64_t user = (rd32(s + c->at.hflags) & 3) == 3;
    if (user ? in_system_table(c, vaddr) : (cr4 & CR4_SMAP) != 0)
        goto slow;
    struct slot *e = slot_for(c, cr3, vaddr, user);
    if (e->generation != c->generation || e->cr3 != cr3 || e->key != (vaddr | user))
        goto walk;
    uint32_t perms = e->perms;
    if (type == MEM_WRITE ? !(perms & PROT_WRITE) : type == MEM_FETCH && !(perms & PROT_EXEC))
        goto walk;
    if ((perms & PROT_WRITE) && frame_protected(c, e->paddr))
        goto slow;  /* a page table now: Python decides (a write trap, or a read-only answer) */
    if ((perms & PROT_WRITE) && e->write_epoch != c->epoch) {
        if (c->log_len == LOG_MAX)
            goto slow;
        c->log[c->log_len++] = e->paddr;
        e->write_epoch = c->epoch;
        grant_write(c, e->paddr);
    }
    c->hits++;
    out->paddr = e->paddr;
    out->perms = (int)perms;
    return true;
walk:
    if (c->walking && (efer & EFER_LMA) && walk_and_answer(c, cr0, cr3, cr4, efer, vaddr, type, user, out))
        return true;
slow:
    c->slow_calls++;
    c->install_as = 0;
    bool filled = c->slow(uc, vaddr, type, out, NULL);
    if (filled && c->install_as)  /* the state Python walked under is the one read above */
        fc_install(c, cr3, vaddr, c->install_as - 1, out->paddr, (uint32_t)out->perms);
    return filled;
}

struct fill_cache *fc_create(void *context, const uint8_t *state, context_save save, fill_hook slow,
                             uint32_t off_hflags, uint32_t off_cr, uint32_t off_efer, uint32_t off_segs,
                             uint32_t seg_size, uint64_t mask_cr0, uint64_t mask_cr4, uint64_t mask_efer,
                             uint64_t frames) {
    struct fill_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->protected = calloc(frames ? frames : 1, 1);
    if (!c->protected) {
        free(c);
        return NULL;
    }
    c->granted = calloc(frames ? frames : 1, sizeof *c->granted);
    if (!c->granted) {
        free(c->protected);
        free(c);
        return NULL;
    }
    c->frames = frames;
    c->context = context;
    c->state = state;
    c->save = save;
    c->slow = slow;
    c->at = (struct layout){off_hflags, off_cr, off_efer, off_segs, seg_size};
    c->mask_cr0 = mask_cr0;
    c->mask_cr4 = mask_cr4;
    c->mask_efer = mask_efer;
    c->generation = 1;  /* calloc'd slots (generation 0) are empty */
    c->epoch = 1;
    return c;
}

void fc_destroy(struct fill_cache *c) {
    free(c->protected);
    free(c->granted);
    free(c);
}

/* Guest RAM range `index` (guest-physical [start, end) at host address `host`); walking starts. */
void fc_set_ram(struct fill_cache *c, uint32_t index, uint64_t start, uint64_t end, uint8_t *host) {
    if (index < RAM_RANGES) {
        c->ram[index] = (struct ram_range){start, end, host};
        c->walking = 1;
    }
}

/* Python's own write grants (the C front must not cache walks through those frames either). */
void fc_granted(struct fill_cache *c, uint64_t frame) { grant_write(c, frame); }

struct walked *fc_walk_log(struct fill_cache *c) { return c->walk_log; }
uint32_t *fc_walk_log_length(struct fill_cache *c) { return &c->walk_log_len; }
uint64_t *fc_walk_counters(struct fill_cache *c) { return &c->walks; }  /* walks, uncached, ad_writes */

/* The paging mode and CR3 Python has just served a fill under. */
void fc_set_space(struct fill_cache *c, uint64_t cr0, uint64_t cr4, uint64_t efer, uint64_t cr3) {
    c->cr0 = cr0 & c->mask_cr0;
    c->cr4 = cr4 & c->mask_cr4;
    c->efer = efer & c->mask_efer;
    c->cr3 = cr3;
    c->space_known = 1;
}

/* Python's answer for (cr3, page, user), to be repeated until the next invalidation. */
void fc_install(struct fill_cache *c, uint64_t cr3, uint64_t page, uint64_t user, uint64_t paddr, uint32_t perms) {
    struct slot *e = slot_for(c, cr3, page, user);
    e->cr3 = cr3;
    e->key = page | user;
    e->paddr = paddr;
    e->perms = perms;
    e->generation = c->generation;
    e->write_epoch = c->epoch;  /* Python recorded this write grant itself */
}

/* Drop every installed answer, and every protected mark (the shadow table is empty). */
void fc_invalidate(struct fill_cache *c) {
    if (++c->generation == 0)  /* after 2^32 bumps: clear, so that no stale slot can match */
        memset(c->slots, 0, sizeof c->slots), c->generation = 1;
    memset(c->protected, 0, c->frames);
    c->walk_log_len = 0;  /* Python's table is empty too */
}

/* Drop the answer for (cr3, page, user), if this cache holds it. */
void fc_forget(struct fill_cache *c, uint64_t cr3, uint64_t page, uint64_t user) {
    struct slot *e = slot_for(c, cr3, page, user);
    if (e->cr3 == cr3 && e->key == (page | user))
        e->generation = 0;
}

/* The byte map of protected frames, which Python writes directly. */
uint8_t *fc_protected_map(struct fill_cache *c) { return c->protected; }

/* Unicorn's TLB was flushed: it holds no writable mapping any more; the grant log restarts. */
void fc_tlb_flushed(struct fill_cache *c) {
    c->log_len = 0;
    if (++c->epoch == 0)
        c->epoch = 1;
}

/* Frames granted writable from here since the last call (or flush); returns how many. */
uint32_t fc_drain_write_grants(struct fill_cache *c, uint64_t *out, uint32_t max) {
    uint32_t n = c->log_len < max ? c->log_len : max;
    memcpy(out, c->log, n * sizeof *out);
    memmove(c->log, c->log + n, (c->log_len - n) * sizeof *out);
    c->log_len -= n;
    return n;
}

/* Where Python says "repeat this answer" during a slow fill (the value is 1 + the user key). */
uint32_t *fc_install_flag(struct fill_cache *c) { return &c->install_as; }

/* Where the grant count lives, so that Python can look before it calls fc_drain_write_grants. */
const uint32_t *fc_log_length(const struct fill_cache *c) { return &c->log_len; }

uint64_t fc_hits(const struct fill_cache *c) { return c->hits; }
uint64_t fc_slow_calls(const struct fill_cache *c) { return c->slow_calls; }

/* walk4 alone, for tests (tests/tcg/test_fill_cache.py compares it with emu.mmu.walk): 1 and
 * `out` filled, or 0 where the C front leaves the walk to Python. */
int fc_walk(struct fill_cache *c, uint64_t cr0, uint64_t cr3, uint64_t cr4, uint64_t efer, uint64_t linear,
            int type, int user, struct walked *out) {
    bool dirty;
    if (!walk4(c, cr0, cr3, cr4, efer, linear, type, user != 0, out, &dirty))
        return 0;
    out->flags |= dirty ? 8 : 0;
    return 1;
}
