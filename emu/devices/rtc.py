"""The PC's real-time clock: a Motorola MC146818A and its 128 bytes of CMOS RAM (0x70/0x71).

MC146818A datasheet, "Address map", "Time, calendar and alarm locations", "Registers A-D",
"Interrupts". Software writes a register index to port 0x70 and reads or writes the register
at port 0x71. Bit 7 of the index byte is not part of the index: on the PC/AT it masks NMI
(kept here as `nmi_masked`; emu raises no NMI). Port 0x70 itself is write-only.

  0x00-0x09  seconds, seconds alarm, minutes, minutes alarm, hours, hours alarm,
             day of week (1 = Sunday), day of month, month, year (of the century)
  0x0A  A    UIP (bit 7, update in progress), DV2-0 (divider), RS3-0 (periodic rate)
  0x0B  B    SET, PIE, AIE, UIE, SQWE, DM (1 = binary, 0 = BCD), 24/12, DSE
  0x0C  C    IRQF, PF, AF, UF: read-only, cleared by reading, which also releases IRQ 8
  0x0D  D    VRT (valid RAM and time; the battery is good)
  0x32       century (the IBM PC/AT convention, named by the ACPI FADT's CENTURY field)
  others     battery-backed RAM for the firmware (memory sizes, boot flags, checksums)

The chip runs an update cycle once a second; UIP goes high 244 us before it (8 cycles of the
32.768 kHz time base) so software that sees UIP=0 has 244 us to read a consistent time. Here
the time is the host's UTC time (`time.time_ns()`, injectable) plus whatever offset the guest
set, computed at each read, and UIP is set in the last 244 us of each second.

Interrupts. PF is set at the rate chosen by RS (period 2^(RS-1) cycles of 32.768 kHz; RS=1
and 2 give 256 Hz and 128 Hz), UF after each update cycle, AF when the time matches the alarm
(an alarm byte with bits 7-6 set matches anything). IRQF = PF.PIE + AF.AIE + UF.UIE drives IRQ
8, which stays asserted until register C is read. Flags are evaluated lazily when observed;
timers run only while an interrupt is enabled (PIE: at the periodic rate; UIE/AIE: at each
second boundary), so the guest is kicked only when it asked to be.

Deviations: the day-of-week register is computed from the date (writes are ignored); changing
DM or 24/12 re-encodes the current time instead of leaving stale register contents; the
divider bits DV are kept but do not stop time; SQWE drives no pin; AF is only checked at
moments the flags are evaluated (every second while AIE is set). Daylight saving is ignored.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from ..clock import Clock, Timer
from .interfaces import IrqLine

RTC_BASE = 0x70
RTC_IRQ = 8
NS_PER_S = 1_000_000_000
TIMEBASE_HZ = 32768
UIP_NS = 8 * NS_PER_S // TIMEBASE_HZ  # 244 us

REG_SECONDS, REG_SECONDS_ALARM, REG_MINUTES, REG_MINUTES_ALARM = 0x00, 0x01, 0x02, 0x03
REG_HOURS, REG_HOURS_ALARM, REG_DAY_OF_WEEK, REG_DAY, REG_MONTH, REG_YEAR = 0x04, 0x05, 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
REG_CENTURY = 0x32
A_UIP, A_RS = 0x80, 0x0F
B_SET, B_PIE, B_AIE, B_UIE, B_SQWE, B_DM_BINARY, B_24H = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02
C_IRQF, C_PF, C_AF, C_UF = 0x80, 0x40, 0x20, 0x10
D_VRT = 0x80
FLAG_BITS = C_PF | C_AF | C_UF  # C's flags sit at the same bit positions as B's enables

# CMOS RAM layout the firmware reads (SeaBIOS src/hw/rtc.h; QEMU hw/i386/pc.c pc_cmos_init)
CMOS_MEM_BASE_LOW, CMOS_MEM_BASE_HIGH = 0x15, 0x16  # KiB below 640 KiB
CMOS_MEM_EXTMEM_LOW, CMOS_MEM_EXTMEM_HIGH = 0x17, 0x18  # KiB above 1 MiB, up to 65535
CMOS_MEM_EXTMEM2_LOW_ALT, CMOS_MEM_EXTMEM2_HIGH_ALT = 0x30, 0x31  # the same, again
CMOS_MEM_EXTMEM2_LOW, CMOS_MEM_EXTMEM2_HIGH = 0x34, 0x35  # 64 KiB units from 16 MiB to 4 GiB
CMOS_MEM_HIGHMEM_LOW, CMOS_MEM_HIGHMEM_MID, CMOS_MEM_HIGHMEM_HIGH = 0x5B, 0x5C, 0x5D  # above 4 GiB
CMOS_CHECKSUM_HIGH, CMOS_CHECKSUM_LOW = 0x2E, 0x2F  # sum of 0x10-0x2D (IBM PC/AT)
KIB, MIB = 1 << 10, 1 << 20

Fields = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, second


@dataclass
class CmosRtc:
    """The MC146818A at RTC_BASE (2 ports), on IRQ 8; `wall_ns` gives host UTC in ns."""

    clock: Clock
    irq: IrqLine | None = None
    wall_ns: Callable[[], int] = time.time_ns

    ram: bytearray = field(default_factory=lambda: bytearray(128))  # registers A, B live here too
    index: int = 0
    nmi_masked: bool = False
    offset_ns: int = 0  # guest time minus host time, from guest writes
    frozen: list[int] | None = None  # the time fields while SET holds the clock
    flags: int = 0  # PF | AF | UF, pending until register C is read
    _irq_level: bool = False
    _last_second: int = 0
    _last_period: int = 0
    _periodic: Timer = field(init=False, repr=False)
    _update: Timer = field(init=False, repr=False)

    max_access_size: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.ram[REG_A] = 0x26  # 32.768 kHz time base, 1024 Hz periodic rate
        self.ram[REG_B] = B_24H
        self._periodic = self.clock.timer(self._on_periodic, "rtc-periodic")
        self._update = self.clock.timer(self._on_update, "rtc-update")
        self._last_second = self._guest_ns() // NS_PER_S
        self._last_period = self._period_index(self.clock.now_ns(), self._period_cycles())

    # -- time -------------------------------------------------------------------------------

    def _guest_ns(self) -> int:
        return self.wall_ns() + self.offset_ns

    def _fields(self) -> Fields:
        if self.frozen is not None:
            return tuple(self.frozen)  # type: ignore[return-value]
        t = time.gmtime(self._guest_ns() // NS_PER_S)
        return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec

    @staticmethod
    def _epoch(f: Fields | list[int]) -> int:
        year, month, day, hour, minute, second = f
        return calendar.timegm((min(max(year, 1), 9999), min(max(month, 1), 12), day, hour, minute, second))

    def _set_fields(self, f: list[int]) -> None:
        if self.frozen is not None:
            self.frozen = f
        else:  # keep the phase within the second, so the clock ticks on undisturbed
            delta = self._epoch(f) - self._guest_ns() // NS_PER_S
            self.offset_ns += delta * NS_PER_S
            self._last_second += delta

    @property
    def binary(self) -> bool:
        return bool(self.ram[REG_B] & B_DM_BINARY)

    def _encode(self, v: int) -> int:
        return v if self.binary else (v // 10) << 4 | v % 10

    def _decode(self, raw: int) -> int:
        return raw if self.binary else (raw >> 4) * 10 + (raw & 0xF)

    def _encode_hours(self, hour: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._encode(hour)
        return self._encode(hour % 12 or 12) | (0x80 if hour >= 12 else 0)

    def _decode_hours(self, raw: int) -> int:
        if self.ram[REG_B] & B_24H:
            return self._decode(raw)
        return self._decode(raw & 0x7F) % 12 + (12 if raw & 0x80 else 0)

    def _read_time(self, reg: int) -> int:
        year, month, day, hour, minute, second = self._fields()
        if reg == REG_HOURS:
            return self._encode_hours(hour)
        if reg == REG_DAY_OF_WEEK:  # via the epoch, which tolerates a half-set date like 31 Feb
            monday0 = time.gmtime(self._epoch((year, month, day, 0, 0, 0))).tm_wday
            return self._encode((monday0 + 1) % 7 + 1)  # Sunday = 1
        value = {REG_SECONDS: second, REG_MINUTES: minute, REG_DAY: day, REG_MONTH: month,
                 REG_YEAR: year % 100, REG_CENTURY: year // 100}[reg]  # fmt: skip
        return self._encode(value)

    def _write_time(self, reg: int, raw: int) -> None:
        f = list(self._fields())
        if reg == REG_HOURS:
            f[3] = self._decode_hours(raw)
        elif reg == REG_YEAR:
            f[0] = f[0] // 100 * 100 + self._decode(raw)
        elif reg == REG_CENTURY:
            f[0] = self._decode(raw) * 100 + f[0] % 100
        else:
            f[{REG_SECONDS: 5, REG_MINUTES: 4, REG_DAY: 2, REG_MONTH: 1}[reg]] = self._decode(raw)
        self._set_fields(f)

    def update_in_progress(self) -> bool:
        """UIP: the last 244 us before the second changes (never while SET holds the clock)."""
        return self.frozen is None and self._guest_ns() % NS_PER_S >= NS_PER_S - UIP_NS

    # -- interrupts -------------------------------------------------------------------------

    def _period_cycles(self) -> int:
        """Periodic interrupt period in 32.768 kHz cycles (0 = off), from RS3-0."""
        rs = self.ram[REG_A] & A_RS
        if rs == 0:
            return 0
        return 1 << (rs + 6) if rs < 3 else 1 << (rs - 1)

    def _period_index(self, now_ns: int, period: int) -> int:
        """How many periodic-interrupt periods of the time base have elapsed (0 if off)."""
        return now_ns * TIMEBASE_HZ // NS_PER_S // period if period else 0

    def _alarm_matches(self) -> bool:
        now = (self._read_time(REG_SECONDS), self._read_time(REG_MINUTES), self._read_time(REG_HOURS))
        alarm = (self.ram[REG_SECONDS_ALARM], self.ram[REG_MINUTES_ALARM], self.ram[REG_HOURS_ALARM])
        return all(a & 0xC0 == 0xC0 or a == t for a, t in zip(alarm, now))

    def _sync(self, now_ns: int) -> None:
        """Raise the flags for everything that happened since the last look, and drive IRQ 8."""
        period = self._period_cycles()
        if period:
            k = self._period_index(now_ns, period)
            if k != self._last_period:
                self.flags |= C_PF
                self._last_period = k
        if self.frozen is None:
            second = self._guest_ns() // NS_PER_S
            if second != self._last_second:
                self._last_second = second
                self.flags |= C_UF
                if self._alarm_matches():
                    self.flags |= C_AF
        self._drive_irq()

    def _drive_irq(self) -> None:
        level = bool(self.flags & self.ram[REG_B] & FLAG_BITS)
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                self.irq.set_level(level)

    def _arm_periodic(self, now_ns: int) -> None:
        period = self._period_cycles()
        if self.ram[REG_B] & B_PIE and period:
            k = self._period_index(now_ns, period) + 1
            self._periodic.arm(-(-k * period * NS_PER_S // TIMEBASE_HZ))
        else:
            self._periodic.cancel()

    def _arm_update(self, now_ns: int) -> None:
        if self.ram[REG_B] & (B_UIE | B_AIE) and self.frozen is None:
            self._update.arm(now_ns + NS_PER_S - self._guest_ns() % NS_PER_S)
        else:
            self._update.cancel()

    def _on_periodic(self, now_ns: int) -> None:
        self._sync(now_ns)
        self._arm_periodic(now_ns)

    def _on_update(self, now_ns: int) -> None:
        self._sync(now_ns)
        self._arm_update(now_ns)

    # -- registers --------------------------------------------------------------------------

    def read_register(self, reg: int) -> int:
        if reg in (REG_SECONDS, REG_MINUTES, REG_HOURS, REG_DAY_OF_WEEK, REG_DAY, REG_MONTH, REG_YEAR, REG_CENTURY):
            return self._read_time(reg)
        if reg == REG_A:
            return self.ram[REG_A] & ~A_UIP | (A_UIP if self.update_in_progress() else 0)
        if reg == REG_C:
            self._sync(self.clock.now_ns())
            value = self.flags | (C_IRQF if self._irq_level else 0)
            self.flags = 0
            self._drive_irq()
            return value
        if reg == REG_D:
            return D_VRT
        return self.ram[reg]

    def write_register(self, reg: int, value: int) -> None:
        now = self.clock.now_ns()
        if reg in (REG_SECONDS, REG_MINUTES, REG_HOURS, REG_DAY, REG_MONTH, REG_YEAR, REG_CENTURY):
            self._write_time(reg, value)
        elif reg == REG_A:
            self._sync(now)
            self.ram[REG_A] = value & ~A_UIP
            self._last_period = self._period_index(now, self._period_cycles())
        elif reg == REG_B:
            self._sync(now)
            if value & B_SET:
                value &= ~B_UIE  # SET clears UIE (datasheet, register B)
                if self.frozen is None:
                    self.frozen = list(self._fields())
            elif self.frozen is not None:  # the clock starts again at the time set, second 0
                self.offset_ns = self._epoch(self.frozen) * NS_PER_S - self.wall_ns()
                self.frozen = None
                self._last_second = self._guest_ns() // NS_PER_S
            self.ram[REG_B] = value
            self._drive_irq()
        elif reg in (REG_C, REG_D, REG_DAY_OF_WEEK):
            return  # read-only, or computed
        else:
            self.ram[reg] = value
            return
        self._arm_periodic(now)
        self._arm_update(now)

    def io_read(self, offset: int, size: int) -> int:
        return self.read_register(self.index) if offset == 1 else 0xFF

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0x7F
            self.nmi_masked = bool(value & 0x80)
        else:
            self.write_register(self.index, value)

    # -- for the machine --------------------------------------------------------------------

    def reset(self) -> None:
        """The RESET pin: PIE, AIE, UIE, SQWE and the flags cleared, IRQ released; time and RAM kept."""
        self.ram[REG_B] &= ~(B_PIE | B_AIE | B_UIE | B_SQWE)
        self.flags = 0
        self._drive_irq()
        now = self.clock.now_ns()
        self._arm_periodic(now)
        self._arm_update(now)

    def set_memory_size(self, ram_bytes: int, below_4g_bytes: int | None = None) -> None:
        """Write the memory size bytes firmware reads, as QEMU's pc_cmos_init does.

        `below_4g_bytes` defaults to QEMU i440fx's split: all of RAM if under 3.5 GiB, else 3 GiB.
        """
        if below_4g_bytes is None:
            below_4g_bytes = ram_bytes if ram_bytes < 0xE000_0000 else 0xC000_0000
        above_4g = ram_bytes - below_4g_bytes

        def put16(low: int, high: int, value: int) -> None:
            self.ram[low], self.ram[high] = value & 0xFF, (value >> 8) & 0xFF

        put16(CMOS_MEM_BASE_LOW, CMOS_MEM_BASE_HIGH, min(below_4g_bytes // KIB, 640))
        extended = min(max(below_4g_bytes - MIB, 0) // KIB, 0xFFFF)
        put16(CMOS_MEM_EXTMEM_LOW, CMOS_MEM_EXTMEM_HIGH, extended)
        put16(CMOS_MEM_EXTMEM2_LOW_ALT, CMOS_MEM_EXTMEM2_HIGH_ALT, extended)
        put16(CMOS_MEM_EXTMEM2_LOW, CMOS_MEM_EXTMEM2_HIGH, min(max(below_4g_bytes - 16 * MIB, 0) // (64 * KIB), 0xFFFF))
        high = above_4g // (64 * KIB)
        self.ram[CMOS_MEM_HIGHMEM_LOW] = high & 0xFF
        self.ram[CMOS_MEM_HIGHMEM_MID] = (high >> 8) & 0xFF
        self.ram[CMOS_MEM_HIGHMEM_HIGH] = (high >> 16) & 0xFF
        checksum = sum(self.ram[0x10:0x2E])
        self.ram[CMOS_CHECKSUM_HIGH], self.ram[CMOS_CHECKSUM_LOW] = (checksum >> 8) & 0xFF, checksum & 0xFF
