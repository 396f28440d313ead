"""The ACPI fixed hardware: PM1 event and control registers and the power-management timer.

ACPI 6.5 §4.8 ("ACPI Hardware Specification") defines a few registers every non-reduced ACPI
PC has, at ports the FADT names (emu.loader.acpi: 600h-60Bh, as QEMU's PIIX4 PM has them):

  600h PM1_STS (§4.8.4.1.1, 16 bits)  events that happened: TMR_STS (bit 0, the timer's bit 23
                                      changed), PWRBTN_STS (bit 8), WAK_STS (bit 15), ...
                                      Write 1 to a bit to clear it ("write-one-to-clear").
  602h PM1_EN  (§4.8.4.1.2, 16 bits)  which of those events raise the SCI.
  604h PM1_CNT (§4.8.4.2.1, 16 bits)  SCI_EN (bit 0): ACPI mode; SLP_TYPx (bits 12:10) and
                                      SLP_EN (bit 13, write-only): writing SLP_EN enters the
                                      sleep state SLP_TYP selects; the DSDT's \\_S5 object says
                                      which value means "soft off" (S5).
  608h PM_TMR  (§4.8.3.3, 32 bits)    a free-running counter at 3.579545 MHz, 24 bits wide (the
                                      FADT's TMR_VAL_EXT flag would say 32), read-only.

The SCI (System Control Interrupt, §5.2.9: FADT SCI_INT, IRQ 9 here) is a shareable,
level-triggered, active-high ISA interrupt that is asserted while SCI_EN is set and an event is
both pending in PM1_STS and enabled in PM1_EN. emu has no SMM, so the FADT names no SMI
command port and ACPI mode is on from reset (SCI_EN reads 1).

The timer counts from the machine's `Clock`, so it follows host time, or the instruction count
with the deterministic InstructionClock. For a guest it is a second clock besides the PIT to
calibrate the TSC against, and Linux's `acpi_pm` clocksource. Its status bit is computed when
read: TMR_STS is set when bit 23 has flipped since software last cleared it; a `Timer` raises
the SCI at the next flip only while TMR_EN asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..clock import Clock, Timer
from .interfaces import IrqLine, SystemControl

PM_TIMER_HZ = 3_579_545
TIMER_BITS = 24
# PM1_STS / PM1_EN bits
TMR_STS, PWRBTN_STS, WAK_STS = 1 << 0, 1 << 8, 1 << 15
STS_WRITABLE = TMR_STS | 1 << 4 | 1 << 5 | PWRBTN_STS | 1 << 9 | 1 << 10 | 1 << 14 | WAK_STS
EN_WRITABLE = TMR_STS | 1 << 5 | PWRBTN_STS | 1 << 9 | 1 << 10  # TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN
SCI_EVENTS = TMR_STS | PWRBTN_STS  # the events emu's hardware can signal
# PM1_CNT bits
SCI_EN, SLP_TYP_SHIFT, SLP_TYP_MASK, SLP_EN = 1 << 0, 10, 0x7 << 10, 1 << 13
CNT_WRITABLE = 0x7 | SLP_TYP_MASK  # SCI_EN, BM_RLD, GBL_RLS, SLP_TYPx
# register offsets in the 12-byte block
PM1_STS, PM1_EN, PM1_CNT, PM_TMR = 0, 2, 4, 8
BLOCK_SIZE = 12


@dataclass
class AcpiPm:
    """The PM1a event and control blocks and the PM timer; register at 600h, 12 ports."""

    clock: Clock
    sci: IrqLine
    system: SystemControl
    s5_type: int  # the SLP_TYP value that powers off (the DSDT's \_S5)
    status: int = 0  # PM1_STS, except TMR_STS (computed from the time)
    enable: int = 0
    control: int = SCI_EN
    poweroffs: int = 0
    _start_ns: int = 0
    _flips_seen: int = 0  # bit-23 flips before the last time software cleared TMR_STS
    _sci_level: bool = False
    _timer: Timer | None = field(default=None, repr=False)

    max_access_size: ClassVar[int] = 4

    def __post_init__(self) -> None:
        self._timer = self.clock.timer(self._timer_flip, "acpi-pm-timer")
        self._start_ns = self.clock.now_ns()

    # the timer -----------------------------------------------------------------------------
    def ticks(self, now_ns: int | None = None) -> int:
        """3.579545 MHz periods since reset (the counter before it wraps)."""
        now = self.clock.now_ns() if now_ns is None else now_ns
        return (now - self._start_ns) * PM_TIMER_HZ // 1_000_000_000

    def _flips(self, now_ns: int | None = None) -> int:
        return self.ticks(now_ns) >> (TIMER_BITS - 1)

    def read_status(self) -> int:
        return self.status | (TMR_STS if self._flips() > self._flips_seen else 0)

    def _timer_flip(self, now_ns: int) -> None:
        self._update_sci(now_ns)

    def _arm_timer(self) -> None:
        """While TMR_EN and SCI_EN are set: look at the SCI again at the timer's next flip."""
        assert self._timer is not None
        if not (self.enable & TMR_STS and self.control & SCI_EN):
            self._timer.cancel()
            return
        next_flip_ticks = (self._flips() + 1) << (TIMER_BITS - 1)
        deadline = self._start_ns + -(-next_flip_ticks * 1_000_000_000 // PM_TIMER_HZ)
        if self._timer.deadline_ns != deadline:  # each register write gets here: arm only on a change
            self._timer.arm(deadline)

    # events --------------------------------------------------------------------------------
    def press_power_button(self) -> None:
        """The fixed-feature power button (FADT flag PWR_BUTTON clear): PWRBTN_STS, then the SCI."""
        self.status |= PWRBTN_STS
        self._update_sci()

    def _update_sci(self, now_ns: int | None = None) -> None:
        pending = (self.status | (TMR_STS if self._flips(now_ns) > self._flips_seen else 0)) & self.enable
        level = bool(self.control & SCI_EN and pending & SCI_EVENTS)
        if level != self._sci_level:  # only changes: IRQ 9 may be shared (a virtio-mmio device)
            self._sci_level = level
            self.sci.set_level(level)
        self._arm_timer()

    # the ports -----------------------------------------------------------------------------
    def _registers(self) -> bytes:
        timer = self.ticks() & ((1 << TIMER_BITS) - 1)
        return b"".join(v.to_bytes(n, "little") for v, n in
                        ((self.read_status(), 2), (self.enable, 2), (self.control & ~SLP_EN, 2), (0, 2), (timer, 4)))  # fmt: skip

    def io_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self._registers()[offset : offset + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        """Byte lanes of `value` go to the 16-bit registers they cover (the timer ignores writes)."""
        for register in (PM1_STS, PM1_EN, PM1_CNT):
            mask = 0
            for i in range(size):
                if register <= offset + i < register + 2:
                    mask |= 0xFF << (8 * (offset + i - register))
            if mask:
                shift = 8 * (offset - register)
                self._write_register(register, (value << shift if shift >= 0 else value >> -shift) & mask, mask)
        self._update_sci()

    def _write_register(self, register: int, value: int, mask: int) -> None:
        if register == PM1_STS:
            cleared = value & STS_WRITABLE
            if cleared & TMR_STS:
                self._flips_seen = self._flips()
            self.status &= ~cleared
        elif register == PM1_EN:
            self.enable = (self.enable & ~mask) | (value & mask & EN_WRITABLE)
        else:
            self.control = (self.control & ~mask) | (value & mask & CNT_WRITABLE)
            if value & SLP_EN:
                self._sleep((self.control & SLP_TYP_MASK) >> SLP_TYP_SHIFT)

    def _sleep(self, slp_typ: int) -> None:
        """SLP_EN: enter the sleep state SLP_TYP names. emu implements S5 (soft off): the
        machine stops with status 0, as QEMU does on an ACPI power-off. Other types are ignored
        (the tables declare none)."""
        if slp_typ == self.s5_type:
            self.poweroffs += 1
            self.system.request_exit(0)

    def reset(self) -> None:
        """Power-on state: no events, none enabled, ACPI mode on, the timer from 0."""
        self.status = self.enable = 0
        self.control = SCI_EN
        self._start_ns = self.clock.now_ns()
        self._flips_seen = 0
        self._update_sci()
