"""The split virtqueue (Virtual I/O Device 1.2, §2.7), as the device side sees it.

Three areas of guest memory, placed by the driver:
  descriptor table  `size` entries of 16 bytes: address (le64), length (le32), flags (le16),
                    next (le16). NEXT chains descriptors; WRITE marks a buffer the device may
                    write (otherwise it only reads it); INDIRECT makes the buffer itself a
                    table of descriptors (§2.7.5.3, with VIRTIO_F_INDIRECT_DESC).
  available ring    flags (le16), idx (le16), ring[size] (le16 heads), used_event (le16):
                    the driver's offer. idx counts offers, free-running modulo 2^16.
  used ring         flags (le16), idx (le16), ring[size] of (id le32, len le32), avail_event
                    (le16): the device's answers, in completion order.

Notification suppression (§2.7.7, §2.7.10): without VIRTIO_F_EVENT_IDX a side sets a
NO_INTERRUPT / NO_NOTIFY flag; with it, each side publishes the index at which it next wants
to hear from the other (used_event, avail_event), and `need_event` below decides.

The driver is not trusted. Before the device reads or writes a byte of a chain, `pop` checks
it against the spec's rules and guest RAM (§2.7.4.1, §2.7.5.3.1): head and next indexes inside
the table, no loop (a chain never has more descriptors than the table has entries), every
buffer entirely in RAM, lengths that add up to less than 4 GiB, no indirect table inside an
indirect table nor NEXT beside INDIRECT, no readable buffer after a writable one, and an
available index that never runs more than `size` ahead. A bad chain raises ChainError with a
one-line reason; the transport then sets DEVICE_NEEDS_RESET (§2.1.2) and the host goes on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ...memory import GuestMemory

DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT = 1, 2, 4
AVAIL_F_NO_INTERRUPT, USED_F_NO_NOTIFY = 1, 1
DESC_SIZE = 16
MAX_QUEUE_SIZE = 32768
MAX_CHAIN_BYTES = 1 << 32
_DESC = struct.Struct("<QIHH")


class ChainError(Exception):
    """The driver broke a virtqueue rule: the device cannot use the queue any more."""


def need_event(event: int, new: int, old: int) -> bool:
    """vring_need_event (§2.7.10): did the index move past `event` going from `old` to `new`?"""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


@dataclass(frozen=True)
class Buffer:
    address: int
    length: int
    writable: bool


@dataclass
class DescriptorChain:
    """One request: the device-readable buffers, then the device-writable ones."""

    head: int
    readable: list[Buffer] = field(default_factory=list)
    writable: list[Buffer] = field(default_factory=list)

    @property
    def readable_length(self) -> int:
        return sum(b.length for b in self.readable)

    @property
    def writable_length(self) -> int:
        return sum(b.length for b in self.writable)

    def read(self, memory: GuestMemory, limit: int | None = None) -> bytes:
        """The readable buffers' bytes, gathered (at most `limit` of them)."""
        out, left = [], self.readable_length if limit is None else limit
        for b in self.readable:
            if left <= 0:
                break
            n = min(b.length, left)
            out.append(memory.read(b.address, n))
            left -= n
        return b"".join(out)

    def write(self, memory: GuestMemory, data: bytes, offset: int = 0) -> int:
        """Scatter `data` into the writable buffers from byte `offset`; the bytes written."""
        done = 0
        for b in self.writable:
            if offset >= b.length:
                offset -= b.length
                continue
            n = min(b.length - offset, len(data) - done)
            if n <= 0:
                break
            memory.write(b.address + offset, data[done : done + n])
            done += n
            offset = 0
        return done


