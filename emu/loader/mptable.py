"""The Intel MultiProcessor Specification 1.4 tables: how a BIOS describes CPUs and APICs.

Intel MultiProcessor Specification, version 1.4 (order no. 242016), ch. 4 "MP configuration
table". Before ACPI's MADT, an OS learned from these tables which local APICs (CPUs) exist and
how every interrupt source reaches an I/O APIC pin. Linux still reads them when ACPI is off
(`acpi=off`; arch/x86/kernel/mpparse.c). There are two parts:

- the MP floating pointer structure (§4.1), 16 bytes on a 16-byte boundary that the OS finds by
  scanning the first KiB of the EBDA, the last KiB of base memory or the BIOS ROM at
  0xF0000-0xFFFFF for the signature "_MP_". It gives the configuration table's address and the
  interrupt mode the BIOS left: feature byte 2 bit 7 (IMCRP) clear means virtual wire mode, the
  8259 reaching the BSP's local APIC through LINT0 (§3.6.2.2), which is emu's;
- the configuration table (§4.2), "PCMP", a header with the local APIC's address and a list of
  entries (§4.3): processors (APIC ID, version, enabled/BSP flags, CPUID signature), buses (an ID
  and a name: "PCI", "ISA"), I/O APICs (ID, version, address), I/O interrupt assignments (source
  bus and IRQ to I/O APIC and pin, with polarity and trigger) and local interrupt assignments
  (ExtINT to LINT0, NMI to LINT1).

Each structure carries a checksum byte that makes its bytes sum to 0 (mod 256).

emu's PC as this table describes it, which the ACPI MADT repeats: one CPU, local APIC ID 0 at
0xFEE00000; bus 0 = PCI, bus 1 = ISA; I/O APIC ID 1 at 0xFEC00000 (GSIs 0-23); ISA IRQ n on pin n
but IRQ 0 on pin 2 (and no entry for IRQ 2, the 8259 cascade); each PCI slot's INTA#-INTD# on the
pin of the ISA IRQ the PIIX3 routes it to after the firmware's routing (10, 10, 11, 11 rotated by
slot, emu.devices.pci.piix3), level-triggered and active low as PCI interrupts are. Like
SeaBIOS's table (src/fw/mptable.c), there is no ISA entry for the IRQs PCI owns (10 and 11), so
no pin is described twice with different trigger modes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..devices.ioapic import IOAPIC_BASE_ADDRESS, IOAPIC_ID, ioapic_pin_of_isa_irq
from ..devices.lapic import APIC_BASE_ADDRESS, APIC_VERSION
from ..devices.pci.piix3 import FIRMWARE_PIRQ_ROUTES, pirq_of

SPEC_REVISION = 0x04  # version 1.4
PCI_BUS, ISA_BUS = 0, 1
IOAPIC_VERSION = 0x11
ENTRY_PROCESSOR, ENTRY_BUS, ENTRY_IOAPIC, ENTRY_IO_INTERRUPT, ENTRY_LOCAL_INTERRUPT = 0, 1, 2, 3, 4
INT, NMI, SMI, EXTINT = 0, 1, 2, 3  # interrupt types (§4.3.4, table 4-10)
CONFORMS = 0x00  # polarity and trigger as the bus's specification says
ACTIVE_LOW_LEVEL = 0x0F  # polarity 11 = active low, trigger 11 = level (PCI)
CPU_ENABLED, CPU_BSP = 0x01, 0x02


@dataclass(frozen=True)
class Processor:
    apic_id: int
    signature: int  # CPUID.1:EAX stepping/model/family (bits 11:0)
    features: int  # CPUID.1:EDX
    bsp: bool = True


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def processor_entry(cpu: Processor) -> bytes:
    flags = CPU_ENABLED | (CPU_BSP if cpu.bsp else 0)
    return struct.pack("<BBBBII8x", ENTRY_PROCESSOR, cpu.apic_id, APIC_VERSION & 0xFF, flags,
                       cpu.signature & 0xFFF, cpu.features)  # fmt: skip


def bus_entry(bus_id: int, name: bytes) -> bytes:
    return struct.pack("<BB6s", ENTRY_BUS, bus_id, name.ljust(6))


def ioapic_entry() -> bytes:
    return struct.pack("<BBBBI", ENTRY_IOAPIC, IOAPIC_ID, IOAPIC_VERSION, 0x01, IOAPIC_BASE_ADDRESS)


def io_interrupt(kind: int, flags: int, bus: int, bus_irq: int, pin: int) -> bytes:
    return struct.pack("<BBHBBBB", ENTRY_IO_INTERRUPT, kind, flags, bus, bus_irq, IOAPIC_ID, pin)


def local_interrupt(kind: int, apic_id: int, lint: int) -> bytes:
    return struct.pack("<BBHBBBB", ENTRY_LOCAL_INTERRUPT, kind, CONFORMS, ISA_BUS, 0, apic_id, lint)


def pci_interrupt_pin(slot: int, pin: int) -> int:
    """The I/O APIC pin of INTx# `pin` (1 = INTA#) of bus-0 `slot` after the firmware's routing:
    PIRQ (slot + pin - 1) mod 4 steered to FIRMWARE_PIRQ_ROUTES, that ISA IRQ's pin."""
    return FIRMWARE_PIRQ_ROUTES[pirq_of(slot, pin)]


