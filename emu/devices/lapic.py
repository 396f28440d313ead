"""The local APIC in xAPIC mode: every CPU's own interrupt controller, at 0xFEE00000.

Intel SDM vol. 3A ch. 11 (ch. 10 in editions before 2023), "Advanced Programmable Interrupt
Controller (APIC)". Since the P6 each CPU has a local APIC that decides which interrupt the core
takes next. It receives interrupts from three kinds of sources:

- its local vector table (LVT, §11.5.1): its own timer, the thermal and performance-counter
  sensors, the LINT0/LINT1 pins and its error logic, each with a vector, a delivery mode and a
  mask bit;
- the I/O APIC (emu.devices.ioapic) and other CPUs (inter-processor interrupts through the ICR),
  as messages carrying a vector;
- the 8259 PIC pair on LINT0, when LINT0's delivery mode is ExtINT: the CPU then asks the PIC
  for the vector with an INTA cycle, as if there were no APIC ("virtual wire mode", Intel
  MultiProcessor Specification 1.4 §3.6.2.2). This is how PIC-only guests keep working.

An accepted fixed interrupt sets its bit in the 256-bit Interrupt Request Register (IRR). The
APIC offers the highest one to the core if its priority class (vector >> 4) is above the
processor priority (PPR, §11.8.3.1: the higher of the task priority TPR, set by software, and
the class of the highest vector in service). When the core takes it (INTA), the bit moves to
the In-Service Register (ISR); the handler ends with a write to EOI, which clears the highest
ISR bit. For a level-triggered interrupt (its Trigger Mode Register bit set) the EOI is also
broadcast to the I/O APICs, which clear the pin's Remote IRR and may deliver it again.

The timer (§11.5.4) counts down from the initial count at the bus clock divided by the
divide configuration, interrupting once (one-shot) or at every reload (periodic). Its bus clock
is 1 GHz here, as in QEMU and KVM. Nothing ticks: the current count is derived from the
machine's Clock and one Timer is armed for the next interrupt (the 8254's scheme, emu.devices.pit).

The registers are 32 bits wide on 16-byte boundaries of a 4 KiB page (§11.4.1, table 11-1),
at the address in the IA32_APIC_BASE MSR (0x1B, §11.4.4): 0xFEE00900 at reset, that is base
0xFEE00000, enabled (bit 11), bootstrap processor (bit 8).

emu's model is one CPU's xAPIC with the version and reset state of QEMU's (version 0x14, six
LVT entries: 0x00050014; LVT masked but LINT0 = ExtINT). Not modelled: x2APIC and the
TSC-deadline timer (not advertised in CPUID), CMCI, the thermal and performance sensors (their
LVT entries exist but nothing raises them), SMI/INIT/SIPI (one CPU), NMI delivery (no source in
this PC), moving the APIC page (refused). Deviation from QEMU, following the SDM and KVM: LVT
reserved bits read as 0, software-disabling the APIC masks every LVT entry, and the ESR keeps
the write-then-read protocol (§11.5.3: a write latches the errors seen since the last write).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ..clock import Clock, Timer

if TYPE_CHECKING:
    from .pic import Pic8259Pair

APIC_BASE_ADDRESS = 0xFEE0_0000
APIC_WINDOW = 0x1000
MSR_IA32_APIC_BASE = 0x1B
APIC_BASE_BSP = 1 << 8
APIC_BASE_ENABLE = 1 << 11
APIC_BASE_X2APIC = 1 << 10
APIC_VERSION = 0x0005_0014  # version 0x14 (integrated xAPIC), max LVT entry 5: QEMU's

# Register offsets (SDM vol. 3A table 11-1)
ID, VERSION, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0
ISR_BASE, TMR_BASE, IRR_BASE, ESR = 0x100, 0x180, 0x200, 0x280
ICR_LOW, ICR_HIGH = 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = 0x320, 0x330, 0x340, 0x350, 0x360, 0x370
TIMER_INITIAL, TIMER_CURRENT, TIMER_DIVIDE = 0x380, 0x390, 0x3E0
LVT_OFFSETS = (LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR)
LVT_NAMES = ("timer", "thermal", "perf", "LINT0", "LINT1", "error")

SVR_ENABLE = 1 << 8  # APIC software enable
LVT_MASKED = 1 << 16
LVT_LEVEL = 1 << 15  # trigger mode (LINT0/LINT1 only)
LVT_TIMER_PERIODIC = 1 << 17
# Writable LVT bits per entry (figure 11-8): vector, delivery mode, polarity, trigger, mask,
# timer mode. Delivery status (bit 12) and remote IRR (bit 14) are read-only.
_LVT_WRITABLE = {
    LVT_TIMER: 0xFF | LVT_MASKED | LVT_TIMER_PERIODIC,  # no TSC-deadline mode (bit 18)
    LVT_THERMAL: 0x7FF | LVT_MASKED,
    LVT_PERF: 0x7FF | LVT_MASKED,
    LVT_LINT0: 0x7FF | 1 << 13 | LVT_LEVEL | LVT_MASKED,
    LVT_LINT1: 0x7FF | 1 << 13 | LVT_LEVEL | LVT_MASKED,
    LVT_ERROR: 0xFF | LVT_MASKED,
}
# Delivery modes (bits 8-10 of an LVT entry, an ICR or an I/O APIC redirection entry)
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
ICR_WRITABLE = 0xFF | 0x7 << 8 | 1 << 11 | 1 << 14 | 1 << 15 | 0x3 << 18
SHORTHAND_NONE, SHORTHAND_SELF, SHORTHAND_ALL, SHORTHAND_OTHERS = 0, 1, 2, 3

# Error Status Register bits (figure 11-9)
ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

BUS_HZ = 1_000_000_000  # the timer's bus clock: 1 ns per tick, as QEMU's and KVM's APICs
_READ_ONLY = frozenset({VERSION, APR, PPR, RRD, TIMER_CURRENT}) | frozenset(range(ISR_BASE, IRR_BASE + 0x80, 0x10))


@dataclass
class ApicCounters:
    """What the APIC did, for --stats."""

    accepted: int = 0  # fixed interrupts set in the IRR (I/O APIC, IPIs, LVT)
    coalesced: int = 0  # ... that found their IRR bit already set
    dropped_disabled: int = 0  # fixed interrupts arriving while the APIC was software-disabled
    delivered: int = 0  # vectors the CPU took from the IRR (INTA)
    extint: int = 0  # vectors the CPU took from the 8259 through ExtINT (LINT0 or the I/O APIC)
    spurious: int = 0  # INTA with nothing above the PPR: the spurious vector
    eois: int = 0
    eoi_broadcasts: int = 0  # EOIs of level-triggered vectors, told to the I/O APIC
    timer_interrupts: int = 0  # timer expiries (delivered or masked)
    timer_lost: int = 0  # periodic expiries that passed while the machine was late
    ipis: int = 0  # ICR writes
    unsupported: int = 0  # ICR/LVT deliveries emu does not model (NMI, SMI, INIT, SIPI)


@dataclass
class LocalApic:
    """One CPU's xAPIC: the MMIO page (io_read/io_write, offsets from the base), the MSR, the
    CPU's interrupt input (has_interrupt/acknowledge, as the 8259 pair offers them) and the
    inputs from the I/O APIC (accept, eoi broadcast through `on_eoi`)."""

    clock: Clock
    pic: Pic8259Pair | None = None  # the 8259 pair on LINT0
    apic_id: int = 0
    on_output: Callable[[bool], None] | None = None  # the CPU's interrupt request changed
    on_eoi: Callable[[int], None] | None = None  # EOI of a level-triggered vector (to the I/O APIC)
    on_warning: Callable[[str], None] | None = None  # something the guest asked that emu refuses
    counters: ApicCounters = field(default_factory=ApicCounters)
    taken: list[int] = field(default_factory=lambda: [0] * 256)  # INTAs per vector: what a guest's handlers count

    base: int = field(init=False)  # IA32_APIC_BASE
    id: int = field(init=False)
    tpr: int = field(init=False)
    ldr: int = field(init=False)
    dfr: int = field(init=False)
    svr: int = field(init=False)
    irr: int = field(init=False)  # 256-bit registers as Python ints
    isr: int = field(init=False)
    tmr: int = field(init=False)
    esr: int = field(init=False)  # what ESR reads (latched by the last write)
    esr_pending: int = field(init=False)  # errors seen since the last write to ESR
    icr_low: int = field(init=False)
    icr_high: int = field(init=False)
    lvt: dict[int, int] = field(init=False)
    initial_count: int = field(init=False)
    divide: int = field(init=False)
    output: bool = field(init=False)  # the interrupt request to the CPU
    extint_latched: bool = field(init=False)  # an I/O APIC ExtINT message waits for INTA
    cr8_version: int = field(init=False)  # bumped when TPR changes (the kvm vCPU mirrors CR8)
    _timer: Timer = field(init=False, repr=False)
    _start_ns: int = field(init=False)  # the timer counted _start_count at _start_ns ...
    _start_count: int = field(init=False)
    _shift: int = field(init=False)  # ... one count per 2**_shift bus clocks
    _next_expiry: int = field(init=False)  # expiries since _start (periodic reloads)
    _warned: set[str] = field(default_factory=set, repr=False)

    max_access_size: ClassVar[int] = 4

    def __post_init__(self) -> None:
        self._timer = self.clock.timer(self._on_timer, "lapic-timer")
        self.output = False
        self.cr8_version = 0
        self.reset()

    # -- reset and firmware state ----------------------------------------------------------

    def reset(self) -> None:
        """RESET as QEMU leaves its BSP's APIC (SDM §11.4.7.1; QEMU apic_reset_common): enabled
        in the MSR, software-disabled (SVR 0xFF), every LVT masked except LINT0 = ExtINT, so
        the 8259's interrupts reach the CPU as they would without an APIC."""
        self.base = APIC_BASE_ADDRESS | APIC_BASE_ENABLE | APIC_BASE_BSP
        self.id = self.apic_id
        self.tpr = self.ldr = 0
        self.dfr = 0xFFFF_FFFF
        self.svr = 0xFF
        self.irr = self.isr = self.tmr = 0
        self.esr = self.esr_pending = 0
        self.icr_low = self.icr_high = 0
        self.lvt = {offset: LVT_MASKED for offset in LVT_OFFSETS}
        self.lvt[LVT_LINT0] = DM_EXTINT << 8
        self.initial_count = self.divide = 0
        self._shift = 1  # divide by 2
        self._start_ns = self._start_count = self._next_expiry = 0
        self.extint_latched = False
        self._timer.cancel()
        self.cr8_version += 1
        self._update()

    def firmware_setup(self) -> None:
        """What SeaBIOS leaves before it starts an OS (src/fw/smp.c, smp_scan): the APIC
        software-enabled, LINT0 = ExtINT and LINT1 = NMI, both level-triggered. A kernel emu
        boots directly (multiboot, Linux) finds this, as under QEMU with its BIOS."""
        self.svr |= SVR_ENABLE
        self.lvt[LVT_LINT0] = LVT_LEVEL | DM_EXTINT << 8
        self.lvt[LVT_LINT1] = LVT_LEVEL | DM_NMI << 8
        self._update()

    # -- the IA32_APIC_BASE MSR and CR8 ----------------------------------------------------

    @property
    def globally_enabled(self) -> bool:
        return bool(self.base & APIC_BASE_ENABLE)

    @property
    def software_enabled(self) -> bool:
        return bool(self.svr & SVR_ENABLE) and self.globally_enabled

    def read_base_msr(self) -> int:
        return self.base

    def write_base_msr(self, value: int) -> None:
        """WRMSR IA32_APIC_BASE. Clearing bit 11 disables the APIC until reset (as QEMU: the
        CPU then behaves as one without an APIC, the 8259 wired straight to INTR); moving the
        page or turning on x2APIC mode is refused, with a message."""
        if value & APIC_BASE_X2APIC:
            self._warn("x2apic", "the guest asked for x2APIC mode, which emu does not offer (CPUID says so)")
        address = value & 0xF_FFFF_F000
        if address != self.base & 0xF_FFFF_F000:
            self._warn("move", f"the guest moved the local APIC to {address:#x}; emu keeps it at {APIC_BASE_ADDRESS:#x}")
        if not value & APIC_BASE_ENABLE and self.globally_enabled:
            self.base &= ~APIC_BASE_ENABLE
            self.svr &= ~SVR_ENABLE
            self._update()

    @property
    def cr8(self) -> int:
        """CR8 is TPR[7:4] (SDM §11.8.6)."""
        return self.tpr >> 4

    def write_cr8(self, value: int) -> None:
        if value & 0xF != self.tpr >> 4:
            self.tpr = (value & 0xF) << 4
            self.cr8_version += 1
            self._update()

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            if self.on_warning is not None:
                self.on_warning(message)

    # -- priorities -------------------------------------------------------------------------

    @staticmethod
    def _highest(bits: int) -> int:
        return bits.bit_length() - 1  # -1 when empty

    @property
    def ppr(self) -> int:
        """Processor priority (§11.8.3.1): TPR if its class is at least the in-service class,
        else the in-service class with subclass 0."""
        isrv = max(self._highest(self.isr), 0)
        return self.tpr if self.tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    @property
    def apr(self) -> int:
        """Arbitration priority (§11.8.3.1, P6 definition): what this APIC bids with for a
        lowest-priority interrupt."""
        isrv, irrv = max(self._highest(self.isr), 0), max(self._highest(self.irr), 0)
        if self.tpr >> 4 >= irrv >> 4 and self.tpr >> 4 > isrv >> 4:
            return self.tpr
        return max(self.tpr & 0xF0, isrv & 0xF0, irrv & 0xF0)

    def pending_vector(self) -> int:
        """The IRR vector the APIC would offer now (class above the PPR's), or -1."""
        if not self.software_enabled:
            return -1
        irrv = self._highest(self.irr)
        if irrv < 0 or irrv >> 4 <= self.ppr >> 4:
            return -1
        return irrv

    def _extint_pending(self) -> bool:
        """The 8259's INTR passes through: LINT0 unmasked in ExtINT mode (virtual wire), or the
        APIC globally disabled (no APIC at all); or the I/O APIC sent an ExtINT message."""
        if self.extint_latched:
            return True
        if self.pic is None or not self.pic.has_interrupt():
            return False
        lint0 = self.lvt[LVT_LINT0]
        return not self.globally_enabled or (not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_EXTINT)

    def _update(self) -> None:
        out = self.pending_vector() >= 0 or self._extint_pending()
        if out != self.output:
            self.output = out
            if self.on_output is not None:
                self.on_output(out)

    # -- the CPU's side: INTR and INTA ------------------------------------------------------

    def has_interrupt(self) -> bool:
        """The CPU's interrupt request (what the 8259's INT pin was before the APIC)."""
        return self.output

    def acknowledge(self) -> int:
        """INTA: the vector to deliver. ExtINT goes first, as its vector is the 8259's and
        not subject to the APIC's priorities (QEMU's apic_get_interrupt does the same)."""
        if self._extint_pending():
            self.extint_latched = False
            assert self.pic is not None
            vector = self.pic.acknowledge()
            self.counters.extint += 1
            self._update()
            return vector
        vector = self.pending_vector()
        if vector < 0:  # the request went away (TPR raised, say) between INTR and INTA
            self.counters.spurious += 1
            return self.svr & 0xFF
        bit = 1 << vector
        self.irr &= ~bit
        self.isr |= bit
        self.counters.delivered += 1
        self.taken[vector] += 1
        self._update()
        return vector

    def pic_output_changed(self, level: bool) -> None:
        """The 8259 pair's INT output (LINT0's wire) changed."""
        lint0 = self.lvt[LVT_LINT0]
        if level and self.globally_enabled and not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DM_FIXED:
            self.accept(lint0 & 0xFF, level=bool(lint0 & LVT_LEVEL))  # LINT0 as a fixed local interrupt
        self._update()

    # -- interrupt messages (I/O APIC, IPIs, local sources) ---------------------------------

    def accept(self, vector: int, level: bool = False) -> None:
        """A fixed (or lowest-priority) interrupt for this APIC: into the IRR, TMR = trigger."""
        if not self.software_enabled:
            self.counters.dropped_disabled += 1
            return
        if vector < 16:  # vectors 0-15 are reserved for exceptions (§11.5.2)
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        if self.irr & bit:
            self.counters.coalesced += 1
        self.counters.accepted += 1
        self.irr |= bit
        self.tmr = self.tmr | bit if level else self.tmr & ~bit
        self._update()

    def accept_extint(self) -> None:
        """An ExtINT message from the I/O APIC: the CPU will ask the 8259 for the vector."""
        self.extint_latched = True
        self._update()

    def matches(self, destination: int, logical: bool) -> bool:
        """Is this APIC a destination of a message (§11.6.2)? Physical: the APIC ID or 0xFF
        (broadcast). Logical: against LDR, in the flat (DFR 0xF) or cluster (0x0) model."""
        if not logical:
            return destination in (self.id, 0xFF)
        ldr = self.ldr >> 24
        if self.dfr >> 28 == 0xF:
            return bool(destination & ldr)
        return destination >> 4 == ldr >> 4 and bool(destination & ldr & 0xF)

    def _error(self, bits: int) -> None:
        self.esr_pending |= bits
        lvt = self.lvt[LVT_ERROR]
        if not lvt & LVT_MASKED:
            self.accept(lvt & 0xFF)

    def _local_interrupt(self, offset: int) -> None:
        """An LVT source fired (the timer): deliver as its entry says."""
        lvt = self.lvt[offset]
        if lvt & LVT_MASKED:
            return
        mode = (lvt >> 8) & 7 if offset != LVT_TIMER else DM_FIXED
        if mode == DM_FIXED:
            self.accept(lvt & 0xFF)
        elif mode == DM_EXTINT:
            self._update()
        else:
            self.counters.unsupported += 1

    def _eoi(self) -> None:
        self.counters.eois += 1
        isrv = self._highest(self.isr)
        if isrv < 0:
            return
        bit = 1 << isrv
        self.isr &= ~bit
        if self.tmr & bit:
            self.counters.eoi_broadcasts += 1
            if self.on_eoi is not None:
                self.on_eoi(isrv)
        self._update()

    def _send_ipi(self) -> None:
        """ICR low was written: send the IPI it describes (§11.6.1). One CPU: it reaches this
        APIC by the self shorthand, by 'all including self', or by a destination that matches."""
        self.counters.ipis += 1
        low = self.icr_low
        vector, mode, logical = low & 0xFF, (low >> 8) & 7, bool(low & 1 << 11)
        shorthand = (low >> 18) & 3
        if shorthand == SHORTHAND_NONE:
            to_me = self.matches(self.icr_high >> 24, logical)
        else:
            to_me = shorthand in (SHORTHAND_SELF, SHORTHAND_ALL)
        if mode in (DM_FIXED, DM_LOWEST):
            if vector < 16:
                self._error(ESR_SEND_ILLEGAL_VECTOR)
                return
            if to_me:
                self.accept(vector)
        else:
            self.counters.unsupported += 1

    # -- the timer --------------------------------------------------------------------------

    def _divide_shift(self) -> int:
        """Divide configuration (figure 11-10): bits 0, 1 and 3 select 2, 4, ... 128 or 1."""
        v = (self.divide & 3) | (self.divide >> 1) & 4
        return (v + 1) & 7

    @property
    def periodic(self) -> bool:
        return bool(self.lvt[LVT_TIMER] & LVT_TIMER_PERIODIC)

    def _ticks(self, ns: int) -> int:
        return (ns * BUS_HZ // 1_000_000_000) >> self._shift

    def _ns_of(self, ticks: int) -> int:
        return -(-(ticks << self._shift) * 1_000_000_000 // BUS_HZ)

    def current_count(self, now: int | None = None) -> int:
        if not self.initial_count:
            return 0
        now = self.clock.now_ns() if now is None else now
        d = self._ticks(now - self._start_ns)
        if d < self._start_count:
            return self._start_count - d
        if not self.periodic:
            return 0
        return self.initial_count - (d - self._start_count) % self.initial_count

    def _expiry_ns(self, index: int) -> int:
        """When expiry number `index` (0 = the first after _start) happens."""
        return self._start_ns + self._ns_of(self._start_count + index * self.initial_count)

    def _restart(self, count: int, now: int) -> None:
        """Count down from `count` from `now` (a new initial count, or a new divisor)."""
        self._start_ns, self._start_count, self._next_expiry = now, count, 0
        self._arm(now)

    def _arm(self, now: int) -> None:
        """Arm the Timer for the next expiry after `now`, if one comes and can interrupt."""
        if not self.initial_count or self.lvt[LVT_TIMER] & LVT_MASKED:
            self._timer.cancel()
            return
        if not self.periodic:
            if self._next_expiry > 0 or self._start_count == 0:
                self._timer.cancel()
                return
            self._timer.arm(self._expiry_ns(0))
            return
        due = self._expiry_ns(self._next_expiry)
        if due < now:  # skipped while masked, or the loop came late: go on from now
            elapsed = self._ticks(now - self._start_ns) - self._start_count
            self._next_expiry = max(self._next_expiry, elapsed // self.initial_count + 1)
            due = self._expiry_ns(self._next_expiry)
        self._timer.arm(due)

    def _on_timer(self, now: int) -> None:
        self.counters.timer_interrupts += 1
        if self.periodic:
            elapsed = self._ticks(now - self._start_ns) - self._start_count
            passed = elapsed // self.initial_count + 1  # expiries due by now
            if passed > self._next_expiry + 1:
                self.counters.timer_lost += passed - self._next_expiry - 1
            self._next_expiry = passed
        else:
            self._next_expiry = 1
        self._local_interrupt(LVT_TIMER)
        self._arm(now)

    # -- the MMIO page ----------------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        if size != 4 or offset & 0xF:
            return 0  # the registers are 32-bit accesses at 16-byte boundaries (as QEMU)
        return self.read_register(offset)

    def io_write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset & 0xF:
            return
        self.write_register(offset, value)

    def read_register(self, offset: int) -> int:
        if offset == ID:
            return self.id << 24
        if offset == VERSION:
            return APIC_VERSION
        if offset == TPR:
            return self.tpr
        if offset == APR:
            return self.apr
        if offset == PPR:
            return self.ppr
        if offset == EOI:
            return 0
        if offset == LDR:
            return self.ldr
        if offset == DFR:
            return self.dfr
        if offset == SVR:
            return self.svr
        if ISR_BASE <= offset < ISR_BASE + 0x80:
            return (self.isr >> (32 * ((offset - ISR_BASE) >> 4))) & 0xFFFF_FFFF
        if TMR_BASE <= offset < TMR_BASE + 0x80:
            return (self.tmr >> (32 * ((offset - TMR_BASE) >> 4))) & 0xFFFF_FFFF
        if IRR_BASE <= offset < IRR_BASE + 0x80:
            return (self.irr >> (32 * ((offset - IRR_BASE) >> 4))) & 0xFFFF_FFFF
        if offset == ESR:
            return self.esr
        if offset == ICR_LOW:
            return self.icr_low  # delivery status (bit 12) always idle: delivery is immediate
        if offset == ICR_HIGH:
            return self.icr_high
        if offset in self.lvt:
            return self.lvt[offset]
        if offset == TIMER_INITIAL:
            return self.initial_count
        if offset == TIMER_CURRENT:
            return self.current_count()
        if offset == TIMER_DIVIDE:
            return self.divide
        self._error(ESR_ILLEGAL_REGISTER)
        return 0

    def write_register(self, offset: int, value: int) -> None:
        value &= 0xFFFF_FFFF
        if offset == ID:
            self.id = value >> 24
        elif offset == TPR:
            self.tpr = value & 0xFF
            self.cr8_version += 1
            self._update()
        elif offset == EOI:
            self._eoi()
        elif offset == LDR:
            self.ldr = value & 0xFF00_0000
        elif offset == DFR:
            self.dfr = value | 0x0FFF_FFFF
        elif offset == SVR:
            self._write_svr(value)
        elif offset == ESR:  # write-then-read (§11.5.3): latch what was seen since the last write
            self.esr, self.esr_pending = self.esr_pending, 0
        elif offset == ICR_LOW:
            self.icr_low = value & ICR_WRITABLE
            self._send_ipi()
        elif offset == ICR_HIGH:
            self.icr_high = value & 0xFF00_0000
        elif offset in self.lvt:
            self._write_lvt(offset, value)
        elif offset == TIMER_INITIAL:
            self.initial_count = value
            self._restart(value, self.clock.now_ns())
        elif offset == TIMER_DIVIDE:
            now = self.clock.now_ns()
            count = self.current_count(now)
            self.divide = value & 0xB
            self._shift = self._divide_shift()
            if self.initial_count and count:
                self._restart(count, now)
        elif offset not in _READ_ONLY:
            self._error(ESR_ILLEGAL_REGISTER)

    def _write_svr(self, value: int) -> None:
        was = self.software_enabled
        self.svr = value & 0x1FF  # vector and enable bit; focus checking and EOI suppression are not offered
        if not self.globally_enabled:
            self.svr &= ~SVR_ENABLE
        if was and not self.svr & SVR_ENABLE:  # software disable masks every LVT entry (§11.4.7.2)
            for offset in self.lvt:
                self.lvt[offset] |= LVT_MASKED
            self._arm(self.clock.now_ns())
        self._update()

    def _write_lvt(self, offset: int, value: int) -> None:
        value &= _LVT_WRITABLE[offset]
        if not self.svr & SVR_ENABLE:
            value |= LVT_MASKED  # cannot be unmasked while software-disabled (§11.4.7.2)
        old = self.lvt[offset]
        self.lvt[offset] = value
        if offset == LVT_TIMER and (old ^ value) & (LVT_MASKED | LVT_TIMER_PERIODIC):
            # The count goes on from where it is (as QEMU): a new mode changes what happens at 0
            self._arm(self.clock.now_ns())
        elif offset == LVT_LINT0:
            self._update()
