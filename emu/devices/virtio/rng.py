"""virtio-rng, the entropy device (VIRTIO 1.2 §5.4): device ID 4, one queue (requestq).

The driver offers device-writable buffers; the device fills them with random bytes from the
host (here `os.getrandom`, the kernel's CSPRNG, as QEMU's rng-random backend reads
/dev/urandom) and returns them. No feature bits, no configuration space. A Linux guest feeds
/dev/hwrng from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .device import VirtioDevice
from .queue import ChainError, Virtqueue

MAX_REQUEST = 64 * 1024  # bytes served per chain: larger buffers are filled in part


@dataclass
class VirtioRng(VirtioDevice):
    name: str = "virtio-rng"
    device_id: int = 4
    queue_sizes: tuple[int, ...] = (256,)

    def handle(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            if chain.readable:
                raise ChainError("a device-readable buffer in a request for random bytes, which the device only writes")
            n = min(chain.writable_length, MAX_REQUEST)
            written = chain.write(self.memory, os.getrandom(n)) if n else 0
            self.complete(index, queue, chain, written)
