/*
 * rings - privilege levels: into ring 3 with iret(q), back into ring 0 through an
 * interrupt gate with DPL3 (`int $0x80`) and through the fast system call instruction
 * (SYSCALL/SYSRETQ in rings64, SYSENTER/SYSEXIT in rings32), and the #GP a privileged
 * instruction gets in ring 3.
 *
 * CPL is the RPL field of CS (SDM vol. 3A, 5.5 "Privilege Levels"); both the kernel and
 * the ring-3 code read it with `mov %cs` and `and $3`. Ring 3 cannot do port I/O, so it
 * reports what it saw through a system call and the kernel prints it.
 *
 * Assembly: rings64.S (SYSCALL entry, user-side stubs), rings32.S (SYSENTER entry, stubs).
 *
 * This host's KVM (kvm_pvm) differs in three places, printed as "<-- MISMATCH" lines
 * so the rest of the transcript still runs (firmware/KVM_HOST_NOTES.md has the output):
 *   - `int $0x80` from ring 3 raises #UD instead of entering the DPL3 gate;
 *   - `syscall` from ring 3 reaches LSTAR but stays in ring 3 (CS=0x33, SS=0x2b: the
 *     host's user selectors, RFLAGS not masked); syscall_entry notices and traps to a
 *     real ring-0 handler with ud2;
 *   - `sysretq` (executed at CPL0, which kvm_pvm emulates) raises #GP (not reached after
 *     the above, but handled: the guest would return to ring 3 with iretq instead).
 * rings32 cannot run there at all: kvm_pvm cannot emulate a 32-bit iret to ring 3.
 */
#include "lib.h"

enum { SYS_ADD = 1, SYS_REPORT = 2 };

long user_int80(long nr, long a, long b, long c);
extern char user_int80_insn[];

#ifdef __x86_64__
#define NAME "rings64"
#define IRETQ "q"
#define FAST "syscall"
#define REG(r) "r" r
#define REG_A di                /* int $0x80 arguments in the trap frame */
#define REG_B si
#define REG_C dx
#define FAULT(insns) \
    __asm__ volatile("lea 1f(%%rip), %%rax\n\tmov %%rax, resume_ip(%%rip)\n\t" insns "\n1:" \
                     : : : "rax", "memory")
long user_syscall(long nr, long a, long b, long c);
#define user_fast user_syscall
extern char user_syscall_return[], sysret_insn[], syscall_in_ring3[];
void syscall_entry(void);

struct syscall_frame {          /* built by syscall_entry in rings64.S */
    ulong nr, a, b, c;          /* RAX, RDI, RSI, RDX */
    ulong rflags, rip;          /* R11 and RCX, as SYSCALL left them */
};
#else
#define NAME "rings32"
#define IRETQ ""
#define FAST "sysenter"
#define REG(r) "e" r
#define REG_A bx
#define REG_B cx
#define REG_C dx
#define FAULT(insns) \
    __asm__ volatile("movl $1f, resume_ip\n\t" insns "\n1:" : : : "eax", "memory")
long user_sysenter(long nr, long a, long b, long c);
#define user_fast user_sysenter
extern char user_sysenter_return[], sysexit_insn[];
void sysenter_entry(void);

struct sysenter_frame {         /* built by sysenter_entry in rings32.S */
    ulong nr, a, b, c;          /* EAX, EBX, ESI, EDI */
    ulong eip, esp;             /* EDX and ECX: where SYSEXIT returns to */
};
static u8 sysenter_stack[2048] __attribute__((aligned(16)));
#endif

volatile ulong resume_ip;               /* set by FAULT() for the #GP tests */
static volatile const char *what;       /* which privileged instruction is being tried */
static volatile int gp_count;
static volatile long report[3] = {-1, -1, -1};   /* what ring 3 told us */
static int failures;

static void mismatch(const char *msg)
{
    kprintf("  <-- MISMATCH: %s\n", msg);
    failures++;
}

static unsigned cpl(void) { return read_cs() & 3; }

