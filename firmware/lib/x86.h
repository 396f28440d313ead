/*
 * x86.h - architectural constants and tiny inline helpers shared by every guest.
 *
 * Included from C and from assembly (.S files go through the C preprocessor), so the
 * constants are plain #defines and everything C-only sits under !__ASSEMBLER__.
 * The same header serves the 32-bit (-m32) and the 64-bit (-m64) builds; __x86_64__
 * tells them apart.
 */
#ifndef FW_X86_H
#define FW_X86_H

/* ---- Multiboot v1 (Multiboot Specification 0.6.96, section 3) -------------------- */
#define MB_HEADER_MAGIC   0x1BADB002  /* in the kernel image, first 8 KiB, 4-byte aligned */
#define MB_BOOT_MAGIC     0x2BADB002  /* in EAX when the loader jumps to the kernel */
#define MB_FLAG_PAGE_ALIGN (1 << 0)   /* load modules on 4 KiB boundaries */
#define MB_FLAG_MEMINFO    (1 << 1)   /* please fill in mem_lower/mem_upper */
#define MB_INFO_MEM       (1 << 0)    /* mbi->flags bit: mem_lower/mem_upper valid */
#define MB_INFO_CMDLINE   (1 << 2)    /* mbi->flags bit: cmdline valid */

/* ---- Selectors: one GDT layout for the 64-bit guests, one for the 32-bit guests ---- */
/* 64-bit layout (lib/entry64.S). The order 0x18/0x20/0x28 is forced by SYSRET, which
 * loads CS = STAR[63:48]+16 and SS = STAR[63:48]+8 (SDM vol. 2B, SYSRET). */
#define KERNEL_CS     0x08   /* 64-bit code, DPL0 (32-bit guests: 32-bit code, DPL0) */
#define KERNEL_DS     0x10   /* data, DPL0 */
#define USER_CS32     0x18   /* 32-bit code, DPL3 (the 64-bit GDT keeps it for SYSRET) */
#define USER_DS       0x20   /* data, DPL3 */
#ifdef __x86_64__
#define USER_CS       0x28   /* 64-bit code, DPL3 */
#define TSS_SEL       0x30   /* 16-byte 64-bit TSS descriptor */
#else
#define USER_CS       0x18   /* 32-bit code, DPL3 (SYSEXIT: CS = SYSENTER_CS+16) */
#define TSS_SEL       0x28   /* 8-byte 32-bit TSS descriptor */
#define SMALL_TSS_SEL 0x30   /* a TSS descriptor whose limit is too small (#TS demo) */
#endif
#define BOOT_CS32     0x40   /* 64-bit guests: 32-bit code used before long mode is on */
#define NP_DS         0x48   /* writable data descriptor with P=0 (#NP and #SS demos) */

/* ---- Control registers (SDM vol. 3A, 2.5) ------------------------------------------ */
#define CR0_PE  (1u << 0)    /* protection enable */
#define CR0_MP  (1u << 1)    /* monitor coprocessor: WAIT/FWAIT honour TS */
#define CR0_EM  (1u << 2)
#define CR0_TS  (1u << 3)    /* task switched: next x87/SSE instruction raises #NM */
#define CR0_ET  (1u << 4)    /* extension type, hardwired to 1 */
#define CR0_NE  (1u << 5)    /* native x87 error reporting: #MF instead of IRQ 13 */
#define CR0_WP  (1u << 16)   /* supervisor writes honour read-only pages */
#define CR0_AM  (1u << 18)
#define CR0_PG  (1u << 31)
#define CR4_PSE        (1u << 4)   /* 4 MiB pages in 32-bit paging */
#define CR4_PAE        (1u << 5)
#define CR4_OSFXSR     (1u << 9)   /* SSE instructions allowed */
#define CR4_OSXMMEXCPT (1u << 10)  /* unmasked SSE exceptions raise #XM, not #UD */

/* ---- MSRs --------------------------------------------------------------------------- */
#define MSR_SYSENTER_CS  0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define MSR_EFER   0xC0000080
#define MSR_STAR   0xC0000081
#define MSR_LSTAR  0xC0000082
#define MSR_SFMASK 0xC0000084
#define EFER_SCE (1u << 0)   /* SYSCALL/SYSRET enable */
#define EFER_LME (1u << 8)   /* long mode enable */
#define EFER_LMA (1u << 10)  /* long mode active (read-only, set by CR0.PG=1 with LME) */
#define EFER_NXE (1u << 11)  /* execute-disable bit in page tables */

/* ---- Paging entries (SDM vol. 3A, 4.3 and 4.5) ------------------------------------- */
#define PTE_P   0x001   /* present */
#define PTE_W   0x002   /* writable */
#define PTE_U   0x004   /* user accessible */
#define PTE_PS  0x080   /* page size: 4 MiB (32-bit PDE) or 2 MiB (PAE/4-level PDE) */

/* ---- RFLAGS ------------------------------------------------------------------------- */
#define FL_TF 0x100
#define FL_IF 0x200

/* ---- Exit device and serial port ------------------------------------------------------ */
#define DEBUG_EXIT_PORT 0xf4   /* QEMU isa-debug-exit: exit status = (value << 1) | 1 */
#define COM1 0x3f8

#ifndef __ASSEMBLER__

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned long ulong;   /* register width: 32 or 64 bits */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline ulong read_cr0(void) { ulong v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static inline ulong read_cr2(void) { ulong v; __asm__ volatile("mov %%cr2, %0" : "=r"(v)); return v; }
static inline ulong read_cr3(void) { ulong v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static inline ulong read_cr4(void) { ulong v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static inline void write_cr0(ulong v) { __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory"); }
static inline void write_cr3(ulong v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }
static inline void write_cr4(ulong v) { __asm__ volatile("mov %0, %%cr4" : : "r"(v) : "memory"); }

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline u16 read_cs(void) { u16 v; __asm__ volatile("mov %%cs, %0" : "=r"(v)); return v; }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void invlpg(ulong va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }

#endif /* !__ASSEMBLER__ */
#endif
