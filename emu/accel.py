"""The accelerator interface: what the machine asks of a CPU, whichever runs it.

A hypervisor splits a virtual CPU into the part that executes guest instructions (VT-x/AMD-V
hardware, or a binary translator) and the part that handles what it cannot: port and MMIO
accesses, `hlt`, interrupts, shutdowns. Those hand-overs are *VM exits* (Intel SDM vol. 3C,
ch. 27 "VM Exits"; KVM's `struct kvm_run::exit_reason`). emu keeps that split visible:

- `CpuState` is the architectural state of one x86 CPU, including the hidden parts of the
  segment registers (SDM vol. 3A §3.4.3), in one dataclass shared by both backends, so a
  snapshot, a trace or a diff never depends on which backend produced it.
- A `VCpu` serves port IO and MMIO itself, synchronously, through the `IoHandler` it was given
  (the machine's buses): that is the hot path, and it is counted as an exit by reason in
  `ExitStats`. `VCpu.run()` returns only for events the machine must decide on: halt, shutdown,
  internal error, an interrupt window, or a kick from another thread.
- The machine, not the vCPU, owns interrupt controllers: it asks `interrupts_allowed()`, then
  `inject_interrupt(vector)` (what KVM_INTERRUPT does with a userspace irqchip), or
  `request_interrupt_window()` to be told when the guest can take one.

Firecracker keeps the same narrow line between VMM, vCPU and devices.
"""

from __future__ import annotations

import enum
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Protocol

from .errors import EmuError

# ---------------------------------------------------------------------------------------------
# Architectural state


@dataclass(frozen=True)
class Segment:
    """A segment register with its hidden descriptor cache (SDM vol. 3A §3.4.5).

    `limit` is the byte-granular limit (already scaled when G=1), as KVM's `kvm_segment` and
    QEMU's segment cache hold it. The attribute fields are the descriptor's bits 40-55.
    """

    selector: int = 0
    base: int = 0
    limit: int = 0xFFFF
    type: int = 3  # 4-bit type field; 3 = read/write data, accessed; 0xB = exec/read code, accessed
    s: int = 1  # 1 = code/data, 0 = system (TSS, LDT, gates)
    dpl: int = 0
    present: int = 1
    avl: int = 0
    l: int = 0  # 64-bit code segment (long mode only)
    db: int = 0  # default operand size: 0 = 16-bit, 1 = 32-bit
    g: int = 0  # granularity (informational: `limit` is already scaled)
    unusable: int = 0  # KVM's "null/unusable" marker (VMX access-rights bit 16)

    @property
    def attributes(self) -> int:
        """The attribute word in descriptor layout: bits 8-23 of the high dword."""
        return (
            (self.type & 0xF) << 8
            | (self.s & 1) << 12
            | (self.dpl & 3) << 13
            | (self.present & 1) << 15
            | (self.avl & 1) << 20
            | (self.l & 1) << 21
            | (self.db & 1) << 22
            | (self.g & 1) << 23
        )

    @classmethod
    def from_attributes(cls, selector: int, base: int, limit: int, attributes: int) -> "Segment":
        return cls(
            selector=selector,
            base=base,
            limit=limit,
            type=(attributes >> 8) & 0xF,
            s=(attributes >> 12) & 1,
            dpl=(attributes >> 13) & 3,
            present=(attributes >> 15) & 1,
            avl=(attributes >> 20) & 1,
            l=(attributes >> 21) & 1,
            db=(attributes >> 22) & 1,
            g=(attributes >> 23) & 1,
            unusable=0 if (attributes >> 15) & 1 else 1,
        )

    @classmethod
    def real_mode(cls, selector: int, code: bool = False) -> "Segment":
        """A segment as loaded in real mode: base = selector << 4, 64 KiB limit."""
        return cls(selector=selector, base=selector << 4, limit=0xFFFF, type=0xB if code else 3)

    @classmethod
    def flat32(cls, selector: int, code: bool) -> "Segment":
        """A flat 4 GiB 32-bit segment, as a multiboot loader leaves them."""
        return cls(selector=selector, base=0, limit=0xFFFFFFFF, type=0xB if code else 3, db=1, g=1)


@dataclass
class DescriptorTable:
    """GDTR or IDTR: a linear base and a limit (SDM vol. 3A §2.4)."""

    base: int = 0
    limit: int = 0xFFFF


# MSR numbers (SDM vol. 4) that guests here use and that both backends carry in CpuState.
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_PAT = 0x277
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SFMASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102

STATE_MSRS = (
    MSR_IA32_SYSENTER_CS,
    MSR_IA32_SYSENTER_ESP,
    MSR_IA32_SYSENTER_EIP,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_KERNEL_GS_BASE,
    MSR_IA32_PAT,
)

# General-purpose registers in their instruction-encoding order (SDM vol. 2A §2.1.5).
GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
SEGMENT_NAMES = ("es", "cs", "ss", "ds", "fs", "gs")

# Control-register and flag bits used across the project.
CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_PG = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 16, 1 << 18, 1 << 31)  # fmt: skip
CR4_PSE, CR4_PAE, CR4_PGE, CR4_OSFXSR = 1 << 4, 1 << 5, 1 << 7, 1 << 9
EFER_SCE, EFER_LME, EFER_LMA, EFER_NXE = 1 << 0, 1 << 8, 1 << 10, 1 << 11
RFLAGS_CF, RFLAGS_TF, RFLAGS_IF, RFLAGS_DF = 1 << 0, 1 << 8, 1 << 9, 1 << 10
RFLAGS_IOPL, RFLAGS_NT, RFLAGS_RF, RFLAGS_VM, RFLAGS_AC = 3 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 18


