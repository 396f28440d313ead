/* last_block.c: run control of a tcg vCPU at translated-block boundaries (a UC_HOOK_BLOCK
 * callback, and a timer thread that preempts the run).
 *
 * A hypervisor preempts its guest with a host timer: the timer interrupt forces a VM exit at an
 * instruction boundary. Unicorn's equivalent, uc_emu_stop from another thread, is not exact:
 * Unicorn 2.1 can resume such a run at a stale EIP and repeat stores (upstream issue #1355;
 * tests/tcg/test_preemption.py). A stop requested from *this* hook is exact: the hook runs at
 * the start of a block, before any of its instructions, on the vCPU's own thread, so RIP is the
 * block's address. So every way of ending a run early goes through `stop`, read by the hook:
 *
 *   1  stop at the next block (a deadline passed, a device raised an interrupt, a kick);
 *   2  set by the hook: stopped (emu reads it after the run);
 *   3  stop at the next block boundary where RFLAGS.IF = 1 (an interrupt window);
 *   4  stop at the next block after the run's first one (the #PF retry: one block under
 *      Unicorn's page walker; see emu.tcg.softmmu).
 *
 * The preemption timer is a thread per vCPU that sleeps until the deadline emu armed
 * (lb_arm, CLOCK_MONOTONIC, the clock of Python's time.monotonic_ns) and then sets stop = 1.
 * It costs the guest nothing per instruction, where an instruction budget (emu_start's count)
 * makes Unicorn call a hook after every instruction and materialize RFLAGS for it, which more
 * than halved the speed of a Linux boot.
 *
 * The hook also records the last block run: a run that ends after `hlt` leaves F4 before RIP,
 * but so does one whose instruction budget (single-stepping) ran out after `mov edx, [ebp-0Ch]`
 * (8B 55 F4). The start of the last block run is an instruction boundary; decoding forward from
 * it to RIP tells which instruction ran last.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct last_block {
    uint64_t address;
    uint32_t size;
    uint32_t stop;                /* see above */
    int (*emu_stop)(void *uc);    /* uc_emu_stop */
    int (*reg_read)(void *uc, int regid, void *value);  /* uc_reg_read */
    uint32_t first;               /* set by emu before each run: the next block is its first */
    uint32_t timer_stops;         /* runs the timer ended (for --stats) */
    /* the preemption timer: fields below are emu's only through lb_arm and lb_free */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int64_t deadline;             /* CLOCK_MONOTONIC ns; 0 = none */
    int64_t sleeping_until;       /* the thread's current wait, 0 = none */
    int thread_started;
    int freed;
};

#define UC_X86_REG_RFLAGS 253
#define RFLAGS_IF 0x200

/* The interrupt window (stop = 3): while an interrupt waits for RFLAGS.IF, emu asks for a stop
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
    uint32_t stop = __atomic_load_n(&last->stop, __ATOMIC_RELAXED);
    last->address = address;
    last->size = size;
    last->first = 0;
    if (stop == 1 || (stop == 4 && !first)) {
        __atomic_store_n(&last->stop, 2, __ATOMIC_RELAXED);  /* emu reads it: not a hlt */
        last->emu_stop(uc);
    } else if (stop == 3 && !first && address == previous_end) {
        uint64_t rflags = 0;
        last->reg_read(uc, UC_X86_REG_RFLAGS, &rflags);
        if (rflags & RFLAGS_IF) {
            __atomic_store_n(&last->stop, 2, __ATOMIC_RELAXED);
            last->emu_stop(uc);
        }
    }
}

static int64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void *timer_thread(void *arg) {
    struct last_block *last = arg;
    pthread_mutex_lock(&last->lock);
    while (!last->freed) {
        if (last->deadline == 0) {
            last->sleeping_until = 0;
            pthread_cond_wait(&last->wake, &last->lock);
            continue;
        }
        int64_t now = monotonic_ns();
        if (now < last->deadline) {
            struct timespec until = {last->deadline / 1000000000, last->deadline % 1000000000};
            last->sleeping_until = last->deadline;
            pthread_cond_timedwait(&last->wake, &last->lock, &until);
            continue;
        }
        last->deadline = 0;
        /* Only a plain run is cut short: a stop already requested stays as it is, and a #PF
         * retry (4) runs its block; emu sees the passed deadline before the next run. */
        uint32_t expected = 0;
        if (!__atomic_compare_exchange_n(&last->stop, &expected, 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            expected = 3;
            __atomic_compare_exchange_n(&last->stop, &expected, 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
        }
        last->timer_stops++;
    }
    pthread_mutex_unlock(&last->lock);
    pthread_mutex_destroy(&last->lock);
    pthread_cond_destroy(&last->wake);
    free(last);
    return NULL;
}

struct last_block *lb_new(void *emu_stop, void *reg_read) {
    struct last_block *last = calloc(1, sizeof *last);
    if (last == NULL)
        return NULL;
    last->address = UINT64_MAX;
    last->emu_stop = emu_stop;
    last->reg_read = reg_read;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&last->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&last->lock, NULL);
    return last;
}

/* Stop the run at the first block boundary at or after `deadline_ns` (0: no deadline). Wakes
 * the thread only when it would otherwise sleep past the new deadline. Returns 0, or -1 if the
 * thread could not be started. */
int lb_arm(struct last_block *last, int64_t deadline_ns) {
    int status = 0;
    pthread_mutex_lock(&last->lock);
    last->deadline = deadline_ns;
    if (deadline_ns != 0 && !last->thread_started) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&thread, &attr, timer_thread, last) == 0)
            last->thread_started = 1;
        else
            status = -1;
        pthread_attr_destroy(&attr);
    } else if (deadline_ns != 0 && (last->sleeping_until == 0 || deadline_ns < last->sleeping_until)) {
        pthread_cond_signal(&last->wake);
    }
    pthread_mutex_unlock(&last->lock);
    return status;
}

/* When the Unicorn instance is gone: the timer thread frees the structure as it ends. */
void lb_free(struct last_block *last) {
    pthread_mutex_lock(&last->lock);
    last->freed = 1;
    int started = last->thread_started;
    pthread_cond_signal(&last->wake);
    pthread_mutex_unlock(&last->lock);
    if (!started) {
        pthread_mutex_destroy(&last->lock);
        pthread_cond_destroy(&last->wake);
        free(last);
    }
}
