"""The I/O APIC's registers, edge and level pins, Remote IRR and the EOI message."""

from __future__ import annotations

import pytest

from emu.devices.ioapic import IOREGSEL, IOWIN, RTE_MASKED, RTE_REMOTE_IRR, FanOutLine, IoApic, ioapic_pin_of_isa_irq
from emu.devices.lapic import EOI, SVR, LocalApic
from emu.devices.pic import Pic8259Pair


@pytest.fixture
def apic(clock) -> LocalApic:
    apic = LocalApic(clock)
    apic.io_write(SVR, 4, 0x1FF)
    return apic


@pytest.fixture
def ioapic(apic) -> IoApic:
    ioapic = IoApic(lapics=[apic])
    apic.on_eoi = ioapic.eoi
    return ioapic


def reg_read(ioapic: IoApic, index: int) -> int:
    ioapic.io_write(IOREGSEL, 4, index)
    return ioapic.io_read(IOWIN, 4)


def reg_write(ioapic: IoApic, index: int, value: int) -> None:
    ioapic.io_write(IOREGSEL, 4, index)
    ioapic.io_write(IOWIN, 4, value)


def route(ioapic: IoApic, pin: int, low: int, destination: int = 0) -> None:
    reg_write(ioapic, 0x11 + 2 * pin, destination << 24)
    reg_write(ioapic, 0x10 + 2 * pin, low)


def test_identification_registers(ioapic) -> None:
    assert reg_read(ioapic, 0) == 1 << 24  # ID 1, as emu's MP table says
    assert reg_read(ioapic, 1) == 0x00170011  # 24 pins, version 0x11
    assert reg_read(ioapic, 2) == 1 << 24
    reg_write(ioapic, 0, 5 << 24)
    assert reg_read(ioapic, 0) == 5 << 24
    reg_write(ioapic, 1, 0)
    assert reg_read(ioapic, 1) == 0x00170011  # read-only
    assert all(reg_read(ioapic, 0x10 + 2 * pin) == RTE_MASKED for pin in range(24))


def test_edge_pin_sends_at_each_rising_edge_and_loses_it_while_masked(apic, ioapic) -> None:
    route(ioapic, 4, 0x34)
    ioapic.line(4).set_level(True)
    assert apic.acknowledge() == 0x34
    ioapic.line(4).set_level(True)  # no new edge
    assert not apic.has_interrupt()
    ioapic.line(4).set_level(False)
    route(ioapic, 4, RTE_MASKED | 0x34)
    ioapic.line(4).set_level(True)
    route(ioapic, 4, 0x34)  # the edge came while masked: lost (82093AA §3.2.4)
    assert not apic.has_interrupt() and ioapic.counters.messages[4] == 1


def test_level_pin_remote_irr_eoi_and_redelivery(apic, ioapic) -> None:
    route(ioapic, 10, 1 << 15 | 1 << 13 | 0x3A)  # level, active low (PCI)
    ioapic.line(10).set_level(True)
    assert reg_read(ioapic, 0x10 + 20) & RTE_REMOTE_IRR
    assert apic.acknowledge() == 0x3A
    ioapic.line(10).set_level(True)
    assert not apic.has_interrupt()  # Remote IRR holds it back
    apic.io_write(EOI, 4, 0)  # still asserted: Remote IRR cleared and the interrupt sent again
    assert ioapic.counters.redelivered == 1 and apic.acknowledge() == 0x3A
    ioapic.line(10).set_level(False)  # the driver served the device
    apic.io_write(EOI, 4, 0)
    assert not reg_read(ioapic, 0x10 + 20) & RTE_REMOTE_IRR and not apic.has_interrupt()


def test_unmasking_an_asserted_level_pin_sends_it(apic, ioapic) -> None:
    route(ioapic, 11, RTE_MASKED | 1 << 15 | 0x3B)
    ioapic.line(11).set_level(True)
    assert not apic.has_interrupt()
    route(ioapic, 11, 1 << 15 | 0x3B)
    assert apic.acknowledge() == 0x3B


def test_switching_to_edge_clears_a_stuck_remote_irr(apic, ioapic) -> None:
    route(ioapic, 9, 1 << 15 | 0x39)
    ioapic.line(9).set_level(True)
    assert reg_read(ioapic, 0x10 + 18) & RTE_REMOTE_IRR
    route(ioapic, 9, RTE_MASKED | 0x39)  # Linux's __eoi_ioapic_pin for version 0x11
    route(ioapic, 9, RTE_MASKED | 1 << 15 | 0x39)
    assert not reg_read(ioapic, 0x10 + 18) & RTE_REMOTE_IRR
    reg_write(ioapic, 0x10 + 18, RTE_REMOTE_IRR | 1 << 15 | 0x39)  # Remote IRR is read-only
    assert apic.acknowledge() == 0x39  # unmasked with the line up: sent
    assert reg_read(ioapic, 0x10 + 18) & RTE_REMOTE_IRR


def test_destination_must_match(apic, ioapic) -> None:
    route(ioapic, 3, 0x33, destination=5)  # physical APIC ID 5: nobody here
    ioapic.line(3).set_level(True)
    assert not apic.has_interrupt()
    ioapic.line(3).set_level(False)
    route(ioapic, 3, 0x33, destination=0xFF)  # broadcast
    ioapic.line(3).set_level(True)
    assert apic.acknowledge() == 0x33


def test_extint_pin_takes_the_vector_from_the_pic(clock, apic, ioapic) -> None:
    pic = Pic8259Pair()
    apic.pic = pic
    apic.io_write(0x350, 4, 0x10700)  # LINT0 masked: only the I/O APIC's ExtINT leads to the PIC
    for port, value in ((0, 0x11), (1, 0x20), (1, 0x04), (1, 0x01), (1, 0xFE)):
        pic.master.io_write(port, 1, value)
    irq0 = FanOutLine((pic.line(0), ioapic.line(ioapic_pin_of_isa_irq(0))))
    route(ioapic, 2, 7 << 8)  # ExtINT
    irq0.set_level(True)
    assert apic.has_interrupt() and apic.acknowledge() == 0x20
    assert ioapic_pin_of_isa_irq(0) == 2 and ioapic_pin_of_isa_irq(4) == 4
