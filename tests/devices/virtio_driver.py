"""A minimal virtio 1.x PCI driver in Python, for tests: the steps Linux's virtio_pci_modern
takes (VIRTIO 1.2 §3.1.1, §4.1.4, §4.1.5), through a machine's own buses and RAM."""

from __future__ import annotations

import struct

from emu.devices.virtio.device import ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK
from emu.machine import Machine

BAR = 0xFEBF_0000
DESC, AVAIL, USED, BUFFER = 0x200000, 0x201000, 0x202000, 0x203000


def offer_chain(mem, desc: int, avail: int, chain: list[tuple[int, int, int]], size: int) -> None:
    """Write one chain of (address, length, flags) from descriptor 0 and put its head in the
    available ring (both transports' drivers do this the same way)."""
    from emu.devices.virtio.queue import DESC_F_NEXT

    for i, (address, length, flags) in enumerate(chain):
        nxt = i + 1 if i + 1 < len(chain) else 0
        mem.write(desc + 16 * i, struct.pack("<QIHH", address, length, flags | (DESC_F_NEXT if nxt else 0), nxt))
    idx = mem.read_u16(avail + 2)
    mem.write_u16(avail + 4 + 2 * (idx % size), 0)
    mem.write_u16(avail + 2, (idx + 1) & 0xFFFF)


class Driver:
    """The few steps of a virtio 1.x PCI driver (VIRTIO 1.2 §3.1.1, §4.1.4, §4.1.5)."""

    def __init__(self, machine: Machine, slot: int = 2, device_type: int = 4) -> None:
        self.m, self.ports, self.mmio, self.slot = machine, machine.buses.ports, machine.buses.mmio, slot
        self.device_type = device_type

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
        from emu.devices.virtio.legacy import LEGACY_DEVICE_IDS

        ids = self.cfg(0x00) & 0xFFFF_FFFF  # virtio: modern 1040h + type, or transitional (legacy ID, subsystem = type)
        assert ids == 0x1040_1AF4 + (self.device_type << 16) or (
            ids == 0x1AF4 | LEGACY_DEVICE_IDS[self.device_type] << 16 and self.cfg(0x2C) >> 16 == self.device_type)
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

    def initialize(self, queue_size: int = 8, features_low: int = 0) -> None:
        self.common_write(0x14, 1, 0)  # reset
        self.common_write(0x14, 1, ACKNOWLEDGE)
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER)
        self.common_write(0x08, 4, 0)
        self.common_write(0x0C, 4, features_low)
        self.common_write(0x08, 4, 1)  # driver_feature_select: bits 32-63
        self.common_write(0x0C, 4, 1)  # VIRTIO_F_VERSION_1
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        assert self.common_read(0x14, 1) & FEATURES_OK
        self.setup_queue(0, DESC, AVAIL, USED, queue_size)
        self.common_write(0x14, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)

    def setup_queue(self, index: int, desc: int, avail: int, used: int, size: int = 8) -> None:
        """Select queue `index`, give it `size` entries and zeroed rings at these addresses, enable it."""
        self.common_write(0x16, 2, index)  # queue_select
        assert self.common_read(0x18, 2) >= size  # queue_size: the maximum
        self.common_write(0x18, 2, size)
        for offset, address in ((0x20, desc), (0x28, avail), (0x30, used)):  # as two halves, as Linux does
            self.common_write(offset, 4, address & 0xFFFF_FFFF)
            self.common_write(offset + 4, 4, address >> 32)
        self.m.memory.write(desc, bytes(16 * size))
        self.m.memory.write(avail, bytes(6 + 2 * size))
        self.m.memory.write(used, bytes(6 + 8 * size))
        self.common_write(0x1C, 2, 1)  # queue_enable

    def submit(self, chain: list[tuple[int, int, int]], queue_size: int = 8) -> tuple[int, int]:
        """Offer one chain of (address, length, flags) from descriptor 0 and notify; wait for
        nothing (emu's devices complete synchronously): (used idx, bytes written)."""
        mem = self.m.memory
        offer_chain(mem, DESC, AVAIL, chain, queue_size)
        self.mmio.write(self.notify, 2, 0)
        used = mem.read_u16(USED + 2)
        return used, struct.unpack("<I", mem.read(USED + 4 + 8 * ((used - 1) % queue_size) + 4, 4))[0]


IO_BAR = 0xC000  # where the tests place a transitional device's IO BAR 0 (below 64 KiB)
LEGACY_IDS = {1: 0x1000, 2: 0x1001, 3: 0x1003, 4: 0x1005, 5: 0x1002}  # VIRTIO 1.2 §4.1.2.1, by device type