/* The requests themselves, whichever way they came in. */
static long serve(long nr, long a, long b, long c)
{
    if (nr == SYS_ADD) {
        kprintf("add(0x%lx, 0x%lx) = 0x%lx\n", a, b, a + b);
        return a + b;
    }
    if (nr == SYS_REPORT) {
        kprintf("ring 3 reports CS&3=%ld\n", a);
        report[0] = a, report[1] = b, report[2] = c;
        return 0;
    }
    kprintf("unknown request %ld\n", nr);
    failures++;
    return -1;
}

#ifdef __x86_64__
ulong syscall_handler(struct syscall_frame *f)
{
    ulong rflags;
    __asm__ volatile("pushfq; popq %0" : "=r"(rflags));
    kprintf("%-18s in CS=0x%02x CPL=%u, IF=%lu (SFMASK), R11.IF=%lu, RCX %s; ", "syscall/sysretq:",
            read_cs(), cpl(), (rflags >> 9) & 1, (f->rflags >> 9) & 1,
            f->rip == (ulong)user_syscall_return ? "= return address" : "WRONG");
    return serve(f->nr, f->a, f->b, f->c);
}
#else
ulong sysenter_handler(struct sysenter_frame *f)
{
    ulong eflags;
    __asm__ volatile("pushfl; popl %0" : "=r"(eflags));
    kprintf("%-18s in CS=0x%02x CPL=%u, IF=%lu, EDX %s; ", "sysenter/sysexit:", read_cs(), cpl(),
            (eflags >> 9) & 1, f->eip == (ulong)user_sysenter_return ? "= return address"
                                                                      : "WRONG");
    return serve(f->nr, f->a, f->b, f->c);
}
#endif

int guest_trap(struct trap_frame *f)
{
    if (f->vector == 0x80 && (f->cs & 3) == 3) {
        kprintf("%-18s in CS=0x%02x CPL=%u, from CS=0x%02lx SS=0x%02lx; ", "int $0x80/iret" IRETQ ":", read_cs(),
                cpl(), f->cs, f->ss);
        f->ax = serve(f->ax, f->REG_A, f->REG_B, f->REG_C);
        return 1;
    }
    if (f->vector == 13 && (f->cs & 3) == 3 && resume_ip) {
        kprintf("ring 3: %-18s -> #GP err 0x%04lx\n", what, f->error);
        gp_count++;
        f->ip = resume_ip;
        resume_ip = 0;
        return 1;
    }
    /* Not architectural, seen on this host's KVM: report, serve the request anyway, and
     * keep going so that the rest of the transcript still shows. */
    if (f->vector == 6 && f->ip == (ulong)user_int80_insn) {
        kputs("int $0x80 raised #UD");
        mismatch("a DPL3 interrupt gate must be entered");
        kputs("  served from the #UD handler instead: ");
        f->ax = serve(f->ax, f->REG_A, f->REG_B, f->REG_C);
        f->ip += 2;
        return 1;
    }
#ifdef __x86_64__
    if (f->vector == 6 && f->ip == (ulong)syscall_in_ring3) {
        kprintf("syscall reached LSTAR with CS=0x%02lx (CPL %lu)", f->r10, f->r10 & 3);
        mismatch("SYSCALL must enter CPL0 with CS=STAR[47:32]");
        kputs("  served from the #UD handler instead: ");
        f->ax = serve(f->ax, f->di, f->si, f->dx);
        f->ip = f->cx;                   /* return like sysretq would */
        f->flags = f->r11;
        f->cs = USER_CS | 3;
        f->ss = USER_DS | 3;
        return 1;
    }
    if (f->vector == 13 && f->ip == (ulong)sysret_insn) {
        kprintf("sysretq raised #GP err 0x%lx; returning with iretq instead", f->error);
        mismatch("sysretq must return to ring 3");
        f->ip = f->cx;                   /* exactly what sysretq should have done */
        f->flags = f->r11;
        f->cs = USER_CS | 3;
        f->ss = USER_DS | 3;             /* f->sp already holds the user RSP */
        return 1;
    }
#endif
    return 0;
}

/* ---- Ring 3 ------------------------------------------------------------------------- */
static void user_main(void)
{
    long my_cpl = read_cs() & 3;
    long r1 = user_int80(SYS_ADD, 0x1000, 0x234, 0);
    long r2 = user_fast(SYS_ADD, r1, 0x1111, 0);
    user_fast(SYS_REPORT, my_cpl, r1, r2);
}

