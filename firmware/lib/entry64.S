/*
 * entry64.S - from the Multiboot hand-off (32-bit protected mode, paging off) to 64-bit
 * long mode, then into C (kstart).
 *
 * Machine state at entry (Multiboot Specification 0.6.96, 3.2): EAX = 0x2BADB002,
 * EBX = physical address of the multiboot information, CS/DS/ES/SS flat 4 GiB 32-bit
 * segments, CR0.PE=1, CR0.PG=0, EFLAGS.IF=0. GDTR and IDTR are undefined: the loader's
 * GDT may live anywhere and must not be relied on, so we load our own first.
 *
 * Long-mode activation follows SDM vol. 3A, 10.8.5 "Initializing IA-32e Mode":
 *   1. paging off (it is),
 *   2. CR4.PAE = 1,
 *   3. CR3 = physical address of the PML4,
 *   4. IA32_EFER.LME = 1,
 *   5. CR0.PG = 1  -> the CPU sets EFER.LMA; we now run in compatibility mode,
 *   6. far jump to a code segment with L=1 -> 64-bit mode.
 *
 * Page tables (SDM vol. 3A, 4.5 "4-Level Paging"): PML4[0] -> PDPT, PDPT[0] -> PD,
 * PD[i] = a 2 MiB page at i*2 MiB, for the first 1 GiB: an identity map. All entries
 * have U=1 so ring-3 test code can run anywhere; guests that demonstrate protection
 * (exceptions64) install a 4 KiB page table for the 2 MiB at 4 MiB themselves.
 * This host's nested KVM (kvm_pvm) runs exactly this kind of paging and no other:
 * neither 32-bit nor PAE paging, nor 1 GiB pages (see /work/shared/notes/host-kvm.md).
 */
#include "x86.h"

#define CR0_BOOT  (CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE)   /* 0x80010033 */
#define CR4_BOOT  (CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT)                  /* 0x620 */
#define EFER_BOOT (EFER_LME | EFER_NXE | EFER_SCE)                         /* 0x901 */

    .section .text.entry, "ax"
    .code32
    .globl _start
_start:
    cli
    cld
    /* Keep the loader's hand-off in .data: .bss is about to be cleared. */
    movl %eax, mb_magic
    movl %ebx, mb_info

    /* Clear .bss. An ELF loader zero-fills it already (p_memsz > p_filesz); doing it
     * here keeps the guest correct under loaders that do not. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $boot_stack_top, %esp

    /* Our GDT, then reload every segment register from it (a segment register keeps its
     * hidden descriptor copy until it is reloaded: SDM vol. 3A, 3.4.3). */
    lgdt gdt_ptr
    ljmp $BOOT_CS32, $1f
1:  movw $KERNEL_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    /* Identity map the first 1 GiB with 2 MiB pages (P | W | U | PS = 0x87). */
    movl $pdpt, %eax
    orl $(PTE_P | PTE_W | PTE_U), %eax
    movl %eax, pml4
    movl $page_dir, %eax
    orl $(PTE_P | PTE_W | PTE_U), %eax
    movl %eax, pdpt
    movl $page_dir, %edi
    movl $(PTE_P | PTE_W | PTE_U | PTE_PS), %eax
    movl $512, %ecx
2:  movl %eax, (%edi)              /* the high dword stays 0 (cleared .bss) */
    addl $0x200000, %eax
    addl $8, %edi
    loop 2b

    movl $CR4_BOOT, %eax           /* step 2 (+ SSE enabled for the ring-3 tests) */
    movl %eax, %cr4
    movl $pml4, %eax               /* step 3 */
    movl %eax, %cr3
    movl $MSR_EFER, %ecx           /* step 4 (+ NX pages, + SYSCALL) */
    movl $EFER_BOOT, %eax
    xorl %edx, %edx
    wrmsr
    movl $CR0_BOOT, %eax           /* step 5: paging on, long mode active */
    movl %eax, %cr0
    ljmp $KERNEL_CS, $start64      /* step 6 */

    .code64
start64:
    /* In 64-bit mode DS/ES/SS bases and limits are ignored, but the selectors still
     * have to name valid descriptors (or be null, except SS at CPL3). */
    movw $KERNEL_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $boot_stack_top, %rsp
    movl mb_magic(%rip), %edi      /* kstart(magic, mbi) in the SysV ABI registers */
    movl mb_info(%rip), %esi
    call kstart                    /* does not return */
3:  hlt
    jmp 3b

/* ---- Data ------------------------------------------------------------------------------ */
    .data
    .balign 4
    .globl mb_magic, mb_info
mb_magic: .long 0
mb_info:  .long 0

/* The GDT (SDM vol. 3A, 3.4.5 segment descriptors; 8.2.3 the 16-byte TSS descriptor).
 * Descriptor fields: base 0, limit 0xFFFFF with G=1 (4 GiB); access byte 0x9A = present,
 * DPL0, code, readable; 0xFA = same with DPL3; 0x92/0xF2 = writable data DPL0/DPL3.
 * Flags nibble 0xA = G + L (64-bit code), 0xC = G + D (32-bit). */
    .balign 16
    .globl gdt
gdt:
    .quad 0                        /* 0x00 null */
    .quad 0x00af9a000000ffff       /* 0x08 KERNEL_CS: 64-bit code, DPL0 */
    .quad 0x00cf92000000ffff       /* 0x10 KERNEL_DS: data, DPL0 */
    .quad 0x00cffa000000ffff       /* 0x18 USER_CS32: 32-bit code, DPL3 (SYSRET layout) */
    .quad 0x00cff2000000ffff       /* 0x20 USER_DS: data, DPL3 */
    .quad 0x00affa000000ffff       /* 0x28 USER_CS: 64-bit code, DPL3 */
    .quad 0, 0                     /* 0x30 TSS_SEL: filled in by tss_init() */
    .quad 0x00cf9a000000ffff       /* 0x40 BOOT_CS32: 32-bit code, DPL0 */
    .quad 0x00cf12000000ffff       /* 0x48 NP_DS: writable data with P=0 (access 0x12) */
gdt_end:

    .balign 4
    .word 0
gdt_ptr:                           /* lgdt operand: 16-bit limit, then the base */
    .word gdt_end - gdt - 1
    .long gdt

/* ---- Page tables and the boot stack (cleared by the code above) -------------------- */
    .bss
    .balign 4096
    .globl pml4, pdpt, page_dir
pml4:     .skip 4096
pdpt:     .skip 4096
page_dir: .skip 4096
    .balign 16
    .skip 16384
    .globl boot_stack_top
boot_stack_top:
