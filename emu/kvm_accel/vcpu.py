"""One KVM vCPU: the KVM_RUN loop, state transfer, interrupt injection and kicks.

The run loop (Documentation/virt/kvm/api.rst §4.10 "KVM_RUN" and §5 "The kvm_run structure")
enters the guest with `ioctl(vcpu_fd, KVM_RUN, 0)` and reads `kvm_run.exit_reason` from the
page shared with the kernel. Port IO and MMIO are served here, synchronously, through the
machine's `IoHandler`, and the loop re-enters the guest: the kernel completes the instruction
(writes an IN's data to RAX, advances RIP, updates RSI/RDI/RCX for string IO) on that next
`KVM_RUN`. Everything the machine must decide on is returned as a `VcpuExit`.

Kicking (api.rst §5, `immediate_exit`; the scheme QEMU's `kvm_cpu_kick` and Firecracker's
`kick` use): another thread sets `kvm_run.immediate_exit = 1` and, if this vCPU's thread is
inside `KVM_RUN`, sends it `KICK_SIGNAL` with `pthread_kill`. A signal with a handler makes
`KVM_RUN` return EINTR (`KVM_EXIT_INTR`); `immediate_exit` covers the window where the signal
lands just before the ioctl is entered, since KVM checks it on entry. KVM returns -EINTR, not
-ERESTARTSYS, so SA_RESTART would not matter; Python's `signal.signal` installs handlers
interruptible anyway (it implies `signal.siginterrupt(sig, True)`). The handler is a no-op:
the C-level handler CPython installs is what matters, and it runs in whichever thread got the
signal. Re-entering `KVM_RUN` after an IO exit with `immediate_exit` set completes the pending
IO without running another guest instruction and returns EINTR, so a kick that arrives while
an exit is being served still leaves the guest state consistent for `get_state()`.

Interrupts use KVM's userspace-irqchip protocol (api.rst §4.16 KVM_INTERRUPT, §5
`request_interrupt_window`, `ready_for_interrupt_injection`, `if_flag`): no in-kernel PIC or
LAPIC, so `hlt` exits to userspace (`KVM_EXIT_HLT`) and emu's local APIC (with the PIC behind it)
decides what to inject. Its MMIO page has no memory slot, so every access is a KVM_EXIT_MMIO.
Two pieces of APIC state live in the vCPU, and `kvm_run` carries them both ways (§5, `cr8`
and `apic_base`): KVM loads CR8 from `kvm_run.cr8` on every KVM_RUN and reports CR8 and
IA32_APIC_BASE there at every exit, so emu copies its TPR in before each entry and takes the
guest's `mov cr8` / `wrmsr` after each exit. A guest that lowers CR8 exits with
KVM_EXIT_SET_TPR, since an interrupt may now be deliverable (QEMU's kvm_arch_pre_run and
kvm_arch_post_run do the same).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import struct
import threading
import time
import warnings
from collections.abc import Iterable
from ctypes import byref
from typing import TYPE_CHECKING

from ..accel import (
    CR0_PG,
    EFER_LMA,
    EFER_LME,
    RFLAGS_IF,
    STATE_MSRS,
    CpuState,
    DebugExit,
    DescriptorTable,
    ExitReason,
    ExitStats,
    HaltExit,
    InternalErrorExit,
    InterruptWindowExit,
    IoHandler,
    KickExit,
    LocalApicRegisters,
    Segment,
    ShutdownExit,
    VCpu,
    VcpuExit,
)
from ..errors import EmuError
from . import api
from .api import KvmError, ioctl

if TYPE_CHECKING:
    from .vm import CpuidEntry, KvmAccelerator

KICK_SIGNAL = signal.SIGUSR1  # QEMU's SIG_IPI is SIGUSR1 too
DB_VECTOR = 1
DR7_DEFAULT = 0x600  # GE, and bit 10, which always reads 1
_DR_ENABLE = tuple(2 << (2 * slot) for slot in range(4))  # G0-G3
DR6_EVENTS = 0x600F  # B0-B3, BD, BS
PAGE_SIZE = 4096
MAX_INSN_LENGTH = 15  # SDM vol. 2A §2.3.11

# kvm_run's exit union, decoded with struct on the hot path (one call instead of a ctypes view
# per field): io = direction, size, port, count, data_offset; mmio = phys_addr, data, len,
# is_write. The offsets come from the ctypes layout in api.py.
_EXIT_UNION_OFFSET = api.kvm_run.exit.offset  # 32
_IO_EXIT = struct.Struct("<BBHIQ")
_MMIO_EXIT = struct.Struct("<Q8sIB")
_MMIO_DATA_OFFSET = _EXIT_UNION_OFFSET + api.kvm_run_mmio.data.offset  # 40


def _on_kick_signal(signum: int, frame: object) -> None:
    """Nothing to do: delivering the signal is what makes KVM_RUN return EINTR."""


def install_kick_signal_handler() -> int | None:
    """Give KICK_SIGNAL a (no-op) handler so it interrupts KVM_RUN instead of killing us.

    Returns the signal, or None when no handler could be installed (not on the main thread and
    none there yet): kicks then rely on `immediate_exit` alone and take effect at the next exit.
    """
    current = signal.getsignal(KICK_SIGNAL)
    if callable(current):  # ours, or the machine's own Python handler: either interrupts
        return KICK_SIGNAL
    if threading.current_thread() is not threading.main_thread():
        warnings.warn(
            f"kvm: {signal.Signals(KICK_SIGNAL).name} has no handler and one can only be installed "
            "from the main thread; kicks will wait for the vCPU's next exit",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    signal.signal(KICK_SIGNAL, _on_kick_signal)
    return KICK_SIGNAL


_SEGMENTS: dict[bytes, Segment] = {}  # kvm_segment bytes -> Segment (immutable, so shared)


def segment_from_kvm(seg: api.kvm_segment) -> Segment:
    key = bytes(seg)
    found = _SEGMENTS.get(key)
    if found is None:
        if len(_SEGMENTS) > 4096:
            _SEGMENTS.clear()
        found = _SEGMENTS[key] = _build_segment(seg)
    return found


def _build_segment(seg: api.kvm_segment) -> Segment:
    return Segment(
        selector=seg.selector, base=seg.base, limit=seg.limit, type=seg.type, s=seg.s, dpl=seg.dpl,
        present=seg.present, avl=seg.avl, l=seg.l, db=seg.db, g=seg.g, unusable=seg.unusable,
    )  # fmt: skip


def segment_to_kvm(seg: Segment, out: api.kvm_segment) -> None:
    out.selector, out.base, out.limit = seg.selector, seg.base, seg.limit
    out.type, out.s, out.dpl, out.present = seg.type, seg.s, seg.dpl, seg.present
    out.avl, out.l, out.db, out.g, out.unusable = seg.avl, seg.l, seg.db, seg.g, seg.unusable


_SREG_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "ldt", "tr")
_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")  # fmt: skip
_CHECKED_SREGS = ("cr0", "cr3", "cr4", "efer")


class KvmVCpu(VCpu):
    """A KVM vCPU fd and its mmap'ed `kvm_run`. Only `kick()` may be called from other threads."""

    def __init__(self, vm: KvmAccelerator, index: int, fd: int, io: IoHandler) -> None:
        self.vm = vm
        self.index = index
        self.fd = fd
        self.io = io
        self.stats = ExitStats()
        self._run_mmap = mmap.mmap(fd, vm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._run = api.kvm_run.from_buffer(self._run_mmap)
        self._exit_reason = ctypes.c_uint32.from_buffer(self._run_mmap, api.kvm_run.exit_reason.offset)
        self._kick_lock = threading.Lock()
        self._kick_requested = False
        self._in_kvm_run = False
        self._thread_ident: int | None = None
        # Interrupt bookkeeping: kvm_run's ready/if_flag describe the state at the last exit;
        # they are stale before the first run, after set_state() and after an injection.
        self._exit_flags_valid = False
        self._injected = False
        self._stepping = False  # inside step()
        self._user_single_step = False  # set_single_step(True): every run() steps
        self._breakpoints: tuple[int, ...] = ()  # a debugger's, in DR0-DR3 (set_breakpoints)
        self._guest_debug: tuple[bool, tuple[int, ...]] = (False, ())  # what KVM was last told
        self.apic: LocalApicRegisters | None = None  # emu's local APIC (attach_apic)
        self._apic_base_seen = 0

    def attach_apic(self, apic: LocalApicRegisters) -> None:
        """KVM keeps IA32_APIC_BASE in `sregs.apic_base` even with no in-kernel APIC: start it
        at the APIC's value; CR8 follows the APIC through kvm_run (see the module doc)."""
        self.apic = apic
        sregs = self._get_sregs()
        sregs.apic_base = self._apic_base_seen = apic.read_base_msr()
        ioctl(self.fd, api.KVM_SET_SREGS, byref(sregs), "apic_base")
        self._run.cr8 = apic.cr8

    # --- the run loop ---------------------------------------------------------------------

    def run(self) -> VcpuExit:
        run, mm, fd, io, stats = self._run, self._run_mmap, self.fd, self.io, self.stats
        exit_reason = self._exit_reason
        libc_ioctl, clock = api.libc_ioctl, time.monotonic_ns
        self._thread_ident = threading.get_ident()
        apic = self.apic
        debug = (True, ()) if self._stepping else (self._user_single_step, self._breakpoints)
        if self._guest_debug != debug:  # a step() after runs with breakpoints, or the other way
            self._set_guest_debug(*debug)
        while True:
            if apic is not None:
                run.cr8 = apic.cr8
            self._in_kvm_run = True
            start = clock()
            stats.running = (stats.guest_ns, start)
            result = libc_ioctl(fd, api.KVM_RUN, None)
            entered = clock()
            self._in_kvm_run = False
            stats.guest_ns += entered - start
            stats.running = None
            self._exit_flags_valid, self._injected = True, False
            if apic is not None:
                self._sync_apic(apic)
            if result < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:  # a signal (kick() or another), or immediate_exit
                    return self._kick_exit(entered)
                raise KvmError("KVM_RUN", err, f"vCPU {self.index}")
            reason = exit_reason.value
            if reason == api.KVM_EXIT_IO:
                self._serve_io(mm, io)
                stats.count(ExitReason.IO, clock() - entered)
            elif reason == api.KVM_EXIT_MMIO:
                self._serve_mmio(mm, io)
                stats.count(ExitReason.MMIO, clock() - entered)
            elif reason == api.KVM_EXIT_HLT:
                stats.count(ExitReason.HLT)
                return HaltExit()
            elif reason == api.KVM_EXIT_IRQ_WINDOW_OPEN:
                stats.count(ExitReason.IRQ_WINDOW)
                return InterruptWindowExit()
            elif reason == api.KVM_EXIT_INTR:  # KVM pairs it with EINTR; accept it alone as well
                return self._kick_exit(entered)
            elif reason == api.KVM_EXIT_SET_TPR:  # CR8 lowered: an interrupt may be deliverable now
                stats.count(ExitReason.TPR, clock() - entered)
                return KickExit()
            elif reason == api.KVM_EXIT_SHUTDOWN:
                stats.count(ExitReason.SHUTDOWN)
                return ShutdownExit(f"triple fault at RIP={self._rip_text()} (KVM_EXIT_SHUTDOWN)")
            elif reason == api.KVM_EXIT_DEBUG:
                if self._guest_debug[0] or self._breakpoint_hit(run.debug.arch):
                    stats.count(ExitReason.DEBUG)
                    return DebugExit(rip=run.debug.arch.pc)
                self._reinject_debug(run.debug.arch)  # the guest's own #DB (its TF, its DRs)
            else:
                stats.count(ExitReason.INTERNAL_ERROR)
                return InternalErrorExit(self._describe_failure(reason))
            # An IO/MMIO exit was served. If kick() ran meanwhile, immediate_exit is 1: this
            # KVM_RUN completes the instruction and returns EINTR without running the guest.

    def _sync_apic(self, apic: LocalApicRegisters) -> None:
        """After an exit: the guest's `mov cr8` and `wrmsr IA32_APIC_BASE` reach emu's APIC."""
        run = self._run
        if run.cr8 != apic.cr8:
            apic.write_cr8(run.cr8)
        if run.apic_base != self._apic_base_seen:  # a wrmsr KVM served in the kernel
            apic.write_base_msr(run.apic_base)
            self._apic_base_seen = apic.read_base_msr()
            if self._apic_base_seen != run.apic_base:  # refused (a move): the guest reads emu's value
                sregs = self._get_sregs()
                sregs.apic_base = self._apic_base_seen
                ioctl(self.fd, api.KVM_SET_SREGS, byref(sregs), "apic_base")

    def _kick_exit(self, now: int) -> KickExit:
        with self._kick_lock:
            self._kick_requested = False
            self._run.immediate_exit = 0
        self.stats.count(ExitReason.KICK, time.monotonic_ns() - now)
        return KickExit()

    def _serve_io(self, mm: mmap.mmap, io: IoHandler) -> None:
        direction, size, port, count, offset = _IO_EXIT.unpack_from(mm, _EXIT_UNION_OFFSET)
        if direction == api.KVM_EXIT_IO_OUT:
            for i in range(offset, offset + size * count, size):
                io.port_write(port, size, int.from_bytes(mm[i : i + size], "little"))
        else:
            mask = (1 << (8 * size)) - 1
            for i in range(offset, offset + size * count, size):
                mm[i : i + size] = (io.port_read(port, size) & mask).to_bytes(size, "little")

    def _serve_mmio(self, mm: mmap.mmap, io: IoHandler) -> None:
        address, data, length, is_write = _MMIO_EXIT.unpack_from(mm, _EXIT_UNION_OFFSET)
        if is_write:
            io.mmio_write(address, length, int.from_bytes(data[:length], "little"))
        else:
            value = io.mmio_read(address, length) & ((1 << (8 * length)) - 1)
            mm[_MMIO_DATA_OFFSET : _MMIO_DATA_OFFSET + length] = value.to_bytes(length, "little")

    # --- kicks (any thread) ---------------------------------------------------------------

    def kick(self) -> None:
        with self._kick_lock:
            if self.fd < 0:
                return
            self._kick_requested = True
            self._run.immediate_exit = 1
            ident = self._thread_ident
            if self._in_kvm_run and ident is not None and self.vm.kick_signal is not None:
                try:
                    signal.pthread_kill(ident, self.vm.kick_signal)
                except ProcessLookupError:  # the vCPU thread has ended
                    pass

    @property
    def kick_pending(self) -> bool:
        return self._kick_requested

    # --- interrupts -----------------------------------------------------------------------

    def interrupts_allowed(self) -> bool:
        if self._injected:  # KVM_INTERRUPT holds one vector until the next KVM_RUN delivers it
            return False
        if self._exit_flags_valid:
            return bool(self._run.ready_for_interrupt_injection and self._run.if_flag)
        return bool(self._get_regs().rflags & RFLAGS_IF)  # no exit yet: assume no shadow

    def inject_interrupt(self, vector: int) -> None:
        request = api.kvm_interrupt(irq=vector)
        ioctl(self.fd, api.KVM_INTERRUPT, byref(request), f"vector {vector:#x}")
        self._injected = True
        self.stats.count(ExitReason.INTERRUPT)

    def raise_exception(self, vector: int, error_code: int | None = None, dr6_bits: int = 0) -> None:
        """Make the next KVM_RUN deliver exception `vector` (KVM_SET_VCPU_EVENTS), with `dr6_bits`
        set in DR6 first for a #DB (KVM_SET_DEBUGREGS). Differential testing gives the guest the
        #DB of its own RFLAGS.TF with it: under KVM_GUESTDBG_SINGLESTEP, KVM reports it to us."""
        if dr6_bits:
            regs = api.kvm_debugregs()
            ioctl(self.fd, api.KVM_GET_DEBUGREGS, byref(regs))
            regs.dr6 |= dr6_bits
            regs.flags = 0
            ioctl(self.fd, api.KVM_SET_DEBUGREGS, byref(regs))
        events = api.kvm_vcpu_events()
        ioctl(self.fd, api.KVM_GET_VCPU_EVENTS, byref(events))
        events.exception_injected, events.exception_nr = 1, vector
        events.exception_has_error_code = int(error_code is not None)
        events.exception_error_code = error_code or 0
        events.flags = 0  # only the exception, interrupt and NMI parts are set
        ioctl(self.fd, api.KVM_SET_VCPU_EVENTS, byref(events), f"exception {vector}")
        self.stats.count(ExitReason.EXCEPTION)

    def request_interrupt_window(self, on: bool) -> None:
        """Stays requested until turned off: every KVM_RUN then stops once IF=1 and no shadow."""
        self._run.request_interrupt_window = 1 if on else 0

    # --- state ----------------------------------------------------------------------------

    def halted_for_good(self) -> bool:
        """In-kernel irqchip: the guest sleeps in KVM after `hlt` with IF=0 (KVM_GET_MP_STATE),
        where no interrupt can wake it; with emu's PIC that is a halt exit instead."""
        state = api.kvm_mp_state()
        ioctl(self.fd, api.KVM_GET_MP_STATE, byref(state))
        return state.mp_state == api.KVM_MP_STATE_HALTED and not self._get_regs().rflags & RFLAGS_IF

    def _get_regs(self) -> api.kvm_regs:
        regs = api.kvm_regs()
        ioctl(self.fd, api.KVM_GET_REGS, byref(regs))
        return regs

    def _get_sregs(self) -> api.kvm_sregs:
        sregs = api.kvm_sregs()
        ioctl(self.fd, api.KVM_GET_SREGS, byref(sregs))
        return sregs

    def get_state(self, msrs: bool = True) -> CpuState:
        regs, sregs = self._get_regs(), self._get_sregs()
        values: dict[str, object] = {name: getattr(regs, name) for name in _REGS}
        for name in _SREG_SEGMENTS:
            values[name] = segment_from_kvm(getattr(sregs, name))
        values["gdt"] = DescriptorTable(sregs.gdt.base, sregs.gdt.limit)
        values["idt"] = DescriptorTable(sregs.idt.base, sregs.idt.limit)
        values.update(cr0=sregs.cr0, cr2=sregs.cr2, cr3=sregs.cr3, cr4=sregs.cr4, cr8=sregs.cr8, efer=sregs.efer)
        values["msrs"] = self.get_msrs(STATE_MSRS) if msrs else {}
        return CpuState.assemble(values)

    def set_state(self, state: CpuState) -> None:
        regs = api.kvm_regs(**{name: getattr(state, name) & 0xFFFFFFFFFFFFFFFF for name in _REGS})
        ioctl(self.fd, api.KVM_SET_REGS, byref(regs))
        # Read-modify-write keeps what CpuState does not carry: apic_base, a pending interrupt.
        sregs = self._get_sregs()
        for name in _SREG_SEGMENTS:
            segment_to_kvm(getattr(state, name), getattr(sregs, name))
        sregs.gdt.base, sregs.gdt.limit = state.gdt.base, state.gdt.limit
        sregs.idt.base, sregs.idt.limit = state.idt.base, state.idt.limit
        sregs.cr0, sregs.cr2, sregs.cr3, sregs.cr4 = state.cr0, state.cr2, state.cr3, state.cr4
        sregs.cr8, sregs.efer = state.cr8, state.efer
        ioctl(self.fd, api.KVM_SET_SREGS, byref(sregs), f"CR0={state.cr0:#x} CR4={state.cr4:#x} EFER={state.efer:#x}")
        self._check_sregs(sregs, self._get_sregs())
        if state.msrs:
            self.set_msrs(state.msrs)
        self._exit_flags_valid = False

    @staticmethod
    def _check_sregs(wanted: api.kvm_sregs, got: api.kvm_sregs) -> None:
        """KVM_SET_SREGS may succeed and still drop bits (this host drops CR0.PG without LME)."""
        if wanted.cr0 & CR0_PG and not got.cr0 & CR0_PG and not wanted.efer & EFER_LME:
            raise EmuError("this host's KVM cannot run 32-bit paging (CR0.PG dropped by KVM_SET_SREGS)")
        for name in _CHECKED_SREGS:
            want, have = getattr(wanted, name), getattr(got, name)
            if name == "efer":  # KVM owns LMA when LME and PG are both set
                want, have = want & ~EFER_LMA, have & ~EFER_LMA
            if want != have:
                raise EmuError(f"this host's KVM changed {name.upper()} from {want:#x} to {have:#x} (KVM_SET_SREGS)")

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS; MSRs this host's KVM does not know are left out of the result."""
        pending, values = list(indices), {}
        while pending:
            request = api.msr_list(len(pending))()
            request.nmsrs = len(pending)
            for entry, index in zip(request.entries, pending):
                entry.index = index
            count = ioctl(self.fd, api.KVM_GET_MSRS, byref(request))
            values.update((e.index, e.data) for e in request.entries[:count])
            pending = pending[count + 1 :]  # the kernel stops at the first MSR it cannot read
        return values

    def set_msrs(self, msrs: dict[int, int]) -> None:
        request = api.msr_list(len(msrs))()
        request.nmsrs = len(msrs)
        for entry, (index, value) in zip(request.entries, msrs.items()):
            entry.index, entry.data = index, value & 0xFFFFFFFFFFFFFFFF
        count = ioctl(self.fd, api.KVM_SET_MSRS, byref(request))
        if count < len(msrs):
            bad = request.entries[count]
            raise EmuError(f"this host's KVM refused MSR {bad.index:#x} = {bad.data:#x} (KVM_SET_MSRS)")

    def set_cpuid(self, entries: list[CpuidEntry]) -> None:
        """KVM_SET_CPUID2 (api.rst §4.71): must happen before the first KVM_RUN."""
        table = api.cpuid_list(len(entries))()
        table.nent = len(entries)
        for out, e in zip(table.entries, entries):
            out.function, out.index, out.flags = e.function, e.index, e.flags
            out.eax, out.ebx, out.ecx, out.edx = e.eax, e.ebx, e.ecx, e.edx
        ioctl(self.fd, api.KVM_SET_CPUID2, byref(table), f"{len(entries)} entries")

    def step(self, count: int = 1) -> VcpuExit:  # noqa: ARG002 - KVM steps one at a time
        """One instruction under KVM_GUESTDBG_SINGLESTEP (the host sets TF for the guest and
        catches the #DB it raises; on this project's kvm_pvm hosts that works for CPL0 code).
        A debugger's breakpoints are off meanwhile, so the step executes the instruction at
        one; the next run() turns them on again."""
        self._stepping = True
        try:
            return self.run()
        finally:
            self._stepping = False

    def debug_step(self) -> VcpuExit:
        """A debugger's step: step(), except for `hlt`, which kvm_pvm single-steps as if it
        were a `nop` and then reports as a stale KVM_EXIT_HLT at some later instruction (seen
        inside the next interrupt's handler, with IF=0, which ended the run). So emu executes
        the hlt itself: RIP past it, the interrupt shadow of an `sti` just before it over (the
        hlt was the instruction it covered), and HaltExit, as tcg returns for a hlt."""
        regs, sregs = self._get_regs(), self._get_sregs()
        wide = sregs.efer & EFER_LMA and sregs.cs.l
        linear = (sregs.cs.base + regs.rip) & ((1 << 64) - 1 if wide else 0xFFFFFFFF)
        if self.read_linear(linear, 1) != b"\xf4":
            return self.step()
        regs.rip = (regs.rip + 1) & ((1 << 64) - 1 if wide or sregs.cs.db else 0xFFFF)
        ioctl(self.fd, api.KVM_SET_REGS, byref(regs))
        events = api.kvm_vcpu_events()
        ioctl(self.fd, api.KVM_GET_VCPU_EVENTS, byref(events))
        events.interrupt_shadow, events.flags = 0, api.KVM_VCPUEVENT_VALID_SHADOW
        ioctl(self.fd, api.KVM_SET_VCPU_EVENTS, byref(events), "interrupt shadow")
        self._exit_flags_valid = False
        self.stats.count(ExitReason.HLT)
        return HaltExit()

    def set_single_step(self, on: bool) -> None:
        """KVM_SET_GUEST_DEBUG with SINGLESTEP: run() returns DebugExit after each instruction."""
        self._user_single_step = on
        self._set_guest_debug(on, self._breakpoints)

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """Up to four, in DR0-DR3 (see the module doc): more is an EmuError, as is a host that
        refuses them."""
        if len(addresses) > len(_DR_ENABLE):
            raise EmuError(f"kvm: at most {len(_DR_ENABLE)} breakpoints (emu sets them in the debug registers "
                           "DR0-DR3: KVM_GUESTDBG_USE_HW_BP)")  # fmt: skip
        wanted = tuple(sorted(addresses))
        try:
            self._set_guest_debug(self._guest_debug[0], wanted)
        except KvmError as error:
            raise EmuError(f"kvm: this host refused breakpoints in the debug registers: {error}") from None
        self._breakpoints = wanted

    def _set_guest_debug(self, single_step: bool, breakpoints: tuple[int, ...]) -> None:
        """KVM_SET_GUEST_DEBUG; DR7 as QEMU's kvm_arch_update_guest_debug sets it: GE and the
        always-one bit 10 (0x600), then G0-G3 with R/W and LEN 00 (instruction breakpoints)."""
        debug = api.kvm_guest_debug()
        if single_step or breakpoints:
            debug.control = api.KVM_GUESTDBG_ENABLE | (api.KVM_GUESTDBG_SINGLESTEP if single_step else 0)
        if breakpoints:
            debug.control |= api.KVM_GUESTDBG_USE_HW_BP
            debug.arch.debugreg[7] = DR7_DEFAULT
            for slot, address in enumerate(breakpoints):
                debug.arch.debugreg[slot] = address
                debug.arch.debugreg[7] |= _DR_ENABLE[slot]
        ioctl(self.fd, api.KVM_SET_GUEST_DEBUG, byref(debug))
        self._guest_debug = (single_step, breakpoints)

    def _breakpoint_hit(self, arch: api.kvm_debug_exit_arch) -> bool:
        """A #DB whose DR6 names one of the debugger's slots (B0-B3)."""
        return arch.exception == DB_VECTOR and bool(arch.dr6 & ((1 << len(self._guest_debug[1])) - 1))

    def _reinject_debug(self, arch: api.kvm_debug_exit_arch) -> None:
        """While KVM intercepts #DB and #BP for the debugger it reports the guest's own to us:
        give them back to the guest (QEMU's kvm_handle_debug does the same)."""
        if arch.exception == DB_VECTOR:
            self.raise_exception(DB_VECTOR, dr6_bits=arch.dr6 & DR6_EVENTS)
        else:
            self.raise_exception(arch.exception)

    # --- guest memory through the vCPU's translation --------------------------------------

    def translate(self, linear: int) -> int | None:
        """KVM_TRANSLATE (api.rst §4.15): linear -> guest-physical under the current paging."""
        request = api.kvm_translation(linear_address=linear)
        ioctl(self.fd, api.KVM_TRANSLATE, byref(request), f"linear {linear:#x}")
        return request.physical_address if request.valid else None

    def read_linear(self, linear: int, length: int) -> bytes:
        """Guest memory at a linear address, page by page; shorter where unmapped or not RAM."""
        out = b""
        while length > 0:
            physical = self.translate(linear)
            if physical is None:
                break
            n = min(length, PAGE_SIZE - (linear & (PAGE_SIZE - 1)))
            chunk = self.vm.read_guest_physical(physical, n)
            out += chunk
            if len(chunk) < n:
                break
            linear, length = linear + n, length - n
        return out

    # --- describing failures --------------------------------------------------------------

    def _code_location(self) -> tuple[CpuState, int]:
        state = self.get_state()
        linear = state.cs.base + state.rip
        return state, linear if state.mode == "long" else linear & 0xFFFFFFFF

    def _rip_text(self) -> str:
        state, linear = self._code_location()
        if state.mode == "long":
            return f"{state.rip:#x}"
        return f"{state.rip:#x} (CS:IP {state.cs.selector:04x}:{state.rip:04x}, linear {linear:#x}, {state.mode} mode)"

    def _describe_failure(self, reason: int) -> str:
        run = self._run
        state, linear = self._code_location()
        where = f"RIP={state.rip:#x} (linear {linear:#x}, CPL{state.cpl}, {state.mode} mode)"
        if reason == api.KVM_EXIT_INTERNAL_ERROR:
            suberror = run.internal.suberror
            name = api.INTERNAL_ERROR_NAMES.get(suberror, f"suberror {suberror}")
            code = b""
            failure = run.emulation_failure
            if (
                suberror == api.KVM_INTERNAL_ERROR_EMULATION
                and failure.ndata >= 3
                and failure.flags & api.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
            ):
                code = bytes(failure.insn_bytes[: min(failure.insn_size, MAX_INSN_LENGTH)])
            if not code:
                code = self.read_linear(linear, MAX_INSN_LENGTH)
            text = f"KVM_EXIT_INTERNAL_ERROR {name} at {where}: instruction bytes {code.hex(' ') or '(unreadable)'}"
            if suberror != api.KVM_INTERNAL_ERROR_EMULATION and run.internal.ndata:
                data = " ".join(f"{word:#x}" for word in run.internal.data[: min(run.internal.ndata, 16)])
                text += f"; data {data}"
            return text
        if reason == api.KVM_EXIT_FAIL_ENTRY:
            reason_code = run.fail_entry.hardware_entry_failure_reason
            return f"KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason_code:#x}) at {where}"
        if reason == api.KVM_EXIT_UNKNOWN:
            return f"KVM_EXIT_UNKNOWN (hardware exit reason {run.hw.hardware_exit_reason:#x}) at {where}"
        name = api.EXIT_REASON_NAMES.get(reason, "an unknown exit reason")
        return f"unhandled {name} ({reason}) at {where}"

    # --- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        with self._kick_lock:
            if self.fd < 0:
                return
            del self._run, self._exit_reason  # ctypes views pin the mmap's buffer
            self._run_mmap.close()
            os.close(self.fd)
            self.fd = -1