@dataclass
class Virtqueue:
    memory: GuestMemory
    size: int
    desc_addr: int
    avail_addr: int
    used_addr: int
    event_idx: bool = False
    indirect: bool = False
    last_avail: int = 0  # the next available-ring entry the device will take
    used_idx: int = 0  # the device's copy of used->idx
    signalled_used: int = 0  # used_idx when the driver was last interrupted (EVENT_IDX)
    chains: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.size <= MAX_QUEUE_SIZE or self.size & (self.size - 1):
            raise ChainError(f"queue size {self.size} is not a power of two up to {MAX_QUEUE_SIZE}")
        areas = ((self.desc_addr, DESC_SIZE * self.size, 16, "descriptor table"),
                 (self.avail_addr, 6 + 2 * self.size, 2, "available ring"),
                 (self.used_addr, 6 + 8 * self.size, 4, "used ring"))  # fmt: skip
        for address, length, alignment, name in areas:
            if address % alignment or not self.memory.contains(address, length):
                raise ChainError(f"the {name} at {address:#x}+{length:#x} is not aligned RAM")

    # --- the available ring -----------------------------------------------------------------
    def _u16(self, address: int) -> int:
        return self.memory.read_u16(address)

    def avail_idx(self) -> int:
        return self._u16(self.avail_addr + 2)

    def has_work(self) -> bool:
        return self.avail_idx() != self.last_avail

    def pop(self) -> DescriptorChain | None:
        """The next available chain, validated, or None if the driver offered nothing new."""
        avail = self.avail_idx()
        pending = (avail - self.last_avail) & 0xFFFF
        if pending == 0:
            return None
        if pending > self.size:
            self.errors += 1
            raise ChainError(f"available index {avail} is {pending} entries ahead of the device "
                             f"(queue size {self.size})")  # fmt: skip
        head = self._u16(self.avail_addr + 4 + 2 * (self.last_avail % self.size))
        try:
            chain = self._walk(head)
        except ChainError:
            self.errors += 1
            raise
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if self.event_idx:  # "kick me when you add entry last_avail" (§2.7.10; QEMU does it on every pop):
            self.memory.write_u16(self.used_addr + 4 + 8 * self.size, self.last_avail)  # else the driver stops kicking
        self.chains += 1
        return chain

    def _walk(self, head: int) -> DescriptorChain:
        chain = DescriptorChain(head)
        table, table_size, index, indirect = self.desc_addr, self.size, head, False
        seen, total = 0, 0
        while True:
            if index >= table_size:
                raise ChainError(f"descriptor index {index} is outside the {'indirect ' if indirect else ''}table "
                                 f"of {table_size} (chain head {head})")  # fmt: skip
            address, length, flags, nxt = _DESC.unpack(self.memory.read(table + DESC_SIZE * index, DESC_SIZE))
            seen += 1
            if seen > table_size:
                raise ChainError(f"chain at head {head} loops (more than {table_size} descriptors)")
            if flags & DESC_F_INDIRECT:
                if indirect:
                    raise ChainError(f"an indirect table inside an indirect table (chain head {head})")
                if not self.indirect:
                    raise ChainError(f"an indirect descriptor without VIRTIO_F_INDIRECT_DESC (chain head {head})")
                if flags & DESC_F_NEXT:
                    raise ChainError(f"a descriptor with both INDIRECT and NEXT (chain head {head})")
                if length == 0 or length % DESC_SIZE or length // DESC_SIZE > MAX_QUEUE_SIZE:
                    raise ChainError(f"an indirect table of {length} bytes (chain head {head})")
                if not self.memory.contains(address, length):
                    raise ChainError(f"the indirect table at {address:#x}+{length:#x} is not in RAM (head {head})")
                table, table_size, index, indirect, seen = address, length // DESC_SIZE, 0, True, 0
                continue
            if not self.memory.contains(address, length):
                raise ChainError(f"buffer {address:#x}+{length:#x} is not in guest RAM (chain head {head})")
            total += length
            if total >= MAX_CHAIN_BYTES:
                raise ChainError(f"chain at head {head} is 4 GiB or longer")
            buffer = Buffer(address, length, bool(flags & DESC_F_WRITE))
            if buffer.writable:
                chain.writable.append(buffer)
            elif chain.writable:
                raise ChainError(f"a device-readable buffer after a device-writable one (chain head {head})")
            else:
                chain.readable.append(buffer)
            if not flags & DESC_F_NEXT:
                return chain
            index = nxt

    # --- the used ring ------------------------------------------------------------------------
    def push(self, chain: DescriptorChain, written: int) -> None:
        """Return `chain` to the driver with `written` bytes in its writable buffers."""
        slot = self.used_addr + 4 + 8 * (self.used_idx % self.size)
        self.memory.write(slot, struct.pack("<II", chain.head, written))
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.memory.write_u16(self.used_addr + 2, self.used_idx)  # after the element (§2.7.8.2)

    def needs_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for what was pushed since the last one."""
        if self.event_idx:
            used_event = self._u16(self.avail_addr + 4 + 2 * self.size)
            old, self.signalled_used = self.signalled_used, self.used_idx
            return need_event(used_event, self.used_idx, old)
        return not self._u16(self.avail_addr) & AVAIL_F_NO_INTERRUPT

    def enable_notifications(self, on: bool) -> None:
        """Ask the driver to notify (on) or not; with EVENT_IDX, at the next entry it adds."""
        if self.event_idx:
            if on:
                self.memory.write_u16(self.used_addr + 4 + 8 * self.size, self.last_avail)
        else:
            flags = self._u16(self.used_addr)
            self.memory.write_u16(self.used_addr, flags & ~USED_F_NO_NOTIFY if on else flags | USED_F_NO_NOTIFY)

