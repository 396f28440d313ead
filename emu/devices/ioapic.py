"""The I/O APIC: the chipset's interrupt router from device lines to the CPUs' local APICs.

Intel 82093AA I/O APIC datasheet (order no. 290566), §3 "Register description". Where the 8259
gives every input a fixed vector base and one CPU, the I/O APIC has a redirection table with
one 64-bit entry per input pin: the vector, the delivery mode (fixed, lowest priority, SMI, NMI,
INIT, ExtINT), the destination (an APIC ID, or a logical set of CPUs), the pin's polarity and
trigger mode, and a mask bit. When a pin asserts, the I/O APIC sends a message with that vector
to the destination's local APICs (emu.devices.lapic).

Trigger modes. An edge-triggered pin sends one message per rising edge (an edge on a masked pin
is lost, datasheet §3.2.4). A level-triggered pin sends a message while it is asserted and sets
the entry's Remote IRR bit; it will not send again until the local APIC's EOI for that vector
comes back as an EOI message, which clears Remote IRR; if the line is still asserted then (a
PCI device with more work), the interrupt is sent again. That is how shared, level-triggered
PCI interrupts (INTA#-INTD#, routed by the PIIX3 onto ISA IRQ lines) are kept from being lost
or taken twice.

Registers are reached indirectly (§3.1): software writes a register index to IOREGSEL
(base + 0x00) and reads or writes the 32-bit register through IOWIN (base + 0x10). Index 0 is
the ID (bits 27:24), 1 the version (0x11) with the highest redirection entry in bits 23:16,
2 the arbitration ID, 0x10 + 2n / 0x11 + 2n the low / high half of redirection entry n.

On a PC the I/O APIC sits at 0xFEC00000 with 24 pins: ISA IRQ n on pin n, except that the
PIT's IRQ 0 reaches pin 2 (the 8259 cascade input needs no pin; the MP table and ACPI's MADT
say so with an "interrupt source override"), and pins 16-23 free for PCI. emu's I/O APIC has
the version and ID of KVM's in-kernel one (0x00170011, ID 1 as emu's MP table says). Polarity
is recorded, not applied: emu's wires carry "asserted", not voltages (QEMU and KVM do the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .lapic import DM_EXTINT, DM_FIXED, DM_LOWEST

if TYPE_CHECKING:
    from .interfaces import IrqLine
    from .lapic import LocalApic

IOAPIC_BASE_ADDRESS = 0xFEC0_0000
IOAPIC_WINDOW = 0x1000  # a 4 KiB page, as QEMU maps it; only IOREGSEL and IOWIN answer
IOREGSEL, IOWIN = 0x00, 0x10
REG_ID, REG_VERSION, REG_ARBITRATION, REG_REDIRECTION = 0x00, 0x01, 0x02, 0x10
PINS = 24
IOAPIC_ID = 1
IOAPIC_VERSION = (PINS - 1) << 16 | 0x11  # 0x00170011

# Redirection entry bits (datasheet §3.2.4)
RTE_DEST_LOGICAL = 1 << 11
RTE_DELIVERY_STATUS = 1 << 12
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
RTE_READ_ONLY = RTE_DELIVERY_STATUS | RTE_REMOTE_IRR
RTE_WRITABLE = 0xFF00_0000_0001_FFFF & ~RTE_READ_ONLY


@dataclass
class IoApicCounters:
    messages: list[int] = field(default_factory=lambda: [0] * PINS)  # interrupt messages sent, per pin
    eois: int = 0  # EOI messages that cleared a Remote IRR
    redelivered: int = 0  # ... after which the still-asserted line was sent again
    unsupported: int = 0  # deliveries emu does not model (SMI, NMI, INIT)


@dataclass
class IoApic:
    """A 24-pin I/O APIC at IOAPIC_BASE_ADDRESS (io_read/io_write, offsets from the base)."""

    lapics: list[LocalApic] = field(default_factory=list)  # the CPUs on the APIC bus
    id: int = IOAPIC_ID
    counters: IoApicCounters = field(default_factory=IoApicCounters)
    ioregsel: int = 0
    entries: list[int] = field(default_factory=lambda: [RTE_MASKED] * PINS)
    levels: int = 0  # what the pins' wires carry now (bit per pin)
    _lines: list[IoApicPin] = field(init=False, repr=False)

    max_access_size: ClassVar[int] = 4

    def __post_init__(self) -> None:
        self._lines = [IoApicPin(self, pin) for pin in range(PINS)]

    def reset(self) -> None:
        """Every entry masked (datasheet §3.2.4), the ID back to emu's."""
        self.id = IOAPIC_ID
        self.ioregsel = 0
        self.entries = [RTE_MASKED] * PINS

    def line(self, pin: int) -> IoApicPin:
        """The wire of input `pin`, to hand to a device (or a fan-out) as its IrqLine."""
        if not 0 <= pin < PINS:
            raise ValueError(f"I/O APIC pin {pin} is not 0-{PINS - 1}")
        return self._lines[pin]

    # -- the pins ---------------------------------------------------------------------------

    def set_level(self, pin: int, level: bool) -> None:
        bit = 1 << pin
        if level == bool(self.levels & bit):
            return
        if level:
            self.levels |= bit
            self._service(pin, edge=True)
        else:
            self.levels &= ~bit

    def _service(self, pin: int, edge: bool = False) -> None:
        """Send pin's interrupt if its entry lets it: unmasked, and for a level-triggered pin
        asserted with Remote IRR clear; an edge-triggered pin sends only at a rising edge."""
        entry = self.entries[pin]
        if entry & RTE_MASKED:
            return
        level = bool(entry & RTE_LEVEL)
        if level:
            if not self.levels & 1 << pin or entry & RTE_REMOTE_IRR:
                return
            self.entries[pin] = entry | RTE_REMOTE_IRR
        elif not edge:
            return
        self.counters.messages[pin] += 1
        self._deliver(entry, level)

    def _deliver(self, entry: int, level: bool) -> None:
        vector, mode = entry & 0xFF, (entry >> 8) & 7
        destination, logical = entry >> 56, bool(entry & RTE_DEST_LOGICAL)
        targets = [apic for apic in self.lapics if apic.matches(destination, logical)]
        if mode == DM_FIXED:
            for apic in targets:
                apic.accept(vector, level)
        elif mode == DM_LOWEST:  # one CPU here: the first in the destination set takes it (as QEMU)
            if targets:
                targets[0].accept(vector, level)
        elif mode == DM_EXTINT:
            for apic in targets:
                apic.accept_extint()
        else:
            self.counters.unsupported += 1

    def eoi(self, vector: int) -> None:
        """A local APIC's EOI for a level-triggered `vector` (its EOI message): clear Remote IRR
        of every level entry with that vector, and send again where the line is still up."""
        for pin, entry in enumerate(self.entries):
            if entry & RTE_REMOTE_IRR and entry & 0xFF == vector:
                self.entries[pin] = entry & ~RTE_REMOTE_IRR
                self.counters.eois += 1
                if self.levels & 1 << pin and not entry & RTE_MASKED:
                    self.counters.redelivered += 1
                    self._service(pin)

    # -- the registers ----------------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        if offset == IOREGSEL:
            return self.ioregsel
        if offset == IOWIN and size == 4:
            return self.read_register(self.ioregsel)
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.ioregsel = value & 0xFF
        elif offset == IOWIN and size == 4:
            self.write_register(self.ioregsel, value & 0xFFFF_FFFF)

    def read_register(self, index: int) -> int:
        if index == REG_ID:
            return (self.id & 0xF) << 24
        if index == REG_VERSION:
            return IOAPIC_VERSION
        if index == REG_ARBITRATION:
            return (self.id & 0xF) << 24
        pin, high = divmod(index - REG_REDIRECTION, 2)
        if 0 <= pin < PINS:
            entry = self.entries[pin]
            return entry >> 32 if high else entry & 0xFFFF_FFFF
        return 0

    def write_register(self, index: int, value: int) -> None:
        if index == REG_ID:
            self.id = (value >> 24) & 0xF
            return
        pin, high = divmod(index - REG_REDIRECTION, 2)
        if not 0 <= pin < PINS:
            return  # the version and arbitration registers are read-only
        old = self.entries[pin]
        new = (old & 0xFFFF_FFFF) | value << 32 if high else (old & ~0xFFFF_FFFF) | value
        entry = (new & RTE_WRITABLE) | (old & RTE_READ_ONLY)
        if not entry & RTE_LEVEL:
            # An edge entry has no Remote IRR. Linux relies on this to clear a stuck one on
            # I/O APICs without an EOI register: it switches the pin to edge and back (as
            # QEMU's ioapic_fix_edge_remote_irr and KVM do).
            entry &= ~RTE_REMOTE_IRR
        self.entries[pin] = entry
        self._service(pin)  # an unmasked, asserted level line with no Remote IRR sends now


@dataclass
class IoApicPin:
    """The IrqLine of one I/O APIC input."""

    ioapic: IoApic
    pin: int

    def set_level(self, level: bool) -> None:
        self.ioapic.set_level(self.pin, level)


@dataclass
class FanOutLine:
    """One interrupt wire that reaches several controller inputs: on a PC with an I/O APIC, each
    ISA IRQ line goes both to its 8259 input and to an I/O APIC pin."""

    lines: tuple[IrqLine, ...]

    def set_level(self, level: bool) -> None:
        for line in self.lines:
            line.set_level(level)


def ioapic_pin_of_isa_irq(irq: int) -> int:
    """The I/O APIC pin an ISA IRQ reaches on emu's PC (and QEMU's): IRQ 0 on pin 2, the rest
    on their own number (the interrupt source override of the MP table and the MADT)."""
    return 2 if irq == 0 else irq
