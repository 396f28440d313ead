"""virtio-console, one port (emu/devices/virtio/console.py), through virtio-pci: output reaches
the terminal, input waits for the driver's buffers, and buffers the wrong way round are refused."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.devices.virtio.device import DEVICE_NEEDS_RESET
from emu.devices.virtio.queue import DESC_F_WRITE
from emu.machine import Machine, MachineConfig

from .virtio_driver import AVAIL, DESC, USED, Driver

ROOT = Path(__file__).resolve().parents[2]
TX = 0x300000  # transmit queue rings: descriptors, available (+0x1000), used (+0x2000)
TEXT, INPUT = 0x310000, 0x311000


@pytest.fixture
def console():
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", devices=["virtio-console-pci"]))
    driver = Driver(m, device_type=3)
    driver.probe()
    driver.initialize()  # queue 0, receiveq, at the driver's rings
    driver.setup_queue(1, TX, TX + 0x1000, TX + 0x2000)  # transmitq
    yield m, driver, m.virtio[0].device
    m.close()


def post(m: Machine, desc: int, avail: int, address: int, length: int, flags: int) -> None:
    m.memory.write(desc, struct.pack("<QIHH", address, length, flags, 0))
    idx = m.memory.read_u16(avail + 2)
    m.memory.write_u16(avail + 4 + 2 * (idx % 8), 0)
    m.memory.write_u16(avail + 2, idx + 1)


def test_output_reaches_the_terminal(console, capfd) -> None:
    m, driver, device = console
    m.memory.write(TEXT, b"hello from hvc0\n")
    post(m, TX, TX + 0x1000, TEXT, 16, 0)
    driver.mmio.write(driver.notify + 4, 2, 1)
    assert capfd.readouterr().out == "hello from hvc0\n"
    assert m.memory.read_u16(TX + 0x2000 + 2) == 1 and device.counters[1].bytes_read == 16
    assert device.config_read(0, 4) == 80 | 25 << 16


def test_input_waits_for_buffers(console) -> None:
    m, driver, device = console
    device.receive(b"ls\n")  # no buffer posted yet: kept
    assert m.memory.read_u16(USED + 2) == 0
    post(m, DESC, AVAIL, INPUT, 2, DESC_F_WRITE)
    driver.mmio.write(driver.notify, 2, 0)  # the driver posts a 2-byte buffer
    assert m.memory.read_u16(USED + 2) == 1 and m.memory.read(INPUT, 2) == b"ls"
    post(m, DESC, AVAIL, INPUT, 64, DESC_F_WRITE)
    driver.mmio.write(driver.notify, 2, 0)
    assert m.memory.read_u16(USED + 2) == 2 and m.memory.read(INPUT, 1) == b"\n"
    assert struct.unpack("<I", m.memory.read(USED + 4 + 8 + 4, 4))[0] == 1  # one byte in the second buffer


def test_a_writable_buffer_on_the_transmit_queue_needs_reset(console, capfd) -> None:
    m, driver, _ = console
    post(m, TX, TX + 0x1000, TEXT, 16, DESC_F_WRITE)
    driver.mmio.write(driver.notify + 4, 2, 1)
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET and "transmit queue" in capfd.readouterr().err
