"""ACPI tables for emu's PC, built in Python: how an OS learns the machine without probing it.

ACPI (Advanced Configuration and Power Interface, spec 6.5) replaces guesswork with tables the
firmware leaves in memory. The OS finds the *RSDP* ("RSD PTR ", §5.2.5) by scanning the BIOS
area E0000-FFFFF on 16-byte boundaries; it points to the *XSDT* (64-bit pointers, §5.2.8) and
the older *RSDT* (32-bit, §5.2.7), lists of every other table. Each table starts with the same
36-byte header (§5.2.6): signature, length, revision, a checksum byte that makes all its bytes
sum to 0, and who made it. emu's tables:

  FADT "FACP" (§5.2.9)  the fixed hardware: where the power-management registers are (PM1
                        event/control blocks, the PM timer: emu.devices.acpi_pm), the SCI's
                        IRQ, the reset register (port CF9h), what legacy devices exist; and
                        where the DSDT and the FACS are.
  FACS (§5.2.10)        the firmware/OS shared page (waking vector, global lock): unused here.
  DSDT (§5.2.11.1)      the device tree, as AML bytecode (§20) an interpreter in the OS runs:
                        \\_S5 (the value for PM1_CNT.SLP_TYP that turns the machine off), the PCI
                        root bridge PCI0 with its resources (_CRS) and interrupt routing (_PRT),
                        the processor and COM1.
  MADT "APIC" (§5.2.12) the interrupt controllers: the local APIC, the IOAPIC and how ISA IRQs
                        map onto its inputs (interrupt source overrides).

The AML here is hand-assembled with a few small encoders (`Aml`): no compiler is needed, and
each construct names its grammar rule. `iasl -d` disassembles the result (tests do, where it
is installed). All tables go into the 64 KiB ROM at F0000 (emu.loader.pc_tables).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

# Where the hardware is: the same numbers as emu.devices.acpi_pm and the APIC models
PM_BASE = 0x600
PM1A_EVT_BLK, PM1_EVT_LEN = PM_BASE, 4
PM1A_CNT_BLK, PM1_CNT_LEN = PM_BASE + 4, 2
PM_TMR_BLK, PM_TMR_LEN = PM_BASE + 8, 4
SCI_IRQ = 9
RESET_PORT, RESET_VALUE = 0xCF9, 0x06  # PIIX3 Reset Control Register: SYS_RST | RST_CPU (a hard reset)
SLP_TYP_S5 = 5  # what emu's PM1_CNT decodes as "soft off"; the value is the chipset's choice (§7.4.2)
RTC_CENTURY = 0x32  # the CMOS byte holding the century (emu.devices.rtc)
LAPIC_BASE, IOAPIC_BASE, IOAPIC_ID = 0xFEE0_0000, 0xFEC0_0000, 1
PCI_WINDOW_END = 0xFEB0_0000  # exclusive: emu's virtio-mmio windows (machine.MMIO_BASE), then the IOAPIC
OEM_ID, OEM_TABLE_ID, CREATOR_ID = b"EMU   ", b"EMUPC   ", b"EMU "

# FADT flags (§5.2.9, table 5.10) and IA-PC boot architecture flags (§5.2.9.3, table 5.11)
FADT_WBINVD, FADT_PROC_C1, FADT_SLP_BUTTON, FADT_FIX_RTC = 1 << 0, 1 << 2, 1 << 5, 1 << 6
FADT_RESET_REG_SUP = 1 << 10
BOOT_LEGACY_DEVICES, BOOT_8042, BOOT_VGA_NOT_PRESENT = 1 << 0, 1 << 1, 1 << 2
# Generic Address Structure (§5.2.3.2): address space IDs and access sizes
GAS_SYSTEM_IO = 1
ACCESS_BYTE, ACCESS_WORD, ACCESS_DWORD = 1, 2, 3
# MADT (§5.2.12): structure types, flags; MPS INTI flags (table 5.50): polarity bits 1:0, trigger 3:2
MADT_PCAT_COMPAT = 1
MADT_LOCAL_APIC, MADT_IO_APIC, MADT_SOURCE_OVERRIDE, MADT_LOCAL_APIC_NMI = 0, 1, 2, 4
INTI_CONFORMING, INTI_ACTIVE_HIGH, INTI_LEVEL = 0x0, 0x1, 0xC


def checksummed(table: bytes, at: int) -> bytes:
    """`table` with the byte at `at` set so that all its bytes sum to 0 (mod 256)."""
    fixed = bytearray(table)
    fixed[at] = 0
    fixed[at] = -sum(fixed) & 0xFF
    return bytes(fixed)


def sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A System Description Table: the 36-byte header (§5.2.6) in front of `body`."""
    header = struct.pack("<4sIBB6s8sI4sI", signature, 36 + len(body), revision, 0, OEM_ID, OEM_TABLE_ID, 1,
                         CREATOR_ID, 1)  # fmt: skip
    return checksummed(header + body, 9)