static void user_privileged(void)
{
    what = "hlt";
    FAULT("hlt");
    what = "cli";
    FAULT("cli");
    what = "mov %cr3, %" REG("ax");
    FAULT("mov %%cr3, %%" REG("ax"));
}

int guest_main(u32 magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
#ifdef __x86_64__
    kputs(NAME ": long mode\n");
#else
    kputs(NAME ": 32-bit protected mode\n");
#endif
    kprintf("ring 0: CS=0x%02x CPL=%u\n", read_cs(), cpl());

    /* Gate 0x80 with DPL3: `int $0x80` is allowed from CPL <= 3 (SDM vol. 3A, 6.12.1.1).
     * An interrupt gate (not a trap gate) so that IF=0 in the handler. */
    idt_set_gate(0x80, isr_128, GATE_INT, 3, 0);

#ifdef __x86_64__
    /* STAR[47:32] = kernel CS (SS = +8); STAR[63:48] = base for SYSRET: CS = base+16 = 0x28,
     * SS = base+8 = 0x20, both with RPL 3. SFMASK: clear TF, IF and DF on entry. */
    wrmsr(MSR_STAR, ((u64)USER_CS32 << 48) | ((u64)KERNEL_CS << 32));
    wrmsr(MSR_LSTAR, (ulong)syscall_entry);
    wrmsr(MSR_SFMASK, 0x700);
    kprintf("IDT[0x80] DPL3; STAR=0x%016lx SFMASK=0x%lx EFER.SCE=%lu\n",
            (ulong)rdmsr(MSR_STAR), (ulong)rdmsr(MSR_SFMASK), (ulong)rdmsr(MSR_EFER) & 1);
    kprintf("iretq to ring 3 (CS=0x%02x SS=0x%02x)\n", USER_CS | 3, USER_DS | 3);
#else
    wrmsr(MSR_SYSENTER_CS, KERNEL_CS);
    wrmsr(MSR_SYSENTER_ESP, (ulong)sysenter_stack + sizeof(sysenter_stack) - 16);
    wrmsr(MSR_SYSENTER_EIP, (ulong)sysenter_entry);
    kprintf("IDT[0x80] DPL3; SYSENTER_CS=0x%02x: sysenter -> CS 0x%02x SS 0x%02x, "
            "sysexit -> CS 0x%02x SS 0x%02x\n", (u32)rdmsr(MSR_SYSENTER_CS), KERNEL_CS,
            KERNEL_CS + 8, (KERNEL_CS + 16) | 3, (KERNEL_CS + 24) | 3);
    kprintf("iret to ring 3 (CS=0x%02x SS=0x%02x)\n", USER_CS | 3, USER_DS | 3);
#endif

    run_user(user_main, user_stack_top);
    kprintf("ring 3 results: CS&3=%ld, int $0x80 returned 0x%lx, " FAST " returned 0x%lx\n",
            report[0], report[1], report[2]);
    if (report[0] != 3 || report[1] != 0x1234 || report[2] != 0x2345)
        mismatch("expected CS&3=3, 0x1234, 0x2345");

    /* Privileged instructions (CPL0 only, SDM vol. 3A, 5.9): #GP(0) in ring 3. CLI is
     * IOPL-sensitive rather than privileged, and RFLAGS.IOPL is 0 here. */
    run_user(user_privileged, user_stack_top);
    if (gp_count != 3)
        mismatch("three #GP expected");

    kprintf("back in ring 0 (ud2 at user_exit): CS=0x%02x CPL=%u\n", read_cs(), cpl());
    if (cpl() != 0)
        mismatch("CPL 0 expected");
#ifdef __x86_64__
    kputs("sysenter: not used in 64-bit mode (#UD on AMD CPUs); rings32 shows it\n");
#endif
    if (failures)
        kprintf(NAME ": FAILED, %d mismatches\n", failures);
    else
        kputs(NAME ": all checks passed\n");
    return failures ? 1 : 0;
}
