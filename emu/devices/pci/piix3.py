"""The Intel PIIX3 PCI-to-ISA bridge at 00:01.0, and PCI interrupt routing on a PC.

82371SB (PIIX3) datasheet: vendor 8086h, device 7000h, class 060100h (ISA bridge), header type
80h (a multi-function device: IDE, USB and, on a PIIX4, power management sit at functions 1-3).

Routing (datasheet §2.2.10, "PIRQRC[A:D]", registers 60h-63h). A PCI slot's four interrupt
pins are wired, rotated by slot number, to the four PIRQ# lines of the chipset: QEMU's
i440FX board (and so every guest's table for it) uses PIRQ = (slot + pin - 1) mod 4 with pin 0
for INTA#. Each PIRQRC register then steers one PIRQ# onto an ISA IRQ: bits 3:0 the IRQ, bit 7
set disables the route (the reset value, 80h). PCI interrupts are level-triggered and
shareable: the IRQ's level is the OR of every function routed to it, and the guest must set
that IRQ to level mode in the PIC's ELCR (0x4D0/0x4D1), as a BIOS or Linux's pirq code does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..interfaces import IrqLine
from .config import HEADER_MULTIFUNCTION, PciFunction
from .i440fx import INTEL

PIRQRC = 0x60  # PIRQRCA..PIRQRCD at 0x60..0x63
ROUTE_DISABLED = 0x80
ROUTABLE_IRQS = frozenset({3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15})
# What a BIOS leaves in PIRQRC[A:D] before it starts an OS (SeaBIOS's choice on QEMU's i440FX):
# emu programs these itself when it boots a kernel directly, and its MP and ACPI tables name them.
FIRMWARE_PIRQ_ROUTES = (10, 10, 11, 11)


def pirq_of(slot: int, pin: int) -> int:
    """The PIRQ# (0 = A) that interrupt pin `pin` (1 = INTA#) of PCI slot `slot` is wired to."""
    return (slot + pin - 2) & 3


@dataclass
class Piix3IsaBridge(PciFunction):
    vendor_id: int = INTEL
    device_id: int = 0x7000
    class_code: int = 0x060100
    header_type: int = HEADER_MULTIFUNCTION
    irq_line: Callable[[int], IrqLine] | None = None  # ISA IRQ number -> the PIC's wire
    sources: list[tuple[int, PciFunction]] = field(default_factory=list)  # (slot, function) with a pin
    driven: set[int] = field(default_factory=set)  # ISA IRQs PCI holds high now

    def __post_init__(self) -> None:
        super().__post_init__()
        for i in range(4):
            self.space[PIRQRC + i] = ROUTE_DISABLED

    def writable(self, offset: int) -> bool:
        return PIRQRC <= offset < PIRQRC + 4

    def config_write(self, offset: int, size: int, value: int) -> None:
        super().config_write(offset, size, value)
        if offset < PIRQRC + 4 and offset + size > PIRQRC:
            self.update_irqs()

    def connect(self, slot: int, pci: PciFunction) -> None:
        """Wire `pci`'s interrupt pin (if it has one) through the PIRQ lines."""
        if pci.interrupt_pin:
            self.sources.append((slot, pci))
            pci.on_intx_changed = lambda _fn: self.update_irqs()

    def reset(self) -> None:
        """System reset: every PIRQ route disabled again (80h)."""
        super().reset()
        for i in range(4):
            self.space[PIRQRC + i] = ROUTE_DISABLED
        self.update_irqs()

    def program_firmware_routes(self) -> None:
        """Steer PIRQ# A-D as a BIOS would have (FIRMWARE_PIRQ_ROUTES), for a direct kernel boot."""
        for pirq, irq in enumerate(FIRMWARE_PIRQ_ROUTES):
            self.space[PIRQRC + pirq] = irq
        self.update_irqs()

    def firmware_irq(self, slot: int, pin: int) -> int:
        """The ISA IRQ (and, with an IOAPIC, the GSI) that `pin` of `slot` reaches after
        program_firmware_routes: what the MP table and ACPI's _PRT tell the guest."""
        return FIRMWARE_PIRQ_ROUTES[pirq_of(slot, pin)]

    def route(self, pirq: int) -> int | None:
        """The ISA IRQ PIRQ# `pirq` is steered to, or None (disabled or not a routable IRQ)."""
        value = self.space[PIRQRC + pirq]
        irq = value & 0xF
        return None if value & ROUTE_DISABLED or irq not in ROUTABLE_IRQS else irq

    def update_irqs(self) -> None:
        """Recompute every PCI-driven ISA IRQ level (a pin or a route changed)."""
        high: set[int] = set()
        for slot, pci in self.sources:
            if pci.intx_asserted:
                irq = self.route(pirq_of(slot, pci.interrupt_pin))
                if irq is not None:
                    high.add(irq)
        if self.irq_line is not None:
            for irq in high - self.driven:
                self.irq_line(irq).set_level(True)
            for irq in self.driven - high:
                self.irq_line(irq).set_level(False)
        self.driven = high