def gas(address: int, bit_width: int, access_size: int, space: int = GAS_SYSTEM_IO) -> bytes:
    """A Generic Address Structure (§5.2.3.2): 12 bytes naming a register."""
    return struct.pack("<BBBBQ", space, bit_width, 0, access_size, address)


NO_REGISTER = bytes(12)  # an all-zero GAS: "not present"


# --- AML (§20): just the constructs the DSDT needs ----------------------------------------------

class Aml:
    """Encoders for AML terms (§20.2); each returns the bytes of one term."""

    @staticmethod
    def pkg_length(body: int) -> bytes:
        """PkgLength (§20.2.4): the length of what follows *including these bytes*; one byte up
        to 63, else a lead byte (bits 7:6 = extra bytes, bits 3:0 = low nibble) and 1-3 more."""
        if body + 1 < 0x40:
            return bytes([body + 1])
        for extra in (1, 2, 3):
            total = body + 1 + extra
            if total < 1 << (4 + 8 * extra):
                return bytes([extra << 6 | total & 0xF]) + (total >> 4).to_bytes(extra, "little")
        raise ValueError(f"AML package of {body} bytes is too long")

    @staticmethod
    def name_string(path: str) -> bytes:
        """NameString (§20.2.2): an optional root prefix '\\', then 4-character NameSegs (padded
        with '_'), one alone, two after DualNamePrefix (2Eh), more after MultiNamePrefix (2Fh)."""
        prefix = b"\\" if path.startswith("\\") else b""
        segs = [s.ljust(4, "_").encode() for s in path.lstrip("\\").split(".") if s]
        if any(len(s) != 4 for s in segs):
            raise ValueError(f"AML name {path!r}: segments are at most 4 characters")
        if len(segs) == 1:
            return prefix + segs[0]
        if len(segs) == 2:
            return prefix + b"\x2e" + b"".join(segs)
        return prefix + bytes([0x2F, len(segs)]) + b"".join(segs)

    @staticmethod
    def integer(value: int) -> bytes:
        """ZeroOp, OneOp, or the smallest of BytePrefix/WordPrefix/DWordPrefix/QWordPrefix (§20.2.3)."""
        if value in (0, 1):
            return bytes([value])
        for prefix, size in ((0x0A, 1), (0x0B, 2), (0x0C, 4), (0x0E, 8)):
            if value < 1 << (8 * size):
                return bytes([prefix]) + value.to_bytes(size, "little")
        raise ValueError(f"AML integer {value:#x} does not fit in 64 bits")

    @staticmethod
    def string(text: str) -> bytes:
        """StringPrefix (0Dh), ASCII, NUL."""
        return b"\x0d" + text.encode("ascii") + b"\0"

    @staticmethod
    def eisa_id(text: str) -> bytes:
        """A compressed EISA ID such as "PNP0A03" (§19.6.35 EISAID): three letters of 5 bits
        each and four hex digits, stored big-endian in a DWord."""
        vendor = sum((ord(c) - 0x40) << shift for c, shift in zip(text[:3], (10, 5, 0)))
        return Aml.integer(int.from_bytes(struct.pack(">HH", vendor, int(text[3:], 16)), "little"))

    @staticmethod
    def package(*elements: bytes) -> bytes:
        """DefPackage (§20.2.5.4): PackageOp (12h) PkgLength NumElements elements."""
        body = bytes([len(elements)]) + b"".join(elements)
        return b"\x12" + Aml.pkg_length(len(body)) + body

    @staticmethod
    def buffer(data: bytes) -> bytes:
        """DefBuffer (§20.2.5.4): BufferOp (11h) PkgLength BufferSize bytes."""
        body = Aml.integer(len(data)) + data
        return b"\x11" + Aml.pkg_length(len(body)) + body

    @staticmethod
    def name(path: str, value: bytes) -> bytes:
        """DefName (§20.2.5.1): NameOp (08h) NameString DataRefObject."""
        return b"\x08" + Aml.name_string(path) + value

    @staticmethod
    def scope(path: str, *terms: bytes) -> bytes:
        """DefScope (§20.2.5.1): ScopeOp (10h) PkgLength NameString TermList."""
        body = Aml.name_string(path) + b"".join(terms)
        return b"\x10" + Aml.pkg_length(len(body)) + body

    @staticmethod
    def device(path: str, *terms: bytes) -> bytes:
        """DefDevice (§20.2.5.2): ExtOpPrefix DeviceOp (5Bh 82h) PkgLength NameString TermList."""
        body = Aml.name_string(path) + b"".join(terms)
        return b"\x5b\x82" + Aml.pkg_length(len(body)) + body


