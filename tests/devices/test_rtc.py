"""The MC146818A RTC/CMOS read and programmed through ports 0x70/0x71, on a controlled clock."""

from __future__ import annotations

import calendar

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.rtc import RTC_BASE, CmosRtc

NS = 1_000_000_000
START = calendar.timegm((2024, 2, 29, 13, 45, 30))  # a Thursday, leap day, 1:45:30 PM UTC


@pytest.fixture
def bus() -> PortIoBus:
    return PortIoBus()


@pytest.fixture
def rtc(clock, wire, bus: PortIoBus) -> CmosRtc:
    """Host UTC is START when the test begins and moves with the fake clock."""
    base = clock.t
    rtc = CmosRtc(clock, wire, wall_ns=lambda: START * NS + clock.t - base)
    bus.register(RTC_BASE, 2, rtc, "rtc")
    return rtc


def cmos_read(bus: PortIoBus, reg: int) -> int:
    bus.write(0x70, 1, reg)
    return bus.read(0x71, 1)


def cmos_write(bus: PortIoBus, reg: int, value: int) -> None:
    bus.write(0x70, 1, reg)
    bus.write(0x71, 1, value)


def clock_regs(bus: PortIoBus) -> list[int]:
    """seconds, minutes, hours, day of week, day, month, year, century"""
    return [cmos_read(bus, r) for r in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]


def test_power_on_registers(bus, rtc) -> None:
    assert cmos_read(bus, 0x0A) == 0x26  # 32.768 kHz, 1024 Hz rate
    assert cmos_read(bus, 0x0B) == 0x02  # 24 hour, BCD
    assert cmos_read(bus, 0x0D) == 0x80  # VRT: battery good


def test_time_in_bcd_24h(bus, rtc) -> None:
    assert clock_regs(bus) == [0x30, 0x45, 0x13, 5, 0x29, 0x02, 0x24, 0x20]


def test_time_in_binary(bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x06)  # DM=1: binary, 24 hour
    assert clock_regs(bus) == [30, 45, 13, 5, 29, 2, 24, 20]


def test_twelve_hour_mode_sets_the_pm_bit(clock, bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x00)  # BCD, 12 hour
    assert cmos_read(bus, 0x04) == 0x81  # 1 PM
    cmos_write(bus, 0x0B, 0x04)  # binary, 12 hour
    assert cmos_read(bus, 0x04) == 0x81
    clock.advance((10 * 3600 + 14 * 60 + 30) * NS)  # to midnight
    cmos_write(bus, 0x0B, 0x00)
    assert (cmos_read(bus, 0x04), cmos_read(bus, 0x07), cmos_read(bus, 0x08)) == (0x12, 0x01, 0x03)  # 12 AM, March 1


def test_time_moves_with_the_host_clock(clock, bus, rtc) -> None:
    clock.advance(45 * NS)
    assert clock_regs(bus)[:3] == [0x15, 0x46, 0x13]


def test_uip_is_set_in_the_last_244us_of_each_second(clock, bus, rtc) -> None:
    second = clock.t
    for offset, uip in ((0, False), (999_755_000, False), (999_755_860, True), (999_999_999, True), (NS, False)):
        clock.set(second + offset)
        assert bool(cmos_read(bus, 0x0A) & 0x80) == uip, offset


def test_linux_set_time_under_set_bit(clock, bus, rtc) -> None:
    """mc146818_set_time(): SET, divider reset, write the fields, restore B and A."""
    control, freq = cmos_read(bus, 0x0B), cmos_read(bus, 0x0A)
    cmos_write(bus, 0x0B, control | 0x80)
    cmos_write(bus, 0x0A, freq | 0x70)
    for reg, value in (
        (0x09, 0x99),
        (0x08, 0x12),
        (0x07, 0x31),
        (0x04, 0x23),
        (0x02, 0x59),
        (0x00, 0x58),
        (0x32, 0x19),
    ):
        cmos_write(bus, reg, value)
    clock.advance(5 * NS)  # held while SET is on
    assert clock_regs(bus) == [0x58, 0x59, 0x23, 6, 0x31, 0x12, 0x99, 0x19]
    assert not cmos_read(bus, 0x0A) & 0x80  # no update cycle while SET
    cmos_write(bus, 0x0B, control)
    cmos_write(bus, 0x0A, freq)
    clock.advance(3 * NS)
    assert clock_regs(bus) == [0x01, 0x00, 0x00, 7, 0x01, 0x01, 0x00, 0x20]  # Sat 1 Jan 2000


def test_writing_a_field_while_running_keeps_the_clock_going(clock, bus, rtc) -> None:
    cmos_write(bus, 0x02, 0x05)
    clock.advance(40 * NS)
    assert clock_regs(bus)[:3] == [0x10, 0x06, 0x13]


def test_periodic_interrupt_holds_irq8_until_register_c_is_read(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x42)  # PIE
    clock.run_until(clock.t + 100_000_000)
    assert wire.rises == 1 and wire.level  # nobody read C: no further edges
    assert cmos_read(bus, 0x0C) == 0xC0  # IRQF and PF (no second has passed: no UF)
    assert not wire.level


