"""virtio-pci (modern) with virtio-rng behind it, driven as Linux's virtio_pci_modern driver
drives it: find the function, place BAR 4, walk the capabilities, negotiate, set up a queue,
offer a buffer, notify, take the interrupt. Through the machine's own buses and RAM."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.devices.virtio.device import ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, FEATURES_OK
from emu.devices.virtio.queue import DESC_F_NEXT, DESC_F_WRITE
from emu.errors import EmuError
from emu.machine import Machine, MachineConfig

from .virtio_driver import AVAIL, BUFFER, DESC, USED, Driver

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_device_readable_buffer_for_random_bytes_needs_reset(machine: Machine, capfd) -> None:
    driver = Driver(machine)
    driver.probe()
    driver.initialize()
    machine.memory.write(DESC, struct.pack("<QIHH", BUFFER, 16, 0, 0))  # readable: the wrong way round
    machine.memory.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    driver.mmio.write(driver.notify, 2, 0)
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET and "device-readable buffer" in capfd.readouterr().err
