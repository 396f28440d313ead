"""A software vCPU: Unicorn executes guest instructions, emu handles every sensitive event.

Under a hypervisor, a guest's sensitive instructions (IN/OUT, CPUID, HLT, ...) and events
(exceptions, interrupts) leave guest mode as VM exits. On tcg the same boundaries are Unicorn
hooks and returns from `emu_start`, and emu counts them with the same reasons as on kvm:

  IN/OUT                 UC_HOOK_INSN, served synchronously from the hook     -> ExitReason.IO
  access outside RAM     an `mmio_map` callback                                -> MMIO
  CPUID                  UC_HOOK_INSN CPUID, answered from emu.cpuid          -> CPUID
  exception / int n      UC_HOOK_INTR (or UC_ERR_INSN_INVALID for #UD): emu
                         stops Unicorn and vectors through the IDT/IVT        -> EXCEPTION
  SYSCALL / SYSENTER     UC_HOOK_INSN: emu performs the instruction           -> SYSCALL
  RDMSR/WRMSR 0x1B,      an SVM intercept (emu.tcg.intercepts) reported as an
  MOV CR8                exception to UC_HOOK_INTR, served by the local APIC  -> MSR, TPR
  HLT                    emu_start returns with no stop requested             -> HLT
  external interrupt     emu delivers it between runs                         -> INTERRUPT
  debugger breakpoint    a UC_HOOK_CODE hook on that one linear address stops
                         the run before the instruction (set_breakpoints)     -> DEBUG

Paging is Unicorn's own walker (UC_TLB_CPU) for now; emu.mmu's walker serves emu's own accesses.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import time
import weakref
from pathlib import Path

from unicorn import (UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED,
                     UC_ERR_INSN_INVALID, UC_ERR_WRITE_PROT, UC_HOOK_BLOCK, UC_HOOK_CODE, UC_HOOK_INSN, UC_HOOK_INTR,
                     UC_HOOK_MEM_WRITE_PROT, Uc, UcError)  # fmt: skip
from unicorn import x86_const
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import (UC_X86_INS_CPUID, UC_X86_INS_IN, UC_X86_INS_OUT, UC_X86_INS_SYSCALL,
                               UC_X86_INS_SYSENTER, UC_X86_REG_CR0, UC_X86_REG_CR8, UC_X86_REG_EAX, UC_X86_REG_EBX,
                               UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_MSR, UC_X86_REG_RFLAGS,
                               UC_X86_REG_RAX, UC_X86_REG_RDX, UC_X86_REG_RIP)  # fmt: skip

from ..accel import (CR0_PG, EFER_LMA, GPR_NAMES, LocalApicRegisters, MSR_CSTAR, MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_EIP,
                     MSR_IA32_SYSENTER_ESP, MSR_LSTAR, MSR_SFMASK, MSR_STAR, RFLAGS_IF, RFLAGS_RF,
                     STATE_MSRS, CpuState, ExitReason, ExitStats, HaltExit, InternalErrorExit,
                     DebugExit, InterruptWindowExit, IoHandler, KickExit, MemoryRegion, ShutdownExit, VCpu,
                     VcpuExit)  # fmt: skip
from ..cpuid import ARCH_CAPABILITIES, MSR_IA32_ARCH_CAPABILITIES, CpuModel
from ..memory import GuestMemory, GuestMemoryError
from ..mmu.linear import LinearMemory
from ..mmu.walk import PageFault, PagingMode
from . import native
from .context import (HEADER, OFF_ERROR_CODE, OFF_EXCEPTION_IS_INT, OFF_REGS, SavedContext, check_layout)
from .fast_syscall import FastSyscall, GeneralProtection, InvalidOpcode
from .softmmu import PendingFault, SoftMmu
from .interrupts import HAS_ERROR_CODE, Delivery, Event, EventKind, TripleFault, UnsupportedDelivery
from . import intercepts

UNTIL = 0xDEAD_0000_0000_0000  # a non-canonical address no guest executes: run until stopped
MIN_SLICE, MAX_SLICE = 1_000, 50_000_000  # instructions per emu_start while a deadline is pending
LAST_BLOCK_SOURCE = Path(__file__).with_name("last_block.c")
BLOCK_COUNT_SOURCE = Path(__file__).with_name("block_count.c")
BLOCK_COUNT_SLOTS = 1 << 20  # 16 MiB of (address, size, instructions), with --stats only
NO_BLOCK = 0xFFFF_FFFF_FFFF_FFFF  # last_block.c's address before the run executed any block
_ns = time.perf_counter_ns
_GPRS = struct.Struct("<16Q")  # CPUX86State.regs[], in GPR_NAMES order (emu.tcg.context)


# C signatures of Unicorn's IN/OUT instruction hooks (unicorn.h: uc_cb_insn_in_t, uc_cb_insn_out_t).
_IN_HOOK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p)
_OUT_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)
_BLOCK_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
_DECODE_BLOCK = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32)


class _BlockCounter(ctypes.Structure):
    """struct counter of block_count.c."""

    _fields_ = [("instructions", ctypes.c_uint64), ("decoded", ctypes.c_uint64), ("mask", ctypes.c_uint32),
                ("used", ctypes.c_uint32), ("decode", _DECODE_BLOCK), ("slots", ctypes.c_void_p)]  # fmt: skip


class _LastBlock(ctypes.Structure):
    """The head of struct last_block (last_block.c), which lives in C memory: the timer
    thread may still touch it after the vCPU is gone, and frees it itself (lb_free)."""

    _fields_ = [("address", ctypes.c_uint64), ("size", ctypes.c_uint32), ("stop", ctypes.c_uint32),
                ("emu_stop", ctypes.c_void_p), ("reg_read", ctypes.c_void_p), ("first", ctypes.c_uint32),
                ("timer_stops", ctypes.c_uint32)]  # fmt: skip


STOP_NONE, STOP_NEXT_BLOCK, STOP_DONE, STOP_WHEN_IF, STOP_AFTER_FIRST_BLOCK = range(5)  # last_block.c's `stop`


class _MsrValue(ctypes.Structure):
    _fields_ = [("rid", ctypes.c_uint32), ("value", ctypes.c_uint64)]


class TcgVCpu(VCpu):
    """Preemption is not by `emu_stop` from another thread: Unicorn 2.1 can resume an
    asynchronously stopped run at a stale EIP and repeat stores (upstream issue #1355;
    tests/tcg/test_preemption.py). A timer thread in C (last_block.c) raises a flag at the
    deadline, and the C block hook stops the run at the next block boundary, where RIP is exact.
    Without a C compiler, runs carry instruction budgets instead (`emu_start(count=N)`), sized
    from the measured instruction rate: exact too, but Unicorn then calls a hook after every
    instruction, which more than halves the guest's speed."""

    preempts_itself = True

    def __init__(self, uc: Uc, memory: GuestMemory, io: IoHandler, cpu_model: CpuModel,
                 count_instructions: bool = False) -> None:  # fmt: skip
        self.uc = uc
        self.memory = memory
        self.io = io
        self.cpu_model = cpu_model
        self.stats = ExitStats(instructions=0 if count_instructions else None)
        self.ctx = SavedContext(uc)
        check_layout(uc, self.ctx)
        self._handle = uc._uch
        self._u64 = ctypes.c_uint64()
        self._kick = threading.Event()
        self._window = False
        self._pending: Event | None = None  # exception reported by a hook
        self._syscall: str | None = None
        self._shutdown: str | None = None
        self._handler_ns = 0
        self.delivered: dict[int, int] = {}
        self._block_sizes: dict[tuple[int, int], int] = {}
        self._disassemblers: dict[str, object] = {}
        self._hook_error: BaseException | None = None
        self._ctx_fresh = False  # self.ctx holds the current CPU state (nothing ran since save)
        self.softmmu: SoftMmu | None = None  # emu's MMU (--mmu shadow), or None for Unicorn's walker
        self._pf_retry: PendingFault | None = None
        self._running = False
        self._deferred_invalidations: list[tuple[int, int]] = []
        self._foreign_writes: list[tuple[int, int]] = []  # DMA by device threads, not yet seen (host_wrote)
        self._cpu_store = False  # emu is storing on the CPU's behalf (interrupt delivery)
        self._deadline_ns: int | None = None
        self._counting = False  # translated code carries Unicorn's instruction-count hook
        self._last_block: _LastBlock | None = None  # run control at block boundaries (last_block.c)
        self._lb_arm = None  # last_block.c's lb_arm(struct, deadline_ns): the preemption timer
        self._lb_pointer = 0
        self._in_mmio = False  # inside an MMIO callback (see kick)
        self._vcpu_thread = threading.get_ident()
        self._rate = 50.0  # guest instructions per microsecond, measured from exhausted slices
        self._stepping = False  # step(): one instruction, then DebugExit
        self._step_count = 1
        self._stepped = False  # step(): that instruction (or the event it raised) is done
        self._rom_store = False  # the last run stopped at a store into ROM
        self._rom_step = False  # this run executes that one store, to be undone after it
        self._rom_undo: list[tuple[int, bytes]] = []  # (host address, bytes before the store)
        self.apic: LocalApicRegisters | None = None  # emu's local APIC (attach_apic)
        self._breakpoints: dict[int, int] = {}  # a debugger's: linear address -> Unicorn hook handle
        self._breakpoint_hit = False  # the run stopped at one of them
        self._io_count = 0  # port IO is the hot path: counted here, folded into stats by run()
        self._io_ns = 0
        # IN/OUT are registered as raw C callbacks: the binding's wrapper costs ~1 us per call.
        self._raw_hooks = [_IN_HOOK(self._on_in), _OUT_HOOK(self._on_out)]
        for fptr, insn in zip(self._raw_hooks, (UC_X86_INS_IN, UC_X86_INS_OUT)):
            handle = ctypes.c_size_t()
            status = uclib.uc_hook_add(self._handle, ctypes.byref(handle), UC_HOOK_INSN, fptr, None,
                                       ctypes.c_uint64(1), ctypes.c_uint64(0), ctypes.c_int(insn))  # fmt: skip
            if status != 0:
                raise UcError(status)
        uc.hook_add(UC_HOOK_INSN, self._on_cpuid, None, 1, 0, UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, "syscall", 1, 0, UC_X86_INS_SYSCALL)
        uc.hook_add(UC_HOOK_INSN, self._on_syscall, "sysenter", 1, 0, UC_X86_INS_SYSENTER)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        self._counter: _BlockCounter | None = None
        if count_instructions:
            self._install_instruction_counter()
        self.install_block_hook()

    # register access through the raw C API (the binding's wrappers cost ~2-50 us) ------------
    def _reg(self, reg: int) -> int:
        uclib.uc_reg_read(self._handle, reg, ctypes.byref(self._u64))
        return self._u64.value

    def _set_reg(self, reg: int, value: int) -> None:
        self._u64.value = value & 0xFFFFFFFFFFFFFFFF
        uclib.uc_reg_write(self._handle, reg, ctypes.byref(self._u64))

    def _msr(self, index: int) -> int:
        m = _MsrValue(index, 0)
        uclib.uc_reg_read(self._handle, UC_X86_REG_MSR, ctypes.byref(m))
        return m.value

    def _set_msr(self, index: int, value: int) -> None:
        m = _MsrValue(index, value & 0xFFFFFFFFFFFFFFFF)
        uclib.uc_reg_write(self._handle, UC_X86_REG_MSR, ctypes.byref(m))

    # hooks: called by Unicorn on the vCPU thread while emu_start runs ------------------------
    def _on_in(self, _uc: int, port: int, size: int, _ud: int) -> int:
        t = _ns()
        try:
            value = self.io.port_read(port, size)
        except BaseException as err:  # noqa: BLE001 - reported by run(), never lost in ctypes
            self._fail_in_hook(err)
            return 0xFFFFFFFF
        dt = _ns() - t
        self._io_count += 1
        self._io_ns += dt
        self._handler_ns += dt
        return value

    def _on_out(self, _uc: int, port: int, size: int, value: int, _ud: int) -> None:
        t = _ns()
        try:
            self.io.port_write(port, size, value)
        except BaseException as err:  # noqa: BLE001
            self._fail_in_hook(err)
            return
        dt = _ns() - t
        self._io_count += 1
        self._io_ns += dt
        self._handler_ns += dt

    def _fail_in_hook(self, err: BaseException) -> None:
        self._hook_error = err
        uclib.uc_emu_stop(self._handle)

    def _mmio_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        t = _ns()
        self._in_mmio = True
        try:
            value = self.io.mmio_read(base + offset, size)
        finally:
            self._in_mmio = False
        dt = _ns() - t
        self.stats.count(ExitReason.MMIO, dt)
        self._handler_ns += dt
        return value

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        t = _ns()
        self._in_mmio = True
        try:
            self.io.mmio_write(base + offset, size, value)
        finally:
            self._in_mmio = False
        dt = _ns() - t
        self.stats.count(ExitReason.MMIO, dt)
        self._handler_ns += dt
        if self._kick.is_set():
            self._stop_after_mmio()

    def _on_cpuid(self, uc: Uc, _ud: object) -> int:
        t = _ns()
        leaf, subleaf = self._reg(UC_X86_REG_EAX), self._reg(UC_X86_REG_ECX)
        regs = self.cpu_model.cpuid(leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF)
        for reg, value in zip((UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX), regs):
            self._set_reg(reg, value)
        dt = _ns() - t
        self.stats.count(ExitReason.CPUID, dt)
        self._handler_ns += dt
        return 1  # skip Unicorn's own CPUID

    def _on_syscall(self, uc: Uc, which: str) -> None:
        self._syscall = which
        uc.emu_stop()

    def _on_interrupt(self, uc: Uc, intno: int, _ud: object) -> None:
        if intno >= intercepts.EXCP_VMEXIT:
            self._on_intercept(intno)
            return
        self.ctx.save()
        software = self.ctx.i32(OFF_EXCEPTION_IS_INT) != 0
        if software:
            self._pending = Event(intno, EventKind.SOFTWARE)
        else:
            code = self.ctx.i32(OFF_ERROR_CODE) & 0xFFFFFFFF if intno in HAS_ERROR_CODE else None
            self._pending = Event(intno, EventKind.EXCEPTION, code)
        uc.emu_stop()

    def attach_apic(self, apic: LocalApicRegisters) -> None:
        self.apic = apic
        intercepts.install(self.uc, self.ctx)
        self._ctx_fresh = False

    def _on_intercept(self, intno: int) -> None:
        """An intercepted RDMSR/WRMSR of IA32_APIC_BASE or IA32_ARCH_CAPABILITIES, or MOV to/from
        CR8 (emu.tcg.intercepts): RIP is at the instruction; serve it (from the local APIC, or
        emu.cpuid's declaration) and continue after it."""
        t = _ns()
        self._in_mmio = True  # a kick from the APIC (a lower TPR) must stop at a block boundary
        try:
            self.ctx.save()
            apic = self.apic
            if apic is None:
                raise RuntimeError(f"SVM intercept {intno:#x} with no local APIC attached")
            rip = self.ctx.rip
            length, mnemonic, operands = self._decode_at_rip()
            expected = ("rdmsr", "wrmsr") if intno == intercepts.VMEXIT_MSR else ("mov",)
            if mnemonic not in expected or intno != intercepts.VMEXIT_MSR and "cr8" not in operands:
                raise RuntimeError(f"SVM intercept {intno:#x} at RIP={rip:#x}, which holds "
                                   f"`{mnemonic} {operands}`: Unicorn moved RIP (emu.tcg.intercepts)")  # fmt: skip
            if intno == intercepts.VMEXIT_MSR:
                reason = ExitReason.MSR
                msr = self._reg(UC_X86_REG_ECX) & 0xFFFFFFFF
                write = self.ctx.i32(OFF_ERROR_CODE) != 0
                if msr == MSR_IA32_ARCH_CAPABILITIES and write:  # read-only: #GP(0) at the wrmsr
                    self._pending = Event(13, EventKind.EXCEPTION, 0)
                    self.uc.emu_stop()
                    return
                if not write:
                    value = apic.read_base_msr() if msr != MSR_IA32_ARCH_CAPABILITIES else ARCH_CAPABILITIES
                    self._set_reg(UC_X86_REG_RAX, value & 0xFFFFFFFF)
                    self._set_reg(UC_X86_REG_RDX, value >> 32)
                else:
                    low, high = self._reg(UC_X86_REG_RAX), self._reg(UC_X86_REG_RDX)
                    apic.write_base_msr((high & 0xFFFFFFFF) << 32 | low & 0xFFFFFFFF)
            elif intno in (intercepts.VMEXIT_READ_CR8, intercepts.VMEXIT_WRITE_CR8):
                gpr = operands.split(",")[0 if intno == intercepts.VMEXIT_READ_CR8 else 1].strip()
                register = getattr(x86_const, f"UC_X86_REG_{gpr.upper()}")
                if intno == intercepts.VMEXIT_READ_CR8:
                    self._set_reg(register, apic.cr8)
                else:
                    apic.write_cr8(self._reg(register))
                reason = ExitReason.TPR
            else:
                raise RuntimeError(f"unexpected SVM intercept {intno:#x} at RIP={rip:#x}")
            self._set_reg(UC_X86_REG_RIP, rip + length)
            self._ctx_fresh = False
        except BaseException as err:  # noqa: BLE001 - reported by run(), never lost in ctypes
            self._fail_in_hook(err)
            return
        finally:
            self._in_mmio = False
        dt = _ns() - t
        self.stats.count(reason, dt)
        self._handler_ns += dt

    def _decode_at_rip(self) -> tuple[int, str, str]:
        """(length, mnemonic, operands) of the instruction at CS:RIP, from the context just saved."""
        ctx = self.ctx
        linear = ctx.raw_segment(1)[1] + ctx.rip
        memory = LinearMemory(self.memory, PagingMode(ctx.cr(0), ctx.cr(3), ctx.cr(4), ctx.efer), set_ad=False)
        code = memory.read(linear, 15)
        for _address, size, mnemonic, operands in self._disassembler().disasm_lite(code, linear, 1):
            return size, mnemonic, operands
        raise RuntimeError(f"cannot decode the instruction at {linear:#x}: {code.hex(' ')}")

    def _on_block(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        key = (address, size)
        n = self._block_sizes.get(key)
        if n is None:
            n = self._count_instructions(address, size)
            self._block_sizes[key] = n
        self.stats.instructions += n

    def _install_instruction_counter(self) -> None:
        """--stats: count instructions by block, in C (block_count.c: a Python call only for a
        block never seen before); without a C compiler, by the Python hook _on_block."""
        library, _why = native.load(BLOCK_COUNT_SOURCE)
        if library is None:
            self.uc.hook_add(UC_HOOK_BLOCK, self._on_block)
            return
        self._count_slots = ctypes.create_string_buffer(16 * BLOCK_COUNT_SLOTS)  # zeroed: all free
        self._count_decode = _DECODE_BLOCK(self._count_instructions)  # these three live as long as the vCPU
        self._count_hook = ctypes.cast(library.bc_hook, _BLOCK_HOOK)
        counter = _BlockCounter(0, 0, BLOCK_COUNT_SLOTS - 1, 0, self._count_decode,
                                ctypes.cast(self._count_slots, ctypes.c_void_p))  # fmt: skip
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self._handle, ctypes.byref(handle), UC_HOOK_BLOCK, self._count_hook,
                                   ctypes.cast(ctypes.byref(counter), ctypes.c_void_p), ctypes.c_uint64(1),
                                   ctypes.c_uint64(0))  # fmt: skip
        if status != 0:
            raise UcError(status)
        self._counter = counter

    def _count_instructions(self, address: int, size: int) -> int:
        """Instructions in a newly seen translation block (decoded once, then cached)."""
        self.ctx.save()
        cs = self._disassembler()
        try:
            code = bytes(self.uc.mem_read(address, size))
        except UcError:
            return 1
        return max(1, sum(1 for _ in cs.disasm_lite(code, address)))

    def _mode_name(self) -> str:
        from .context import HF_CS32, HF_CS64, HF_PE

        hf = self.ctx.hflags
        if not hf & HF_PE:
            return "real"
        if hf & HF_CS64:
            return "long"
        return "protected32" if hf & HF_CS32 else "protected16"

    # the run loop ----------------------------------------------------------------------------
    def run(self) -> VcpuExit:
        self._vcpu_thread = threading.get_ident()
        lb = self._last_block
        while True:
            if lb is not None and lb.stop in (STOP_NEXT_BLOCK, STOP_DONE):
                # Left from the last run (a timer that fired after it ended, a stop already
                # reported): cleared before the checks below, so a kick from now on is kept.
                lb.stop = STOP_NONE
            if self._stepping and self._stepped and not self._rom_step:  # step(): before a kick
                self._stepped = False
                self.stats.count(ExitReason.DEBUG)
                return DebugExit(rip=self._reg(UC_X86_REG_RIP))
            if self._shutdown is not None:
                reason, self._shutdown = self._shutdown, None
                self.stats.count(ExitReason.SHUTDOWN)
                return ShutdownExit(reason)
            if self._kick.is_set():
                self._kick.clear()
                self.stats.count(ExitReason.KICK)
                return KickExit()
            if self._window and self.interrupts_allowed():
                self._window = False
                self.stats.count(ExitReason.IRQ_WINDOW)
                return InterruptWindowExit()
            if self._pf_retry is not None:  # Unicorn's walker for the faulting instruction only
                # One block (STOP_AFTER_FIRST_BLOCK), or one instruction where the block hook is
                # missing or single steps count instructions (a block could run past the step)
                budget = 0 if lb is not None and not (self._stepping or self._rom_step) else 1
                if budget and not self._counting:
                    self._start_counting()
            elif self._rom_step or self._stepping:
                budget = self._single_step_budget()
            else:
                budget = self._slice_budget()
            if budget < 0:  # the deadline has passed: the machine has timers to run
                self.stats.count(ExitReason.KICK)
                return KickExit()
            self._pending = None
            self._syscall = None
            self._breakpoint_hit = False
            self._handler_ns = 0
            self._ctx_fresh = False
            start = _ns()
            self._running = True
            self._run_deferred_invalidations()  # DMA by device threads since the last run
            if self.softmmu is not None:
                self.softmmu.fault = None  # a fill refused in a probe (no stop) must not linger
            if self.softmmu is not None and not self._reg(UC_X86_REG_CR0) & CR0_PG:
                self.softmmu.untracked_code = True  # code translated now is fetched without emu's fills
            if lb is not None:
                lb.address = NO_BLOCK
                lb.first = 1  # the next block is this run's first
                stop = was = lb.stop
                if self._pf_retry is not None and budget == 0:
                    stop = STOP_AFTER_FIRST_BLOCK
                elif stop == STOP_AFTER_FIRST_BLOCK:
                    stop = STOP_NONE
                if self._window and stop == STOP_NONE:
                    stop = STOP_WHEN_IF  # stop where IF becomes 1 (last_block.c)
                elif not self._window and stop == STOP_WHEN_IF:
                    stop = STOP_NONE
                if stop != was:
                    lb.stop = stop
                # Armed after `stop` is written: a timer that fired in between (and whose stop
                # the write above replaced) fires again at once for a deadline already passed.
                counted = self._stepping or self._rom_step  # stops by budget, never early
                self._lb_arm(self._lb_pointer, 0 if counted else self._deadline_ns or 0)
            rflags = self._reg(UC_X86_REG_RFLAGS)
            if rflags & RFLAGS_RF:
                # RF (set by an IRET from a fault handler) lasts for one instruction: the CPU
                # clears it when the next one completes (SDM vol. 3B §18.3.1.1). Unicorn never
                # clears it; emu does before the next instruction runs (it matters only for
                # instruction breakpoints, which the next instruction may then not skip).
                self._set_reg(UC_X86_REG_RFLAGS, rflags & ~RFLAGS_RF)
            self.stats.running = (self.stats.guest_ns, start)
            try:
                self.uc.emu_start(self._reg(UC_X86_REG_RIP), UNTIL, count=budget)
                error = None
            except UcError as err:
                error = err
            finally:
                self._running = False
                self.stats.guest_ns += _ns() - start - self._handler_ns
                self.stats.running = None
                self._fold_io_counts()
                self._run_deferred_invalidations()
                if self._rom_step:
                    self._undo_rom_stores()
                elif self._stepping:
                    self._stepped = True
            if self._hook_error is not None:
                err, self._hook_error = self._hook_error, None
                raise err
            if self.softmmu is not None:
                if self._mmu_after_run(error):
                    self._stepped = False  # the instruction runs again (#PF retry): not done yet
                    continue
            if self._breakpoint_hit and error is None:  # stopped before the instruction (set_breakpoints)
                self.stats.count(ExitReason.DEBUG)
                return DebugExit(rip=self._reg(UC_X86_REG_RIP))
            if error is not None and error.errno == UC_ERR_WRITE_PROT and self._rom_store:
                self._rom_store, self._rom_step = False, True  # run it once more, then undo it
                self._stepped = False
                continue
            if error is not None:
                if error.errno == UC_ERR_INSN_INVALID:
                    self.ctx.save()
                    self._pending = Event(6, EventKind.EXCEPTION)
                elif self._pending is None and self._syscall is None:
                    return self._internal_error(error)
            if self._pending is not None:
                self.ctx.save()
                self._deliver(self._pending, ExitReason.EXCEPTION)
                continue
            if self._syscall is not None:
                self._fast_syscall(self._syscall)
                continue
            if self._kick.is_set():
                continue  # returns KickExit at the top of the loop
            if lb is not None and lb.stop == STOP_DONE:
                lb.stop = STOP_NONE
                continue  # stopped at a block boundary: the deadline passed, an interrupt window opened, ...
            if budget and not self._stopped_after_hlt():
                self._measure_rate(budget, _ns() - start)
                continue  # the slice was spent; the top of the loop checks the deadline
            self.stats.count(ExitReason.HLT)
            return HaltExit()

    # ROM: stores are dropped, as the chip ignores them ----------------------------------------
    def add_rom(self, region: MemoryRegion) -> None:
        """`region` is mapped read/execute only: a guest store there must change nothing.

        Unicorn cannot drop a store by itself: with no hook it stops with UC_ERR_WRITE_PROT,
        and a write-protection hook that returns True lets the store through to the host
        memory. So the hook first refuses (the run stops at the storing instruction), then emu
        executes that one instruction with the store allowed (its other effects, registers and
        flags, are the guest's) and puts the ROM bytes back (KVM: a read-only slot makes the
        store an MMIO exit that emu ignores)."""
        end = region.guest_address + region.size - 1
        self.uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_rom_write, region, region.guest_address, end)

    def _on_rom_write(self, _uc: Uc, _access: int, address: int, size: int, _value: int,
                      region: MemoryRegion) -> bool:  # fmt: skip
        if not self._rom_step:
            self._rom_store = True
            return False
        host = region.host_address + (address - region.guest_address)
        length = min(size, region.guest_address + region.size - address)
        self._rom_undo.append((host, ctypes.string_at(host, length)))
        self.stats.count(ExitReason.MMIO)
        return True

    def step(self, count: int = 1) -> VcpuExit:
        """`count` instructions (rep iterations count one each): a run with that budget; an
        exception raised is delivered before this returns."""
        self._step_count = max(1, count)
        self._stepping = True
        try:
            return self.run()
        finally:
            self._stepping = False

    # a debugger's breakpoints -----------------------------------------------------------------
    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """One UC_HOOK_CODE hook per address, bounded to it (begin = end), so only that
        instruction calls into Python. Unicorn calls a code hook before the instruction, with
        the linear address (CS.base + IP in real mode); `emu_stop` there ends the run with RIP
        at the instruction, not executed. Translated code is dropped so that blocks translated
        before carry the hook call (and blocks of removed ones lose it). As under QEMU's TCG,
        software and hardware breakpoints are the same thing here."""
        for address in self._breakpoints.keys() - addresses:
            self.uc.hook_del(self._breakpoints.pop(address))
        for address in addresses - self._breakpoints.keys():
            self._breakpoints[address] = self.uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, address, address)
        self.uc.ctl_flush_tb()

    def _on_breakpoint(self, uc: Uc, _address: int, _size: int, _ud: object) -> None:
        if self._stepping or self._rom_step:  # a step executes the instruction at a breakpoint
            return
        self._breakpoint_hit = True
        uc.emu_stop()

    def _single_step_budget(self) -> int:
        if not self._counting:  # code translated without the count hook would ignore a budget
            self._start_counting()
        return 1 if self._rom_step else self._step_count

    def _undo_rom_stores(self) -> None:
        self._rom_step = False
        for host, old in reversed(self._rom_undo):
            ctypes.memmove(host, old, len(old))
        if self._rom_undo:
            self.uc.ctl_flush_tb()  # translated code may have been made from the stored bytes
        self._rom_undo.clear()

    # preemption by instruction-count slices -------------------------------------------------
    def set_deadline(self, deadline_ns: int | None) -> None:
        self._deadline_ns = deadline_ns

    def deadline_moved_earlier(self, deadline_ns: int) -> None:
        """A device armed a timer during this run (the guest wrote the local APIC's initial
        count, or programmed the PIT): the slice's budget was sized for a later deadline, so
        end the slice at the next block boundary and size the next one for this deadline."""
        if self._deadline_ns is None or deadline_ns < self._deadline_ns:
            self._deadline_ns = deadline_ns
            if self._running and self._last_block is not None:
                self._lb_arm(self._lb_pointer, deadline_ns)  # the timer thread stops the run by then

    def _slice_budget(self) -> int:
        """Instructions for the next emu_start: 0 = unlimited, -1 = the deadline has passed.
        With the C block hook, always unlimited: the preemption timer ends the run."""
        if self._last_block is not None and self._counting:
            self._stop_counting()  # single steps are over: translate without the per-instruction hook again
        if self._deadline_ns is None:
            return MAX_SLICE if self._counting else 0
        remaining_us = (self._deadline_ns - time.monotonic_ns()) / 1000
        if remaining_us <= 0:
            return -1
        if self._last_block is not None:
            return 0
        if not self._counting:  # code translated without the count hook would ignore a budget
            self._start_counting()
        return int(min(max(remaining_us * self._rate, MIN_SLICE), MAX_SLICE))

    def reset(self, state: CpuState) -> None:
        """As at power-on, runs carry no instruction budget again until the machine has a
        deadline: Unicorn's count hook costs a call per instruction, and a kernel's decompressor,
        which arms no timer, ran three times slower after a reboot with it."""
        self._stop_counting()
        self._window = False
        self._deadline_ns = None
        if self._last_block is not None:
            self._lb_arm(self._lb_pointer, 0)
        self.set_state(state)

    def _stop_counting(self) -> None:
        if self._counting:
            self._counting = False  # emu_start with no count drops Unicorn's count hook
            self.uc.ctl_flush_tb()  # and code translated with it calls it no more

    def _start_counting(self) -> None:
        """From now on runs carry instruction budgets; the blocks they run are recorded in C so
        that a run that ends after a byte F4 can be told from one that ended at `hlt`."""
        self.uc.ctl_flush_tb()
        self._counting = True
        self.install_block_hook()

    def install_block_hook(self) -> None:
        """The C block hook and preemption timer (last_block.c): the hook stops a run at a block
        boundary when the timer says the deadline passed, when a device raised an interrupt
        (see kick) or an interrupt window opened, and records the last block run. Installed by
        the constructor; without a C compiler runs are preempted by instruction budgets and
        _stopped_after_hlt falls back to the byte before RIP. Idempotent."""
        if self._last_block is not None:
            return
        library, _why = native.load(LAST_BLOCK_SOURCE)
        if library is None:
            return
        library.lb_new.restype = ctypes.c_void_p
        library.lb_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        library.lb_arm.restype = ctypes.c_int
        library.lb_arm.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        library.lb_free.argtypes = [ctypes.c_void_p]
        pointer = library.lb_new(ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value,
                                 ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value)  # fmt: skip
        if not pointer:
            return
        self._last_block_hook = ctypes.cast(library.lb_hook, _BLOCK_HOOK)  # kept alive with the vCPU
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self._handle, ctypes.byref(handle), UC_HOOK_BLOCK, self._last_block_hook,
                                   ctypes.c_void_p(pointer), ctypes.c_uint64(1), ctypes.c_uint64(0))  # fmt: skip
        if status != 0:
            library.lb_free(pointer)
            return
        self._last_block = _LastBlock.from_address(pointer)
        self._lb_pointer, self._lb_arm = pointer, library.lb_arm
        weakref.finalize(self, library.lb_free, pointer)  # the timer thread frees it as it ends
        self.uc.ctl_flush_tb()  # blocks translated before had no hook call

    def _measure_rate(self, budget: int, elapsed_ns: int) -> None:
        if elapsed_ns > 0:
            self._rate = 0.7 * self._rate + 0.3 * max(1.0, budget * 1000 / elapsed_ns)

    def _stopped_after_hlt(self) -> bool:
        """Did this slice end at a `hlt`, rather than with its budget spent? The byte before RIP
        is F4 after a `hlt`, and also after any instruction that ends in F4 (8B 55 F4 is
        `mov edx, [ebp-0Ch]`). Decoding forward from the start of the last block run (an
        instruction boundary, recorded by last_block.c) to RIP tells which instruction it was;
        without that record, F4 is taken for `hlt` and such a guest idles until its next timer."""
        ctx = self.ctx
        ctx.save()
        rip_linear = ctx.raw_segment(1)[1] + ctx.rip
        if self._last_block is not None:
            start, size = self._last_block.address, self._last_block.size
            if start == NO_BLOCK or not start < rip_linear <= start + size:
                # No block ran, or the budget ran out before the first instruction of the block
                # just entered (RIP == its start): `hlt` ends the block it is in, so not one.
                return False
            if self._stepping and self._step_count == 1 and rip_linear != start + 1:
                return False  # one instruction ran, from `start`, and it was longer than F4
        memory = LinearMemory(self.memory, PagingMode(ctx.cr(0), ctx.cr(3), ctx.cr(4), ctx.efer), set_ad=False)
        try:
            physical = self.softmmu.cached_physical(rip_linear - 1, ctx.cpl == 3) if self.softmmu else None
            last_byte = memory.read(rip_linear - 1, 1) if physical is None else self.memory.read(physical, 1)
            if last_byte != b"\xf4":
                return False
        except (PageFault, GuestMemoryError):
            return False
        if self._last_block is None:
            return True
        try:
            code = memory.read(start, rip_linear - start)
        except (PageFault, GuestMemoryError):
            return True
        last = None
        for address, size, mnemonic, _ops in self._disassembler().disasm_lite(code, start):
            last = (address + size, mnemonic)
        return last is None or last[0] != rip_linear or last[1] == "hlt"

    def _disassembler(self):  # noqa: ANN202 - a capstone Cs for the current mode
        from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

        name = self._mode_name()
        cs = self._disassemblers.get(name)
        if cs is None:
            mode = {"real": CS_MODE_16, "protected16": CS_MODE_16, "long": CS_MODE_64}.get(name, CS_MODE_32)
            cs = self._disassemblers[name] = Cs(CS_ARCH_X86, mode)
        return cs

    def _mmu_after_run(self, error: UcError | None) -> bool:
        """Shadow MMU bookkeeping after emu_start; True to run again at once (#PF retry)."""
        mmu = self.softmmu
        assert mmu is not None
        if self._pf_retry is not None:  # that run used Unicorn's walker for one faulting instruction
            expected, self._pf_retry = self._pf_retry, None
            mmu.use_own_walker()
            pending = self._pending
            if pending is None and self._kick.is_set():
                pass  # stopped before the instruction ran: it will fault again under emu's walker
            elif pending is None or not expected.matches(pending.vector, pending.error_code):
                mmu.counters.walker_disagreements += 1
                # The instruction ran under Unicorn's walker, which honours no write protection:
                # it may have stored to a page table that cached translations came from.
                mmu.shadow.flush("walker disagreement")
            elif pending.vector == 14:
                mmu.counters.page_faults += 1
        elif mmu.fault is not None and error is not None:
            # emu's walker refused a fill: re-run the instruction under Unicorn's walker, which
            # raises the #PF with the exact faulting address (see emu.tcg.softmmu).
            self._pf_retry, mmu.fault = mmu.fault, None
            mmu.use_unicorn_walker()
            return True
        mmu.after_run()
        return False

    def host_wrote(self, address: int, size: int) -> None:
        """The host wrote guest RAM: the loader, a device's DMA, or the CPU itself (emu's
        interrupt delivery pushing a frame or setting A/D bits through emu.mmu.linear)."""
        if threading.get_ident() != self._vcpu_thread:
            # a device thread's DMA: neither Unicorn nor the shadow MMU is thread-safe, so the
            # vCPU thread handles it at its next run boundary (before the guest can see the
            # completion: the interrupt that reports it ends the run first)
            self._foreign_writes.append((address, size))
            return
        if self.softmmu is not None:
            self.softmmu.host_wrote(address, size)
        if self._cpu_store:
            return  # stores the CPU makes as part of an instruction or event: not code
        if self._running:
            self._deferred_invalidations.append((address, size))
        else:
            self._invalidate_code(address, size)

    def _invalidate_code(self, address: int, size: int) -> None:
        """Drop translated code for guest-physical [address, address+size).

        Unicorn's remove_cache takes *virtual* addresses and translates them through the guest's
        page tables (with the side effects of a walk), so with paging on emu flushes all
        translated code instead, unless emu's MMU knows no code came from those frames (it
        gives execute rights only on a fetch and records the frame: SoftMmu.holds_code), as
        for a device's DMA into data buffers; with paging off, virtual is physical."""
        self.ctx.save()
        if self.ctx.cr(0) & CR0_PG:
            mmu = self.softmmu
            if mmu is not None and not mmu.holds_code(address, size):
                mmu.code_flushes_avoided += 1
            else:
                self.uc.ctl_flush_tb()
                if mmu is not None:
                    mmu.untracked_code = False  # no translated code is left; new code is fetched through fills
        else:
            self.uc.ctl_remove_cache(address & ~0xFFF, (address + size + 0xFFF) & ~0xFFF)
        self._ctx_fresh = False

    def _run_deferred_invalidations(self) -> None:
        if self._foreign_writes:
            writes, self._foreign_writes = self._foreign_writes, []
            for address, size in writes:
                if self.softmmu is not None:
                    self.softmmu.host_wrote(address, size)
                self._invalidate_code(address, size)
        if self._deferred_invalidations:
            pending, self._deferred_invalidations = self._deferred_invalidations, []
            for address, size in pending:
                self._invalidate_code(address, size)

    def instructions_so_far(self) -> int | None:
        """The instruction count now, also during a run and from another thread (emu.liveview):
        block_count.c's counter is read through ctypes, a plain load of a C uint64."""
        counter = self._counter
        return counter.instructions if counter is not None else self.stats.instructions

    def guest_ns_so_far(self, now_ns: int) -> int:
        """Guest time up to `now_ns` (monotonic), the run in progress included less its hooks so
        far, as run() will count it: for other threads (emu.liveview)."""
        running = self.stats.running
        if running is None:
            return self.stats.guest_ns
        return running[0] + max(0, now_ns - running[1] - self._handler_ns)

    def io_exits_so_far(self) -> int:
        """Port IO served so far, with those of the run in progress (folded into stats at its
        end). From another thread the sum can miss one run's IO for one look (read between the
        fold's two stores), never count it twice."""
        return self.stats.counts[ExitReason.IO] + self._io_count

    def _fold_io_counts(self) -> None:
        if self._counter is not None:
            self.stats.instructions = self._counter.instructions
        if self._io_count:
            self.stats.counts[ExitReason.IO] += self._io_count
            self.stats.times_ns[ExitReason.IO] += self._io_ns
            self._io_count = self._io_ns = 0

    def _deliver(self, event: Event, reason: ExitReason) -> None:
        """Deliver `event` to the guest (the context must have been saved just now)."""
        self._ctx_fresh = False
        t = _ns()
        rflags = self._reg(UC_X86_REG_RFLAGS)
        self._cpu_store = True
        try:
            fast_walk = self.softmmu.fast_walk if self.softmmu is not None else None
            new_flags, chain, _ = Delivery(self.ctx, self.memory, fast_walk).deliver(event, rflags)
        except TripleFault as tf:
            self._shutdown = f"triple fault: {tf} at RIP={self.ctx.rip:#x}"
        except UnsupportedDelivery as err:
            self._shutdown = f"cannot deliver {event.describe()}: {err}"
        else:
            self._cpu_store = False
            self.ctx.end_of_delivery()
            self.ctx.restore()
            self._set_reg(UC_X86_REG_RFLAGS, new_flags)
            self.delivered[chain[-1].vector] = self.delivered.get(chain[-1].vector, 0) + 1
        self._cpu_store = False
        self.stats.count(reason, _ns() - t)

    def _fast_syscall(self, which: str) -> None:
        t = _ns()
        self.ctx.save()
        rflags = self._reg(UC_X86_REG_RFLAGS)
        fast = FastSyscall(self.ctx)
        try:
            if which == "syscall":
                new_flags = fast.syscall(self.ctx.rip, rflags, self._msr(MSR_STAR), self._msr(MSR_LSTAR),
                                         self._msr(MSR_CSTAR), self._msr(MSR_SFMASK))  # fmt: skip
            else:
                msrs = (MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP)
                new_flags = fast.sysenter(rflags, *(self._msr(m) for m in msrs))
        except (InvalidOpcode, GeneralProtection) as err:
            self.ctx.rip -= 2  # the fault is reported at the instruction itself
            vector, code = (6, None) if isinstance(err, InvalidOpcode) else (13, 0)
            self._deliver(Event(vector, EventKind.EXCEPTION, code), ExitReason.EXCEPTION)
            return
        self.ctx.restore()
        self._set_reg(UC_X86_REG_RFLAGS, new_flags)
        self.stats.count(ExitReason.SYSCALL, _ns() - t)

    def _internal_error(self, error: UcError) -> InternalErrorExit:
        """One line: what Unicorn said, where (CS:RIP and the linear address), and the bytes there."""
        self.ctx.save()
        rip = self.ctx.rip
        cs_base = self.ctx.segment("cs").base
        linear = cs_base + rip if self.ctx.efer & EFER_LMA else (cs_base + rip) & 0xFFFF_FFFF
        where = f"RIP={rip:#x}" if not cs_base else f"RIP={rip:#x} (linear {linear:#x})"
        fetch = error.errno in (UC_ERR_FETCH_PROT, UC_ERR_FETCH_UNMAPPED)
        if fetch and not self.ctx.cr(0) & CR0_PG and not self.memory.contains(linear, 1):
            self.stats.count(ExitReason.INTERNAL_ERROR)
            return InternalErrorExit(f"guest jumped to {linear:#x}, which is neither RAM nor ROM, at {where}")
        try:
            code = bytes(self.uc.mem_read(linear, 8)).hex(" ")
        except UcError:
            code = "unreadable"
        self.stats.count(ExitReason.INTERNAL_ERROR)
        return InternalErrorExit(f"unicorn: {error} at {where} (bytes {code})")

    # interrupts ------------------------------------------------------------------------------
    def interrupts_allowed(self) -> bool:
        if not self._reg(UC_X86_REG_RFLAGS) & RFLAGS_IF:
            return False
        self.ctx.save()
        self._ctx_fresh = True  # inject_interrupt, if it comes next, need not save again
        return not self.ctx.interrupt_shadow

    def inject_interrupt(self, vector: int) -> None:
        if not self._ctx_fresh:
            self.ctx.save()
        self._deliver(Event(vector, EventKind.EXTERNAL), ExitReason.INTERRUPT)

    def request_interrupt_window(self, on: bool) -> None:
        self._window = on

    def raise_exception(self, vector: int, error_code: int | None = None) -> None:
        """Deliver exception `vector` as a fault of the instruction at RIP, without running it
        (differential testing replays a host's different outcome on this backend with it)."""
        self.ctx.save()
        self._deliver(Event(vector, EventKind.EXCEPTION, error_code), ExitReason.EXCEPTION)

    def kick(self) -> None:
        self._kick.set()
        if threading.get_ident() != self._vcpu_thread:
            self._stop_after_mmio()  # a device thread: stop at the next block boundary, where RIP is exact
        elif self._in_mmio:
            self._stop_after_mmio()  # raised from a device inside an MMIO callback: not here
        else:
            self.uc.emu_stop()

    def _stop_after_mmio(self) -> None:
        """Stop the run at the next block boundary: uc_emu_stop inside an MMIO callback would
        resume the instruction from a stale RIP and repeat its stores (Unicorn #1355)."""
        if self._last_block is not None:
            self._last_block.stop = STOP_NEXT_BLOCK
        else:
            self.uc.emu_stop()  # no C hook (no compiler): the old way

    @property
    def kick_pending(self) -> bool:
        return self._kick.is_set()

    # state -----------------------------------------------------------------------------------
    def get_state(self, msrs: bool = True) -> CpuState:
        ctx = self.ctx
        ctx.save()
        values: dict[str, object] = dict(zip(GPR_NAMES, _GPRS.unpack_from(ctx.raw, HEADER + OFF_REGS)))
        values["rip"] = ctx.rip
        values["rflags"] = self._reg(UC_X86_REG_RFLAGS)
        for name in ("es", "cs", "ss", "ds", "fs", "gs", "ldt", "tr"):
            values[name] = ctx.segment(name)
        values["gdt"], values["idt"] = ctx.table(8), ctx.table(9)
        values["cr0"], values["cr2"], values["cr3"], values["cr4"] = ctx.cr(0), ctx.cr(2), ctx.cr(3), ctx.cr(4)
        values["cr8"] = self.apic.cr8 if self.apic is not None else self._reg(UC_X86_REG_CR8)
        values["efer"] = ctx.efer
        values["msrs"] = {index: self._msr(index) for index in STATE_MSRS} if msrs else {}
        return CpuState.assemble(values)

    def set_state(self, state: CpuState) -> None:
        self._ctx_fresh = False
        ctx = self.ctx
        ctx.save()
        for i, name in enumerate(GPR_NAMES):
            ctx.set_gpr(i, getattr(state, name))
        ctx.rip = state.rip
        for name in ("es", "cs", "ss", "ds", "fs", "gs", "ldt", "tr"):
            ctx.set_segment(name, getattr(state, name))
        ctx.set_table(8, state.gdt)
        ctx.set_table(9, state.idt)
        for n, value in ((0, state.cr0), (2, state.cr2), (3, state.cr3), (4, state.cr4)):
            ctx.set_cr(n, value)
        ctx.efer = state.efer
        ctx.recompute_hflags(state.rflags)
        ctx.end_of_delivery()
        ctx.restore()
        if self.softmmu is not None:
            self.softmmu.shadow.flush("set_state")
        self._set_reg(UC_X86_REG_RFLAGS, state.rflags)
        for index, value in state.msrs.items():
            self._set_msr(index, value)
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
