"""The Linux KVM userspace API, as ctypes: every ioctl number and struct emu uses, in one place.

KVM is driven entirely through file descriptors and ioctls (Documentation/virt/kvm/api.rst,
"1. General description" and "3. Extensions"). A VMM goes through three levels of fd:

1. **System fd**: `open("/dev/kvm", O_RDWR)`. `KVM_GET_API_VERSION` must return 12 (api.rst
   §4.1; the only stable version since Linux 2.6.22). `KVM_CHECK_EXTENSION` asks for optional
   capabilities (`KVM_CAP_*`), `KVM_GET_VCPU_MMAP_SIZE` (§4.5) says how big the shared
   `kvm_run` area is, and `KVM_GET_SUPPORTED_CPUID` (§4.46) lists the CPUID bits KVM can offer.
2. **VM fd**: `KVM_CREATE_VM` (§4.2) on the system fd. Guest-physical memory is described by
   *memory slots*: `KVM_SET_USER_MEMORY_REGION` (§4.35) maps a range of the VMM's own virtual
   memory (`userspace_addr`) at `guest_phys_addr`. Any guest-physical address not covered by a
   slot is MMIO: an access to it stops the vCPU with `KVM_EXIT_MMIO`. On x86 without
   unrestricted guest, KVM also needs three pages for a real-mode TSS (`KVM_SET_TSS_ADDR`,
   §4.48) and one for an identity page table (`KVM_SET_IDENTITY_MAP_ADDR`, §4.58), at
   guest-physical addresses nothing else uses.
3. **vCPU fd**: `KVM_CREATE_VCPU` (§4.7) on the VM fd. `mmap(vcpu_fd, 0, mmap_size)` gives the
   `struct kvm_run` page(s) shared with the kernel (§5 "The kvm_run structure"). Registers are
   set with `KVM_SET_REGS`/`KVM_SET_SREGS`/`KVM_SET_MSRS` (§4.12-4.19) and CPUID with
   `KVM_SET_CPUID2` (§4.71: without it this host's guest sees CPUID as all zeros).

Then the VMM loops on `KVM_RUN` (§4.10): the ioctl enters the guest and returns on a *VM exit*
that needs userspace; `kvm_run.exit_reason` says which and a union describes it:

- `KVM_EXIT_IO`: port IO. `io.direction/size/port/count`; the data, `size * count` bytes (count
  > 1 for `rep ins/outs`), is inside the kvm_run mapping at `io.data_offset`. For IN, userspace
  writes the data there and the next `KVM_RUN` completes the instruction.
- `KVM_EXIT_MMIO`: a load or store to a guest-physical address without a slot (or a store into a
  `KVM_MEM_READONLY` slot): `mmio.phys_addr/data/len/is_write`.
- `KVM_EXIT_HLT`, `KVM_EXIT_IRQ_WINDOW_OPEN`, `KVM_EXIT_SHUTDOWN` (triple fault),
  `KVM_EXIT_INTERNAL_ERROR` (the in-kernel emulator gave up; `internal.suberror`),
  `KVM_EXIT_FAIL_ENTRY` (the hardware refused the guest state), `KVM_EXIT_DEBUG`.
- `KVM_RUN` failing with EINTR (`exit_reason` = `KVM_EXIT_INTR`): a signal arrived, or
  `kvm_run.immediate_exit` was set (§5, KVM_CAP_IMMEDIATE_EXIT). IO and MMIO exits are
  completed only when userspace re-enters `KVM_RUN`; with `immediate_exit` set, that re-entry
  completes the pending operation and returns EINTR before the guest runs another instruction.

Every name below is the kernel's (`kvm_regs`, `KVM_RUN`, `KVM_EXIT_IO`, ...), lower-case struct
classes included, so that grepping the kernel tree, api.rst, QEMU or kvmtool finds the same word.

ioctl numbers are computed here with the asm-generic `_IO/_IOR/_IOW/_IOWR` encoding
(include/uapi/asm-generic/ioctl.h): `dir << 30 | size << 16 | type << 8 | nr`, type `KVMIO`
= 0xAE and `size` the `sizeof` of the argument struct, so a struct layout mistake shows as a
wrong number. tests/kvm/test_kvm_api.py checks both against <linux/kvm.h> when a C compiler
is present.

Calls go through `libc.ioctl` (ctypes, `use_errno=True`): unlike `fcntl.ioctl`, an EINTR from
`KVM_RUN` comes back as a return value instead of an exception or a retry. Argument structs
are passed by reference to a named object that lives across the call: ctypes temporaries passed
as `addressof(...)` may be freed before the ioctl runs (see shared/notes/host-kvm.md).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    Structure,
    Union,
    c_char,
    c_int,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_ulong,
    c_void_p,
    sizeof,
)

from ..errors import EmuError

# ---------------------------------------------------------------------------------------------
# ioctl encoding (include/uapi/asm-generic/ioctl.h)

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    assert size < 1 << _IOC_SIZEBITS
    return direction << _IOC_DIRSHIFT | type_ << _IOC_TYPESHIFT | nr << _IOC_NRSHIFT | size << _IOC_SIZESHIFT


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_READ, type_, nr, sizeof(struct))


def _IOW(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_WRITE, type_, nr, sizeof(struct))


def _IOWR(type_: int, nr: int, struct: type) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, sizeof(struct))


KVMIO = 0xAE
KVM_API_VERSION = 12

# ---------------------------------------------------------------------------------------------
# Structs (include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h)


class kvm_regs(Structure):
    """General-purpose registers, RIP and RFLAGS (KVM_GET_REGS/KVM_SET_REGS, api.rst §4.11)."""

    _fields_ = [
        (name, c_uint64)
        for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
    ]  # fmt: skip


class kvm_segment(Structure):
    """A segment register with its hidden part; `unusable` is VMX's access-rights bit 16."""

    _fields_ = [
        ("base", c_uint64),
        ("limit", c_uint32),
        ("selector", c_uint16),
        ("type", c_uint8),
        ("present", c_uint8),
        ("dpl", c_uint8),
        ("db", c_uint8),
        ("s", c_uint8),
        ("l", c_uint8),
        ("g", c_uint8),
        ("avl", c_uint8),
        ("unusable", c_uint8),
        ("padding", c_uint8),
    ]


