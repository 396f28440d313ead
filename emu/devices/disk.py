"""A raw disk image file as a disk: whole 512-byte sectors, flushed to the host on request.

Shared by the disks emu models (the ATA disk, virtio-blk). Writes go to the host's page cache
with pwrite at once, so no write the guest was told is done is lost when emu exits, even by
SIGTERM or SIGKILL; `flush` (the guest's FLUSH CACHE or VIRTIO_BLK_T_FLUSH, and every exit
path) makes them durable with fsync. The image is locked (flock) so that two emulators never
write one file.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
from typing import Self

from ..errors import EmuError

SECTOR = 512


class DiskImage:
    """A raw disk image on the host: `read`/`write` whole 512-byte sectors, never outside the file.

    `readonly` opens it O_RDONLY and refuses writes. The file is locked (flock: shared when
    read-only, exclusive otherwise) so two emulators cannot write one image at once. Opening
    problems raise EmuError (one line, exit status 2). Use `close()` (or `with`) to flush.
    """

    def __init__(self, path: str | os.PathLike[str], readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self.dirty = False  # written since the last fsync
        try:
            self.fd = os.open(self.path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as e:
            raise EmuError(f"disk image {self.path}: {e.strerror}") from e
        try:
            mode = os.fstat(self.fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
                raise EmuError(f"disk image {self.path}: not a regular file or block device")
            try:
                fcntl.flock(self.fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EmuError(f"disk image {self.path}: in use by another process") from None
            self.size = os.lseek(self.fd, 0, os.SEEK_END)  # bytes; st_size is 0 for a block device
        except BaseException:
            os.close(self.fd)
            raise
        self.sectors = -(-self.size // SECTOR)  # a partial last sector counts, as in QEMU

    def __repr__(self) -> str:
        return f"DiskImage({self.path!r}, readonly={self.readonly}, sectors={self.sectors})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def _check(self, lba: int, count: int) -> None:
        if self.fd < 0:
            raise ValueError(f"{self.path}: disk image is closed")
        if lba < 0 or count < 0 or lba + count > self.sectors:
            raise ValueError(f"{self.path}: sectors {lba}+{count} outside the image ({self.sectors} sectors)")

    def read(self, lba: int, count: int) -> bytes:
        """`count` sectors from sector `lba`; what lies past the end of the file reads as zeros."""
        self._check(lba, count)
        offset, want = lba * SECTOR, count * SECTOR
        data = bytearray()
        while len(data) < want:
            chunk = os.pread(self.fd, want - len(data), offset + len(data))
            if not chunk:
                break  # end of file: the partial last sector
            data += chunk
        return bytes(data.ljust(want, b"\0"))

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        """Whole sectors from sector `lba`; bytes that would fall past the end of the file are dropped."""
        if self.readonly:
            raise PermissionError(errno.EROFS, "disk image is read-only", self.path)
        if len(data) % SECTOR:
            raise ValueError(f"{self.path}: a write of {len(data)} bytes is not whole sectors")
        self._check(lba, len(data) // SECTOR)
        offset = lba * SECTOR
        view = memoryview(data)[: max(0, self.size - offset)]
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], offset + done)
        self.dirty = True

    def discard(self, lba: int, count: int) -> None:
        """The guest no longer needs these sectors: free them on the host (they read as zeros)."""
        self._check(lba, count)
        if self.readonly:
            raise PermissionError(errno.EROFS, "disk image is read-only", self.path)
        try:
            punch_hole(self.fd, lba * SECTOR, count * SECTOR)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.pwrite(self.fd, bytes(count * SECTOR), lba * SECTOR)  # no hole punching here: zeros
        self.dirty = True

    def flush(self) -> None:
        """Make every write so far durable on the host (fsync)."""
        if self.dirty and self.fd >= 0:
            os.fsync(self.fd)
            self.dirty = False

    def close(self) -> None:
        """Flush, then close; later calls do nothing."""
        if self.fd < 0:
            return
        try:
            self.flush()
        finally:
            os.close(self.fd)  # also drops the flock
            self.fd = -1


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the range reads as zeros after."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.fallocate(fd, 0x02 | 0x01, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