def test_periodic_interrupt_at_1024hz(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x42)
    start = clock.t
    for step in range(1, 10_001):  # the guest's handler reads C on each interrupt
        clock.run_until(start + step * 100_000)
        if wire.level:
            assert cmos_read(bus, 0x0C) & 0xC0 == 0xC0
            assert not wire.level
    assert wire.rises in (1023, 1024, 1025)


def test_rate_select_changes_the_period(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x0A, 0x2F)  # RS=15: 2 Hz
    cmos_write(bus, 0x0B, 0x42)
    start = clock.t
    for step in range(1, 101):
        clock.run_until(start + step * 10_000_000)
        if wire.level:
            cmos_read(bus, 0x0C)
    assert wire.rises == 2


def test_flags_are_set_without_interrupts_enabled(clock, wire, bus, rtc) -> None:
    clock.advance(NS)
    assert cmos_read(bus, 0x0C) == 0x40 | 0x10  # PF and UF, but no IRQF
    assert cmos_read(bus, 0x0C) == 0  # read clears
    assert wire.rises == 0


def test_update_ended_interrupt_each_second(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x12)  # UIE
    start = clock.t
    for step in range(1, 31):  # 3 seconds
        clock.run_until(start + step * 100_000_000)
        if wire.level:
            assert cmos_read(bus, 0x0C) & 0x90 == 0x90
    assert wire.rises == 3


def test_alarm_interrupt(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x01, 0x33)  # 13:45:33
    cmos_write(bus, 0x03, 0x45)
    cmos_write(bus, 0x05, 0xC0)  # any hour
    cmos_write(bus, 0x0B, 0x22)  # AIE
    clock.run_until(clock.t + 2 * NS + NS // 2)
    assert wire.rises == 0
    clock.run_until(clock.t + NS)
    assert wire.rises == 1
    assert cmos_read(bus, 0x0C) & 0xA0 == 0xA0


def test_set_bit_clears_uie(bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x92)
    assert cmos_read(bus, 0x0B) == 0x82


def test_index_bit7_is_the_nmi_mask(bus, rtc) -> None:
    bus.write(0x70, 1, 0x80 | 0x0F)
    assert rtc.nmi_masked and rtc.index == 0x0F
    bus.write(0x71, 1, 0x5A)
    assert cmos_read(bus, 0x0F) == 0x5A and not rtc.nmi_masked
    assert bus.read(0x70, 1) == 0xFF  # the index port is write-only


def test_cmos_ram_and_read_only_registers(bus, rtc) -> None:
    for reg in (0x0E, 0x40, 0x7F):
        cmos_write(bus, reg, reg ^ 0xA5)
        assert cmos_read(bus, reg) == reg ^ 0xA5
    cmos_write(bus, 0x0D, 0)
    assert cmos_read(bus, 0x0D) == 0x80
    cmos_write(bus, 0x0A, 0xA6)
    assert cmos_read(bus, 0x0A) & 0x7F == 0x26


def seabios_ram_size(bus: PortIoBus) -> tuple[int, int]:
    """SeaBIOS qemu_preinit's fallback without fw_cfg: RamSize and RamSizeOver4G from CMOS."""
    rs = (cmos_read(bus, 0x34) << 16) | (cmos_read(bus, 0x35) << 24)
    if rs:
        rs += 16 << 20
    else:
        rs = ((cmos_read(bus, 0x30) << 10) | (cmos_read(bus, 0x31) << 18)) + (1 << 20)
    high = (cmos_read(bus, 0x5B) << 16) | (cmos_read(bus, 0x5C) << 24) | (cmos_read(bus, 0x5D) << 32)
    return rs, high


@pytest.mark.parametrize(
    ("ram", "below", "above"),
    [(128 << 20, 128 << 20, 0), (8 << 20, 8 << 20, 0), (3 << 30, 3 << 30, 0), (5 << 30, 3 << 30, 2 << 30)],
)
def test_memory_size_as_seabios_reads_it(bus, rtc, ram: int, below: int, above: int) -> None:
    rtc.set_memory_size(ram)
    assert seabios_ram_size(bus) == (below, above)
    assert cmos_read(bus, 0x15) | cmos_read(bus, 0x16) << 8 == 640
    ext = cmos_read(bus, 0x17) | cmos_read(bus, 0x18) << 8
    assert ext == min((below >> 10) - 1024, 0xFFFF)
    checksum = sum(cmos_read(bus, r) for r in range(0x10, 0x2E))
    assert cmos_read(bus, 0x2E) << 8 | cmos_read(bus, 0x2F) == checksum


def test_reset_disables_interrupts_and_releases_irq8(clock, wire, bus, rtc) -> None:
    cmos_write(bus, 0x0B, 0x42)
    clock.run_until(clock.t + 10_000_000)
    assert wire.level
    rtc.reset()
    assert not wire.level and cmos_read(bus, 0x0B) == 0x02
    assert clock.next_deadline() is None


def test_half_set_date_under_set_bit_reads_without_error(clock, bus, rtc) -> None:
    cmos_write(bus, 0x07, 0x31)  # 31 ...
    cmos_write(bus, 0x0B, 0x82)
    cmos_write(bus, 0x08, 0x02)  # ... February, for a moment
    assert cmos_read(bus, 0x06) in range(1, 8)
    cmos_write(bus, 0x07, 0x28)
    cmos_write(bus, 0x0B, 0x02)
    assert clock_regs(bus)[3:6] == [4, 0x28, 0x02]  # Wednesday 28 February 2024