class LegacyDriver:
    """A virtio 0.9.5 ("legacy") PCI driver, the steps of Linux's virtio_pci_legacy: IDs 1000h +
    legacy ID, revision 0, every register in IO BAR 0, one page number per queue. The ring layout
    is computed here, as a driver does (vring_init, §2.7.2), not taken from emu."""

    def __init__(self, machine: Machine, slot: int = 2, device_type: int = 4) -> None:
        self.m, self.ports, self.slot, self.device_type = machine, machine.buses.ports, slot, device_type

    cfg = Driver.cfg

    def probe(self) -> int:
        """Check the IDs, size and place BAR 0, turn on IO decoding: BAR 0's size."""
        assert self.cfg(0x00) == LEGACY_IDS[self.device_type] << 16 | 0x1AF4
        assert self.cfg(0x08) & 0xFF == 0  # revision 0: VIRTIO_PCI_ABI_VERSION
        assert self.cfg(0x2C) == self.device_type << 16 | 0x1AF4  # subsystem: the virtio device type
        self.cfg(0x10, 0xFFFF_FFFF)
        mask = self.cfg(0x10)
        assert mask & 0x3 == 0x1  # an IO BAR
        self.cfg(0x10, IO_BAR)
        self.cfg(0x04, self.cfg(0x04, size=2) | 0x5, size=2)  # IO space, bus master
        return (~(mask & ~0x3) + 1) & 0xFFFF_FFFF

    def read(self, offset: int, size: int) -> int:
        return self.ports.read(IO_BAR + offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.ports.write(IO_BAR + offset, size, value)

    @staticmethod
    def layout(pfn: int, num: int) -> tuple[int, int, int]:
        """(descriptor table, available ring, used ring) of a legacy queue at page `pfn`."""
        desc = pfn * 4096
        avail = desc + 16 * num
        used = (avail + 2 * (3 + num) + 4095) // 4096 * 4096
        return desc, avail, used

    def setup_queue(self, index: int, pfn: int) -> int:
        """Select queue `index`, zero its rings at page `pfn` and give the device the PFN: its size."""
        self.write(0x0E, 2, index)
        num = self.read(0x0C, 2)
        assert num and not self.read(0x08, 4)  # it exists and is not in use
        desc, _, used = self.layout(pfn, num)
        self.m.memory.write(desc, bytes(used + 6 + 8 * num - desc))
        self.write(0x08, 4, pfn)
        return num

    def initialize(self, features: int = 0, pfn: int = DESC >> 12) -> int:
        """Reset, ACKNOWLEDGE, DRIVER, features, queue 0, DRIVER_OK (no FEATURES_OK): its size."""
        self.write(0x12, 1, 0)
        self.write(0x12, 1, ACKNOWLEDGE)
        self.write(0x12, 1, ACKNOWLEDGE | DRIVER)
        self.write(0x04, 4, features & self.read(0x00, 4))
        num = self.setup_queue(0, pfn)
        self.write(0x12, 1, ACKNOWLEDGE | DRIVER | DRIVER_OK)
        return num

    def offer(self, chain: list[tuple[int, int, int]], num: int, pfn: int = DESC >> 12, queue: int = 0) -> None:
        """Put one chain of (address, length, flags) at descriptor 0 in the available ring, and notify."""
        desc, avail, _ = self.layout(pfn, num)
        offer_chain(self.m.memory, desc, avail, chain, num)
        self.write(0x10, 2, queue)  # QUEUE_NOTIFY

    def used(self, num: int, pfn: int = DESC >> 12) -> tuple[int, int, int]:
        """(used idx, id, len) of the last used element."""
        _, _, used = self.layout(pfn, num)
        idx = self.m.memory.read_u16(used + 2)
        head, length = struct.unpack("<II", self.m.memory.read(used + 4 + 8 * ((idx - 1) % num), 8))
        return idx, head, length


class TransitionalDriver(Driver):
    """The modern driver (Driver) on a transitional device: the legacy IDs, then BAR 4 and the
    capabilities as on a modern-only device (Linux's virtio_pci_modern takes 1000h-103Fh too)."""

    def probe(self) -> dict[int, tuple[int, int, int]]:
        assert self.cfg(0x00) == LEGACY_IDS[self.device_type] << 16 | 0x1AF4
        assert self.cfg(0x2C) >> 16 == self.device_type
        assert self.cfg(0x20, 0xFFFF_FFFF) & ~0xF == 0xFFFF_C000 and self.cfg(0x20) & 0xF == 0xC
        self.cfg(0x20, BAR)
        self.cfg(0x24, 0)
        self.cfg(0x04, self.cfg(0x04, size=2) | 0x6, size=2)  # memory space, bus master
        caps = self.capabilities()
        self.common, self.isr, self.notify = BAR + caps[1][1], BAR + caps[3][1], BAR + caps[2][1]
        return caps