class kvm_dtable(Structure):
    """GDTR/IDTR."""

    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(Structure):
    """Segment and system registers (KVM_GET_SREGS/KVM_SET_SREGS, api.rst §4.13).

    `interrupt_bitmap` has at most one bit set: an external interrupt injected but not yet
    delivered (userspace irqchip only).
    """

    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", c_uint64),
        ("cr2", c_uint64),
        ("cr3", c_uint64),
        ("cr4", c_uint64),
        ("cr8", c_uint64),
        ("efer", c_uint64),
        ("apic_base", c_uint64),
        ("interrupt_bitmap", c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_fpu(Structure):
    """x87/SSE state (KVM_GET_FPU/KVM_SET_FPU, api.rst §4.22)."""

    _fields_ = [
        ("fpr", (c_uint8 * 16) * 8),
        ("fcw", c_uint16),
        ("fsw", c_uint16),
        ("ftwx", c_uint8),
        ("pad1", c_uint8),
        ("last_opcode", c_uint16),
        ("last_ip", c_uint64),
        ("last_dp", c_uint64),
        ("xmm", (c_uint8 * 16) * 16),
        ("mxcsr", c_uint32),
        ("pad2", c_uint32),
    ]


class kvm_userspace_memory_region(Structure):
    """One memory slot (KVM_SET_USER_MEMORY_REGION, api.rst §4.35); memory_size 0 deletes it."""

    _fields_ = [
        ("slot", c_uint32),
        ("flags", c_uint32),
        ("guest_phys_addr", c_uint64),
        ("memory_size", c_uint64),
        ("userspace_addr", c_uint64),
    ]


KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1


class kvm_dirty_log(Structure):
    """KVM_GET_DIRTY_LOG (api.rst §4.8): one slot's bitmap, a bit per 4 KiB page written since
    the last call (the call clears it and write-protects those pages again)."""

    _fields_ = [
        ("slot", c_uint32),
        ("padding1", c_uint32),
        ("dirty_bitmap", c_uint64),  # a userspace pointer (union with __u64 padding2)
    ]


class kvm_translation(Structure):
    """KVM_TRANSLATE (api.rst §4.15): a linear address through the guest's current paging."""

    _fields_ = [
        ("linear_address", c_uint64),
        ("physical_address", c_uint64),
        ("valid", c_uint8),
        ("writeable", c_uint8),
        ("usermode", c_uint8),
        ("pad", c_uint8 * 5),
    ]


class kvm_mp_state(Structure):
    """KVM_GET_MP_STATE (api.rst §4.38): RUNNABLE, HALTED (after `hlt`, in-kernel irqchip), ..."""

    _fields_ = [("mp_state", c_uint32)]


KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_HALTED = 0, 3


class kvm_interrupt(Structure):
    """KVM_INTERRUPT (api.rst §4.16): queue an external interrupt vector (userspace irqchip)."""

    _fields_ = [("irq", c_uint32)]


class kvm_msr_entry(Structure):
    _fields_ = [("index", c_uint32), ("reserved", c_uint32), ("data", c_uint64)]


class kvm_msrs(Structure):
    """Header of KVM_GET_MSRS/KVM_SET_MSRS (api.rst §4.18); `entries` follow it (see msr_list)."""

    _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32)]


