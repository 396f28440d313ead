"""virtio-balloon (emu/devices/virtio/balloon.py) through virtio-pci: the host sets a target,
inflated pages go back to the host (their RSS drops, they read as zeros), deflate, statistics,
and a page frame outside RAM refused without touching host memory."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.devices.virtio.device import DEVICE_NEEDS_RESET
from emu.devices.virtio.queue import DESC_F_WRITE
from emu.machine import Machine, MachineConfig

from .virtio_driver import AVAIL, DESC, USED, Driver

ROOT = Path(__file__).resolve().parents[2]
RINGS = 0x300000  # queue n > 0: rings at RINGS + 0x3000 n (descriptors, available, used); queue 0 the driver's
PFN_LIST, STATS_BUFFER = 0x310000, 0x311000
TARGET = 0x1000000  # 16 MiB of guest RAM to give back: 4096 pages


@pytest.fixture
def balloon():
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", memory_mib=64,
                              devices=["virtio-balloon-pci"]))  # fmt: skip
    driver = Driver(m, device_type=5)
    driver.probe()
    driver.initialize(features_low=1 << 1)  # VIRTIO_BALLOON_F_STATS_VQ
    for index in (1, 2):  # the deflate and statistics queues (initialize set up queue 0)
        driver.setup_queue(index, *rings(index))
    yield m, driver, m.virtio[0].device
    m.close()


def rings(queue: int) -> tuple[int, int, int]:
    base = RINGS + 0x3000 * queue
    return (DESC, AVAIL, USED) if queue == 0 else (base, base + 0x1000, base + 0x2000)


def send(m: Machine, driver: Driver, queue: int, address: int, length: int, flags: int = 0) -> int:
    desc, avail, used = rings(queue)
    m.memory.write(desc, struct.pack("<QIHH", address, length, flags, 0))
    idx = m.memory.read_u16(avail + 2)
    m.memory.write_u16(avail + 4 + 2 * (idx % 8), 0)
    m.memory.write_u16(avail + 2, idx + 1)
    driver.mmio.write(driver.notify + 4 * queue, 2, queue)
    return m.memory.read_u16(used + 2)


def rss_kib(m: Machine) -> int:
    return m.memory.usage().rss_kib


def test_inflate_gives_pages_back_and_deflate_takes_them(balloon) -> None:
    m, driver, device = balloon
    device.set_target(4096)
    assert device.config_read(0, 4) == 4096 and m.virtio[0].isr & 2  # a configuration-change interrupt
    m.memory.write(TARGET, b"\xab" * (4096 * 4096))  # the guest touched 16 MiB
    before = rss_kib(m)
    pfns = list(range(TARGET // 4096, TARGET // 4096 + 4096))
    for i in range(0, len(pfns), 1024):  # four buffers of 1024 PFNs
        m.memory.write(PFN_LIST, struct.pack(f"<{1024}I", *pfns[i : i + 1024]))
        send(m, driver, 0, PFN_LIST, 4096)
    after = rss_kib(m)
    assert before - after >= 15 * 1024, (before, after)  # about 16 MiB back to the host
    assert m.memory.read(TARGET, 16) == bytes(16) and len(device.inflated) == 4096
    m.memory.write(PFN_LIST, struct.pack("<4I", *pfns[:4]))
    send(m, driver, 1, PFN_LIST, 16)
    assert len(device.inflated) == 4092 and device.counters[1].requests == 1


def test_statistics_arrive_on_their_queue(balloon) -> None:
    m, driver, device = balloon
    m.memory.write(STATS_BUFFER, struct.pack("<HQHQ", 4, 12345 * 4096, 5, 64 << 20))
    send(m, driver, 2, STATS_BUFFER, 20)
    assert device.stats == {"free_memory": 12345 * 4096, "total_memory": 64 << 20}
    device.refresh_stats()  # the buffer goes back: the driver would send fresh numbers
    assert m.memory.read_u16(rings(2)[2] + 2) == 1


def test_a_page_frame_outside_ram_is_refused(balloon, capfd) -> None:
    m, driver, device = balloon
    assert not device.inflated
    m.memory.write(TARGET, b"keep")
    m.memory.write(PFN_LIST, struct.pack("<2I", TARGET // 4096, 0x7FFFFFFF))
    send(m, driver, 0, PFN_LIST, 8)
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET and "page frame 0x7fffffff" in capfd.readouterr().err
    assert m.memory.read(TARGET, 4) == b"keep" and not device.inflated  # the whole buffer was checked first


def test_a_device_writable_buffer_on_the_inflate_queue_needs_reset(balloon, capfd) -> None:
    """The device only reads inflate buffers: one it may write is the wrong way round (§2.7.4)."""
    m, driver, device = balloon
    send(m, driver, 0, PFN_LIST, 8, DESC_F_WRITE)
    assert not device.inflated and driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET
    assert "device-writable buffer on the inflate queue" in capfd.readouterr().err
