"""The local APIC's registers, priorities, EOI and timer, driven as Linux and firmware drive them."""

from __future__ import annotations

import pytest

from emu.devices.lapic import (APIC_BASE_ADDRESS, APIC_VERSION, DFR, EOI, ESR, ESR_ILLEGAL_REGISTER,
                               ESR_RECEIVE_ILLEGAL_VECTOR, ESR_SEND_ILLEGAL_VECTOR, ICR_HIGH, ICR_LOW, ID,
                               IRR_BASE, ISR_BASE, LDR, LVT_ERROR, LVT_LINT0, LVT_LINT1, LVT_TIMER, PPR, SVR,
                               TIMER_CURRENT, TIMER_DIVIDE, TIMER_INITIAL, TMR_BASE, TPR, VERSION, LocalApic)
from emu.devices.pic import Pic8259Pair


@pytest.fixture
def apic(clock) -> LocalApic:
    outputs: list[bool] = []
    apic = LocalApic(clock, on_output=outputs.append)
    apic.outputs = outputs  # type: ignore[attr-defined]
    return apic


def rd(apic: LocalApic, offset: int) -> int:
    return apic.io_read(offset, 4)


def wr(apic: LocalApic, offset: int, value: int) -> None:
    apic.io_write(offset, 4, value)


def enable(apic: LocalApic, spurious: int = 0xFF) -> None:
    wr(apic, SVR, 0x100 | spurious)