def msr_list(count: int) -> type[Structure]:
    """A `kvm_msrs` with room for `count` entries (the C flexible array member)."""

    class kvm_msrs_n(Structure):
        _fields_ = [("nmsrs", c_uint32), ("pad", c_uint32), ("entries", kvm_msr_entry * count)]

    return kvm_msrs_n


class kvm_cpuid_entry2(Structure):
    """One CPUID leaf/subleaf (api.rst §4.46)."""

    _fields_ = [
        ("function", c_uint32),
        ("index", c_uint32),
        ("flags", c_uint32),
        ("eax", c_uint32),
        ("ebx", c_uint32),
        ("ecx", c_uint32),
        ("edx", c_uint32),
        ("padding", c_uint32 * 3),
    ]


KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0  # (sic) the kernel's spelling


class kvm_cpuid2(Structure):
    """Header of KVM_GET_SUPPORTED_CPUID/KVM_SET_CPUID2; `entries` follow it (see cpuid_list)."""

    _fields_ = [("nent", c_uint32), ("padding", c_uint32)]


def cpuid_list(count: int) -> type[Structure]:
    """A `kvm_cpuid2` with room for `count` entries."""

    class kvm_cpuid2_n(Structure):
        _fields_ = [("nent", c_uint32), ("padding", c_uint32), ("entries", kvm_cpuid_entry2 * count)]

    return kvm_cpuid2_n


class kvm_guest_debug_arch(Structure):
    _fields_ = [("debugreg", c_uint64 * 8)]


class kvm_guest_debug(Structure):
    """KVM_SET_GUEST_DEBUG (api.rst §4.38)."""

    _fields_ = [("control", c_uint32), ("pad", c_uint32), ("arch", kvm_guest_debug_arch)]


