"""The ACPI tables in the ROM at F0000 (emu/loader/acpi.py, emu/loader/pc_tables.py): found as an
OS finds them, checksums and lengths, pointers, the FADT's and MADT's fields, the DSDT's _PRT,
_S5 and PCI windows read back from the AML; and, where acpica-tools is installed, iasl's own
disassembly of every table and a recompile of the DSDT without errors or warnings."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from emu.devices.pci import Piix3IsaBridge
from emu.loader import acpi
from emu.loader.pc_tables import ACPI_OFFSET, PIR_OFFSET, TABLES_BASE, bios_tables_rom
from emu.machine import MMIO_BASE
from emu.memory import MemoryLayout

RAM = 512 << 20


@pytest.fixture(scope="module")
def rom() -> bytes:
    tables = bios_tables_rom(MemoryLayout.pc(RAM))
    try:
        return tables.data
    finally:
        tables.close()


def at(rom: bytes, address: int, length: int) -> bytes:
    assert TABLES_BASE <= address and address + length <= TABLES_BASE + len(rom), f"{address:#x} outside the ROM"
    return rom[address - TABLES_BASE : address - TABLES_BASE + length]


def table(rom: bytes, address: int) -> bytes:
    length = struct.unpack("<I", at(rom, address + 4, 4))[0]
    return at(rom, address, length)


def find_rsdp(rom: bytes) -> int:
    """As Linux's acpi_find_root_pointer: "RSD PTR " on a 16-byte boundary with a good checksum."""
    for offset in range(0, len(rom), 16):
        if rom[offset : offset + 8] == b"RSD PTR " and sum(rom[offset : offset + 20]) % 256 == 0:
            return TABLES_BASE + offset
    raise AssertionError("no RSDP")


def tables_by_signature(rom: bytes) -> dict[bytes, int]:
    rsdp = at(rom, find_rsdp(rom), 36)
    xsdt = table(rom, struct.unpack_from("<Q", rsdp, 24)[0])
    found = {table(rom, a)[:4]: a for (a,) in struct.iter_unpack("<Q", xsdt[36:])}
    fadt = table(rom, found[b"FACP"])
    found[b"FACS"], found[b"DSDT"] = struct.unpack_from("<II", fadt, 36)
    return found


def test_the_rsdp_is_found_and_both_checksums_hold(rom: bytes) -> None:
    address = find_rsdp(rom)
    assert address == TABLES_BASE + ACPI_OFFSET and address % 16 == 0
    rsdp = at(rom, address, 36)
    assert rsdp[15] == 2  # revision 2: XSDT and RSDT
    assert struct.unpack_from("<I", rsdp, 20)[0] == 36 and sum(rsdp) % 256 == 0  # extended checksum
    assert rom[PIR_OFFSET : PIR_OFFSET + 4] == b"$PIR"  # the routing table is still there
    assert rom[0x400:0x404] == b"_MP_"  # 400h-FFFh hold the MP table (emu.loader.mptable)


def test_xsdt_and_rsdt_point_to_the_same_checksummed_tables(rom: bytes) -> None:
    rsdp = at(rom, find_rsdp(rom), 36)
    rsdt = table(rom, struct.unpack_from("<I", rsdp, 16)[0])
    xsdt = table(rom, struct.unpack_from("<Q", rsdp, 24)[0])
    assert rsdt[:4] == b"RSDT" and xsdt[:4] == b"XSDT"
    assert [a for (a,) in struct.iter_unpack("<I", rsdt[36:])] == [a for (a,) in struct.iter_unpack("<Q", xsdt[36:])]
    for signature, address in tables_by_signature(rom).items():
        if signature == b"FACS":  # no checksum; 64 bytes on a 64-byte boundary
            assert address % 64 == 0 and table(rom, address)[:4] == b"FACS" and len(table(rom, address)) == 64
            continue
        data = table(rom, address)
        assert data[:4] == signature and sum(data) % 256 == 0, signature
        assert data[10:16] == b"EMU   "
    for data in (rsdt, xsdt):
        assert sum(data) % 256 == 0


def test_the_fadt_describes_emus_pm_hardware(rom: bytes) -> None:
    found = tables_by_signature(rom)
    fadt = table(rom, found[b"FACP"])
    assert len(fadt) == 276 and fadt[8] == 6 and fadt[131] == 5  # FADT 6.5
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    assert (sci, smi_cmd) == (9, 0)  # no SMM: ACPI mode is on from reset
    assert struct.unpack_from("<IIIIII", fadt, 56) == (0x600, 0, 0x604, 0, 0, 0x608)
    assert tuple(fadt[88:92]) == (4, 2, 0, 4)  # PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN
    assert fadt[108] == 0x32  # the RTC's century byte
    boot_arch, flags = struct.unpack_from("<H", fadt, 109)[0], struct.unpack_from("<I", fadt, 112)[0]
    assert not boot_arch & acpi.BOOT_8042 and boot_arch & acpi.BOOT_LEGACY_DEVICES
    assert flags & acpi.FADT_RESET_REG_SUP and not flags & (1 << 8)  # TMR_VAL_EXT clear: a 24-bit timer
    assert not flags & (1 << 4)  # PWR_BUTTON clear: the fixed-feature power button
    assert fadt[116:128] == struct.pack("<BBBBQ", 1, 8, 0, 1, 0xCF9) and fadt[128] == 0x06  # RESET_REG, value
    assert struct.unpack_from("<Q", fadt, 140)[0] == found[b"DSDT"]  # X_DSDT
    x_blocks = [struct.unpack_from("<BBBBQ", fadt, offset) for offset in (148, 172, 208)]
    assert [(space, width, address) for space, width, _, _, address in x_blocks] == [
        (1, 32, 0x600), (1, 16, 0x604), (1, 32, 0x608)]


