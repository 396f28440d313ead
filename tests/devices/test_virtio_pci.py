"""virtio-pci (modern) with virtio-rng behind it, driven as Linux's virtio_pci_modern driver
drives it: find the function, place BAR 4, walk the capabilities, negotiate, set up a queue,
offer a buffer, notify, take the interrupt. Through the machine's own buses and RAM."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.devices.virtio.device import ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK
from emu.devices.virtio.queue import DESC_F_NEXT, DESC_F_WRITE
from emu.errors import EmuError
from emu.machine import Machine, MachineConfig

ROOT = Path(__file__).resolve().parents[2]
BAR = 0xFEBF_0000
DESC, AVAIL, USED, BUFFER = 0x200000, 0x201000, 0x202000, 0x203000


class Driver:
    """The few steps of a virtio 1.x PCI driver (VIRTIO 1.2 §3.1.1, §4.1.4, §4.1.5)."""

    def __init__(self, machine: Machine, slot: int = 2) -> None:
        self.m, self.ports, self.mmio, self.slot = machine, machine.buses.ports, machine.buses.mmio, slot

    def cfg(self, register: int, value: int | None = None, size: int = 4) -> int:
        self.ports.write(0xCF8, 4, 0x8000_0000 | self.slot << 11 | (register & ~3))
        if value is not None:
            self.ports.write(0xCFC + (register & 3), size, value)
        return self.ports.read(0xCFC + (register & 3), size)

    def capabilities(self) -> dict[int, tuple[int, int, int]]:
        """cfg_type -> (bar, offset, length), from the vendor-specific capability list."""
        caps, pointer = {}, self.cfg(0x34, size=1)
        while pointer:
            vendor, nxt, _, cfg_type, bar = (self.cfg(pointer + i, size=1) for i in range(5))
            if vendor == 0x09:
                caps[cfg_type] = (bar, self.cfg(pointer + 8), self.cfg(pointer + 12))
            pointer = nxt
        return caps

    def probe(self) -> dict[int, tuple[int, int, int]]:
        assert self.cfg(0x00) == 0x1044_1AF4  # virtio, modern device 1040h + 4 (entropy)
        assert self.cfg(0x20, 0xFFFF_FFFF) & ~0xF == 0xFFFF_C000 and self.cfg(0x20) & 0xF == 0xC  # 16 KiB, 64-bit
        self.cfg(0x20, BAR)
        self.cfg(0x24, 0)
        self.cfg(0x04, 0x6, size=2)  # memory space, bus master
        caps = self.capabilities()
        self.common = BAR + caps[1][1]
        self.isr = BAR + caps[3][1]
        self.notify = BAR + caps[2][1]
        return caps

    def common_write(self, offset: int, size: int, value: int) -> None:
        self.mmio.write(self.common + offset, size, value)

    def common_read(self, offset: int, size: int) -> int:
        return self.mmio.read(self.common + offset, size)

    def initialize(self, queue_size: int = 8) -> None:
        self.common_write(0x14, 1, 0)  # reset
        self.common_write(0x14, 1, ACKNOWLEDGE)
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER)
        self.common_write(0x08, 4, 1)  # driver_feature_select: bits 32-63
        self.common_write(0x0C, 4, 1)  # VIRTIO_F_VERSION_1
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        assert self.common_read(0x14, 1) & FEATURES_OK
        self.common_write(0x16, 2, 0)  # queue_select 0
        assert self.common_read(0x18, 2) == 256  # queue_size: the maximum
        self.common_write(0x18, 2, queue_size)
        for offset, address in ((0x20, DESC), (0x28, AVAIL), (0x30, USED)):  # as two halves, as Linux does
            self.common_write(offset, 4, address & 0xFFFF_FFFF)
            self.common_write(offset + 4, 4, address >> 32)
        self.common_write(0x1C, 2, 1)  # queue_enable
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)


@pytest.fixture
def machine():
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", devices=["virtio-rng-pci"]))
    yield m
    m.close()


def test_random_bytes_arrive_in_the_buffer_with_an_interrupt(machine: Machine) -> None:
    driver = Driver(machine)
    caps = driver.probe()
    assert set(caps) == {1, 2, 3, 4, 5} and caps[1] == (4, 0, 0x3C)
    driver.initialize()
    mem = machine.memory
    mem.write(DESC, struct.pack("<QIHH", BUFFER, 16, DESC_F_NEXT | DESC_F_WRITE, 1) + struct.pack("<QIHH", BUFFER + 64, 48, DESC_F_WRITE, 0))
    mem.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    driver.cfg(0x3C, 11, size=1)  # interrupt line: what the driver would program; routing is the PIIX3's
    driver.ports.write(0xCF8, 4, 0x8000_0860)  # PIIX3 (00:01.0) PIRQRC: slot 2 INTA# is PIRQB (0x61)
    driver.ports.write(0xCFD, 1, 11)
    driver.mmio.write(driver.notify, 2, 0)  # notify queue 0
    used_idx, head, written = struct.unpack("<2xHII", mem.read(USED, 12))
    assert (used_idx, head, written) == (1, 0, 64)
    data = mem.read(BUFFER, 16) + mem.read(BUFFER + 64, 48)
    assert len(set(data)) > 16  # 64 random bytes
    assert machine.pic.slave.irr & (1 << 3) or machine.isa_bridge.driven == {11}
    assert driver.mmio.read(driver.isr, 1) == 1  # used-buffer interrupt; reading clears it
    assert machine.isa_bridge.driven == set() and driver.mmio.read(driver.isr, 1) == 0
    rng = machine.virtio[0].device
    assert (rng.counters[0].notifications, rng.counters[0].requests, rng.counters[0].bytes_written) == (1, 1, 64)


def test_a_malicious_chain_sets_needs_reset_and_the_host_goes_on(machine: Machine, capfd) -> None:
    driver = Driver(machine)
    driver.probe()
    driver.initialize()
    mem = machine.memory
    mem.write(DESC, struct.pack("<QIHH", BUFFER, 16, DESC_F_NEXT | DESC_F_WRITE, 0))  # a loop on itself
    mem.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    driver.mmio.write(driver.notify, 2, 0)
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "virtio-rng: queue 0: chain at head 0 loops" in err and "device needs reset" in err
    driver.mmio.write(driver.notify, 2, 0)  # ignored until the reset
    driver.initialize()  # the driver resets it and starts again
    mem.write(DESC, struct.pack("<QIHH", BUFFER, 32, DESC_F_WRITE, 0))
    mem.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    driver.mmio.write(driver.notify, 2, 0)
    assert struct.unpack("<2xH", mem.read(USED, 4))[0] == 1 and not driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET


def test_features_the_device_does_not_offer_are_refused(machine: Machine) -> None:
    driver = Driver(machine)
    driver.probe()
    driver.common_write(0x14, 1, ACKNOWLEDGE | DRIVER)
    driver.common_write(0x08, 4, 0)
    driver.common_write(0x0C, 4, 1 << 5)  # a bit virtio-rng does not have
    driver.common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert not driver.common_read(0x14, 1) & FEATURES_OK


def test_an_unknown_device_is_one_clear_error() -> None:
    with pytest.raises(EmuError, match="no such device"):
        Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", devices=["virtio-gpu-pci"]))


@pytest.mark.parametrize("accel", ACCELS)
def test_the_virtio64_guest_notifies_exactly_three_times(accel: str, capfd) -> None:
    """Each notify is one MMIO store. On tcg a device that interrupts from inside the MMIO
    callback must not stop Unicorn there: the store would be repeated (Unicorn #1355); emu stops
    at the next block instead (TcgVCpu.kick), so the counters are exact on both accelerators."""
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "virtio64.elf", accel=accel,
                              devices=["virtio-rng-pci"]))  # fmt: skip
    try:
        assert m.run() == 1
        counters = m.virtio[0].device.counters[0]
        assert (counters.notifications, counters.requests, counters.bytes_written, counters.interrupts) == (3, 2, 80, 2)
    finally:
        m.close()
    assert "all checks passed" in capfd.readouterr().out