class kvm_vcpu_events(Structure):
    """KVM_GET/SET_VCPU_EVENTS (api.rst §4.31): pending exception, interrupt, NMI, SMI."""

    _fields_ = [
        ("exception_injected", c_uint8), ("exception_nr", c_uint8), ("exception_has_error_code", c_uint8),
        ("exception_pending", c_uint8), ("exception_error_code", c_uint32),
        ("interrupt_injected", c_uint8), ("interrupt_nr", c_uint8), ("interrupt_soft", c_uint8),
        ("interrupt_shadow", c_uint8),
        ("nmi_injected", c_uint8), ("nmi_pending", c_uint8), ("nmi_masked", c_uint8), ("nmi_pad", c_uint8),
        ("sipi_vector", c_uint32), ("flags", c_uint32),
        ("smi", c_uint8 * 4), ("triple_fault_pending", c_uint8), ("reserved", c_uint8 * 26),
        ("exception_has_payload", c_uint8), ("exception_payload", c_uint64),
    ]  # fmt: skip


KVM_VCPUEVENT_VALID_SHADOW = 0x4  # KVM_SET_VCPU_EVENTS: take interrupt.shadow too


class kvm_debugregs(Structure):
    """KVM_GET/SET_DEBUGREGS (api.rst §4.32): DR0-3, DR6, DR7 as the guest sees them."""

    _fields_ = [("db", c_uint64 * 4), ("dr6", c_uint64), ("dr7", c_uint64), ("flags", c_uint64),
                ("reserved", c_uint64 * 9)]  # fmt: skip


KVM_GUESTDBG_ENABLE = 0x00000001
KVM_GUESTDBG_SINGLESTEP = 0x00000002
KVM_GUESTDBG_USE_SW_BP = 0x00010000
KVM_GUESTDBG_USE_HW_BP = 0x00020000


class kvm_ioeventfd(Structure):
    """KVM_IOEVENTFD (api.rst §4.59): signal `fd` when the guest writes `len` bytes at `addr`
    (any length if 0), optionally only the value `datamatch`; in port space with FLAG_PIO."""

    _fields_ = [("datamatch", c_uint64), ("addr", c_uint64), ("len", c_uint32), ("fd", c_int),
                ("flags", c_uint32), ("pad", c_uint8 * 36)]  # fmt: skip


KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 0, 1 << 1, 1 << 2


class kvm_irqfd(Structure):
    """KVM_IRQFD (api.rst §4.75): a write to `fd` raises interrupt line `gsi` of the in-kernel
    irqchip. With FLAG_RESAMPLE the line is a level: KVM lowers it when the guest acknowledges
    (EOI) the interrupt and then signals `resamplefd`, so the device can raise it again."""

    _fields_ = [("fd", c_uint32), ("gsi", c_uint32), ("flags", c_uint32), ("resamplefd", c_uint32),
                ("pad", c_uint8 * 16)]  # fmt: skip


KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE = 1 << 0, 1 << 1


class kvm_irq_level(Structure):
    """KVM_IRQ_LINE (api.rst §4.25): drive in-kernel irqchip input `irq` to `level`."""

    _fields_ = [("irq", c_uint32), ("level", c_uint32)]


class kvm_irq_routing_irqchip(Structure):
    _fields_ = [("irqchip", c_uint32), ("pin", c_uint32)]


class kvm_irq_routing_entry(Structure):
    """One GSI route (api.rst §4.52 KVM_SET_GSI_ROUTING): `gsi` drives input `u.pin` of in-kernel
    chip `u.irqchip` (type KVM_IRQ_ROUTING_IRQCHIP). A GSI may have several entries."""

    _fields_ = [("gsi", c_uint32), ("type", c_uint32), ("flags", c_uint32), ("pad", c_uint32),
                ("u", kvm_irq_routing_irqchip), ("u_pad", c_uint32 * 6)]  # fmt: skip


class kvm_irq_routing(Structure):
    """KVM_SET_GSI_ROUTING's header; `nr` entries follow (routing_list(n))."""

    _fields_ = [("nr", c_uint32), ("flags", c_uint32)]


def routing_list(n: int) -> type:
    class kvm_irq_routing_n(Structure):
        _fields_ = [("nr", c_uint32), ("flags", c_uint32), ("entries", kvm_irq_routing_entry * n)]

    return kvm_irq_routing_n


