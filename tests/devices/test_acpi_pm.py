"""The ACPI PM registers (emu/devices/acpi_pm.py): the PM timer's rate and width, TMR_STS and the
power button as SCI sources, write-one-to-clear, SLP_TYP/SLP_EN powering off, reset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from emu.clock import InstructionClock
from emu.devices.acpi_pm import (PM1_CNT, PM1_EN, PM1_STS, PM_TMR, PM_TIMER_HZ, PWRBTN_STS, SCI_EN, SLP_EN,
                                 TMR_STS, AcpiPm)  # fmt: skip

if TYPE_CHECKING:  # the fixtures' types (tests/devices/conftest.py)
    from .conftest import FakeClock, FakeSystem, Wire

S5 = 5
SECOND = 1_000_000_000
FLIP_NS = (1 << 23) * SECOND // PM_TIMER_HZ + 1  # bit 23 of the counter changes this often (~2.34 s)


@pytest.fixture
def pm(clock: FakeClock, wire: Wire, system: FakeSystem) -> AcpiPm:
    return AcpiPm(clock, wire, system, s5_type=S5)


def test_the_timer_counts_at_3_579545_mhz_in_24_bits(pm: AcpiPm, clock: FakeClock) -> None:
    start = pm.io_read(PM_TMR, 4)
    clock.advance(SECOND)
    assert pm.io_read(PM_TMR, 4) - start == PM_TIMER_HZ
    clock.advance(4 * SECOND)  # 5 s: 17.9 million counts, past 2**24
    assert pm.io_read(PM_TMR, 4) == 5 * PM_TIMER_HZ % (1 << 24)
    assert pm.io_read(PM_TMR + 2, 2) == pm.io_read(PM_TMR, 4) >> 16  # bytes of it, too
    pm.io_write(PM_TMR, 4, 0)  # read-only
    assert pm.io_read(PM_TMR, 4) == 5 * PM_TIMER_HZ % (1 << 24)


def test_the_timer_runs_on_the_instruction_clock(wire: Wire, system: FakeSystem) -> None:
    clock = InstructionClock(shift=0)  # 1 ns per instruction
    pm = AcpiPm(clock, wire, system, s5_type=S5)
    assert pm.io_read(PM_TMR, 4) == 0
    clock.advance(SECOND)
    assert pm.io_read(PM_TMR, 4) == PM_TIMER_HZ


def test_acpi_mode_is_on_from_reset(pm: AcpiPm) -> None:
    assert pm.io_read(PM1_CNT, 2) == SCI_EN  # no SMI command port: nothing to switch
    assert pm.io_read(PM1_STS, 2) == 0 and pm.io_read(PM1_EN, 2) == 0


def test_tmr_sts_sets_when_bit_23_flips_and_is_write_one_to_clear(pm: AcpiPm, clock: FakeClock) -> None:
    clock.advance(FLIP_NS - 2)
    assert not pm.io_read(PM1_STS, 2) & TMR_STS
    clock.advance(2)
    assert pm.io_read(PM1_STS, 2) & TMR_STS
    pm.io_write(PM1_STS, 2, PWRBTN_STS)  # writing 1 to another bit leaves it
    assert pm.io_read(PM1_STS, 2) & TMR_STS
    pm.io_write(PM1_STS, 2, TMR_STS)
    assert not pm.io_read(PM1_STS, 2) & TMR_STS
    clock.advance(FLIP_NS)
    assert pm.io_read(PM1_STS, 2) & TMR_STS


def test_the_timer_raises_the_sci_at_the_flip_only_when_enabled(pm: AcpiPm, clock: FakeClock, wire: Wire) -> None:
    clock.run_until(clock.t + 3 * FLIP_NS)
    assert wire.rises == 0  # TMR_EN clear: status only
    pm.io_write(PM1_STS, 2, TMR_STS)
    pm.io_write(PM1_EN, 2, TMR_STS)  # TMR_EN
    assert not wire.level and clock.next_deadline() is not None
    clock.run_until(clock.t + FLIP_NS)
    assert wire.level and wire.rises == 1  # at the flip, from the timer, with no guest access
    pm.io_write(PM1_STS, 2, TMR_STS)  # the handler acknowledges
    assert not wire.level


def test_the_power_button_raises_a_level_sci_until_acknowledged(pm: AcpiPm, wire: Wire) -> None:
    pm.press_power_button()
    assert pm.io_read(PM1_STS, 2) & PWRBTN_STS and not wire.level  # PWRBTN_EN clear
    pm.io_write(PM1_EN, 2, PWRBTN_STS)
    assert wire.level
    pm.io_write(PM1_CNT, 2, 0)  # SCI_EN off: events no longer reach the SCI
    assert not wire.level
    pm.io_write(PM1_CNT, 2, SCI_EN)
    assert wire.level
    pm.io_write(PM1_STS, 2, PWRBTN_STS)
    assert not wire.level and not pm.io_read(PM1_STS, 2)


def test_one_dword_write_reaches_status_and_enable(pm: AcpiPm, wire: Wire) -> None:
    pm.press_power_button()
    pm.io_write(PM1_STS, 4, PWRBTN_STS << 16 | PWRBTN_STS)  # clear the status, enable the button
    assert pm.io_read(PM1_EN, 2) == PWRBTN_STS and not pm.io_read(PM1_STS, 2) & PWRBTN_STS
    pm.io_write(PM1_EN + 1, 1, 0)  # the enable register's high byte alone
    assert pm.io_read(PM1_EN, 2) == 0
    assert pm.io_read(PM1_STS, 4) == 0 and not wire.level


def test_slp_en_with_the_s5_type_powers_off(pm: AcpiPm, system: FakeSystem) -> None:
    pm.io_write(PM1_CNT, 2, SCI_EN | S5 << 10)  # Linux writes the type first ...
    assert not system.exits and pm.io_read(PM1_CNT, 2) == SCI_EN | S5 << 10
    pm.io_write(PM1_CNT, 2, SCI_EN | S5 << 10 | SLP_EN)  # ... then the type with SLP_EN
    assert system.exits == [0] and pm.poweroffs == 1
    assert not pm.io_read(PM1_CNT, 2) & SLP_EN  # write-only


def test_slp_en_with_another_type_does_nothing(pm: AcpiPm, system: FakeSystem) -> None:
    pm.io_write(PM1_CNT, 2, SCI_EN | 1 << 10 | SLP_EN)  # S1 is not declared, so not implemented
    pm.io_write(PM1_CNT + 1, 1, (S5 << 10 | SLP_EN) >> 8)  # a byte write reaches the high byte
    assert system.exits == [0]


def test_reset_returns_to_the_power_on_state(pm: AcpiPm, clock: FakeClock, wire: Wire) -> None:
    pm.io_write(PM1_EN, 2, PWRBTN_STS | TMR_STS)
    pm.press_power_button()
    clock.advance(10 * SECOND)
    assert wire.level
    pm.reset()
    assert not wire.level and pm.io_read(PM1_EN, 2) == 0 and pm.io_read(PM1_STS, 2) == 0
    assert pm.io_read(PM1_CNT, 2) == SCI_EN and pm.io_read(PM_TMR, 4) == 0