def configuration_entries(cpu: Processor, slots: range = range(1, 32)) -> list[bytes]:
    """The entries of the configuration table, in the order of §4.3 (processors, buses, I/O
    APICs, I/O interrupts, local interrupts), PCI interrupts before ISA ones (as SeaBIOS)."""
    entries = [processor_entry(cpu), bus_entry(PCI_BUS, b"PCI"), bus_entry(ISA_BUS, b"ISA"), ioapic_entry()]
    for slot in slots:  # source bus IRQ for PCI: device number in bits 6:2, INTA#-INTD# as 0-3
        for pin in (1, 2, 3, 4):
            entries.append(io_interrupt(INT, ACTIVE_LOW_LEVEL, PCI_BUS, slot << 2 | (pin - 1),
                                        pci_interrupt_pin(slot, pin)))  # fmt: skip
    for irq in range(16):
        if irq == 2 or irq in FIRMWARE_PIRQ_ROUTES:  # the cascade; the IRQs PCI owns
            continue
        entries.append(io_interrupt(INT, CONFORMS, ISA_BUS, irq, ioapic_pin_of_isa_irq(irq)))
    entries.append(local_interrupt(EXTINT, 0, 0))  # the 8259 on the BSP's LINT0: virtual wire
    entries.append(local_interrupt(NMI, 0xFF, 1))  # NMI on every CPU's LINT1
    return entries


def configuration_table(cpu: Processor) -> bytes:
    """The "PCMP" table (§4.2): a 44-byte header, then the entries; checksum over all of it."""
    entries = configuration_entries(cpu)
    body = b"".join(entries)
    header = bytearray(struct.pack("<4sHBB8s12sIHHIHBx", b"PCMP", 44 + len(body), SPEC_REVISION, 0,
                                   b"EMU".ljust(8), b"PC".ljust(12), 0, 0, len(entries),
                                   APIC_BASE_ADDRESS, 0, 0))  # fmt: skip
    table = bytes(header) + body
    header[7] = _checksum(table)
    return bytes(header) + body


def floating_pointer(table_address: int) -> bytes:
    """The "_MP_" floating pointer (§4.1): one 16-byte paragraph; no default configuration
    (byte 1 = 0, a table follows), virtual wire mode (byte 2 bit 7 IMCRP = 0)."""
    data = bytearray(struct.pack("<4sIBBBBB3x", b"_MP_", table_address, 1, SPEC_REVISION, 0, 0, 0))
    data[10] = _checksum(data)
    return bytes(data)


def mp_tables(address: int, cpu: Processor) -> bytes:
    """The floating pointer at `address` (16-byte aligned) with the configuration table right after."""
    if address % 16:
        raise ValueError(f"the MP floating pointer must be 16-byte aligned, not at {address:#x}")
    return floating_pointer(address + 16) + configuration_table(cpu)