def test_the_madt_lists_the_apics_overrides_and_lint1_nmi(rom: bytes) -> None:
    madt = table(rom, tables_by_signature(rom)[b"APIC"])
    assert struct.unpack_from("<II", madt, 36) == (0xFEE0_0000, 1)  # local APIC address, PCAT_COMPAT
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        entries.append((kind, madt[offset + 2 : offset + length]))
        offset += length
    assert offset == len(madt)
    assert entries[0] == (0, struct.pack("<BBI", 0, 0, 1))  # processor UID 0, APIC ID 0, enabled
    assert entries[1] == (1, struct.pack("<BBII", 1, 0, 0xFEC0_0000, 0))  # IOAPIC ID 1, GSI base 0
    overrides = {body[1]: struct.unpack_from("<IH", body, 2) for kind, body in entries if kind == 2}
    assert overrides == {0: (2, 0), 5: (5, 0xD), 9: (9, 0xD), 10: (10, 0xD), 11: (11, 0xD)}  # 0xD: level, high
    assert entries[-1] == (4, struct.pack("<BHB", 0xFF, 0, 1))  # NMI on LINT1 of every processor


# --- reading the DSDT's AML back --------------------------------------------------------------

def pkg_length(aml: bytes, offset: int) -> tuple[int, int]:
    """(the package's length counted from `offset`, where its contents start)."""
    lead = aml[offset]
    extra = lead >> 6
    if not extra:
        return lead & 0x3F, offset + 1
    value = lead & 0xF
    for i in range(extra):
        value |= aml[offset + 1 + i] << (4 + 8 * i)
    return value, offset + 1 + extra


def data_object(aml: bytes, offset: int) -> tuple[object, int]:
    """An integer, a string or a (nested) package at `offset`: (value, offset after it)."""
    op = aml[offset]
    if op in (0x00, 0x01):
        return op, offset + 1
    sizes = {0x0A: 1, 0x0B: 2, 0x0C: 4, 0x0E: 8}
    if op in sizes:
        size = sizes[op]
        return int.from_bytes(aml[offset + 1 : offset + 1 + size], "little"), offset + 1 + size
    if op == 0x0D:
        end = aml.index(b"\0", offset)
        return aml[offset + 1 : end].decode(), end + 1
    if op == 0x12:
        length, cursor = pkg_length(aml, offset + 1)
        count, cursor = aml[cursor], cursor + 1
        elements = []
        for _ in range(count):
            element, cursor = data_object(aml, cursor)
            elements.append(element)
        assert cursor == offset + 1 + length, "package length and contents disagree"
        return elements, cursor
    if op == 0x11:
        length, cursor = pkg_length(aml, offset + 1)
        size, cursor = data_object(aml, cursor)
        return aml[cursor : cursor + size], offset + 1 + length
    raise AssertionError(f"AML op {op:#x} at {offset:#x} is not a data object this reader knows")


def named(aml: bytes, name: bytes) -> list[object]:
    """The values of every Name(`name`, ...) in the AML (NameOp 08h, the name, the object), in order."""
    hits = [i for i in range(len(aml)) if aml[i : i + 1 + len(name)] == b"\x08" + name]
    return [data_object(aml, i + 1 + len(name))[0] for i in hits]


def test_the_prt_routes_every_slot_and_pin_to_the_piix3s_firmware_irq(rom: bytes) -> None:
    dsdt = table(rom, tables_by_signature(rom)[b"DSDT"])
    (prt,) = named(dsdt, b"_PRT")
    bridge = Piix3IsaBridge()
    expected = [[slot << 16 | 0xFFFF, pin - 1, 0, bridge.firmware_irq(slot, pin)]
                for slot in range(1, 32) for pin in (1, 2, 3, 4)]  # fmt: skip
    assert prt == expected
    assert {entry[3] for entry in prt} == {10, 11}
    assert prt[4 * 1 : 4 * 2] == [[0x2FFFF, 0, 0, 10], [0x2FFFF, 1, 0, 11], [0x2FFFF, 2, 0, 11], [0x2FFFF, 3, 0, 10]]