KVM_IRQ_ROUTING_IRQCHIP = 1
KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC = 0, 1, 2


class kvm_irqchip(Structure):
    """KVM_GET_IRQCHIP / KVM_SET_IRQCHIP (api.rst §4.26-4.27): one in-kernel chip's state; for
    the IOAPIC, `chip` holds struct kvm_ioapic_state (base_address u64, ioregsel u32, id u32, ...)."""

    _fields_ = [("chip_id", c_uint32), ("pad", c_uint32), ("chip", c_uint8 * 512)]


KVM_IOAPIC_STATE_ID_OFFSET = 12  # kvm_ioapic_state.id, inside kvm_irqchip.chip


class kvm_lapic_state(Structure):
    """KVM_GET_LAPIC / KVM_SET_LAPIC (api.rst §4.57-4.58): the in-kernel local APIC's register
    page, 1 KiB, at the xAPIC offsets (0xF0 SVR, 0x350 LINT0, ...)."""

    _fields_ = [("regs", c_uint8 * 1024)]


class kvm_enable_cap(Structure):
    """KVM_ENABLE_CAP (api.rst §4.37)."""

    _fields_ = [("cap", c_uint32), ("flags", c_uint32), ("args", c_uint64 * 4), ("pad", c_uint8 * 64)]


# --- struct kvm_run (api.rst §5) -------------------------------------------------------------


class kvm_run_hw(Structure):
    """KVM_EXIT_UNKNOWN."""

    _fields_ = [("hardware_exit_reason", c_uint64)]


class kvm_run_fail_entry(Structure):
    """KVM_EXIT_FAIL_ENTRY: VMX's "VM-entry failure" exit reason, or SVM's VMEXIT_INVALID."""

    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class kvm_run_ex(Structure):
    """KVM_EXIT_EXCEPTION."""

    _fields_ = [("exception", c_uint32), ("error_code", c_uint32)]


KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class kvm_run_io(Structure):
    """KVM_EXIT_IO: the data is at kvm_run + data_offset, `size * count` bytes."""

    _fields_ = [
        ("direction", c_uint8),
        ("size", c_uint8),
        ("port", c_uint16),
        ("count", c_uint32),
        ("data_offset", c_uint64),
    ]


class kvm_debug_exit_arch(Structure):
    _fields_ = [("exception", c_uint32), ("pad", c_uint32), ("pc", c_uint64), ("dr6", c_uint64), ("dr7", c_uint64)]


class kvm_run_debug(Structure):
    """KVM_EXIT_DEBUG."""

    _fields_ = [("arch", kvm_debug_exit_arch)]


class kvm_run_mmio(Structure):
    """KVM_EXIT_MMIO: for a write, `data[:len]` holds the value; for a read, userspace fills it."""

    _fields_ = [("phys_addr", c_uint64), ("data", c_uint8 * 8), ("len", c_uint32), ("is_write", c_uint8)]


class kvm_run_internal(Structure):
    """KVM_EXIT_INTERNAL_ERROR: `ndata` words of `data` are valid (KVM_CAP_INTERNAL_ERROR_DATA)."""

    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0


class kvm_run_emulation_failure(Structure):
    """Overlay of `internal` for suberror KVM_INTERNAL_ERROR_EMULATION (ABI since Linux 5.14)."""

    _fields_ = [
        ("suberror", c_uint32),
        ("ndata", c_uint32),
        ("flags", c_uint64),
        ("insn_size", c_uint8),
        ("insn_bytes", c_uint8 * 15),
    ]


class kvm_run_exit(Union):
    """The per-exit-reason union of kvm_run, padded to 256 bytes."""

    _fields_ = [
        ("hw", kvm_run_hw),
        ("fail_entry", kvm_run_fail_entry),
        ("ex", kvm_run_ex),
        ("io", kvm_run_io),
        ("debug", kvm_run_debug),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("emulation_failure", kvm_run_emulation_failure),
        ("padding", c_char * 256),
    ]


