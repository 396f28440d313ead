"""The tables a PC BIOS leaves in F0000-FFFFF for an OS, for guests emu boots directly.

A kernel started by `-kernel` finds no BIOS, but it still looks for the BIOS's tables in the
legacy ROM area. The first one emu provides is the PCI IRQ Routing Table ("$PIR", Microsoft's
PCI IRQ Routing Table Specification 1.0): which chipset register steers each slot's INTA#-INTD#,
and to which ISA IRQs it may be steered. Linux's arch/x86/pci/irq.c scans F0000-FFFFF on
16-byte boundaries for it, recognises the router (the PIIX3, 8086:7000) and then programs the
PIRQ route registers and the ELCR itself when a driver asks for a device's IRQ. Without it,
and without ACPI, Linux cannot give a PCI device an interrupt ("can't find IRQ for PCI INT A").

Layout: a 32-byte header (signature, version 1.0, size, the router's bus and devfn, exclusive
IRQs, the compatible router's IDs, a checksum byte that makes the whole table sum to 0) and a
16-byte entry per slot: bus, devfn, then for each of INTA#-INTD# a link value and the bitmap of
IRQs it can reach, the slot number and a reserved byte. For the PIIX a link value is the
config-space offset of its PIRQRC register (60h-63h), which is how Linux's pirq_piix_get/set
use it. The table lives in a 64 KiB ROM at F0000 (E820 marks the range reserved).

The same ROM carries the ACPI tables from 1000h (emu.loader.acpi: the RSDP on a 16-byte
boundary, where Linux's scan of E0000-FFFFF finds it, and every table it leads to). With them
Linux needs no `acpi=off`: it routes PCI interrupts by the DSDT's _PRT instead of $PIR, and
powers off and resets through the FADT's registers. Layout of the ROM: $PIR at 100h, the MP
floating pointer and configuration table (Intel MultiProcessor Specification 1.4,
emu.loader.mptable) at 400h-FFFh, ACPI from 1000h.
"""

from __future__ import annotations

import struct

from ..cpuid import emu64
from ..devices.pci.piix3 import PIRQRC, ROUTABLE_IRQS, Piix3IsaBridge, pirq_of
from ..memory import MemoryLayout, Rom
from .acpi import AcpiPlatform, acpi_tables
from .mptable import Processor, mp_tables

TABLES_BASE, TABLES_SIZE = 0xF0000, 0x10000
PIR_OFFSET = 0x100  # any 16-byte boundary in the area
MP_OFFSET, MP_END = 0x400, 0x1000  # the MP floating pointer and configuration table (emu.loader.mptable)
ACPI_OFFSET = 0x1000  # the ACPI tables, RSDP first (emu.loader.acpi)
ROUTER_DEVFN = 1 << 3  # the PIIX3 at 00:01.0
INTEL, PIIX3 = 0x8086, 0x7000


def pci_irq_routing_table(slots: range = range(1, 32)) -> bytes:
    """$PIR for bus 0 of emu's PC: every slot's four pins on the PIIX3's PIRQ lines."""
    bitmap = sum(1 << irq for irq in ROUTABLE_IRQS)
    entries = b"".join(
        struct.pack("<BB", 0, slot << 3)
        + b"".join(struct.pack("<BH", PIRQRC + pirq_of(slot, pin), bitmap) for pin in (1, 2, 3, 4))
        + struct.pack("<BB", slot, 0)
        for slot in slots
    )
    header = bytearray(struct.pack("<4sHHBBHHHI11xB", b"$PIR", 0x0100, 32 + len(entries), 0, ROUTER_DEVFN, 0,
                                   INTEL, PIIX3, 0, 0))  # fmt: skip
    table = bytes(header) + entries
    checksum = (-sum(table)) & 0xFF
    return table[:31] + bytes([checksum]) + table[32:]


def bios_tables_rom(layout: MemoryLayout) -> Rom:
    """The ROM at F0000 holding the tables (the rest reads as zeros) for a PC with `layout`."""
    area = bytearray(TABLES_SIZE)
    table = pci_irq_routing_table()
    area[PIR_OFFSET : PIR_OFFSET + len(table)] = table
    eax, _, _, edx = emu64().cpuid(1)
    mp = mp_tables(TABLES_BASE + MP_OFFSET, Processor(apic_id=0, signature=eax, features=edx))
    if MP_OFFSET + len(mp) > MP_END:
        raise AssertionError(f"the MP tables ({len(mp)} bytes) overflow {MP_OFFSET:#x}-{MP_END - 1:#x}")
    area[MP_OFFSET : MP_OFFSET + len(mp)] = mp
    platform = AcpiPlatform(pci_window_start=layout.below_4g_size, pci_gsi=Piix3IsaBridge().firmware_irq)
    acpi = acpi_tables(TABLES_BASE + ACPI_OFFSET, platform)
    area[ACPI_OFFSET : ACPI_OFFSET + len(acpi)] = acpi
    return Rom(TABLES_BASE, bytes(area), name="bios-tables")