def test_s5_holds_the_type_the_pm_device_powers_off_with(rom: bytes) -> None:
    dsdt = table(rom, tables_by_signature(rom)[b"DSDT"])
    (s5,) = named(dsdt, b"\\_S5_")
    assert s5 == [acpi.SLP_TYP_S5, acpi.SLP_TYP_S5, 0, 0]  # SLP_TYPa, SLP_TYPb (the machine's AcpiPm.s5_type)


def test_the_pci_root_bridge_windows(rom: bytes) -> None:
    dsdt = table(rom, tables_by_signature(rom)[b"DSDT"])
    hids, (crs, com1_crs) = named(dsdt, b"_HID"), named(dsdt, b"_CRS")
    assert hids == ["ACPI0007", 0x030AD041, 0x0105D041]  # processor, PNP0A03 (PCI0), PNP0501 (COM1)
    assert com1_crs == acpi.Resource.io(0x3F8, 8) + acpi.Resource.irq(4) + b"\x79\x00"
    windows = []
    offset = 0
    while crs[offset] != 0x79:  # the end tag
        if crs[offset] & 0x80:  # a large item: tag, 16-bit length
            length = struct.unpack_from("<H", crs, offset + 1)[0]
            kind, tag = crs[offset + 3], crs[offset]
            if tag == 0x88:
                low, high = struct.unpack_from("<HH", crs, offset + 8)
                windows.append((kind, low, high))
            elif tag == 0x87:
                low, high = struct.unpack_from("<II", crs, offset + 10)
                windows.append((kind, low, high))
            offset += 3 + length
        else:
            offset += 1 + (crs[offset] & 7)
    assert (2, 0, 0xFF) in windows  # bus numbers
    assert (1, 0, 0xCF7) in windows and (1, 0xD00, 0xFFFF) in windows  # IO around the config ports
    assert (0, RAM, acpi.PCI_WINDOW_END - 1) in windows  # BARs: from the end of RAM below 4 GiB
    assert acpi.PCI_WINDOW_END <= MMIO_BASE  # and below the virtio-mmio windows and the IOAPIC


def test_the_pci_window_follows_the_memory_size() -> None:
    platform = acpi.AcpiPlatform(pci_window_start=MemoryLayout.pc(4 << 30).below_4g_size, pci_gsi=lambda s, p: 10)
    assert acpi.Resource.dword_memory(0xC000_0000, acpi.PCI_WINDOW_END - 1, cacheable=False) in acpi.dsdt(platform)


@pytest.mark.parametrize("length", [0, 1, 62, 63, 64, 4094, 4095, 4096, 1 << 20])
def test_pkg_length_encodes_what_it_decodes(length: int) -> None:
    encoded = acpi.Aml.pkg_length(length)
    assert pkg_length(encoded + bytes(length), 0) == (length + len(encoded), len(encoded))
    assert len(encoded) == (1 if length < 63 else 2 if length < 4094 else 3 if length < (1 << 20) - 3 else 4)


def test_name_strings_and_eisa_ids() -> None:
    assert acpi.Aml.name_string("\\_SB") == b"\\_SB_"
    assert acpi.Aml.name_string("\\_SB.PCI0") == b"\\\x2e_SB_PCI0"
    assert acpi.Aml.name_string("\\_SB.PCI0.S08") == b"\\\x2f\x03_SB_PCI0S08_"
    assert acpi.Aml.eisa_id("PNP0A03") == b"\x0c" + struct.pack("<I", 0x030AD041)  # as iasl's EisaId()


# --- iasl's view ------------------------------------------------------------------------------

IASL = shutil.which("iasl")


@pytest.mark.skipif(IASL is None, reason="iasl not installed (apt-get install acpica-tools)")
def test_iasl_disassembles_every_table_and_recompiles_the_dsdt(rom: bytes, tmp_path: Path) -> None:
    listings = {}
    for signature, address in tables_by_signature(rom).items():
        name = signature.decode().lower()
        (tmp_path / f"{name}.dat").write_bytes(table(rom, address))
        result = subprocess.run([IASL, "-d", f"{name}.dat"], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        listings[name] = (tmp_path / f"{name}.dsl").read_text()
    assert "Hardware Reduced (V5) : 0" in listings["facp"]
    assert "PM1A Control Block Address : 00000604" in listings["facp"]
    assert "[Interrupt Source Override]" in listings["apic"] and "Local Apic Address : FEE00000" in listings["apic"]
    dsl = listings["dsdt"]
    for needle in ('EisaId ("PNP0A03")', 'EisaId ("PNP0501")', "Name (_PRT, Package (0x7C)", "Name (\\_S5, Package",
                   "WordBusNumber (ResourceProducer", "IRQNoFlags ()"):  # fmt: skip
        assert needle in dsl, needle
    result = subprocess.run([IASL, "-p", "again", "dsdt.dsl"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and "0 Errors, 0 Warnings, 0 Remarks" in result.stdout, result.stdout + result.stderr