class kvm_run(Structure):
    """The page(s) shared between KVM and the VMM for one vCPU: mmap(vcpu_fd, 0, mmap_size).

    Offsets (x86): exit_reason 8, ready_for_interrupt_injection 12, if_flag 13, the exit union
    at 32 (so io at 32; mmio.data at 40, mmio.len at 48, mmio.is_write at 52), kvm_valid_regs
    288, kvm_dirty_regs 296, the sync-regs area at 304. The PIO data page follows, inside the
    `KVM_GET_VCPU_MMAP_SIZE` bytes.
    """

    _anonymous_ = ("exit",)
    _fields_ = [
        ("request_interrupt_window", c_uint8),
        ("immediate_exit", c_uint8),
        ("padding1", c_uint8 * 6),
        ("exit_reason", c_uint32),
        ("ready_for_interrupt_injection", c_uint8),
        ("if_flag", c_uint8),
        ("flags", c_uint16),
        ("cr8", c_uint64),
        ("apic_base", c_uint64),
        ("exit", kvm_run_exit),
        ("kvm_valid_regs", c_uint64),
        ("kvm_dirty_regs", c_uint64),
        ("s", c_char * 2048),  # union { struct kvm_sync_regs regs; char padding[2048]; }
    ]


# ---------------------------------------------------------------------------------------------
# ioctl numbers (include/uapi/linux/kvm.h), in kvm.h order

# System ioctls (on the /dev/kvm fd)
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, kvm_cpuid2)

# VM ioctls (on the VM fd)
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_GET_DIRTY_LOG = _IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, c_uint64)
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, kvm_irq_level)
KVM_GET_IRQCHIP = _IOWR(KVMIO, 0x62, kvm_irqchip)
KVM_SET_IRQCHIP = _IOR(KVMIO, 0x63, kvm_irqchip)  # (sic) _IOR in the kernel's header
KVM_SET_GSI_ROUTING = _IOW(KVMIO, 0x6A, kvm_irq_routing)
KVM_IRQFD = _IOW(KVMIO, 0x76, kvm_irqfd)
KVM_IOEVENTFD = _IOW(KVMIO, 0x79, kvm_ioeventfd)
KVM_ENABLE_CAP = _IOW(KVMIO, 0xA3, kvm_enable_cap)