class Resource:
    """Resource descriptors (§6.4) for a ResourceTemplate, the buffer _CRS returns."""

    # Address space descriptor fields (§6.4.3.5): resource type, general flags, type-specific flags
    MEMORY, IO, BUS = 0, 1, 2
    PRODUCER_FIXED = 0x0C  # bit 3 _MAF, bit 2 _MIF (max and min fixed), bit 1 positive decode, bit 0 producer
    IO_ENTIRE_RANGE = 0x03  # _RNG: ISA and non-ISA ranges
    MEM_READ_WRITE, MEM_CACHEABLE = 0x01, 0x02  # _RW; _MEM = 01b (cacheable) in bits 2:1

    @staticmethod
    def io(base: int, length: int) -> bytes:
        """I/O Port Descriptor (§6.4.2.5, small item 08h): 16-bit decode, fixed at `base`."""
        return struct.pack("<BBHHBB", 0x47, 0x01, base, base, 0x01, length)

    @staticmethod
    def irq(*irqs: int) -> bytes:
        """IRQ Descriptor without flags (§6.4.2.1, small item 04h): ISA edge, active high."""
        return struct.pack("<BH", 0x22, sum(1 << irq for irq in irqs))

    @staticmethod
    def word_space(kind: int, specific: int, low: int, high: int) -> bytes:
        """Word Address Space Descriptor (§6.4.3.5.3, large item 88h): bus numbers or IO ports."""
        return struct.pack("<BHBBBHHHHH", 0x88, 13, kind, Resource.PRODUCER_FIXED, specific, 0, low, high, 0,
                           high - low + 1)  # fmt: skip

    @staticmethod
    def dword_memory(low: int, high: int, cacheable: bool) -> bytes:
        """DWord Address Space Descriptor (§6.4.3.5.2, large item 87h) for a read/write memory window."""
        specific = Resource.MEM_READ_WRITE | (Resource.MEM_CACHEABLE if cacheable else 0)
        return struct.pack("<BHBBBIIIII", 0x87, 23, Resource.MEMORY, Resource.PRODUCER_FIXED, specific, 0, low, high,
                           0, high - low + 1)  # fmt: skip

    @staticmethod
    def template(*descriptors: bytes) -> bytes:
        """ResourceTemplate: the descriptors and an End Tag (§6.4.2.9; checksum 0 = "treat as
        valid"), as a Buffer."""
        return Aml.buffer(b"".join(descriptors) + b"\x79\x00")


# --- the tables ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class AcpiPlatform:
    """What the tables describe that depends on the machine."""

    pci_window_start: int  # the 32-bit PCI MMIO window: from the end of RAM below 4 GiB ...
    pci_gsi: Callable[[int, int], int]  # (slot, pin 1-4) -> GSI: the PIIX3's routes (firmware_irq)
    pci_window_end: int = PCI_WINDOW_END  # ... to here (exclusive)
    pci_slots: range = range(1, 32)


