"""virtio-balloon, the memory balloon (VIRTIO 1.2 §5.5): device ID 5.

The host asks the guest to give memory back by raising `num_pages` in the configuration
space (the balloon's target size, in 4 KiB pages); the guest's driver allocates that many
pages, so that nothing in the guest uses them, and sends their page frame numbers (le32 each)
on the inflate queue. The device then frees the host memory behind them (here madvise
MADV_DONTNEED on guest RAM's mapping, as QEMU does), and the driver reports the balloon's size
in `actual`. Lowering the target makes the driver take pages back through the deflate queue;
the host has nothing to do (the next touch allocates again). With VIRTIO_BALLOON_F_STATS_VQ the
driver also sends memory statistics (tag le16, value le64 pairs: swap, free memory, total...)
on a third queue, when the device returns the buffer it last sent.

Every PFN is checked against guest RAM before anything is freed: a PFN outside RAM makes the
device refuse the buffer (DEVICE_NEEDS_RESET), without touching host memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ...memory import GuestMemoryError
from .device import ISR_CONFIG, VirtioDevice
from .queue import ChainError, Virtqueue

PAGE = 4096
F_STATS_VQ = 1 << 1
INFLATE, DEFLATE, STATS = 0, 1, 2
STAT_NAMES = {0: "swap_in", 1: "swap_out", 2: "major_faults", 3: "minor_faults", 4: "free_memory",
              5: "total_memory", 6: "available_memory", 7: "disk_caches", 8: "hugetlb_allocations",
              9: "hugetlb_failures"}  # fmt: skip


@dataclass
class VirtioBalloon(VirtioDevice):
    name: str = "virtio-balloon"
    device_id: int = 5
    queue_sizes: tuple[int, ...] = (128, 128, 128)
    num_pages: int = 0  # the target the host asks for
    actual: int = 0  # what the driver says the balloon holds
    inflated: set[int] = field(default_factory=set)  # PFNs given back
    stats: dict[str, int] = field(default_factory=dict)
    _stats_chain: object = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.features |= F_STATS_VQ

    # --- configuration space (§5.5.4): num_pages (le32, read-only), actual (le32) ------------
    @property
    def config_size(self) -> int:
        return 8

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(struct.pack("<II", self.num_pages, self.actual)[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        if offset == 4 and size == 4:
            self.actual = value

    def set_target(self, pages: int) -> None:
        """The host's request: a balloon of `pages` 4 KiB pages (a configuration change)."""
        self.num_pages = pages
        self.config_generation += 1
        if self.status & 4:  # DRIVER_OK
            self.interrupt(ISR_CONFIG)

    # --- the queues -----------------------------------------------------------------------------
    def handle(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise ChainError(f"a device-writable buffer on the {('inflate', 'deflate', 'stats')[index]} queue, "
                                 "which the device only reads")  # fmt: skip
            if index == STATS:
                self._take_stats(chain)
                self._stats_chain = chain  # kept until the host wants fresh numbers (refresh_stats)
                continue
            data = chain.read(self.memory)
            pfns = [pfn for (pfn,) in struct.iter_unpack("<I", data[: len(data) // 4 * 4])]
            for pfn in pfns:
                if not self.memory.contains(pfn * PAGE, PAGE):
                    raise ChainError(f"page frame {pfn:#x} is not guest RAM")
            for pfn in pfns:
                if index == INFLATE:
                    try:
                        self.memory.give_back(pfn * PAGE, PAGE)
                    except GuestMemoryError as error:
                        raise ChainError(str(error)) from None
                    self.inflated.add(pfn)
                else:
                    self.inflated.discard(pfn)
            self.counters[index].bytes_read += len(data)
            self.complete(index, queue, chain, 0)

    def _take_stats(self, chain) -> None:  # a DescriptorChain
        data = chain.read(self.memory)
        for tag, value in struct.iter_unpack("<HQ", data[: len(data) // 10 * 10]):
            self.stats[STAT_NAMES.get(tag, f"tag{tag}")] = value

    def refresh_stats(self) -> None:
        """Give the last statistics buffer back: the driver answers with a fresh one."""
        q = self.queues[STATS].queue if len(self.queues) > STATS else None
        if self._stats_chain is not None and q is not None:
            chain, self._stats_chain = self._stats_chain, None
            self.complete(STATS, q, chain, 0)
