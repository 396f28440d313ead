"""virtio over PCI, the legacy interface (Virtio PCI Card Specification v0.9.5; VIRTIO 1.2
§4.1.4.8 "Legacy Interfaces: A Note on PCI Device Layout", §2.7.2 on the ring layout).

Before virtio 1.0 a virtio-pci device had no capabilities: one IO BAR, BAR 0, held every
register at a fixed offset (Linux's include/uapi/linux/virtio_pci.h names them):

  00 host features   32 RO  the device's feature bits 0-31 (so never VIRTIO_F_VERSION_1, bit 32)
  04 guest features  32 RW  the bits the driver accepts
  08 queue PFN       32 RW  the selected queue's guest address >> 12; writing 0 resets the device
  0C queue num       16 RO  its size: fixed by the device, the driver cannot choose one
  0E queue select    16 RW
  10 queue notify    16 WO  a queue's index: the kick
  12 device status    8 RW  writing 0 resets
  13 ISR status       8 RO  reading returns and clears the reasons, and releases INTx
  14 device configuration (at 18h when MSI-X is on: two vector registers come first; emu has no
     MSI-X, so 14h always)

One address places a whole queue, in the legacy layout (§2.7.2): the descriptor table (16 bytes
an entry), the available ring right after it (6 + 2 * size bytes), and the used ring at the
next 4096-byte boundary. There is no FEATURES_OK step: a legacy driver writes its features and
goes on to DRIVER_OK, which starts the device all the same.

A transitional device (§4.1.2.1) serves both interfaces: PCI device ID 1000h + the legacy ID
(net 1000h, block 1001h, balloon 1002h, console 1003h, entropy 1005h), revision 0, subsystem
device ID = the virtio device type, this block in BAR 0 and the modern capabilities as well;
the driver picks one (Linux's virtio_pci takes the modern one when it can). QEMU's
`-device virtio-*-pci` on the `pc` machine is transitional. Both interfaces act on the same
device, queue selector and ISR, as in QEMU (hw/virtio/virtio-pci.c).

Registers answer at their own offset only, as in QEMU (virtio_ioport_read): another offset
reads all ones and ignores writes, and so does configuration space beyond the device's. The
BAR is 14h + the configuration size, rounded up to a power of two (QEMU's pow2ceil): 32 bytes
for virtio-rng. A bad ring still sets DEVICE_NEEDS_RESET as on the modern path, although a
legacy driver does not know that bit (QEMU only marks the device broken without VERSION_1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .device import DRIVER_OK, F_EVENT_IDX, F_INDIRECT_DESC, FEATURES_OK

if TYPE_CHECKING:
    from .pci import VirtioPci

LEGACY_DEVICE_IDS = {1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005, 9: 0x1009}  # type -> ID
HOST_FEATURES, GUEST_FEATURES, QUEUE_PFN, QUEUE_NUM, QUEUE_SEL, QUEUE_NOTIFY = 0x00, 0x04, 0x08, 0x0C, 0x0E, 0x10
STATUS, ISR, CONFIG = 0x12, 0x13, 0x14
QUEUE_ADDR_SHIFT, QUEUE_ALIGN = 12, 4096


def ring_addresses(pfn: int, size: int) -> tuple[int, int, int]:
    """The descriptor table, available ring and used ring of a legacy queue at page `pfn`."""
    desc = pfn << QUEUE_ADDR_SHIFT
    avail = desc + 16 * size
    used = (avail + 6 + 2 * size + QUEUE_ALIGN - 1) & ~(QUEUE_ALIGN - 1)
    return desc, avail, used


def bar_size(config_size: int) -> int:
    """BAR 0's size: the registers and the device configuration, as a power of two."""
    return 1 << (CONFIG + config_size - 1).bit_length()


@dataclass
class VirtioPciLegacy:
    """BAR 0's contents: the legacy registers of the VirtioPci function `pci`."""

    pci: VirtioPci
    max_access_size: ClassVar[int] = 4

    def io_read(self, offset: int, size: int) -> int:
        pci, device = self.pci, self.pci.device
        assert device is not None
        ones = (1 << (8 * size)) - 1
        if offset >= CONFIG:
            offset -= CONFIG
            return device.config_read(offset, size) if offset + size <= device.config_size else ones
        if offset == ISR:
            return pci.read_isr()
        q = device.queues[pci.queue_select] if pci.queue_select < len(device.queues) else None
        registers = {HOST_FEATURES: device.features, GUEST_FEATURES: device.driver_features,
                     QUEUE_PFN: q.desc >> QUEUE_ADDR_SHIFT if q else 0, QUEUE_NUM: q.max_size if q else 0,
                     QUEUE_SEL: pci.queue_select, STATUS: device.status}  # fmt: skip
        value = registers.get(offset)
        return ones if value is None else value & 0xFFFFFFFF & ones

    def io_write(self, offset: int, size: int, value: int) -> None:
        pci, device = self.pci, self.pci.device
        assert device is not None
        if offset >= CONFIG:
            if offset - CONFIG + size <= device.config_size:
                device.config_write(offset - CONFIG, size, value)
        elif offset == GUEST_FEATURES and not device.status & (FEATURES_OK | DRIVER_OK):
            device.driver_features = value & device.features & 0xFFFFFFFF  # bits 0-31 only: never VERSION_1
            for q in device.queues:  # a queue placed before the features were written reads its ring by them
                if q.queue is not None:
                    q.queue.event_idx = bool(device.driver_features & F_EVENT_IDX)
                    q.queue.indirect = bool(device.driver_features & F_INDIRECT_DESC)
        elif offset == QUEUE_PFN:
            self._place_queue(value)
        elif offset == QUEUE_SEL:
            pci.queue_select = value & 0xFFFF
        elif offset == QUEUE_NOTIFY:
            device.notify(value & 0xFFFF)
        elif offset == STATUS:
            pci.set_device_status(value & 0xFF)

    def _place_queue(self, pfn: int) -> None:
        """A non-zero PFN places and enables the selected queue (validated as on the modern
        path: a bad address sets DEVICE_NEEDS_RESET); 0 resets the whole device, as QEMU does
        (Linux writes it when it deletes its queues, after a reset)."""
        pci, device = self.pci, self.pci.device
        assert device is not None
        if pfn == 0:
            pci.set_device_status(0)
            return
        if pci.queue_select >= len(device.queues):
            return
        q = device.queues[pci.queue_select]
        q.size, q.enabled, q.queue = q.max_size, False, None
        q.desc, q.driver, q.device = ring_addresses(pfn, q.size)
        device.enable_queue(pci.queue_select)
