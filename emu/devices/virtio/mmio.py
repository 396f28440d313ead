"""virtio over MMIO, version 2 (VIRTIO 1.2 §4.2): one register window per device, no PCI.

Used where a machine has no PCI (Firecracker, kvmtool's and QEMU's microvm). The device's
registers sit at a fixed address with a fixed interrupt, and the OS learns both from outside:
Linux from a `virtio_mmio.device=<size>@<base>:<irq>` kernel parameter (drivers/virtio/
virtio_mmio.c), which emu adds to the command line it passes to the guest.

  000 MagicValue "virt"   004 Version 2        008 DeviceID         00C VendorID
  010 DeviceFeatures      014 DeviceFeaturesSel  020 DriverFeatures 024 DriverFeaturesSel
  030 QueueSel            034 QueueNumMax      038 QueueNum         044 QueueReady
  050 QueueNotify         060 InterruptStatus  064 InterruptACK     070 Status
  080/084 QueueDesc       090/094 QueueDriver  0A0/0A4 QueueDevice  0FC ConfigGeneration
  100... device configuration

The interrupt is a level the device holds while InterruptStatus is non-zero; the driver
clears bits by writing them to InterruptACK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..interfaces import IrqLine
from .device import VirtioDevice

MAGIC, VERSION, VENDOR = 0x74726976, 2, 0x554D4551  # "virt", version 2, "QEMU"
WINDOW = 0x200
CONFIG = 0x100


@dataclass
class VirtioMmio:
    device: VirtioDevice
    irq: IrqLine | None = None
    device_features_sel: int = 0
    driver_features_sel: int = 0
    queue_sel: int = 0
    interrupt_status: int = 0

    max_access_size: ClassVar[int] = 4

    def __post_init__(self) -> None:
        self.device.interrupt = self.raise_interrupt

    def reset(self) -> None:
        """System reset: the device reset (a driver's write of 0 to Status) and the selectors."""
        self.io_write(0x070, 4, 0)
        self.device_features_sel = self.driver_features_sel = self.queue_sel = 0

    def raise_interrupt(self, bits: int) -> None:
        self.interrupt_status |= bits
        if self.irq is not None:
            self.irq.set_level(True)

    def _queue(self):  # a QueueConfig, or None
        queues = self.device.queues
        return queues[self.queue_sel] if self.queue_sel < len(queues) else None

    def io_read(self, offset: int, size: int) -> int:
        d = self.device
        if offset >= CONFIG:
            return d.config_read(offset - CONFIG, size)
        q = self._queue()
        registers = {
            0x000: MAGIC, 0x004: VERSION, 0x008: d.device_id, 0x00C: VENDOR,
            0x010: (d.features >> (32 * self.device_features_sel)) & 0xFFFFFFFF if self.device_features_sel < 2 else 0,
            0x034: q.max_size if q else 0, 0x044: int(q.enabled) if q else 0,
            0x060: self.interrupt_status, 0x070: d.status, 0x0FC: d.config_generation,
        }  # fmt: skip
        return registers.get(offset, 0) & ((1 << (8 * size)) - 1)

    def io_write(self, offset: int, size: int, value: int) -> None:
        d = self.device
        if offset >= CONFIG:
            d.config_write(offset - CONFIG, size, value)
            return
        q = self._queue()
        if offset == 0x014:
            self.device_features_sel = value
        elif offset == 0x020 and self.driver_features_sel < 2 and not d.status & 8:
            shift = 32 * self.driver_features_sel
            d.driver_features = (d.driver_features & ~(0xFFFFFFFF << shift)) | (value & 0xFFFFFFFF) << shift
        elif offset == 0x024:
            self.driver_features_sel = value
        elif offset == 0x030:
            self.queue_sel = value
        elif offset == 0x050:
            d.notify(value)
        elif offset == 0x064:
            self.interrupt_status &= ~value
            if not self.interrupt_status and self.irq is not None:
                self.irq.set_level(False)
        elif offset == 0x070:
            d.set_status(value & 0xFF)
            if value == 0:
                self.interrupt_status = 0
                if self.irq is not None:
                    self.irq.set_level(False)
        elif q is None or (q.enabled and offset != 0x044):
            return  # no such queue, or its registers are frozen while it is ready
        elif offset == 0x038:
            q.size = value if value and not value & (value - 1) and value <= q.max_size else q.size
        elif offset == 0x044:
            if value == 1 and not q.enabled:
                d.enable_queue(self.queue_sel)
            elif value == 0:
                q.enabled, q.queue = False, None
        elif offset in (0x080, 0x084, 0x090, 0x094, 0x0A0, 0x0A4):
            attr = {0x80: "desc", 0x90: "driver", 0xA0: "device"}[offset & ~4]
            shift = 32 if offset & 4 else 0
            setattr(q, attr, (getattr(q, attr) & ~(0xFFFFFFFF << shift)) | (value & 0xFFFFFFFF) << shift)
