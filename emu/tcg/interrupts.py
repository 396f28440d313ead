"""Interrupt and exception delivery: what the CPU does between an event and its handler.

Unicorn reports a guest exception or `int n` to a hook and stops; it never vectors through the
guest's tables. emu does, as the SDM describes for each mode:

- real mode (SDM vol. 3A §20.1.4): the IVT at IDTR.base holds 4-byte CS:IP vectors; push FLAGS,
  CS, IP; clear IF, TF, AC.
- protected mode (§6.10-6.12): 8-byte gates in the IDT. An interrupt or trap gate names a code
  segment; if its DPL is below the CPL, the stack switches to SSn:ESPn from the TSS and the old
  SS:ESP is pushed first. Interrupt gates also clear IF.
- long mode (§6.14): 16-byte gates, 8-byte pushes, the stack aligned to 16 bytes, RSPn or an
  IST entry from the 64-bit TSS, and SS loaded with a null selector on a privilege change.

Checks raise the architectural faults (#GP/#NP/#TS/#SS with selector error codes), and a fault
while delivering combines with the first event as in §6.15, table 6-5: two contributory faults,
or a page fault followed by a contributory fault or page fault, make a #DF; a fault while
delivering #DF shuts the processor down (triple fault).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ..accel import (CR0_PE, EFER_LMA, RFLAGS_AC, RFLAGS_IF, RFLAGS_NT, RFLAGS_RF, RFLAGS_TF,
                     RFLAGS_VM)  # fmt: skip
from ..memory import GuestMemory, GuestMemoryError
from ..mmu.linear import LinearMemory
from ..mmu.walk import Access, PageFault, PagingMode
from .context import DESC_B, DESC_L, SavedContext

VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM",
                8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF",
                17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}  # fmt: skip
HAS_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})
# Fault-class exceptions (SDM vol. 3A §6.15, table 6-1): the RFLAGS image they push has RF=1, so
# that the faulting instruction, restarted by IRET, does not raise an instruction-breakpoint #DB
# again (SDM vol. 3B §18.3.1.1). #DB counts as a trap here (single-step, data breakpoints), as
# KVM's exception_type() counts it; #DF and #MC are aborts.
FAULTS = frozenset({0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21})
DF, TS, NP, SS_FAULT, GP, PF = 8, 10, 11, 12, 13, 14
DESC_P = 1 << 15
DESC_S = 1 << 12
DESC_CODE = 1 << 11
DESC_CONFORMING = 1 << 10
DESC_WRITABLE = 1 << 9
DESC_ACCESSED = 1 << 8


class EventKind(enum.Enum):
    EXTERNAL = "external"  # INTR from the interrupt controller
    EXCEPTION = "exception"  # a fault or trap raised by an instruction
    SOFTWARE = "software"  # int n, int3, into: gate DPL is checked against CPL


@dataclass(frozen=True)
class Event:
    vector: int
    kind: EventKind
    error_code: int | None = None

    def describe(self) -> str:
        name = VECTOR_NAMES.get(self.vector, f"vector {self.vector:#x}")
        if self.kind is EventKind.SOFTWARE:
            name = f"int {self.vector:#x}"
        elif self.kind is EventKind.EXTERNAL:
            name = f"irq vector {self.vector:#x}"
        return name if self.error_code is None else f"{name}({self.error_code:#x})"


class DeliveryFault(Exception):
    """An exception raised while delivering an event (SDM vol. 3A §6.15)."""

    def __init__(self, vector: int, error_code: int | None = 0, cr2: int | None = None) -> None:
        super().__init__(VECTOR_NAMES.get(vector, str(vector)))
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2


class TripleFault(Exception):
    """The processor shuts down: the message is the fault chain."""


class UnsupportedDelivery(Exception):
    """A delivery path emu does not implement (task gates, virtual-8086 mode)."""


@dataclass
class Delivery:
    """Delivers events into the CPU held in `ctx` (saved), reading and pushing through guest RAM."""

    ctx: SavedContext
    memory: GuestMemory
    fast_walk: Callable[[PagingMode, int, Access, bool], int | None] | None = None  # see emu.mmu.linear
    memory_linear: LinearMemory = field(init=False)

    def deliver(self, event: Event, rflags: int) -> tuple[int, list[Event], int | None]:
        """Deliver `event` (escalating to #DF or a triple fault) and return (new RFLAGS, chain, CR2).

        On return `ctx` holds the handler's CS/SS/RSP/RIP; the caller restores it.
        """
        chain = [event]
        cr2: int | None = None
        rflags &= ~RFLAGS_RF  # after a completed instruction RF is 0 (Unicorn may hold one IRET loaded)
        while True:
            if event.kind is EventKind.EXCEPTION and event.vector in FAULTS:
                rflags |= RFLAGS_RF  # in the pushed images (a #DF's too) only: handlers run with RF=0
            try:
                mode = PagingMode(self.ctx.cr(0), self.ctx.cr(3), self.ctx.cr(4), self.ctx.efer)
                self.memory_linear = LinearMemory(self.memory, mode, fast_walk=self.fast_walk)
                return self._deliver_once(event, rflags), chain, cr2
            except DeliveryFault as fault:
                nested = Event(fault.vector, EventKind.EXCEPTION, fault.error_code)
                if fault.cr2 is not None:
                    cr2 = fault.cr2
                    self.ctx.set_cr(2, fault.cr2)
                if event.vector == DF and event.kind is EventKind.EXCEPTION:
                    chain.append(nested)
                    raise TripleFault(" -> ".join(e.describe() for e in chain)) from None
                first_contrib = event.kind is EventKind.EXCEPTION and event.vector in CONTRIBUTORY
                first_pf = event.kind is EventKind.EXCEPTION and event.vector == PF
                second_contrib = nested.vector in CONTRIBUTORY
                if (first_contrib and second_contrib) or (first_pf and (second_contrib or nested.vector == PF)):
                    nested = Event(DF, EventKind.EXCEPTION, 0)
                chain.append(nested)
                event = nested
                if len(chain) > 8:
                    raise TripleFault(" -> ".join(e.describe() for e in chain)) from None
            except GuestMemoryError as err:
                raise TripleFault(f"{event.describe()} -> {err}") from None

    # ----------------------------------------------------------------------------------------
    def _deliver_once(self, event: Event, rflags: int) -> int:
        ctx = self.ctx
        if not ctx.cr(0) & CR0_PE:
            return self._deliver_real(event, rflags)
        if rflags & RFLAGS_VM:
            raise UnsupportedDelivery("interrupt delivery in virtual-8086 mode is not implemented")
        if ctx.efer & EFER_LMA:
            return self._deliver_long(event, rflags)
        return self._deliver_protected(event, rflags)

    def _ext(self, event: Event) -> int:
        return 1 if event.kind is EventKind.EXTERNAL else 0

    def _read(self, linear: int, n: int) -> bytes:
        try:
            return self.memory_linear.read(linear, n)
        except PageFault as pf:
            raise DeliveryFault(PF, pf.error_code, pf.linear) from None

    def _write(self, linear: int, data: bytes, user: bool) -> None:
        try:
            self.memory_linear.write(linear, data, user)
        except PageFault as pf:
            raise DeliveryFault(PF, pf.error_code, pf.linear) from None

    def _deliver_real(self, event: Event, rflags: int) -> int:
        ctx = self.ctx
        idt = ctx.table(9)
        if event.vector * 4 + 3 > idt.limit:
            raise DeliveryFault(GP, event.vector * 8 + 2)
        ip, cs = struct.unpack("<HH", self._read(idt.base + event.vector * 4, 4))
        ss_sel, ss_base, ss_limit, ss_flags = ctx.raw_segment(2)
        sp = ctx.gpr(4)
        mask = 0xFFFFFFFF if ss_flags & DESC_B else 0xFFFF
        old_cs = ctx.raw_segment(1)[0]
        frame = struct.pack("<HHH", ctx.rip & 0xFFFF, old_cs, rflags & 0xFFFF)
        sp = (sp - 6) & mask
        self._write(ss_base + sp, frame, False)
        ctx.set_gpr(4, (ctx.gpr(4) & ~mask) | sp)
        _, _, cs_limit, cs_flags = ctx.raw_segment(1)
        ctx.set_raw_segment(1, cs, cs << 4, cs_limit, cs_flags)
        ctx.rip = ip
        return rflags & ~(RFLAGS_IF | RFLAGS_TF | RFLAGS_AC | RFLAGS_RF)

    def _descriptor(self, selector: int, ext: int) -> tuple[int, int, int, int]:
        """Read the descriptor for `selector`: (address, base, limit, flags) or #GP(selector)."""
        ctx = self.ctx
        index = selector & ~7
        if selector & 4:
            _, table_base, table_limit, _ = ctx.raw_segment(6)
        else:
            table = ctx.table(8)
            table_base, table_limit = table.base, table.limit
        if index + 7 > table_limit:
            raise DeliveryFault(GP, (selector & ~3) | ext)
        addr = table_base + index
        lo, hi = struct.unpack("<II", self._read(addr, 8))
        base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi & (1 << 23):
            limit = (limit << 12) | 0xFFF
        return addr, base, limit, hi

    def _target_code_segment(self, selector: int, cpl: int, ext: int, long_mode: bool) -> tuple[int, int, int, int]:
        if selector & ~3 == 0:
            raise DeliveryFault(GP, ext)
        addr, base, limit, flags = self._descriptor(selector, ext)
        dpl = (flags >> 13) & 3
        if not flags & DESC_S or not flags & DESC_CODE or dpl > cpl:
            raise DeliveryFault(GP, (selector & ~3) | ext)
        if long_mode and (not flags & DESC_L or flags & DESC_B):
            raise DeliveryFault(GP, (selector & ~3) | ext)
        if not flags & DESC_P:
            raise DeliveryFault(NP, (selector & ~3) | ext)
        if not flags & DESC_ACCESSED:
            flags |= DESC_ACCESSED
            self._write(addr + 4, struct.pack("<I", flags), False)
        new_cpl = cpl if flags & DESC_CONFORMING else dpl
        return base, limit, flags, new_cpl

    def _gate(self, event: Event, cpl: int, size: int) -> tuple[int, int]:
        """Read and check the IDT gate; returns its two halves (low 8 bytes, high 8 bytes)."""
        idt = self.ctx.table(9)
        ext = self._ext(event)
        vec_code = event.vector * 8 + 2 + ext
        if event.vector * size + size - 1 > idt.limit:
            raise DeliveryFault(GP, vec_code)
        raw = self._read(idt.base + event.vector * size, size)
        lo = struct.unpack_from("<Q", raw)[0]
        hi = struct.unpack_from("<Q", raw, 8)[0] if size == 16 else 0
        gate_type, dpl, present = (lo >> 40) & 0xF, (lo >> 45) & 3, (lo >> 47) & 1
        valid = (0xE, 0xF) if size == 16 else (0x5, 0x6, 0x7, 0xE, 0xF)
        if gate_type not in valid or (lo >> 44) & 1:
            raise DeliveryFault(GP, vec_code)
        if event.kind is EventKind.SOFTWARE and dpl < cpl:
            raise DeliveryFault(GP, event.vector * 8 + 2)
        if not present:
            raise DeliveryFault(NP, vec_code)
        if gate_type == 0x5:
            raise UnsupportedDelivery(f"task gate for vector {event.vector:#x} (hardware task switching)")
        return lo, hi

    def _deliver_protected(self, event: Event, rflags: int) -> int:
        ctx = self.ctx
        cpl = ctx.cpl
        ext = self._ext(event)
        lo, _ = self._gate(event, cpl, 8)
        gate_type = (lo >> 40) & 0xF
        gate32 = gate_type & 8
        offset = (lo & 0xFFFF) | ((lo >> 48) << 16)
        selector = (lo >> 16) & 0xFFFF
        cs_base, cs_limit, cs_flags, new_cpl = self._target_code_segment(selector, cpl, ext, False)
        old_cs = ctx.raw_segment(1)[0]
        old_ss, ss_base, _, ss_flags = ctx.raw_segment(2)
        old_esp = ctx.gpr(4)
        push = 4 if gate32 else 2
        if new_cpl < cpl:
            tr_sel, tr_base, tr_limit, tr_flags = ctx.raw_segment(7)
            if (tr_flags >> 8) & 0xF in (0x9, 0xB):  # 32-bit TSS: ESPn at 4+8n, SSn at 8+8n
                pos = 4 + 8 * new_cpl
                if pos + 5 > tr_limit:
                    raise DeliveryFault(TS, (tr_sel & ~3) | ext)
                esp, new_ss = struct.unpack("<IH", self._read(tr_base + pos, 6))
            else:  # 16-bit TSS: SPn at 2+4n, SSn at 4+4n
                pos = 2 + 4 * new_cpl
                if pos + 3 > tr_limit:
                    raise DeliveryFault(TS, (tr_sel & ~3) | ext)
                esp, new_ss = struct.unpack("<HH", self._read(tr_base + pos, 4))
            if new_ss & ~3 == 0 or new_ss & 3 != new_cpl:
                raise DeliveryFault(TS, (new_ss & ~3) | ext)
            ss_addr, nss_base, nss_limit, nss_flags = self._descriptor(new_ss, ext)
            if ((nss_flags >> 13) & 3) != new_cpl or not nss_flags & DESC_S or nss_flags & DESC_CODE \
                    or not nss_flags & DESC_WRITABLE:  # fmt: skip
                raise DeliveryFault(TS, (new_ss & ~3) | ext)
            if not nss_flags & DESC_P:
                raise DeliveryFault(SS_FAULT, (new_ss & ~3) | ext)
            values = [old_ss, old_esp, rflags, old_cs, ctx.rip]
            stack_base, stack_flags, sp = nss_base, nss_flags, esp
            new_ss_seg = (new_ss, nss_base, nss_limit, nss_flags | DESC_ACCESSED)
        else:
            values = [rflags, old_cs, ctx.rip]
            stack_base, stack_flags, sp = ss_base, ss_flags, old_esp
            new_ss_seg = None
        if event.error_code is not None:
            values.append(event.error_code)
        mask = 0xFFFFFFFF if stack_flags & DESC_B else 0xFFFF
        fmt = "<I" if push == 4 else "<H"
        frame = b"".join(struct.pack(fmt, v & (0xFFFFFFFF if push == 4 else 0xFFFF)) for v in reversed(values))
        sp = (sp - len(frame)) & mask
        self._write(stack_base + sp, frame, new_cpl == 3)
        # Commit: nothing below can fault.
        if new_ss_seg is not None:
            ctx.set_raw_segment(2, new_ss_seg[0], new_ss_seg[1], new_ss_seg[2], new_ss_seg[3] & 0x00F0FF00)
        ctx.set_gpr(4, (old_esp & ~mask if new_ss_seg is None else 0) | sp)
        ctx.set_raw_segment(1, (selector & ~3) | new_cpl, cs_base, cs_limit, cs_flags & 0x00F0FF00)
        ctx.rip = offset if gate32 else offset & 0xFFFF
        new_flags = rflags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
        if gate_type in (0x6, 0xE):
            new_flags &= ~RFLAGS_IF
        ctx.recompute_hflags(new_flags)
        return new_flags

    def _deliver_long(self, event: Event, rflags: int) -> int:
        ctx = self.ctx
        cpl = ctx.cpl
        ext = self._ext(event)
        lo, hi = self._gate(event, cpl, 16)
        gate_type = (lo >> 40) & 0xF
        offset = (lo & 0xFFFF) | ((lo >> 32) & 0xFFFF0000) | ((hi & 0xFFFFFFFF) << 32)
        selector = (lo >> 16) & 0xFFFF
        ist = (lo >> 32) & 7
        cs_base, cs_limit, cs_flags, new_cpl = self._target_code_segment(selector, cpl, ext, True)
        old_cs = ctx.raw_segment(1)[0]
        old_ss = ctx.raw_segment(2)[0]
        old_rsp = ctx.gpr(4)
        if ist or new_cpl < cpl:
            tr_sel, tr_base, tr_limit, _ = ctx.raw_segment(7)
            pos = 0x24 + 8 * (ist - 1) if ist else 4 + 8 * new_cpl
            if pos + 7 > tr_limit:
                raise DeliveryFault(TS, (tr_sel & ~3) | ext)
            rsp = struct.unpack("<Q", self._read(tr_base + pos, 8))[0]
        else:
            rsp = old_rsp
        rsp &= ~0xF
        values = [old_ss, old_rsp, rflags, old_cs, ctx.rip]
        if event.error_code is not None:
            values.append(event.error_code)
        frame = b"".join(struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF) for v in reversed(values))
        rsp = (rsp - len(frame)) & 0xFFFFFFFFFFFFFFFF
        if not _canonical(rsp) or not _canonical(rsp + len(frame) - 1):
            raise DeliveryFault(SS_FAULT, ext)
        self._write(rsp, frame, new_cpl == 3)
        if new_cpl != cpl:
            ctx.set_raw_segment(2, new_cpl, 0, 0, new_cpl << 13)  # null SS with RPL = new CPL (§6.14.4)
        ctx.set_gpr(4, rsp)
        ctx.set_raw_segment(1, (selector & ~3) | new_cpl, cs_base, cs_limit, cs_flags & 0x00F0FF00)
        ctx.rip = offset
        new_flags = rflags & ~(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF | RFLAGS_VM)
        if gate_type == 0xE:
            new_flags &= ~RFLAGS_IF
        ctx.recompute_hflags(new_flags)
        return new_flags


def _canonical(address: int) -> bool:
    top = address >> 47
    return top == 0 or top == 0x1FFFF
