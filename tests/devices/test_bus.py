"""Port and MMIO dispatch: offsets, overlaps, unmapped accesses, split accesses."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from emu.accel import IoHandler
from emu.devices.bus import Buses, MmioBus, PortIoBus


@dataclass
class Recorder:
    """A device that remembers every access and answers reads from `regs`."""

    regs: dict[int, int] = field(default_factory=dict)
    log: list[tuple[str, int, int, int]] = field(default_factory=list)

    def io_read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size, 0))
        return self.regs.get(offset, 0)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))
        self.regs[offset] = value


@dataclass
class ByteDevice(Recorder):
    max_access_size = 1


def test_dispatch_passes_offset_from_base_and_size() -> None:
    bus = PortIoBus()
    dev = Recorder(regs={2: 0xBEEF})
    bus.register(0x3F8, 8, dev, "com1")
    assert bus.read(0x3FA, 2) == 0xBEEF
    bus.write(0x3FF, 1, 0x5A)
    assert dev.log == [("r", 2, 2, 0), ("w", 7, 1, 0x5A)]


def test_write_value_is_masked_to_access_size() -> None:
    bus = PortIoBus()
    dev = Recorder()
    bus.register(0x100, 4, dev, "dev")
    bus.write(0x100, 1, 0x1234)
    assert dev.log[-1] == ("w", 0, 1, 0x34)


@pytest.mark.parametrize(("base", "length"), [(0x3F8, 1), (0x3FF, 1), (0x3F0, 9), (0x3FA, 2), (0x3F0, 0x20)])
def test_overlap_is_rejected_with_both_names(base: int, length: int) -> None:
    bus = PortIoBus()
    bus.register(0x3F8, 8, Recorder(), "com1")
    with pytest.raises(ValueError, match=r"late.*overlaps 0x3f8-0x3ff com1"):
        bus.register(base, length, Recorder(), "late")


def test_adjacent_ranges_are_fine_and_bad_ranges_rejected() -> None:
    bus = PortIoBus()
    bus.register(0x3F8, 8, Recorder(), "com1")
    bus.register(0x3F0, 8, Recorder(), "below")
    bus.register(0x400, 8, Recorder(), "above")
    assert [m.name for m in bus.mappings] == ["below", "com1", "above"]
    with pytest.raises(ValueError):
        bus.register(0xFFFF, 2, Recorder(), "past the end")
    with pytest.raises(ValueError):
        bus.register(0x500, 0, Recorder(), "empty")


@pytest.mark.parametrize(("size", "ones"), [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF)])
def test_unmapped_port_reads_all_ones_and_is_counted(size: int, ones: int) -> None:
    bus = PortIoBus()
    assert bus.read(0x2E8, size) == ones
    assert bus.read(0x2E8, size) == ones
    assert bus.unmapped_reads == {0x2E8: 2}
    bus.write(0x2E8, size, 0)
    assert bus.unmapped_writes == {0x2E8: 1}


def test_access_straddling_the_end_is_split_per_byte() -> None:
    bus = PortIoBus()
    dev = Recorder(regs={0: 0x12})
    bus.register(0x80, 1, dev, "post")
    assert bus.read(0x80, 2) == 0xFF12  # the byte past the device floats high
    assert bus.unmapped_reads == {0x81: 1}
    bus.write(0x80, 4, 0xAABBCCDD)
    assert dev.log[-1] == ("w", 0, 1, 0xDD)
    assert bus.unmapped_writes == {0x81: 1, 0x82: 1, 0x83: 1}


def test_access_spanning_two_devices_reaches_both() -> None:
    bus = PortIoBus()
    low, high = Recorder(regs={1: 0x11}), Recorder(regs={0: 0x22})
    bus.register(0x10, 2, low, "low")
    bus.register(0x12, 2, high, "high")
    assert bus.read(0x11, 2) == 0x2211
    bus.write(0x11, 2, 0xBBAA)
    assert low.regs[1] == 0xAA and high.regs[0] == 0xBB


def test_wide_access_to_an_8bit_device_becomes_byte_cycles() -> None:
    bus = PortIoBus()
    dev = ByteDevice(regs={0: 0x34, 1: 0x12})
    bus.register(0x20, 2, dev, "pic")
    assert bus.read(0x20, 2) == 0x1234
    bus.write(0x20, 2, 0xABCD)
    assert dev.log[2:] == [("w", 0, 1, 0xCD), ("w", 1, 1, 0xAB)]
    # ... unless the registration says the device takes words
    bus2 = PortIoBus()
    dev2 = ByteDevice()
    bus2.register(0x20, 2, dev2, "wide", max_access_size=2)
    bus2.write(0x20, 2, 0xABCD)
    assert dev2.log == [("w", 0, 2, 0xABCD)]


def test_access_at_top_of_port_space_does_not_wrap() -> None:
    bus = PortIoBus()
    bus.register(0xFFFF, 1, Recorder(regs={0: 0x42}), "top")
    bus.register(0x0000, 1, Recorder(regs={0: 0x99}), "bottom")
    assert bus.read(0xFFFF, 2) == 0xFF42


def test_port_lookup_cost_does_not_grow_with_device_count() -> None:
    bus = PortIoBus()
    for i in range(2000):
        bus.register(0x1000 + 8 * i, 8, Recorder(), f"dev{i}")
    read = bus.read
    n = 50_000
    t0 = time.perf_counter()
    for _ in range(n):
        read(0x1000 + 8 * 1999, 1)
    per_access = (time.perf_counter() - t0) / n
    assert per_access < 5e-6, f"{per_access * 1e9:.0f} ns per dispatch"


def test_mmio_lookup_bisects_and_unmapped_reads_zero() -> None:
    bus = MmioBus()
    hpet, ioapic = Recorder(regs={0xF0: 0x1234_5678_9ABC_DEF0}), Recorder(regs={0x10: 7})
    bus.register(0xFED0_0000, 0x400, hpet, "hpet")
    bus.register(0xFEC0_0000, 0x1000, ioapic, "ioapic")
    assert [m.name for m in bus.mappings] == ["ioapic", "hpet"]
    assert bus.read(0xFED0_00F0, 8) == 0x1234_5678_9ABC_DEF0
    assert bus.read(0xFEC0_0010, 4) == 7
    assert bus.read(0xFEC0_1000, 4) == 0  # just past the IOAPIC: unassigned memory, as in QEMU
    assert bus.read(0xFEBF_FFFC, 8) & 0xFFFF_FFFF == 0  # unassigned memory reads as zeros
    assert bus.read(0x1000, 8) == 0
    assert bus.unmapped_reads[0xFEC0_1000] == 1 and bus.unmapped_reads[0x1000] == 1
    with pytest.raises(ValueError, match="overlaps"):
        bus.register(0xFED0_03FF, 4, Recorder(), "clash")


def test_mmio_straddling_read_splits_at_the_window_end() -> None:
    bus = MmioBus()
    dev = Recorder(regs={0xC: 0xAABBCCDD})
    bus.register(0x1000, 0x10, dev, "dev")
    assert bus.read(0x100C, 8) == 0x0000_0000_AABB_CCDD
    assert dev.log == [("r", 0xC, 4, 0)]


def test_buses_serve_the_accelerators_io_handler_protocol() -> None:
    buses = Buses()
    port_dev, mmio_dev = Recorder(regs={1: 0x55}), Recorder(regs={4: 0x66})
    buses.ports.register(0x70, 2, port_dev, "rtc")
    buses.mmio.register(0xFEE0_0000, 0x1000, mmio_dev, "lapic")
    io: IoHandler = buses
    assert io.port_read(0x71, 1) == 0x55
    io.port_write(0x70, 1, 0x8F)
    assert io.mmio_read(0xFEE0_0004, 4) == 0x66
    io.mmio_write(0xFEE0_00B0, 4, 0)
    assert io.port_read(0x60, 1) == 0xFF and io.mmio_read(0xFFFF_0000, 4) == 0
    assert port_dev.log[-1] == ("w", 0, 1, 0x8F) and mmio_dev.log[-1] == ("w", 0xB0, 4, 0)
