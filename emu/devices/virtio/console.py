"""virtio-console, one port (VIRTIO 1.2 §5.3): device ID 3, a receive and a transmit queue.

Without VIRTIO_CONSOLE_F_MULTIPORT the device is a single serial line: the driver posts
device-writable buffers on receiveq (0) for input and sends its output in device-readable
buffers on transmitq (1). Linux makes it /dev/hvc0. The configuration space gives the
console's size (cols, rows) and a max_nr_ports emu leaves at 1.

emu writes the output to a sink (the terminal, like COM1, or whatever the machine gives) and
queues input until the driver has posted buffers to take it.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from ..serial import FdSink, OutputSink
from .device import VirtioDevice
from .queue import ChainError, Virtqueue

RECEIVEQ, TRANSMITQ = 0, 1
F_SIZE = 1 << 0
COLS, ROWS = 80, 25


@dataclass
class VirtioConsole(VirtioDevice):
    name: str = "virtio-console"
    device_id: int = 3
    queue_sizes: tuple[int, ...] = (128, 128)
    sink: OutputSink = field(default_factory=FdSink)
    pending: deque[int] = field(default_factory=deque)  # input not yet delivered

    def __post_init__(self) -> None:
        super().__post_init__()
        self.features |= F_SIZE

    @property
    def config_size(self) -> int:
        return 8

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(struct.pack("<HHI", COLS, ROWS, 1)[offset : offset + size], "little")

    def handle(self, index: int, queue: Virtqueue) -> None:
        if index == RECEIVEQ:
            self._deliver()
            return
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise ChainError("a device-writable buffer on the transmit queue, which the device only reads")
            data = chain.read(self.memory)
            self.sink.write(data)
            self.counters[index].bytes_read += len(data)
            self.complete(index, queue, chain, 0)
        self.sink.flush()

    def receive(self, data: bytes) -> None:
        """Input for the guest (typed keys, a socket's bytes): delivered as buffers allow."""
        self.pending.extend(data)
        self._deliver()

    def _deliver(self) -> None:
        q = self.queues[RECEIVEQ].queue
        if q is None or not self.pending or not self.status & 4 or self.status & 64:
            return
        try:
            while self.pending and (chain := q.pop()) is not None:
                if chain.readable:
                    raise ChainError("a device-readable buffer on the receive queue, which the device only writes")
                n = min(len(self.pending), chain.writable_length)
                data = bytes(self.pending.popleft() for _ in range(n))
                self.complete(RECEIVEQ, q, chain, chain.write(self.memory, data))
        except ChainError as error:
            self.needs_reset(f"queue {RECEIVEQ}: {error}")
