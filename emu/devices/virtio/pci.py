"""virtio over PCI, the modern interface (VIRTIO 1.2 §4.1).

A virtio-pci device is a PCI function with vendor 1AF4h and device 1040h + the virtio device
ID (§4.1.2), whose registers live in a memory BAR. Where, the driver learns from vendor-specific
capabilities (ID 09h) in configuration space (§4.1.4), one per structure:

  cfg_type 1  common configuration: features, status, and the selected queue's registers
  cfg_type 2  notifications: the driver writes a queue's index at queue_notify_off * multiplier
  cfg_type 3  ISR status: a byte; reading it returns and clears the interrupt reasons
  cfg_type 4  device-specific configuration (a block device's capacity, a NIC's MAC, ...)
  cfg_type 5  PCI configuration access: a window onto the BAR through configuration space

emu lays them out as QEMU does, in a 16 KiB 64-bit BAR 4: common at 0, ISR at 1000h, device
configuration at 2000h, notifications at 3000h (multiplier 4: queue N at 3000h + 4N). There is
no MSI-X capability, so config_msix_vector reads NO_VECTOR and interrupts use INTx, routed by
the PIIX3 (emu.devices.pci.piix3) and deasserted when the driver reads the ISR.

`transitional` adds the legacy interface (emu.devices.virtio.legacy) in IO BAR 0, with the
legacy IDs (device 1000h + legacy ID, revision 0, subsystem = the device type): what QEMU's
`-device virtio-*-pci` is on the `pc` machine (disable-legacy=auto); emu's default is still the
modern-only device. `modern=False` drops BAR 4 and the capabilities: a legacy-only device
(QEMU's disable-modern=on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..pci.config import STATUS, STATUS_CAPABILITIES, Bar, BarKind, PciFunction
from .device import VirtioDevice
from .legacy import LEGACY_DEVICE_IDS, VirtioPciLegacy, bar_size

VIRTIO_VENDOR = 0x1AF4
MODERN_DEVICE_BASE = 0x1040
BAR_INDEX, BAR_SIZE = 4, 0x4000
LEGACY_BAR_INDEX = 0
COMMON, ISR, DEVICE, NOTIFY = 0x0000, 0x1000, 0x2000, 0x3000
NOTIFY_MULTIPLIER = 4
NO_VECTOR = 0xFFFF
CAP_VENDOR, CAP_START = 0x09, 0x40
CLASS_CODES = {1: 0x020000, 2: 0x010000, 3: 0x078000, 4: 0x00FF00, 5: 0x00FF00}  # net, blk, console, rng, balloon

# Common configuration (§4.1.4.3): offset -> (name, width)
COMMON_FIELDS = {
    0x00: ("device_feature_select", 4), 0x04: ("device_feature", 4), 0x08: ("driver_feature_select", 4),
    0x0C: ("driver_feature", 4), 0x10: ("config_msix_vector", 2), 0x12: ("num_queues", 2),
    0x14: ("device_status", 1), 0x15: ("config_generation", 1), 0x16: ("queue_select", 2),
    0x18: ("queue_size", 2), 0x1A: ("queue_msix_vector", 2), 0x1C: ("queue_enable", 2),
    0x1E: ("queue_notify_off", 2), 0x20: ("queue_desc", 8), 0x28: ("queue_driver", 8),
    0x30: ("queue_device", 8), 0x38: ("queue_notify_data", 2), 0x3A: ("queue_reset", 2),
}  # fmt: skip
COMMON_SIZE = 0x3C


@dataclass
class VirtioPci(PciFunction):
    """The transport: a VirtioDevice behind PCI configuration space, BAR 4 (modern) and BAR 0 (legacy)."""

    device: VirtioDevice | None = None
    transitional: bool = True  # the legacy interface too, as QEMU's default on `pc` (see the module doc)
    modern: bool = True
    vendor_id: int = VIRTIO_VENDOR
    device_id: int = 0
    class_code: int = 0
    revision: int = 1
    subsystem_vendor_id: int = VIRTIO_VENDOR
    subsystem_id: int = 0x1100
    interrupt_pin: int = 1
    isr: int = 0
    device_feature_select: int = 0
    driver_feature_select: int = 0
    queue_select: int = 0
    config_access_cap: int = 0  # where the cfg_type 5 capability sits (0: no capabilities)
    regions: object = field(init=False, repr=False)
    legacy: VirtioPciLegacy | None = field(default=None, init=False, repr=False)

    max_access_size: ClassVar[int] = 8

    def __post_init__(self) -> None:
        assert self.device is not None
        kind = self.device.device_id
        if not (self.modern or self.transitional):
            raise ValueError("a device with neither the modern nor the legacy interface cannot work")
        if self.transitional and kind not in LEGACY_DEVICE_IDS:
            raise ValueError(f"virtio device type {kind} has no legacy interface")
        self.device_id = LEGACY_DEVICE_IDS[kind] if self.transitional else MODERN_DEVICE_BASE + kind
        self.class_code = CLASS_CODES.get(kind, 0x00FF00)
        self.bars = {}
        if self.transitional:
            self.revision, self.subsystem_id = 0, kind
            self.bars[LEGACY_BAR_INDEX] = Bar(BarKind.IO, bar_size(self.device.config_size))
            self.legacy = VirtioPciLegacy(self)
        if self.modern:
            self.bars[BAR_INDEX] = Bar(BarKind.MEMORY64, BAR_SIZE, prefetchable=True)
        super().__post_init__()
        self.device.interrupt = self.raise_interrupt
        self.regions = _Regions(self)
        if not self.modern:
            return
        # In QEMU's list order (it adds each capability at the head): pci-cfg, notify, device, ISR, common
        caps = [(5, 0, 0, bytes(4)),
                (2, NOTIFY, NOTIFY_MULTIPLIER * len(self.device.queues), struct.pack("<I", NOTIFY_MULTIPLIER)),
                (4, DEVICE, max(self.device.config_size, 4), b""), (3, ISR, 1, b""),
                (1, COMMON, COMMON_SIZE, b"")]  # fmt: skip
        offset = CAP_START
        for i, (cfg_type, start, length, extra) in enumerate(caps):
            size = 16 + len(extra)
            nxt = 0 if i == len(caps) - 1 else offset + ((size + 3) & ~3)
            bar = 0 if cfg_type == 5 else BAR_INDEX
            self.space[offset : offset + size] = struct.pack("<BBBBBBxxII", CAP_VENDOR, nxt, size, cfg_type, bar, 0,
                                                             start, length) + extra  # fmt: skip
            if cfg_type == 5:
                self.config_access_cap = offset
            offset = nxt
        self.space[0x34] = CAP_START
        self.space[STATUS] |= STATUS_CAPABILITIES

    def bar_io(self, index: int) -> _Regions | VirtioPciLegacy | None:
        if index == LEGACY_BAR_INDEX:
            return self.legacy
        return self.regions if index == BAR_INDEX and self.modern else None

    # --- cfg_type 5: the BAR through configuration space (§4.1.4.9) ---------------------------
    def writable(self, offset: int) -> bool:
        cap = self.config_access_cap
        return bool(cap) and (cap + 4 <= offset < cap + 5 or cap + 8 <= offset < cap + 16)  # bar, offset, length

    def config_read(self, offset: int, size: int) -> int:
        data = self.config_access_cap + 16
        if self.config_access_cap and data <= offset < data + 4:
            return self._window_access(size)
        return super().config_read(offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        data = self.config_access_cap + 16
        if self.config_access_cap and data <= offset < data + 4:
            self._window_access(size, value)
            return
        super().config_write(offset, size, value)

    def _window_access(self, size: int, value: int | None = None) -> int:
        cap = self.config_access_cap
        bar, offset, length = self.space[cap + 4], *struct.unpack_from("<II", self.space, cap + 8)
        if bar != BAR_INDEX or length not in (1, 2, 4) or offset + length > BAR_SIZE:
            return 0
        if value is None:
            return self.regions.io_read(offset, length)
        self.regions.io_write(offset, length, value)
        return 0

    def reset(self) -> None:
        """System reset: the virtio device reset (as a driver's write of status 0), the
        transport's selectors, then the PCI function's power-on state."""
        self.set_device_status(0)
        self.device_feature_select = self.driver_feature_select = self.queue_select = 0
        super().reset()

    # --- interrupts ---------------------------------------------------------------------------
    def raise_interrupt(self, bits: int) -> None:
        self.isr |= bits
        self.set_intx(True)

    def read_isr(self) -> int:
        value, self.isr = self.isr, 0
        self.set_intx(False)
        return value

    def set_device_status(self, value: int) -> None:
        """Either interface wrote the status: 0 resets the device and drops its interrupt."""
        assert self.device is not None
        self.device.set_status(value)
        if value == 0:
            self.isr = 0
            self.set_intx(False)


@dataclass
class _Regions:
    """BAR 4's contents: the four structures the capabilities point at."""

    pci: VirtioPci
    max_access_size: ClassVar[int] = 8

    def io_read(self, offset: int, size: int) -> int:
        device = self.pci.device
        assert device is not None
        if offset < COMMON_SIZE:
            return self._common_read(offset, size)
        if offset == ISR:
            return self.pci.read_isr()
        if DEVICE <= offset < DEVICE + device.config_size:
            return device.config_read(offset - DEVICE, size)
        return 0

    def io_write(self, offset: int, size: int, value: int) -> None:
        device = self.pci.device
        assert device is not None
        if offset < COMMON_SIZE:
            self._common_write(offset, size, value)
        elif DEVICE <= offset < DEVICE + device.config_size:
            device.config_write(offset - DEVICE, size, value)
        elif NOTIFY <= offset < NOTIFY + NOTIFY_MULTIPLIER * len(device.queues):
            device.notify((offset - NOTIFY) // NOTIFY_MULTIPLIER)

    # common configuration: read the whole structure's image, write field by field
    def _common_read(self, offset: int, size: int) -> int:
        pci, device = self.pci, self.pci.device
        assert device is not None
        q = device.queues[pci.queue_select] if pci.queue_select < len(device.queues) else None
        image = struct.pack(
            "<IIIIHHBBHHHHHQQQHH",
            pci.device_feature_select, (device.features >> (32 * pci.device_feature_select)) & 0xFFFFFFFF
            if pci.device_feature_select < 2 else 0,
            pci.driver_feature_select, (device.driver_features >> (32 * pci.driver_feature_select)) & 0xFFFFFFFF
            if pci.driver_feature_select < 2 else 0,
            NO_VECTOR, len(device.queues), device.status, device.config_generation & 0xFF, pci.queue_select,
            q.size if q else 0, NO_VECTOR, int(q.enabled) if q else 0, pci.queue_select if q else 0,
            q.desc if q else 0, q.driver if q else 0, q.device if q else 0, pci.queue_select if q else 0, 0,
        )  # fmt: skip
        return int.from_bytes(image[offset : offset + size], "little")

    def _common_write(self, offset: int, size: int, value: int) -> None:
        pci, device = self.pci, self.pci.device
        assert device is not None
        base = offset & ~7 if offset >= 0x20 and offset < 0x38 else offset
        name = COMMON_FIELDS.get(base, (None, 0))[0]
        q = device.queues[pci.queue_select] if pci.queue_select < len(device.queues) else None
        if name == "device_feature_select":
            pci.device_feature_select = value
        elif name == "driver_feature_select":
            pci.driver_feature_select = value
        elif name == "driver_feature" and pci.driver_feature_select < 2 and not device.status & 8:
            shift = 32 * pci.driver_feature_select
            device.driver_features = (device.driver_features & ~(0xFFFFFFFF << shift)) | (value & 0xFFFFFFFF) << shift
        elif name == "device_status":
            pci.set_device_status(value & 0xFF)
        elif name == "queue_select":
            pci.queue_select = value
        elif q is None or q.enabled and name != "queue_reset":
            return  # no such queue, or its registers are frozen while it is enabled (§4.1.4.3.2)
        elif name == "queue_size":
            q.size = value if value and not value & (value - 1) and value <= q.max_size else q.size
        elif name == "queue_enable" and value == 1:
            device.enable_queue(pci.queue_select)
        elif name in ("queue_desc", "queue_driver", "queue_device"):
            attr = name.removeprefix("queue_")
            shift = 32 if offset - base == 4 else 0
            mask = ((1 << (8 * size)) - 1) << shift
            setattr(q, attr, (getattr(q, attr) & ~mask) | (value << shift) & mask)