def bit_in(apic: LocalApic, base: int, vector: int) -> bool:
    return bool(rd(apic, base + 0x10 * (vector // 32)) & 1 << (vector % 32))


def test_reset_state_is_qemus_bsp(apic) -> None:
    assert rd(apic, ID) == 0
    assert rd(apic, VERSION) == APIC_VERSION == 0x00050014
    assert rd(apic, SVR) == 0xFF  # software-disabled
    assert rd(apic, DFR) == 0xFFFFFFFF
    assert [rd(apic, o) for o in (LVT_TIMER, LVT_LINT1, LVT_ERROR)] == [0x10000] * 3
    assert rd(apic, LVT_LINT0) == 0x700  # ExtINT, unmasked: virtual wire
    assert apic.read_base_msr() == 0xFEE00900 == APIC_BASE_ADDRESS | 0x900


def test_firmware_setup_is_what_seabios_leaves(apic) -> None:
    apic.firmware_setup()
    assert (rd(apic, SVR), rd(apic, LVT_LINT0), rd(apic, LVT_LINT1)) == (0x1FF, 0x8700, 0x8400)


def test_fixed_interrupt_irr_isr_eoi(apic) -> None:
    enable(apic)
    apic.accept(0x41)
    assert bit_in(apic, IRR_BASE, 0x41) and apic.has_interrupt() and apic.outputs == [True]
    assert apic.acknowledge() == 0x41
    assert not bit_in(apic, IRR_BASE, 0x41) and bit_in(apic, ISR_BASE, 0x41)
    assert not apic.has_interrupt() and rd(apic, PPR) == 0x40
    wr(apic, EOI, 0)
    assert not bit_in(apic, ISR_BASE, 0x41) and rd(apic, PPR) == 0


def test_a_disabled_apic_drops_fixed_interrupts(apic) -> None:
    apic.accept(0x41)
    assert not apic.has_interrupt() and rd(apic, IRR_BASE + 0x20) == 0
    assert apic.counters.dropped_disabled == 1


def test_priority_classes_tpr_and_nesting(apic) -> None:
    enable(apic)
    wr(apic, TPR, 0x50)
    apic.accept(0x52)  # class 5 is not above TPR class 5
    assert not apic.has_interrupt() and rd(apic, PPR) == 0x50
    apic.accept(0x61)
    assert apic.acknowledge() == 0x61  # class 6 beats class 5
    assert rd(apic, PPR) == 0x60
    apic.accept(0x65)  # same class as in service: waits
    assert not apic.has_interrupt()
    apic.accept(0x71)
    assert apic.acknowledge() == 0x71  # a higher class nests
    wr(apic, EOI, 0)  # ends 0x71 (the highest in service)
    assert not apic.has_interrupt()  # 0x61 is still in service
    wr(apic, EOI, 0)
    assert apic.acknowledge() == 0x65 and rd(apic, PPR) == 0x60
    wr(apic, EOI, 0)
    wr(apic, TPR, 0)
    assert apic.acknowledge() == 0x52


def test_spurious_vector_when_the_request_goes_away(apic) -> None:
    enable(apic, spurious=0xEF)
    apic.accept(0x41)
    assert apic.has_interrupt()
    apic.tpr = 0xF0  # raised behind the CPU's back between INTR and INTA
    assert apic.acknowledge() == 0xEF and apic.counters.spurious == 1


def test_level_vector_sets_tmr_and_eoi_is_broadcast(apic) -> None:
    eois: list[int] = []
    apic.on_eoi = eois.append
    enable(apic)
    apic.accept(0x30, level=True)
    apic.accept(0x31)
    assert bit_in(apic, TMR_BASE, 0x30) and not bit_in(apic, TMR_BASE, 0x31)
    assert apic.acknowledge() == 0x31
    wr(apic, EOI, 0)
    assert eois == []  # edge: no EOI message
    assert apic.acknowledge() == 0x30
    wr(apic, EOI, 0)
    assert eois == [0x30]


def test_self_ipi_by_shorthand_and_by_destination(apic) -> None:
    enable(apic)
    wr(apic, ICR_LOW, 1 << 18 | 0x50)  # self shorthand, fixed
    assert apic.acknowledge() == 0x50
    wr(apic, EOI, 0)
    wr(apic, ICR_HIGH, 0 << 24)
    wr(apic, ICR_LOW, 0x51)  # physical destination 0 = this APIC
    assert apic.acknowledge() == 0x51
    wr(apic, EOI, 0)
    wr(apic, ICR_LOW, 3 << 18 | 0x52)  # all excluding self: nobody on a one-CPU machine
    assert not apic.has_interrupt()
    wr(apic, LDR, 0x01000000)
    wr(apic, ICR_HIGH, 0x03 << 24)
    wr(apic, ICR_LOW, 1 << 11 | 0x53)  # logical, flat model: 0x03 & 0x01
    assert apic.acknowledge() == 0x53
    assert rd(apic, ICR_LOW) & 1 << 12 == 0  # delivery status: idle


def test_esr_is_write_then_read(apic) -> None:
    enable(apic)
    wr(apic, ICR_LOW, 1 << 18 | 0x05)  # illegal vector: send (and receive would too)
    rd(apic, 0x3F0)  # an illegal register
    assert rd(apic, ESR) == 0  # nothing latched yet
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == ESR_SEND_ILLEGAL_VECTOR | ESR_ILLEGAL_REGISTER
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == 0
    apic.accept(0x02)
    wr(apic, ESR, 0)
    assert rd(apic, ESR) == ESR_RECEIVE_ILLEGAL_VECTOR


def test_error_lvt_interrupts_on_an_error(apic) -> None:
    enable(apic)
    wr(apic, LVT_ERROR, 0xFE)
    rd(apic, 0x3F0)
    assert apic.acknowledge() == 0xFE


def test_software_disable_masks_the_lvt_and_keeps_it_masked(apic) -> None:
    enable(apic)
    wr(apic, LVT_TIMER, 0x40)
    wr(apic, LVT_LINT1, 0x400)
    wr(apic, SVR, 0xFF)
    assert rd(apic, LVT_TIMER) == 0x10040 and rd(apic, LVT_LINT1) == 0x10400
    wr(apic, LVT_TIMER, 0x40)
    assert rd(apic, LVT_TIMER) == 0x10040


def test_lvt_reserved_and_read_only_bits(apic) -> None:
    enable(apic)
    wr(apic, LVT_TIMER, 0xFFFFFFFF)
    assert rd(apic, LVT_TIMER) == 0x300FF  # no TSC-deadline bit, no delivery status
    wr(apic, LVT_LINT0, 0xFFFFFFFF)
    assert rd(apic, LVT_LINT0) == 0x1A7FF  # no remote IRR, no delivery status


def test_pic_reaches_the_cpu_through_lint0_extint(clock, apic) -> None:
    pic = Pic8259Pair()
    pic.master.on_output = apic.pic_output_changed
    apic.pic = pic
    for port, value in ((0, 0x11), (1, 0x20), (1, 0x04), (1, 0x01), (1, 0xFE)):
        pic.master.io_write(port, 1, value)
    pic.line(0).set_level(True)
    assert apic.has_interrupt()  # reset state: software-disabled, LINT0 ExtINT unmasked
    assert apic.acknowledge() == 0x20
    pic.master.io_write(0, 1, 0x20)  # EOI at the PIC
    wr(apic, LVT_LINT0, 0x10700)  # enabled APIC would be needed to unmask; masking works now
    pic.line(0).set_level(False)
    pic.line(0).set_level(True)
    assert not apic.has_interrupt()  # LINT0 masked: the PIC is cut off
    apic.write_base_msr(0xFEE00000 | 0x100)  # global disable: no APIC, the PIC wired to INTR
    assert apic.has_interrupt() and apic.acknowledge() == 0x20


def test_cr8_is_tpr_high_nibble(apic) -> None:
    wr(apic, TPR, 0x5A)
    assert apic.cr8 == 5
    apic.write_cr8(3)
    assert rd(apic, TPR) == 0x30


def test_msr_relocation_and_x2apic_are_refused_with_a_message(apic) -> None:
    said: list[str] = []
    apic.on_warning = said.append
    apic.write_base_msr(0xFED00900)
    apic.write_base_msr(0xFEE00D00)
    assert apic.read_base_msr() == 0xFEE00900
    assert len(said) == 2 and "0xfed00000" in said[0] and "x2APIC" in said[1]


def test_one_shot_timer(clock, apic) -> None:
    enable(apic)
    wr(apic, TIMER_DIVIDE, 0x3)  # divide by 16
    wr(apic, LVT_TIMER, 0x40)
    wr(apic, TIMER_INITIAL, 1000)  # 16 us at 1 GHz
    assert rd(apic, TIMER_CURRENT) == 1000
    clock.advance(8_000)
    assert rd(apic, TIMER_CURRENT) == 500 and not apic.has_interrupt()
    clock.advance(8_000)
    assert rd(apic, TIMER_CURRENT) == 0 and apic.acknowledge() == 0x40
    clock.run_until(clock.t + 1_000_000)
    assert apic.counters.timer_interrupts == 1  # once


def test_periodic_timer_counts_and_reloads(clock, apic) -> None:
    enable(apic)
    wr(apic, TIMER_DIVIDE, 0xB)  # divide by 1
    wr(apic, LVT_TIMER, 1 << 17 | 0x41)
    start = clock.t
    wr(apic, TIMER_INITIAL, 100_000)  # 100 us
    fired = 0
    for _ in range(10):
        clock.run_until(clock.t + 100_000)
        if apic.has_interrupt():
            assert apic.acknowledge() == 0x41
            wr(apic, EOI, 0)
            fired += 1
    assert fired == 10 and apic.counters.timer_lost == 0
    clock.t = start + 1_050_000
    assert rd(apic, TIMER_CURRENT) == 50_000
    clock.set(start + 2_000_000)  # a late loop: 10 periods at once, delivered once
    assert apic.counters.timer_lost == 9


def test_masked_timer_arms_nothing_and_writing_zero_stops_it(clock, apic) -> None:
    enable(apic)
    wr(apic, LVT_TIMER, 1 << 17 | 1 << 16 | 0x41)
    wr(apic, TIMER_INITIAL, 1000)
    assert clock.next_deadline() is None  # masked: nothing to interrupt
    wr(apic, LVT_TIMER, 1 << 17 | 0x41)
    assert clock.next_deadline() is not None
    wr(apic, TIMER_INITIAL, 0)
    assert clock.next_deadline() is None and rd(apic, TIMER_CURRENT) == 0
