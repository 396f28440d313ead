"""The 8259A pair driven through its ports as firmware and Linux drive it."""

from __future__ import annotations

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.pic import Pic8259Pair

MASTER_VECTOR, SLAVE_VECTOR = 0x20, 0x28  # where Linux puts them (IRQ0_VECTOR...)


def outb(bus: PortIoBus, value: int, port: int) -> None:
    bus.write(port, 1, value)


def inb(bus: PortIoBus, port: int) -> int:
    return bus.read(port, 1)


@pytest.fixture
def bus() -> PortIoBus:
    return PortIoBus()


@pytest.fixture
def pic(bus: PortIoBus) -> Pic8259Pair:
    pic = Pic8259Pair()
    pic.register(bus)
    init(bus)
    return pic


def init(bus: PortIoBus, icw4: int = 0x01) -> None:
    """Linux's init_8259A(): ICW1-ICW4 on both chips, then unmask everything."""
    outb(bus, 0x11, 0x20)  # ICW1: edge, cascade, ICW4 needed
    outb(bus, MASTER_VECTOR, 0x21)  # ICW2: vector base
    outb(bus, 0x04, 0x21)  # ICW3: a slave on IR2
    outb(bus, icw4, 0x21)  # ICW4: 8086 mode (+ AEOI if asked)
    outb(bus, 0x11, 0xA0)
    outb(bus, SLAVE_VECTOR, 0xA1)
    outb(bus, 0x02, 0xA1)  # ICW3: slave id 2
    outb(bus, icw4, 0xA1)
    outb(bus, 0x00, 0x21)  # OCW1: unmask all
    outb(bus, 0x00, 0xA1)


def pulse(pic: Pic8259Pair, irq: int) -> None:
    pic.line(irq).set_level(True)
    pic.line(irq).set_level(False)


def isr(bus: PortIoBus, base: int) -> int:
    outb(bus, 0x0B, base)  # OCW3: read ISR
    return inb(bus, base)


def irr(bus: PortIoBus, base: int) -> int:
    outb(bus, 0x0A, base)  # OCW3: read IRR
    return inb(bus, base)


def eoi(bus: PortIoBus, base: int = 0x20) -> None:
    outb(bus, 0x20, base)  # OCW2: non-specific EOI


def test_vector_comes_from_icw2_and_ack_moves_irr_to_isr(bus: PortIoBus, pic: Pic8259Pair) -> None:
    assert not pic.has_interrupt()
    pulse(pic, 1)  # an edge is latched even though the line is low again
    assert pic.has_interrupt()
    assert irr(bus, 0x20) == 0x02
    assert pic.acknowledge() == MASTER_VECTOR + 1
    assert irr(bus, 0x20) == 0 and isr(bus, 0x20) == 0x02
    assert not pic.has_interrupt()
    eoi(bus)
    assert isr(bus, 0x20) == 0
    assert pic.delivered[1] == 1


def test_fixed_priority_and_in_service_blocking(bus: PortIoBus, pic: Pic8259Pair) -> None:
    for irq in (5, 3, 1):
        pulse(pic, irq)
    assert pic.acknowledge() == MASTER_VECTOR + 1
    assert not pic.has_interrupt()  # 3 and 5 wait while 1 is in service
    eoi(bus)
    assert pic.acknowledge() == MASTER_VECTOR + 3
    pulse(pic, 0)  # higher than 3: nests
    assert pic.has_interrupt()
    assert pic.acknowledge() == MASTER_VECTOR + 0
    assert isr(bus, 0x20) == 0b1001
    eoi(bus)  # ends the highest in service: IRQ 0
    assert isr(bus, 0x20) == 0b1000
    eoi(bus)
    assert pic.acknowledge() == MASTER_VECTOR + 5


def test_slave_irqs_take_irq2s_slot(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 3)
    pulse(pic, 10)
    pulse(pic, 1)
    assert pic.acknowledge() == MASTER_VECTOR + 1  # IRQ 1 beats the cascade
    eoi(bus)
    assert pic.acknowledge() == SLAVE_VECTOR + 2  # IRQ 10, in IRQ 2's slot, beats IRQ 3
    assert isr(bus, 0x20) == 0x04 and isr(bus, 0xA0) == 0x04
    assert not pic.has_interrupt()
    eoi(bus, 0xA0)  # Linux: EOI the slave, then the master
    eoi(bus, 0x20)
    assert pic.acknowledge() == MASTER_VECTOR + 3
    assert pic.delivered[10] == 1 and pic.delivered[2] == 0


def test_slave_priorities_among_themselves(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 14)
    pulse(pic, 8)
    assert pic.acknowledge() == SLAVE_VECTOR + 0
    eoi(bus, 0xA0)
    eoi(bus, 0x20)
    assert pic.has_interrupt()  # the slave still requests: the master sees IR2 again
    assert pic.acknowledge() == SLAVE_VECTOR + 6


