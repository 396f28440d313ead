"""virtio-net, the network card (VIRTIO 1.2 §5.1): device ID 1, a receive and a transmit queue.

Every frame in either direction travels behind a header (§5.1.6, struct virtio_net_hdr):
flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, and num_buffers: 12 bytes when
VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF was negotiated, 10 for a legacy driver without
it. emu offers no checksum or segmentation offload, so the header says "a plain frame".

  transmitq (1)  the driver posts device-readable chains, header + frame; the device hands the
                 frame to the backend (emu.net) and returns the chain with 0 bytes written.
  receiveq  (0)  the driver posts device-writable buffers ahead of time; a frame from the
                 backend goes into the next one, behind a header with num_buffers = 1.

With no receive buffer posted, the device stops reading the backend (frames wait in the host
kernel's queue), asks the driver to notify when it adds buffers, and resumes then.

Features offered: MAC (6 bytes of configuration space), STATUS (link up), VERSION_1, and the
ring features of every emu device. Configuration space: mac[6], status (le16).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ...net.backend import VNET_HDR_SIZE, NetBackend
from .device import DEVICE_NEEDS_RESET, DRIVER_OK, F_VERSION_1, VirtioDevice
from .queue import ChainError, Virtqueue

RECEIVEQ, TRANSMITQ = 0, 1
F_MAC, F_STATUS, F_MRG_RXBUF = 1 << 5, 1 << 16, 1 << 15
LINK_UP = 1
DEFAULT_MAC = bytes.fromhex("525400123456")  # QEMU's first NIC
MAX_PACKET = 12 + 65535 + 14  # header + the largest frame a backend carries (larger: a broken driver)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a MAC address like 52:54:00:12:34:56")
    mac = bytes(int(p, 16) for p in parts)
    if mac[0] & 1:
        raise ValueError(f"{text} is a multicast address")
    return mac


@dataclass
class NetCounters:
    frames_sent: int = 0
    frames_received: int = 0
    dropped_no_buffer: int = 0  # frames longer than the buffer the driver posted
    backend_pauses: int = 0  # times the receive queue ran dry and reading stopped


@dataclass
class VirtioNet(VirtioDevice):
    name: str = "virtio-net"
    device_id: int = 1
    queue_sizes: tuple[int, ...] = (256, 256)
    mac: bytes = DEFAULT_MAC
    backend: NetBackend | None = None
    net: NetCounters = field(default_factory=NetCounters)
    _held: bytes | None = None  # a frame read from the backend that found no buffer yet

    def __post_init__(self) -> None:
        super().__post_init__()
        self.features |= F_MAC | F_STATUS

    @property
    def header_size(self) -> int:
        return 12 if self.driver_features & (F_VERSION_1 | F_MRG_RXBUF) else VNET_HDR_SIZE

    @property
    def config_size(self) -> int:
        return 8

    def config_read(self, offset: int, size: int) -> int:
        image = self.mac + struct.pack("<H", LINK_UP)
        return int.from_bytes(image[offset : offset + size].ljust(size, b"\0"), "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        pass  # the MAC is read-only once VERSION_1 is offered (§5.1.4: set it with the control queue)

    # --- the device's thread --------------------------------------------------------------------
    def attach_backend(self, watcher) -> None:  # a DeviceThread
        if self.backend is not None:
            self.backend.attach(watcher, self.backend_readable)

    def activate(self) -> None:
        if self.backend is not None:
            self.backend.resume()
        self.backend_readable()

    def on_reset(self) -> None:
        self._held = None

    # --- transmit -------------------------------------------------------------------------------
    def handle(self, index: int, queue: Virtqueue) -> None:
        if index == RECEIVEQ:  # new receive buffers: frames may flow again
            if self.backend is not None:
                self.backend.resume()
            self.backend_readable()
            return
        if index != TRANSMITQ:
            return
        counters = self.counters[index]
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise ChainError("a device-writable buffer on the transmit queue, which the device only reads")
            if chain.readable_length > MAX_PACKET:
                raise ChainError(f"a transmit chain of {chain.readable_length} bytes (at most {MAX_PACKET})")
            packet = chain.read(self.memory)
            if len(packet) < self.header_size:
                raise ChainError(f"a transmit chain of {len(packet)} bytes, shorter than the "
                                 f"{self.header_size}-byte header")  # fmt: skip
            counters.bytes_read += len(packet)
            frame = packet[self.header_size :]
            if self.backend is not None:
                self.backend.send(packet[:VNET_HDR_SIZE] + frame if self.backend.vnet_header else frame)
            self.net.frames_sent += 1
            self.complete(index, queue, chain, 0)

    # --- receive --------------------------------------------------------------------------------
    def backend_readable(self) -> None:
        """Frames may be waiting in the backend: move them into receive buffers while both last."""
        q = self.queues[RECEIVEQ].queue
        backend = self.backend
        if backend is None:
            return
        if q is None or not self.status & DRIVER_OK or self.status & DEVICE_NEEDS_RESET:
            backend.pause()  # not ready: leave frames in the host's queue (activate resumes)
            return
        try:
            while True:
                frame = self._held if self._held is not None else backend.receive()
                self._held = None
                if frame is None:
                    return
                chain = q.pop()
                if chain is None:  # no buffer: hold this frame, stop reading, and ask for a kick
                    self._held = frame
                    backend.pause()
                    self.net.backend_pauses += 1
                    q.enable_notifications(True)
                    if q.has_work():  # a buffer arrived meanwhile (§2.7.10's race)
                        backend.resume()
                        continue
                    return
                self._receive_into(q, chain, frame, backend.vnet_header)
        except ChainError as error:
            self.needs_reset(f"queue {RECEIVEQ}: {error}")

    def _receive_into(self, q: Virtqueue, chain, frame: bytes, vnet_header: bool) -> None:
        if chain.readable:
            raise ChainError("a device-readable buffer on the receive queue, which the device only writes")
        header = frame[:VNET_HDR_SIZE] if vnet_header else bytes(VNET_HDR_SIZE)
        payload = frame[VNET_HDR_SIZE:] if vnet_header else frame
        if self.header_size == 12:
            header += struct.pack("<H", 1)  # num_buffers
        data = header + payload
        if len(data) > chain.writable_length:
            self.net.dropped_no_buffer += 1  # the driver's buffer is too small for this frame
            self.complete(RECEIVEQ, q, chain, 0)
            return
        written = chain.write(self.memory, data)
        self.net.frames_received += 1
        self.complete(RECEIVEQ, q, chain, written)