# vCPU ioctls (on a vCPU fd)
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_TRANSLATE = _IOWR(KVMIO, 0x85, kvm_translation)
KVM_INTERRUPT = _IOW(KVMIO, 0x86, kvm_interrupt)
KVM_GET_MSRS = _IOWR(KVMIO, 0x88, kvm_msrs)
KVM_SET_MSRS = _IOW(KVMIO, 0x89, kvm_msrs)
KVM_GET_FPU = _IOR(KVMIO, 0x8C, kvm_fpu)
KVM_SET_FPU = _IOW(KVMIO, 0x8D, kvm_fpu)
KVM_GET_LAPIC = _IOR(KVMIO, 0x8E, kvm_lapic_state)
KVM_SET_LAPIC = _IOW(KVMIO, 0x8F, kvm_lapic_state)
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_CPUID2 = _IOWR(KVMIO, 0x91, kvm_cpuid2)
KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, kvm_mp_state)
KVM_SET_GUEST_DEBUG = _IOW(KVMIO, 0x9B, kvm_guest_debug)
KVM_GET_VCPU_EVENTS = _IOR(KVMIO, 0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = _IOW(KVMIO, 0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = _IOR(KVMIO, 0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = _IOW(KVMIO, 0xA2, kvm_debugregs)

# Capabilities (KVM_CHECK_EXTENSION)
KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_IRQ_ROUTING = 25
KVM_CAP_IRQFD = 32
KVM_CAP_IOEVENTFD = 36
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_INTERNAL_ERROR_DATA = 40
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_SYNC_REGS = 74
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IRQFD_RESAMPLE = 82
KVM_CAP_IOEVENTFD_ANY_LENGTH = 122
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_EXIT_ON_EMULATION_FAILURE = 204

# kvm_run.exit_reason
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_HYPERV = 27
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_NOTIFY = 37
KVM_EXIT_MEMORY_FAULT = 39

EXIT_REASON_NAMES: dict[int, str] = {
    value: name for name, value in list(globals().items()) if name.startswith("KVM_EXIT_") and isinstance(value, int)
    and not name.startswith("KVM_EXIT_IO_")
}  # fmt: skip

# kvm_run.internal.suberror for KVM_EXIT_INTERNAL_ERROR
KVM_INTERNAL_ERROR_EMULATION = 1  # the in-kernel instruction emulator failed
KVM_INTERNAL_ERROR_SIMUL_EX = 2  # an exception while delivering an exception
KVM_INTERNAL_ERROR_DELIVERY_EV = 3  # an unexpected VM exit while delivering an event
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4  # a hardware exit reason KVM does not handle

INTERNAL_ERROR_NAMES: dict[int, str] = {
    KVM_INTERNAL_ERROR_EMULATION: "KVM_INTERNAL_ERROR_EMULATION",
    KVM_INTERNAL_ERROR_SIMUL_EX: "KVM_INTERNAL_ERROR_SIMUL_EX",
    KVM_INTERNAL_ERROR_DELIVERY_EV: "KVM_INTERNAL_ERROR_DELIVERY_EV",
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
}

IOCTL_NAMES: dict[int, str] = {
    value: name
    for name, value in list(globals().items())
    if name.startswith("KVM_") and isinstance(value, int) and value >= _IO(KVMIO, 0)
    and (value >> _IOC_TYPESHIFT) & 0xFF == KVMIO
}  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Calling ioctls


class KvmError(EmuError):
    """A KVM ioctl failed: one line naming the ioctl and the host's strerror."""

    def __init__(self, ioctl_name: str, err: int, context: str = "") -> None:
        self.ioctl_name = ioctl_name
        self.errno = err
        where = f" ({context})" if context else ""
        super().__init__(f"{ioctl_name} failed{where}: {os.strerror(err)} (errno {err})")


_libc = ctypes.CDLL(None, use_errno=True)
libc_ioctl = _libc.ioctl
libc_ioctl.argtypes = [c_int, c_ulong, c_void_p]
libc_ioctl.restype = c_int


def ioctl_raw(fd: int, request: int, arg: object = None) -> int:
    """`ioctl(fd, request, arg)` returning the result, or `-errno` on failure (no exception).

    `arg` is an int, None, or `ctypes.byref(obj)` / a ctypes pointer; the caller keeps `obj`
    alive. ctypes releases the GIL for the duration of the call.
    """
    result = libc_ioctl(fd, request, arg)
    if result < 0:
        return -ctypes.get_errno()
    return result


def ioctl(fd: int, request: int, arg: object = None, context: str = "") -> int:
    """`ioctl(fd, request, arg)`; raises KvmError (ioctl name + strerror) on failure."""
    result = ioctl_raw(fd, request, arg)
    if result < 0:
        raise KvmError(IOCTL_NAMES.get(request, f"ioctl {request:#x}"), -result, context)
    return result


def kvm_usable(path: str = "/dev/kvm") -> tuple[bool, str]:
    """Whether KVM can be used here, and why not: `path` opens read-write and answers
    KVM_GET_API_VERSION with 12 (api.rst §4.1). For tests and tools that skip the kvm side."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return False, f"no usable {path} ({err.strerror})"
    try:
        version = ioctl_raw(fd, KVM_GET_API_VERSION)
    finally:
        os.close(fd)
    if version < 0:
        return False, f"{path} is no KVM device ({os.strerror(-version)})"
    if version != KVM_API_VERSION:
        return False, f"{path} speaks KVM API {version}, not {KVM_API_VERSION}"
    return True, ""