def dsdt(platform: AcpiPlatform) -> bytes:
    """The DSDT: \\_S5, and under \\_SB the processor, the PCI root bridge and COM1."""
    a, r = Aml, Resource
    # _PRT (§6.2.13): one entry per slot and pin: Package {Address, Pin, Source, Source Index}.
    # Address is the slot in the high word with FFFFh for "any function"; Pin 0-3 is INTA-INTD;
    # Source 0 means the Source Index is a GSI, wired straight to the interrupt controller.
    prt = a.package(*(a.package(a.integer(slot << 16 | 0xFFFF), a.integer(pin - 1), a.integer(0),
                                a.integer(platform.pci_gsi(slot, pin)))
                      for slot in platform.pci_slots for pin in (1, 2, 3, 4)))  # fmt: skip
    pci_crs = r.template(
        r.word_space(r.BUS, 0, 0x00, 0xFF),  # bus numbers 0-255 below this bridge
        r.io(0xCF8, 8),  # the configuration ports, which the bridge itself decodes
        r.word_space(r.IO, r.IO_ENTIRE_RANGE, 0x0000, 0x0CF7),  # ports forwarded to PCI/ISA devices
        r.word_space(r.IO, r.IO_ENTIRE_RANGE, 0x0D00, 0xFFFF),
        r.dword_memory(0xA0000, 0xBFFFF, cacheable=True),  # the legacy VGA window
        r.dword_memory(platform.pci_window_start, platform.pci_window_end - 1, cacheable=False),  # BARs go here
    )
    pci0 = a.device(
        "PCI0",
        a.name("_HID", a.eisa_id("PNP0A03")),  # a PCI host bridge
        a.name("_UID", a.integer(0)),
        a.name("_BBN", a.integer(0)),  # its bus number
        a.name("_CRS", pci_crs),
        a.name("_PRT", prt),
    )
    com1 = a.device(
        "COM1",
        a.name("_HID", a.eisa_id("PNP0501")),  # a 16550A-compatible UART
        a.name("_UID", a.integer(1)),
        a.name("_CRS", r.template(r.io(0x3F8, 8), r.irq(4))),
    )
    cpu = a.device("C000", a.name("_HID", a.string("ACPI0007")), a.name("_UID", a.integer(0)))  # §8.4: processor
    # \_S5 (§7.4.2.6): Package {SLP_TYPa, SLP_TYPb, reserved, reserved}
    s5 = a.name("\\_S5", a.package(*(a.integer(v) for v in (SLP_TYP_S5, SLP_TYP_S5, 0, 0))))
    return sdt(b"DSDT", 2, s5 + a.scope("\\_SB", cpu, pci0, com1))  # revision 2: 64-bit AML integers


def facs() -> bytes:
    """The FACS (§5.2.10): 64 bytes, no checksum; version 2, no waking vector, no global lock."""
    return struct.pack("<4sIIIIIQBxxxI24x", b"FACS", 64, 0, 0, 0, 0, 0, 2, 0)


def fadt(facs_address: int, dsdt_address: int) -> bytes:
    """The FADT (§5.2.9, revision 6.5: 276 bytes). ACPI is always on: with no SMI command port
    (SMI_CMD 0) the OS finds SCI_EN already set in PM1_CNT and never asks for a mode switch."""
    flags = FADT_WBINVD | FADT_PROC_C1 | FADT_SLP_BUTTON | FADT_FIX_RTC | FADT_RESET_REG_SUP
    # no 8042 (emu has no keyboard controller), no VGA on a direct kernel boot
    boot_arch = BOOT_LEGACY_DEVICES | BOOT_VGA_NOT_PRESENT
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs_address, dsdt_address, 0, 0,  # FIRMWARE_CTRL, DSDT, reserved, Preferred_PM_Profile (unspecified)
        SCI_IRQ, 0, 0, 0, 0, 0,  # SCI_INT, SMI_CMD, ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        PM1A_EVT_BLK, 0, PM1A_CNT_BLK, 0, 0, PM_TMR_BLK, 0, 0,  # PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM_TMR, GPE0/1
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0,  # lengths, GPE1_BASE, CST_CNT
        0xFFF, 0xFFF, 0, 0, 0, 0,  # P_LVL2/3_LAT > 100/1000 us: no C2/C3; FLUSH_SIZE/STRIDE, DUTY_OFFSET/WIDTH
        0, 0, RTC_CENTURY, boot_arch, 0, flags,  # DAY_ALRM, MON_ALRM, CENTURY, IAPC_BOOT_ARCH, reserved, Flags
    )  # fmt: skip
    body += gas(RESET_PORT, 8, ACCESS_BYTE) + struct.pack("<BHB", RESET_VALUE, 0, 5)  # ARM_BOOT_ARCH, minor 5
    body += struct.pack("<QQ", 0, dsdt_address)  # X_FIRMWARE_CTRL (0: FIRMWARE_CTRL says it), X_DSDT
    body += gas(PM1A_EVT_BLK, 8 * PM1_EVT_LEN, ACCESS_WORD) + NO_REGISTER  # X_PM1a/b_EVT_BLK
    body += gas(PM1A_CNT_BLK, 8 * PM1_CNT_LEN, ACCESS_WORD) + NO_REGISTER  # X_PM1a/b_CNT_BLK
    body += NO_REGISTER + gas(PM_TMR_BLK, 8 * PM_TMR_LEN, ACCESS_DWORD)  # X_PM2_CNT_BLK, X_PM_TMR_BLK
    body += NO_REGISTER * 4 + bytes(8)  # X_GPE0/1_BLK, SLEEP_CONTROL/STATUS_REG, hypervisor vendor
    return sdt(b"FACP", 6, body)