@dataclass
class CpuState:
    """The architectural state of one x86-64 CPU that emu saves, restores and compares."""

    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    rbx: int = 0
    rsp: int = 0
    rbp: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0xFFF0
    rflags: int = 0x2
    es: Segment = field(default_factory=Segment)
    cs: Segment = field(default_factory=lambda: Segment(selector=0xF000, base=0xFFFF0000, type=0xB))
    ss: Segment = field(default_factory=Segment)
    ds: Segment = field(default_factory=Segment)
    fs: Segment = field(default_factory=Segment)
    gs: Segment = field(default_factory=Segment)
    ldt: Segment = field(default_factory=lambda: Segment(type=2, s=0))
    tr: Segment = field(default_factory=lambda: Segment(type=0xB, s=0))
    gdt: DescriptorTable = field(default_factory=DescriptorTable)
    idt: DescriptorTable = field(default_factory=DescriptorTable)
    cr0: int = 0x60000010
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    msrs: dict[int, int] = field(default_factory=dict)

    @property
    def cpl(self) -> int:
        """Current privilege level: SS.DPL in protected mode (SDM vol. 3A §5.5), 0 in real mode."""
        return self.ss.dpl if self.cr0 & CR0_PE and not self.rflags & RFLAGS_VM else 0

    @property
    def mode(self) -> str:
        """'real', 'protected16', 'protected32', 'compat' or 'long' (by CR0, EFER and CS)."""
        if not self.cr0 & CR0_PE:
            return "real"
        if self.efer & EFER_LMA:
            return "long" if self.cs.l else "compat"
        return "protected32" if self.cs.db else "protected16"

    @classmethod
    def assemble(cls, values: dict[str, object]) -> "CpuState":
        """A state from a value for every field, without running the defaults' factories (the
        backends build one after every instruction while tracing)."""
        state = object.__new__(cls)
        state.__dict__.update(values)
        return state

    def diff(self, other: "CpuState") -> dict[str, tuple[object, object]]:
        """Fields that differ, as name -> (self's value, other's value)."""
        out: dict[str, tuple[object, object]] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out[f.name] = (a, b)
        return out

    @classmethod
    def reset(cls) -> "CpuState":
        """The state after RESET (SDM vol. 3A §9.1.1, table 9-1): F000:FFF0, base FFFF0000."""
        return cls(
            cs=Segment(selector=0xF000, base=0xFFFF0000, limit=0xFFFF, type=0xB),
            ds=Segment(), es=Segment(), ss=Segment(), fs=Segment(), gs=Segment(),
            rdx=0x600,  # processor signature: family 6
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Exits


class ExitReason(enum.Enum):
    """Why control left guest code for emu's Python (kvm_run.exit_reason; on tcg: a hook)."""

    IO = "io"  # port IN/OUT (KVM_EXIT_IO; tcg: UC_HOOK_INSN IN/OUT)
    MMIO = "mmio"  # access outside RAM (KVM_EXIT_MMIO; tcg: mmio_map callback)
    HLT = "hlt"  # KVM_EXIT_HLT; tcg: emu_start returned at hlt
    IRQ_WINDOW = "irq_window"  # KVM_EXIT_IRQ_WINDOW_OPEN; tcg: polled
    KICK = "kick"  # the host interrupted the vCPU (signal/EINTR; tcg: emu_stop)
    SHUTDOWN = "shutdown"  # triple fault (KVM_EXIT_SHUTDOWN)
    INTERNAL_ERROR = "internal_error"  # KVM_EXIT_INTERNAL_ERROR; tcg: Unicorn error
    EXCEPTION = "exception"  # tcg: a guest exception emu delivered through the IDT/IVT
    INTERRUPT = "interrupt"  # an external interrupt injected from the PIC
    CPUID = "cpuid"  # tcg: cpuid answered by emu's CPU model
    SYSCALL = "syscall"  # tcg: syscall/sysenter performed by emu
    MSR = "msr"  # rdmsr/wrmsr served by emu (IA32_APIC_BASE; tcg: an SVM intercept, emu.tcg.intercepts)
    TPR = "tpr"  # CR8, the local APIC's task priority, read or written (tcg: intercepted; kvm: KVM_EXIT_SET_TPR)
    DEBUG = "debug"  # single-step or breakpoint (KVM_EXIT_DEBUG)


@dataclass(frozen=True)
class HaltExit:
    """The guest executed `hlt`; the machine sleeps until an interrupt is due."""


@dataclass(frozen=True)
class KickExit:
    """Another thread (timer, input, debug-exit) asked the vCPU to return."""


@dataclass(frozen=True)
class InterruptWindowExit:
    """The guest can now take an external interrupt (IF=1, no interrupt shadow)."""


@dataclass(frozen=True)
class ShutdownExit:
    """The CPU shut down (triple fault): `reason` says why, in one line."""

    reason: str


@dataclass(frozen=True)
class InternalErrorExit:
    """The backend could not continue (KVM emulation failure, Unicorn error)."""

    detail: str


@dataclass(frozen=True)
class DebugExit:
    """A single-step or breakpoint event at `rip`."""

    rip: int


@dataclass(frozen=True)
class IoExit:
    """A port access, as the exit that served it saw it (for traces and teaching)."""

    port: int
    size: int
    is_write: bool
    value: int


@dataclass(frozen=True)
class MmioExit:
    """A guest-physical access outside RAM, as the exit that served it saw it."""

    address: int
    size: int
    is_write: bool
    value: int


VcpuExit = HaltExit | KickExit | InterruptWindowExit | ShutdownExit | InternalErrorExit | DebugExit


@dataclass
class ExitStats:
    """Exits counted by reason with the host time spent serving them, plus time accounting.

    guest_ns: time the CPU ran guest code (inside emu_start / KVM_RUN, minus hooks on tcg);
    handler_ns: time emu's Python spent serving exits; idle_ns: time asleep in `hlt`.
    """

    counts: dict[ExitReason, int] = field(default_factory=lambda: {r: 0 for r in ExitReason})
    times_ns: dict[ExitReason, int] = field(default_factory=lambda: {r: 0 for r in ExitReason})
    guest_ns: int = 0
    idle_ns: int = 0
    instructions: int | None = None  # known on tcg only
    # While guest code runs: (guest_ns before this run, monotonic ns at its start), one tuple so
    # that another thread reads both at once (emu.liveview.sampler); None between runs.
    running: tuple[int, int] | None = None

    def count(self, reason: ExitReason, elapsed_ns: int = 0) -> None:
        self.counts[reason] += 1
        self.times_ns[reason] += elapsed_ns

    @property
    def handler_ns(self) -> int:
        return sum(self.times_ns.values())


# ---------------------------------------------------------------------------------------------
# The two sides of the interface


class LocalApicRegisters(Protocol):
    """What a vCPU reaches of its local APIC without MMIO (emu.devices.lapic.LocalApic)."""

    @property
    def cr8(self) -> int: ...
    def write_cr8(self, value: int) -> None: ...
    def read_base_msr(self) -> int: ...
    def write_base_msr(self, value: int) -> None: ...


class IoHandler(Protocol):
    """What a vCPU may call to serve an exit: the machine's buses (emu.devices.bus)."""

    def port_read(self, port: int, size: int) -> int: ...
    def port_write(self, port: int, size: int, value: int) -> None: ...
    def mmio_read(self, address: int, size: int) -> int: ...
    def mmio_write(self, address: int, size: int, value: int) -> None: ...


@dataclass(frozen=True)
class MemoryRegion:
    """A range of guest-physical address space backed by host memory (a KVM memory slot)."""

    guest_address: int
    size: int
    host_address: int  # address of the host mapping (ctypes) that backs it
    readonly: bool = False
    name: str = "ram"


@dataclass
class DirtyLogStats:
    """What a dirty log saw: the guest's writes to RAM, per 4 KiB page, since logging began.

    `pages` counts distinct pages. A log is read and cleared in rounds (KVM_GET_DIRTY_LOG), and
    `reported_pages` sums what the rounds returned: a page written in two rounds counts twice,
    as a pre-copy live migration would send it twice. Its rate is the guest's dirty rate.
    """

    pages: int = 0
    reported_pages: int = 0
    reads: int = 0
    seconds: float = 0.0

    @property
    def pages_per_second(self) -> float:
        return self.reported_pages / self.seconds if self.seconds > 0 else 0.0


class VCpu(ABC):
    """One virtual CPU. Not thread-safe except `kick()`."""

    stats: ExitStats

    @abstractmethod
    def run(self) -> VcpuExit:
        """Run guest code until an event the machine must handle."""

    @abstractmethod
    def get_state(self, msrs: bool = True) -> CpuState:
        """The vCPU's state; `msrs=False` leaves CpuState.msrs empty (cheaper: the lockstep
        comparison reads state after every instruction and compares MSRs only when asked)."""

    @abstractmethod
    def set_state(self, state: CpuState) -> None: ...

    def reset(self, state: CpuState) -> None:
        """A system reset: the vCPU as after power-on, then in `state` (the guest's first state)."""
        self.set_state(state)

    @abstractmethod
    def interrupts_allowed(self) -> bool:
        """True when an external interrupt can be delivered now (IF=1, no shadow)."""

    @abstractmethod
    def inject_interrupt(self, vector: int) -> None:
        """Deliver an external interrupt with `vector` before the next guest instruction."""

    @abstractmethod
    def request_interrupt_window(self, on: bool) -> None:
        """Ask run() to return InterruptWindowExit as soon as an interrupt can be taken."""

    @abstractmethod
    def kick(self) -> None:
        """Make a running (or the next) run() return KickExit soon. Safe from any thread."""

    #: True when the vCPU stops itself at the deadline given to set_deadline(), exactly at an
    #: instruction boundary, so the machine need not kick it from another thread for timers.
    preempts_itself: bool = False

    def set_deadline(self, deadline_ns: int | None) -> None:  # noqa: B027 - optional
        """Return KickExit from run() once monotonic time reaches `deadline_ns`."""

    def attach_apic(self, apic: LocalApicRegisters) -> None:  # noqa: B027 - optional
        """Give this vCPU its local APIC in emu (the userspace irqchip): the IA32_APIC_BASE MSR
        and CR8 (= TPR[7:4]) are the APIC's, so the vCPU hands their reads and writes to it."""

    def step(self, count: int = 1) -> VcpuExit:
        """Execute one instruction (or `count`, where the backend can: tcg) (serving its port IO and MMIO) and return DebugExit after it;
        or the exit that ended it otherwise (halt, shutdown, internal error). An exception it
        raises is delivered through the guest's IDT/IVT before this returns. The instruction
        tracer and the lockstep comparison (emu.difftest) are built on it."""
        raise NotImplementedError(f"{type(self).__name__} cannot single-step")

    def debug_step(self) -> VcpuExit:
        """A debugger's single step (emu.gdb): step(1), or HaltExit after a `hlt`, with RIP past
        it and the guest now halted (the machine waits for an interrupt before it runs on)."""
        return self.step(1)

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """A debugger's breakpoints (emu.gdb), by linear address: run() returns DebugExit with
        RIP at the first of them reached, before that instruction executes. step() ignores
        them, so a debugger steps over the breakpoint it stopped at. Replaces the previous set;
        EmuError when the backend cannot hold that many (kvm: the 4 debug registers)."""
        raise EmuError(f"{type(self).__name__} has no breakpoints")

    def close(self) -> None:  # noqa: B027 - optional
        """Release host resources."""


@dataclass(frozen=True)
class IoEventFd:
    """A guest write that the accelerator turns into an eventfd signal itself, without an exit
    to emu (KVM_IOEVENTFD): `length` bytes (0: any) at `address`, only the value `datamatch`
    if given, in port space if `pio`."""

    address: int
    length: int
    fd: int
    datamatch: int | None = None
    pio: bool = False


class Accelerator(ABC):
    """A way to run guest instructions: 'tcg' (Unicorn) or 'kvm' (/dev/kvm)."""

    name: str

    @abstractmethod
    def add_memory_region(self, region: MemoryRegion) -> None:
        """Map host memory into guest-physical space (before vCPUs run)."""

    @abstractmethod
    def create_vcpu(self, index: int, io: IoHandler) -> VCpu: ...

    def notify_host_write(self, guest_address: int, size: int) -> None:  # noqa: B027
        """The host wrote guest RAM (loader, DMA): drop anything cached from that range."""

    def create_irqchip(self):  # -> emu.kvm_accel.irqchip.KernelIrqChip
        """Move the interrupt controllers into the accelerator (--irqchip kernel)."""
        raise EmuError(f"--irqchip kernel is a kvm feature (KVM_CREATE_IRQCHIP); --accel {self.name} "
                       "has emu's own PIC only")  # fmt: skip

    def add_ioeventfd(self, event: IoEventFd) -> bool:
        """Signal `event.fd` on that guest write without an exit; False if this accelerator
        cannot (tcg: the write reaches emu's IO hook, which signals the eventfd itself)."""
        return False

    def remove_ioeventfd(self, event: IoEventFd) -> None:  # noqa: B027
        """Undo add_ioeventfd (the BAR moved, or the machine is shutting down)."""

    def enable_dirty_log(self) -> None:
        """Start logging which RAM pages the guest writes (--dirty-log)."""
        raise EmuError(f"--dirty-log is a kvm feature (KVM_GET_DIRTY_LOG); --accel {self.name} does not log dirty pages")

    def sync_dirty_log(self, final: bool = False) -> None:  # noqa: B027
        """Collect the dirty log if logging is on and a round is due (always when `final`)."""

    def dirty_log_stats(self) -> DirtyLogStats | None:
        """What the dirty log saw so far, or None when logging is off."""
        return None

    def mmu_report(self) -> dict[str, object] | None:
        """How guest addresses are translated, for --stats (`mmu`); None if there is nothing to say."""
        return None

    def close(self) -> None:  # noqa: B027
        """Release host resources."""


def monotonic_ns() -> int:
    return time.monotonic_ns()
