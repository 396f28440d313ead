"""PCI configuration mechanism #1, BAR sizing, and INTx routing through the PIIX3's PIRQ
registers (emu/devices/pci/); and a guest that enumerates the bus on both accelerators."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.devices.bus import PortIoBus
from emu.devices.pci import Bar, BarKind, I440fxHostBridge, PciFunction, PciHost, Piix3IsaBridge
from emu.loader.multiboot_image import build_multiboot_elf
from emu.machine import Machine, MachineConfig


def address(device: int, function: int = 0, register: int = 0) -> int:
    return 0x8000_0000 | device << 11 | function << 8 | register


@dataclass
class Resets:
    count: int = 0

    def request_reset(self) -> None:
        self.count += 1

    def request_exit(self, status: int) -> None:
        raise AssertionError("no exit expected")


@dataclass
class Level:
    level: bool = False
    changes: int = 0

    def set_level(self, level: bool) -> None:
        self.level, self.changes = level, self.changes + 1


def chipset() -> tuple[PortIoBus, PciHost, Piix3IsaBridge, dict[int, Level], Resets]:
    ports, resets, lines = PortIoBus(), Resets(), {irq: Level() for irq in range(16)}
    host = PciHost(resets)
    host.register(ports)
    host.attach(0, 0, I440fxHostBridge())
    bridge = Piix3IsaBridge(irq_line=lines.__getitem__)
    host.attach(1, 0, bridge)
    return ports, host, bridge, lines, resets


def test_mechanism_1_reads_the_chipset_ids_and_all_ones_where_nothing_is() -> None:
    ports, *_ = chipset()
    ports.write(0xCF8, 4, address(0))
    assert ports.read(0xCF8, 4) == address(0)
    assert ports.read(0xCFC, 4) == 0x1237_8086  # 440FX
    assert ports.read(0xCFE, 2) == 0x1237 and ports.read(0xCFD, 1) == 0x80
    ports.write(0xCF8, 4, address(0, register=0x08))
    assert ports.read(0xCFC, 4) == 0x0600_0002  # class 060000 (host bridge), revision 02
    ports.write(0xCF8, 4, address(1))
    assert ports.read(0xCFC, 4) == 0x7000_8086  # PIIX3
    ports.write(0xCF8, 4, address(1, register=0x0C))
    assert ports.read(0xCFE, 1) == 0x80  # header type: multi-function
    for missing in (address(2), address(1, function=1), address(0) | 1 << 16, address(0) & ~(1 << 31)):
        ports.write(0xCF8, 4, missing)
        assert ports.read(0xCFC, 4) == 0xFFFF_FFFF and ports.read(0xCFC, 2) == 0xFFFF


def test_only_a_dword_write_loads_the_address_and_0xcf9_resets() -> None:
    ports, host, _, _, resets = chipset()
    ports.write(0xCF8, 4, address(1))
    ports.write(0xCF8, 2, 0)  # a word to 0xCF8 is not CONFIG_ADDRESS
    ports.write(0xCFA, 1, 0)
    assert host.address == address(1)
    ports.write(0xCF9, 1, 0x2)  # SYS_RST alone: no reset yet
    assert resets.count == 0 and ports.read(0xCF9, 1) == 0x2
    ports.write(0xCF9, 1, 0x6)  # RST_CPU
    assert resets.count == 1


def test_read_only_fields_ignore_writes() -> None:
    ports, *_ = chipset()
    ports.write(0xCF8, 4, address(0))
    ports.write(0xCFC, 4, 0xDEAD_BEEF)
    assert ports.read(0xCFC, 4) == 0x1237_8086


@dataclass
class TestDevice(PciFunction):
    __test__ = False  # not a pytest class

    vendor_id: int = 0x1AF4
    device_id: int = 0x1000
    class_code: int = 0x020000
    interrupt_pin: int = 1


def test_bar_sizing_and_placement() -> None:
    """Write all ones, read back the size mask; the low bits say IO/memory and 64-bit; the
    command register turns decoding on, and the bus hears of it."""
    changes = []
    device = TestDevice(bars={0: Bar(BarKind.IO, 0x20), 1: Bar(BarKind.MEMORY32, 0x1000),
                              2: Bar(BarKind.MEMORY64, 0x4000, prefetchable=True)},
                        on_bars_changed=lambda fn: changes.append(fn.decoded_bars()))  # fmt: skip
    ports, host, *_ = chipset()
    host.attach(3, 0, device)

    def cfg(register: int, value: int | None = None, size: int = 4) -> int:
        ports.write(0xCF8, 4, address(3, register=register & ~3))
        if value is not None:
            ports.write(0xCFC + (register & 3), size, value)
        return ports.read(0xCFC + (register & 3), size)

    assert cfg(0x10) == 0x1 and cfg(0x14) == 0x0 and cfg(0x18) == 0xC and cfg(0x1C) == 0
    assert cfg(0x10, 0xFFFF_FFFF) == 0xFFFF_FFE1  # IO, 32 bytes
    assert cfg(0x14, 0xFFFF_FFFF) == 0xFFFF_F000  # memory, 4 KiB
    assert cfg(0x18, 0xFFFF_FFFF) == 0xFFFF_C00C and cfg(0x1C, 0xFFFF_FFFF) == 0xFFFF_FFFF  # 64-bit, 16 KiB
    assert cfg(0x20, 0xFFFF_FFFF) == 0  # no BAR 4
    cfg(0x10, 0xC040), cfg(0x14, 0xFEBF_1000), cfg(0x18, 0xFE00_0000), cfg(0x1C, 0x1)
    assert changes == []  # decoding is off
    cfg(0x04, 0x3, size=2)  # IO and memory space on
    assert [(i, hex(b.address)) for i, b in changes[-1]] == [(0, "0xc040"), (1, "0xfebf1000"), (2, "0x1fe000000")]
    assert cfg(0x04, size=2) == 0x3


@dataclass
class Registers:
    """What answers inside a BAR window: 64 bytes of storage."""

    data: bytearray

    def io_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset : offset + size], "little")

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.data[offset : offset + size] = value.to_bytes(size, "little")


@dataclass
class WindowedDevice(TestDevice):
    __test__ = False
    window: Registers | None = None

    def bar_io(self, index: int) -> Registers | None:
        return self.window


def test_decoded_bars_are_windows_on_the_buses_and_move_with_them() -> None:
    from emu.devices.bus import Buses

    buses, regs = Buses(), Registers(bytearray(range(64)))
    host = PciHost(None, buses)
    host.register(buses.ports)
    device = WindowedDevice(bars={0: Bar(BarKind.IO, 0x40), 1: Bar(BarKind.MEMORY32, 0x1000)}, window=regs)
    host.attach(4, 0, device)

    def cfg(register: int, value: int, size: int = 4) -> None:
        buses.ports.write(0xCF8, 4, address(4, register=register))
        buses.ports.write(0xCFC, size, value)

    cfg(0x10, 0xC000)
    cfg(0x14, 0xFEB0_0000)
    assert buses.ports.read(0xC004, 4) == 0xFFFF_FFFF  # decoding off: nothing there
    cfg(0x04, 0x3, 2)
    assert buses.ports.read(0xC004, 4) == 0x0706_0504 and buses.mmio.read(0xFEB0_0008, 1) == 8
    cfg(0x10, 0xC100)  # moved
    assert buses.ports.read(0xC004, 1) == 0xFF and buses.ports.read(0xC104, 1) == 4
    cfg(0x04, 0x0, 2)  # off again
    assert buses.mmio.read(0xFEB0_0008, 1) == 0 and buses.ports.read(0xC104, 1) == 0xFF
    assert [m.name for m in buses.mmio.mappings] == []


def test_intx_is_routed_through_pirq_registers_and_shared_as_a_level() -> None:
    """Slot 3's INTA# is PIRQ (3 + 1 - 2) mod 4 = C; PIRQRC[C] at 0x62 steers it. Two functions
    on one IRQ: the line stays high until both release it. Interrupt Disable masks a pin."""
    ports, host, bridge, lines, _ = chipset()
    a, b = TestDevice(), TestDevice(interrupt_pin=2)
    host.attach(3, 0, a)
    host.attach(2, 0, b)  # slot 2, INTB#: PIRQ (2 + 2 - 2) mod 4 = C as well
    bridge.connect(3, a)
    bridge.connect(2, b)
    a.set_intx(True)
    assert not any(line.level for line in lines.values())  # routing disabled at reset (80h)
    ports.write(0xCF8, 4, address(1, register=0x60))
    ports.write(0xCFE, 1, 11)  # PIRQRC[C] = IRQ 11
    assert lines[11].level
    b.set_intx(True)
    a.set_intx(False)
    assert lines[11].level
    b.set_intx(False)
    assert not lines[11].level
    a.set_intx(True)
    ports.write(0xCF8, 4, address(3, register=0x04))
    ports.write(0xCFD, 1, 0x04)  # command bit 10: Interrupt Disable
    assert not lines[11].level
    ports.write(0xCF8, 4, address(3, register=0x04))
    assert ports.read(0xCFE, 1) & 0x08  # status: Interrupt Status still shows the pin
    ports.write(0xCFD, 1, 0)
    assert lines[11].level
    ports.write(0xCF8, 4, address(1, register=0x60))
    ports.write(0xCFE, 1, 10)  # moved to IRQ 10
    assert lines[10].level and not lines[11].level
    ports.write(0xCFE, 1, 0x80 | 10)  # disabled
    assert not lines[10].level


def _enumerating_guest() -> bytes:
    """32-bit code: the vendor/device dword of 00:00.0, 00:01.0 and 00:02.0 to COM1, then exit 0."""
    code = b""
    for device in (0, 1, 2):
        code += b"\xb8" + struct.pack("<I", address(device))  # mov eax, CONFIG_ADDRESS value
        code += b"\x66\xba\xf8\x0c\xef"  # mov dx, 0xcf8; out dx, eax
        code += b"\x66\xba\xfc\x0c\xed"  # mov dx, 0xcfc; in eax, dx
        code += b"\x66\xba\xf8\x03" + b"\xee\xc1\xe8\x08" * 3 + b"\xee"  # 4 bytes to COM1, low first
    return code + b"\x31\xc0\xe6\xf4"  # xor eax, eax; out 0xf4, al


@pytest.mark.parametrize("accel", ACCELS)
def test_a_guest_enumerates_the_chipset(accel: str, tmp_path: Path, capfdbinary) -> None:
    image = tmp_path / "lspci.elf"
    image.write_bytes(build_multiboot_elf(_enumerating_guest()))
    machine = Machine(MachineConfig(kernel=image, accel=accel))
    try:
        assert machine.run() == 1
    finally:
        machine.close()
    out = capfdbinary.readouterr().out
    assert out[-12:] == struct.pack("<III", 0x1237_8086, 0x7000_8086, 0xFFFF_FFFF)
