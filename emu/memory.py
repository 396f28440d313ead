"""Guest RAM: one anonymous host mapping that both accelerators and all devices share.

A VMM backs guest-physical memory with ordinary host virtual memory: KVM maps it into the
guest with a memory slot (KVM_SET_USER_MEMORY_REGION) and the MMU's second stage (EPT/NPT, or
shadow paging on this host) translates; Unicorn maps the same buffer with `mem_map_ptr`. Device
models (DMA, loaders) read and write the buffer directly, through bounds-checked accessors: the
host must never touch memory outside guest RAM, whatever address a guest hands it.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import EmuError

PAGE_SIZE = 4096


class GuestMemoryError(Exception):
    """A guest-physical range that is not (entirely) RAM."""


@dataclass
class GuestMemory:
    """`size` bytes of guest RAM starting at guest-physical address 0."""

    size: int
    buffer: mmap.mmap = field(init=False, repr=False)
    host_address: int = field(init=False)
    _write_listeners: list[Callable[[int, int], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % PAGE_SIZE:
            raise EmuError(f"guest RAM size {self.size} is not a positive multiple of 4 KiB")
        try:
            self.buffer = mmap.mmap(-1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as err:
            raise EmuError(f"cannot allocate {self.size >> 20} MiB of guest RAM: {err.strerror}") from None
        self.host_address = ctypes.addressof(ctypes.c_char.from_buffer(self.buffer))

    def contains(self, address: int, length: int) -> bool:
        return 0 <= address and length >= 0 and address + length <= self.size

    def check(self, address: int, length: int) -> None:
        if not self.contains(address, length):
            raise GuestMemoryError(f"guest-physical range {address:#x}+{length:#x} is outside RAM (0-{self.size:#x})")

    def read(self, address: int, length: int) -> bytes:
        self.check(address, length)
        return self.buffer[address : address + length]

    def write(self, address: int, data: bytes) -> None:
        """Host write into guest RAM (loader, DMA): tells listeners (tcg drops stale code)."""
        self.check(address, len(data))
        self.buffer[address : address + len(data)] = data
        for listener in self._write_listeners:
            listener(address, len(data))

    def read_u8(self, address: int) -> int:
        self.check(address, 1)
        return self.buffer[address]

    def read_u16(self, address: int) -> int:
        self.check(address, 2)
        return struct.unpack_from("<H", self.buffer, address)[0]

    def read_u32(self, address: int) -> int:
        self.check(address, 4)
        return struct.unpack_from("<I", self.buffer, address)[0]

    def read_u64(self, address: int) -> int:
        self.check(address, 8)
        return struct.unpack_from("<Q", self.buffer, address)[0]

    def write_u16(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<H", value & 0xFFFF))

    def write_u32(self, address: int, value: int) -> None:
        self.check(address, 4)
        struct.pack_into("<I", self.buffer, address, value & 0xFFFFFFFF)
        for listener in self._write_listeners:
            listener(address, 4)

    def write_u64(self, address: int, value: int) -> None:
        self.check(address, 8)
        struct.pack_into("<Q", self.buffer, address, value & 0xFFFFFFFFFFFFFFFF)
        for listener in self._write_listeners:
            listener(address, 8)

    def add_write_listener(self, listener: Callable[[int, int], None]) -> None:
        self._write_listeners.append(listener)

    def close(self) -> None:
        try:
            self.buffer.close()
        except BufferError:  # a ctypes view still exists; the mapping dies with the process
            pass
