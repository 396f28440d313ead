"""The MP tables in the ROM at F0000, found and parsed as Linux's mpparse.c finds them."""

from __future__ import annotations

import struct

from emu.cpuid import emu64
from emu.devices.pci.piix3 import Piix3IsaBridge
from emu.memory import MemoryLayout
from emu.loader.pc_tables import MP_END, MP_OFFSET, PIR_OFFSET, TABLES_BASE, bios_tables_rom

ENTRY_SIZES = {0: 20, 1: 8, 2: 8, 3: 8, 4: 8}


def rom_bytes() -> bytes:
    rom = bios_tables_rom(MemoryLayout.pc(512 << 20))
    try:
        return bytes(rom.data)
    finally:
        rom.close()


def find_floating_pointer(area: bytes) -> int:
    """Linux's smp_scan_config: "_MP_" on a 16-byte boundary, length 1, checksum 0, rev 1 or 4."""
    for offset in range(0, len(area), 16):
        if area[offset : offset + 4] == b"_MP_" and area[offset + 8] == 1 and sum(area[offset : offset + 16]) % 256 == 0:
            assert area[offset + 9] in (1, 4)
            return offset
    raise AssertionError("no MP floating pointer")


def parse() -> tuple[bytes, dict, list[tuple]]:
    area = rom_bytes()
    fp = find_floating_pointer(area)
    address, length, rev, _, feature1, feature2 = struct.unpack_from("<IBBBBB", area, fp + 4)
    assert (feature1, feature2 & 0x80) == (0, 0)  # a table follows; virtual wire mode (no IMCR)
    table = area[address - TABLES_BASE :]
    sig, size, rev, _, oem, product, _, _, count, lapic, ext_len, _ = struct.unpack_from("<4sHBB8s12sIHHIHB", table)
    assert sig == b"PCMP" and rev == 4 and sum(table[:size]) % 256 == 0 and ext_len == 0
    header = {"count": count, "lapic": lapic, "size": size, "fp": fp, "address": address}
    entries, offset = [], 44
    for _ in range(count):
        kind = table[offset]
        entries.append((kind, table[offset : offset + ENTRY_SIZES[kind]]))
        offset += ENTRY_SIZES[kind]
    assert offset == size
    return area, header, entries


def test_floating_pointer_and_table_sit_where_the_rom_keeps_them() -> None:
    area, header, _ = parse()
    assert header["fp"] == MP_OFFSET and header["address"] == TABLES_BASE + MP_OFFSET + 16
    assert MP_OFFSET + 16 + header["size"] <= MP_END  # clear of ACPI from 0x1000
    assert area[PIR_OFFSET : PIR_OFFSET + 4] == b"$PIR"  # the routing table is untouched
    assert header["lapic"] == 0xFEE00000


def test_processor_buses_and_ioapic() -> None:
    _, _, entries = parse()
    processors = [e for k, e in entries if k == 0]
    assert len(processors) == 1
    _, apic_id, version, flags, signature, features = struct.unpack_from("<BBBBII", processors[0])
    eax, _, _, edx = emu64().cpuid(1)
    assert (apic_id, version, flags) == (0, 0x14, 0x03)  # BSP, enabled
    assert signature == eax & 0xFFF and features == edx and features & 1 << 9
    buses = {e[1]: e[2:8].rstrip() for k, e in entries if k == 1}
    assert buses == {0: b"PCI", 1: b"ISA"}
    ioapics = [struct.unpack_from("<BBBBI", e) for k, e in entries if k == 2]
    assert ioapics == [(2, 1, 0x11, 1, 0xFEC00000)]


def test_isa_interrupts_with_the_irq0_override() -> None:
    _, _, entries = parse()
    isa = {}
    for kind, e in entries:
        if kind == 3 and e[4] == 1:
            _, itype, flags, _, irq, apic, pin = struct.unpack_from("<BBHBBBB", e)
            assert (itype, flags, apic) == (0, 0, 1)
            isa[irq] = pin
    assert isa[0] == 2 and 2 not in isa  # the PIT on pin 2, nothing from the cascade
    assert all(isa[irq] == irq for irq in isa if irq)
    assert set(isa) == set(range(16)) - {2, 10, 11}  # 10 and 11 are PCI's (level, active low)


def test_pci_interrupts_follow_the_firmware_routes() -> None:
    _, _, entries = parse()
    bridge = Piix3IsaBridge()
    pci = {}
    for kind, e in entries:
        if kind == 3 and e[4] == 0:
            _, itype, flags, _, source, apic, pin = struct.unpack_from("<BBHBBBB", e)
            assert (itype, flags, apic) == (0, 0x0F, 1)  # level, active low
            pci[(source >> 2, (source & 3) + 1)] = pin
    assert set(pci) == {(slot, pin) for slot in range(1, 32) for pin in (1, 2, 3, 4)}
    assert all(pin == bridge.firmware_irq(slot, intx) for (slot, intx), pin in pci.items())
    assert pci[(2, 1)] == 10 and pci[(3, 1)] == 11  # the first virtio slots: INTA# on PIRQB/C


def test_local_interrupts_extint_on_lint0_nmi_on_lint1() -> None:
    _, _, entries = parse()
    local = [struct.unpack_from("<BBHBBBB", e) for k, e in entries if k == 4]
    assert local == [(4, 3, 0, 1, 0, 0, 0), (4, 1, 0, 1, 0, 0xFF, 1)]
