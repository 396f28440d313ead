"""virtio-blk, the block device (VIRTIO 1.2 §5.2): device ID 2, one request queue.

A request is one descriptor chain: a 16-byte header the device reads (type le32, reserved
le32, sector le64), then data buffers (read for a write, written for a read), then one status
byte the device writes last (OK 0, IOERR 1, UNSUPP 2). Types served here:
  IN (0) / OUT (1)   read / write whole 512-byte sectors at `sector`
  FLUSH (4)          make every completed write durable (fsync): offered as VIRTIO_BLK_F_FLUSH
  GET_ID (8)         the device's serial, up to 20 bytes
  DISCARD (11)       segments of (sector le64, num_sectors le32, flags le32): the host may free
                     them; emu punches a hole in the image file (fallocate PUNCH_HOLE)
A read-only drive offers VIRTIO_BLK_F_RO and fails writes and discards with IOERR.

The configuration space starts with the capacity in 512-byte sectors (le64), then size_max,
seg_max, the geometry, blk_size, ... (§5.2.4); emu fills capacity, seg_max, blk_size and the
discard limits, and offers the features that say so.

Every request is checked before the image is touched: the chain's shape (header readable,
status byte writable and last), sectors inside the image, whole sectors, and segment counts.
A request that breaks the protocol gets IOERR where the spec gives a status to return, and
DEVICE_NEEDS_RESET (via ChainError) where it does not (no room for the status byte).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from ..disk import SECTOR, DiskImage
from .device import VirtioDevice
from .queue import ChainError, DescriptorChain, Virtqueue

T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_DISCARD = 1 << 2, 1 << 5, 1 << 6, 1 << 9, 1 << 13
SEG_MAX = 126  # data buffers per request (queue size 128 minus header and status)
MAX_DISCARD_SECTORS, MAX_DISCARD_SEG = 1 << 22, 16
ID_BYTES = 20
_HEADER = struct.Struct("<IIQ")
_CONFIG = struct.Struct("<QII" "HBB" "I" "BBHI" "BBH" "III")  # through discard_sector_alignment


@dataclass
class BlkCounters:
    reads: int = 0
    writes: int = 0
    flushes: int = 0
    discards: int = 0
    errors: int = 0
    sectors_read: int = 0
    sectors_written: int = 0


@dataclass
class VirtioBlk(VirtioDevice):
    disk: DiskImage | None = None
    serial: str = "emu-virtio-blk"
    name: str = "virtio-blk"
    device_id: int = 2
    queue_sizes: tuple[int, ...] = (128,)
    blk: BlkCounters = field(default_factory=BlkCounters)

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.disk is not None
        self.features |= F_SEG_MAX | F_BLK_SIZE | F_FLUSH | (F_RO if self.disk.readonly else F_DISCARD)
        self._config = _CONFIG.pack(self.disk.sectors, 0, SEG_MAX, 0, 0, 0, SECTOR, 0, 0, 0, 0, 0, 0, 0,
                                    MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, 1)  # fmt: skip

    @property
    def config_size(self) -> int:
        return len(self._config)

    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self._config[offset : offset + size], "little")

    # --- requests -----------------------------------------------------------------------------
    def handle(self, index: int, queue: Virtqueue) -> None:
        while (chain := queue.pop()) is not None:
            written, read = self._serve(chain)
            self.counters[index].bytes_read += read
            self.complete(index, queue, chain, written)

    def _serve(self, chain: DescriptorChain) -> tuple[int, int]:
        """Do one request; the bytes written into the chain (data and status) and the bytes read
        from it (the header, and a write's data or a discard's segments)."""
        if chain.readable_length < _HEADER.size or not chain.writable or chain.writable[-1].length < 1:
            raise ChainError(f"a request of {chain.readable_length} readable and {chain.writable_length} writable "
                             f"bytes has no header or no status byte (head {chain.head})")  # fmt: skip
        kind, _, sector = _HEADER.unpack(chain.read(self.memory, _HEADER.size))
        data_in = chain.writable_length - 1  # bytes for the driver, before the status byte
        data_out = chain.readable_length - _HEADER.size  # bytes from the driver, after the header
        if (kind == T_IN and data_out) or (kind in (T_OUT, T_DISCARD) and data_in):
            raise ChainError(f"request type {kind} with data buffers the wrong way round "
                             f"({data_out} bytes to read, {data_in} to write; head {chain.head})")  # fmt: skip
        status, written = S_OK, 0
        try:
            if kind == T_IN:
                written = self._read(chain, sector, data_in)
            elif kind == T_OUT:
                self._write(chain, sector, data_out)
            elif kind == T_FLUSH:
                self.disk.flush()
                self.blk.flushes += 1
            elif kind == T_GET_ID:
                written = chain.write(self.memory, self.serial.encode()[:ID_BYTES].ljust(min(ID_BYTES, data_in), b"\0")[
                    : min(ID_BYTES, data_in)])  # fmt: skip
            elif kind == T_DISCARD:
                self._discard(chain, data_out)
            else:
                status = S_UNSUPP
        except (ValueError, OSError):
            status = S_IOERR
            self.blk.errors += 1
        status_offset = chain.writable_length - 1
        chain.write(self.memory, bytes([status]), status_offset)
        return written + 1, _HEADER.size + (data_out if kind in (T_OUT, T_DISCARD) else 0)

    def _sectors(self, sector: int, length: int) -> int:
        if length % SECTOR or sector + length // SECTOR > self.disk.sectors:
            raise ValueError(f"sectors {sector}+{length / SECTOR:g} outside the disk or not whole")
        return length // SECTOR

    def _read(self, chain: DescriptorChain, sector: int, length: int) -> int:
        count = self._sectors(sector, length)
        chain.write(self.memory, self.disk.read(sector, count))
        self.blk.reads += 1
        self.blk.sectors_read += count
        return length

    def _write(self, chain: DescriptorChain, sector: int, length: int) -> None:
        count = self._sectors(sector, length)
        if self.disk.readonly:
            raise OSError(errno.EROFS, "read-only")
        data = chain.read(self.memory)[_HEADER.size :]
        self.disk.write(sector, data)
        self.blk.writes += 1
        self.blk.sectors_written += count

    def _discard(self, chain: DescriptorChain, length: int) -> None:
        if self.disk.readonly or length % 16 or length // 16 > MAX_DISCARD_SEG:
            raise ValueError("bad discard")
        body = chain.read(self.memory)[_HEADER.size :]
        for sector, count, _flags in struct.iter_unpack("<QII", body):
            if count > MAX_DISCARD_SECTORS or sector + count > self.disk.sectors:
                raise ValueError("discard outside the disk")
            self.disk.discard(sector, count)
        self.blk.discards += 1

    def on_reset(self) -> None:
        self.disk.flush()