def madt() -> bytes:
    """The MADT (§5.2.12): one processor's local APIC, the IOAPIC, the ISA IRQs that do not map
    to the same-numbered GSI or are not ISA-like (edge, active high), and LINT1 as NMI, as on
    QEMU's pc."""
    entries = struct.pack("<BBBBI", MADT_LOCAL_APIC, 8, 0, 0, 1)  # processor UID 0, APIC ID 0, enabled
    entries += struct.pack("<BBBBII", MADT_IO_APIC, 12, IOAPIC_ID, 0, IOAPIC_BASE, 0)  # GSI base 0
    overrides = [(0, 2, INTI_CONFORMING)]  # the PIT's IRQ 0 is wired to IOAPIC input 2; ISA: edge, high
    # level-triggered, active high as QEMU's pc declares them: the SCI (9), the PIRQ routes (10,
    # 11) and 5 (with 9, 10 the IRQs of emu's virtio-mmio devices)
    overrides += [(irq, irq, INTI_LEVEL | INTI_ACTIVE_HIGH) for irq in (5, SCI_IRQ, 10, 11)]
    for irq, gsi, flags in overrides:
        entries += struct.pack("<BBBBIH", MADT_SOURCE_OVERRIDE, 10, 0, irq, gsi, flags)  # bus 0: ISA
    entries += struct.pack("<BBBHB", MADT_LOCAL_APIC_NMI, 6, 0xFF, INTI_CONFORMING, 1)  # all processors, LINT1
    return sdt(b"APIC", 5, struct.pack("<II", LAPIC_BASE, MADT_PCAT_COMPAT) + entries)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def rsdp(rsdt_address: int, xsdt_address: int) -> bytes:
    """The RSDP (§5.2.5.3), revision 2: 36 bytes; the checksum covers the first 20 (the ACPI 1.0
    structure), the extended checksum all 36."""
    head = checksummed(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 2, rsdt_address), 8)
    return checksummed(head + struct.pack("<IQBxxx", 36, xsdt_address, 0), 32)


def acpi_tables(base: int, platform: AcpiPlatform) -> bytes:
    """Every table, laid out from guest-physical `base` (16-byte aligned): the RSDP first."""
    if base % 16:
        raise ValueError("the RSDP must sit on a 16-byte boundary")
    blob = bytearray()
    addresses: dict[str, int] = {}

    def place(name: str, table: bytes, alignment: int = 16) -> int:
        blob.extend(bytes(_align(len(blob), alignment) - len(blob)))
        addresses[name] = base + len(blob)
        blob.extend(table)
        return addresses[name]

    place("RSDP", bytes(36))  # filled in last, when the RSDT's and XSDT's places are known
    facs_at = place("FACS", facs(), 64)  # the FACS must be 64-byte aligned
    dsdt_at = place("DSDT", dsdt(platform))
    pointed = [place("FACP", fadt(facs_at, dsdt_at)), place("APIC", madt())]
    rsdt_at = place("RSDT", sdt(b"RSDT", 1, struct.pack(f"<{len(pointed)}I", *pointed)))
    xsdt_at = place("XSDT", sdt(b"XSDT", 1, struct.pack(f"<{len(pointed)}Q", *pointed)))
    blob[0:36] = rsdp(rsdt_at, xsdt_at)
    return bytes(blob)