def test_specific_eoi_clears_the_named_level(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 5)
    assert pic.acknowledge() == MASTER_VECTOR + 5
    pulse(pic, 1)
    assert pic.acknowledge() == MASTER_VECTOR + 1
    outb(bus, 0x60 | 5, 0x20)  # specific EOI for IR5, although IR1 is higher
    assert isr(bus, 0x20) == 0x02
    outb(bus, 0x60 | 1, 0x20)
    assert isr(bus, 0x20) == 0


def test_imr_masks_but_the_edge_stays_latched(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0x10, 0x21)  # mask IRQ 4
    assert inb(bus, 0x21) == 0x10
    pulse(pic, 4)
    assert not pic.has_interrupt()
    assert irr(bus, 0x20) == 0x10
    outb(bus, 0x00, 0x21)
    assert pic.acknowledge() == MASTER_VECTOR + 4


def test_edge_line_held_high_interrupts_once(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pic.line(6).set_level(True)
    assert pic.acknowledge() == MASTER_VECTOR + 6
    eoi(bus)
    assert not pic.has_interrupt()  # no new edge
    pic.line(6).set_level(False)
    pic.line(6).set_level(True)
    assert pic.acknowledge() == MASTER_VECTOR + 6


def test_level_mode_from_elcr_follows_the_wire(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0x04, 0x4D1)  # IRQ 10 level-triggered (a PCI interrupt)
    line = pic.line(10)
    line.set_level(True)
    assert pic.acknowledge() == SLAVE_VECTOR + 2
    eoi(bus, 0xA0)
    eoi(bus, 0x20)
    assert pic.has_interrupt()  # still asserted: interrupts again after EOI
    assert pic.acknowledge() == SLAVE_VECTOR + 2
    line.set_level(False)  # the device is served: its request goes away
    assert irr(bus, 0xA0) == 0
    eoi(bus, 0xA0)
    eoi(bus, 0x20)
    assert not pic.has_interrupt()


def test_level_request_dropped_after_intr_gives_spurious_irq15(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0x04, 0x4D1)
    pic.line(10).set_level(True)
    assert pic.has_interrupt()  # the master latched the slave's INT on its edge-triggered IR2
    pic.line(10).set_level(False)
    assert pic.acknowledge() == SLAVE_VECTOR + 7
    assert isr(bus, 0xA0) == 0 and isr(bus, 0x20) == 0x04


def test_elcr_cannot_make_the_wired_irqs_level(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0xFF, 0x4D0)
    outb(bus, 0xFF, 0x4D1)
    assert inb(bus, 0x4D0) == 0xF8  # IRQ 0, 1, 2 stay edge
    assert inb(bus, 0x4D1) == 0xDE  # IRQ 8, 13 stay edge
    pic.line(0).set_level(True)
    assert pic.acknowledge() == MASTER_VECTOR
    eoi(bus)
    assert not pic.has_interrupt()


def test_spurious_irq7_when_the_request_vanishes(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0x20, 0x4D0)  # IRQ 5 level
    pic.line(5).set_level(True)
    assert pic.has_interrupt()
    pic.line(5).set_level(False)  # gone before INTA
    assert pic.acknowledge() == MASTER_VECTOR + 7
    assert isr(bus, 0x20) == 0  # a spurious IR7 sets no ISR bit
    assert pic.spurious == 1 and pic.delivered[7] == 0


def test_spurious_irq7_when_masked_between_intr_and_inta(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 4)
    outb(bus, 0x10, 0x21)
    assert pic.acknowledge() == MASTER_VECTOR + 7
    assert isr(bus, 0x20) == 0


def test_spurious_irq15_sets_the_masters_irq2_in_service(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pic.line(11).set_level(True)
    assert pic.has_interrupt()
    outb(bus, 0x08, 0xA1)  # the slave's request is masked before INTA
    assert pic.acknowledge() == SLAVE_VECTOR + 7
    assert isr(bus, 0xA0) == 0
    assert isr(bus, 0x20) == 0x04  # the master did acknowledge its IR2
    eoi(bus, 0x20)
    assert isr(bus, 0x20) == 0


def test_automatic_eoi_leaves_isr_clear(bus: PortIoBus, pic: Pic8259Pair) -> None:
    init(bus, icw4=0x03)
    pulse(pic, 3)
    assert pic.acknowledge() == MASTER_VECTOR + 3
    assert isr(bus, 0x20) == 0
    pulse(pic, 4)  # lower priority, yet not blocked: nothing is in service
    assert pic.acknowledge() == MASTER_VECTOR + 4


def test_automatic_eoi_on_the_slave_keeps_the_cascade_requesting(bus: PortIoBus, pic: Pic8259Pair) -> None:
    init(bus, icw4=0x03)
    pulse(pic, 9)
    pulse(pic, 12)
    assert pic.acknowledge() == SLAVE_VECTOR + 1
    assert pic.acknowledge() == SLAVE_VECTOR + 4


def test_rotate_on_nonspecific_eoi_makes_the_served_irq_lowest(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 0)
    assert pic.acknowledge() == MASTER_VECTOR
    outb(bus, 0xA0, 0x20)  # OCW2: rotate on non-specific EOI
    pulse(pic, 0)
    pulse(pic, 3)
    assert pic.acknowledge() == MASTER_VECTOR + 3  # IR0 is now the lowest priority
    outb(bus, 0xC7, 0x20)  # OCW2: set priority, IR7 lowest (back to fixed order)
    eoi(bus)
    assert pic.acknowledge() == MASTER_VECTOR


def test_poll_command_reads_the_highest_request_and_acknowledges(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 6)
    outb(bus, 0x0C, 0x20)  # OCW3: poll
    assert inb(bus, 0x20) == 0x80 | 6
    assert isr(bus, 0x20) == 0x40
    outb(bus, 0x0C, 0x20)
    assert inb(bus, 0x20) == 0  # nothing else requesting


def test_icw1_resets_mask_and_edge_sense(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0xFF, 0x21)
    pic.line(3).set_level(True)  # latched while masked, line left high
    init(bus)
    assert inb(bus, 0x21) == 0
    assert not pic.has_interrupt()  # the edge was forgotten; the line must rise again
    pic.line(3).set_level(False)
    pic.line(3).set_level(True)
    assert pic.acknowledge() == MASTER_VECTOR + 3


def test_seabios_vectors_and_imr_readback(bus: PortIoBus, pic: Pic8259Pair) -> None:
    """SeaBIOS's pic_setup: master at 0x08, slave at 0x70, everything masked but IRQ 2."""
    outb(bus, 0x11, 0x20)
    outb(bus, 0x08, 0x21)
    outb(bus, 0x04, 0x21)
    outb(bus, 0x01, 0x21)
    outb(bus, 0x11, 0xA0)
    outb(bus, 0x70, 0xA1)
    outb(bus, 0x02, 0xA1)
    outb(bus, 0x01, 0xA1)
    outb(bus, 0xFB, 0x21)
    outb(bus, 0xFF, 0xA1)
    assert (inb(bus, 0x21), inb(bus, 0xA1)) == (0xFB, 0xFF)
    pulse(pic, 8)
    assert not pic.has_interrupt()
    outb(bus, 0xFE, 0xA1)
    assert pic.acknowledge() == 0x70
    pulse(pic, 0)
    outb(bus, 0xFA, 0x21)
    eoi(bus, 0xA0)
    eoi(bus, 0x20)
    assert pic.acknowledge() == 0x08


def test_line_rejects_bad_irq_numbers(pic: Pic8259Pair) -> None:
    with pytest.raises(ValueError):
        pic.line(16)


def test_special_mask_mode_lets_lower_priorities_through(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 3)
    assert pic.acknowledge() == MASTER_VECTOR + 3
    pulse(pic, 5)
    assert not pic.has_interrupt()  # fully nested: IR3 in service blocks IR5
    outb(bus, 0x68, 0x20)  # OCW3: set special mask mode
    outb(bus, 0x08, 0x21)  # mask IR3, which is in service
    assert pic.acknowledge() == MASTER_VECTOR + 5
    outb(bus, 0x48, 0x20)  # OCW3: reset special mask mode
    outb(bus, 0x65, 0x20)  # specific EOIs, as SMM requires
    outb(bus, 0x63, 0x20)
    assert isr(bus, 0x20) == 0


def test_special_fully_nested_mode_lets_a_higher_slave_irq_nest(bus: PortIoBus, pic: Pic8259Pair) -> None:
    pulse(pic, 12)
    assert pic.acknowledge() == SLAVE_VECTOR + 4
    pulse(pic, 9)  # higher than 12 on the slave, but the master has IR2 in service
    assert not pic.has_interrupt()


def test_special_fully_nested_mode_on_the_master(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0x11, 0x20)
    outb(bus, MASTER_VECTOR, 0x21)
    outb(bus, 0x04, 0x21)
    outb(bus, 0x11, 0x21)  # ICW4: SFNM, 8086 mode
    outb(bus, 0x00, 0x21)
    pulse(pic, 12)
    assert pic.acknowledge() == SLAVE_VECTOR + 4
    pulse(pic, 9)
    assert pic.acknowledge() == SLAVE_VECTOR + 1  # nests although the master's IR2 is in service
    pulse(pic, 13)
    assert not pic.has_interrupt()  # lower than 9 and 12: still blocked by the slave
    assert isr(bus, 0xA0) == 0x12 and isr(bus, 0x20) == 0x04


def test_register_claims_the_pc_at_ports(bus: PortIoBus, pic: Pic8259Pair) -> None:
    assert [str(m) for m in bus.mappings] == ["0x20-0x21 pic1", "0xa0-0xa1 pic2", "0x4d0-0x4d1 elcr"]


def test_set_priority_rotates_the_whole_order(bus: PortIoBus, pic: Pic8259Pair) -> None:
    outb(bus, 0xC4, 0x20)  # OCW2 set priority: IR4 lowest, so 5, 6, 7, 0, 1, 2, 3, 4
    for irq in (4, 7, 0, 3, 5):
        pulse(pic, irq)
    order = []
    for _ in range(5):
        order.append(pic.acknowledge() - MASTER_VECTOR)
        eoi(bus)
    assert order == [5, 7, 0, 3, 4]
    assert not pic.has_interrupt()
