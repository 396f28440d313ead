"""The split virtqueue (emu/devices/virtio/queue.py): chains as the spec builds them, every rule
a driver can break, and a property-based fuzz of random and adversarial rings (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.devices.virtio.queue import (
    DESC_F_INDIRECT,
    DESC_F_NEXT,
    DESC_F_WRITE,
    ChainError,
    Virtqueue,
    need_event,  # fmt: skip
)
from emu.memory import GuestMemory

RAM = 1 << 20
SIZE = 8
DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000


@pytest.fixture(scope="module")
def memory():
    mem = GuestMemory(RAM)
    yield mem
    mem.close()


def ring(memory: GuestMemory, descriptors: list[tuple[int, int, int, int]], heads: list[int], size: int = SIZE,
         **options) -> Virtqueue:  # fmt: skip
    memory.write(DESC, bytes(16 * size) + b"".join(struct.pack("<QIHH", *d) for d in descriptors)[: 16 * size])
    memory.write(DESC, b"".join(struct.pack("<QIHH", *d) for d in descriptors))
    memory.write(AVAIL, struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h) for h in heads))
    memory.write(USED, bytes(6 + 8 * size))
    return Virtqueue(memory, size, DESC, AVAIL, USED, **options)


def test_a_chain_of_readable_then_writable_buffers(memory: GuestMemory) -> None:
    memory.write(0x10000, b"request!")
    q = ring(memory, [(0x10000, 8, DESC_F_NEXT, 1), (0x11000, 4, DESC_F_NEXT | DESC_F_WRITE, 2),
                      (0x12000, 4, DESC_F_WRITE, 0)], [0])  # fmt: skip
    chain = q.pop()
    assert chain.head == 0 and chain.read(memory) == b"request!"
    assert (chain.readable_length, chain.writable_length) == (8, 8)
    assert chain.write(memory, b"ABCDEFG") == 7 and memory.read(0x11000, 4) == b"ABCD" and memory.read(0x12000, 3) == b"EFG"
    assert q.pop() is None
    q.push(chain, 7)
    assert memory.read(USED, 12) == struct.pack("<HHII", 0, 1, 0, 7)


def test_an_indirect_table(memory: GuestMemory) -> None:
    memory.write(0x20000, struct.pack("<QIHH", 0x10000, 8, DESC_F_NEXT, 1) + struct.pack("<QIHH", 0x11000, 16, DESC_F_WRITE, 0))
    q = ring(memory, [(0x20000, 32, DESC_F_INDIRECT, 0)], [0], indirect=True)
    chain = q.pop()
    assert [(b.address, b.length, b.writable) for b in chain.readable + chain.writable] == [
        (0x10000, 8, False), (0x11000, 16, True)]  # fmt: skip


@pytest.mark.parametrize(
    ("descriptors", "heads", "options", "reason"),
    [
        ([(0x10000, 8, DESC_F_NEXT, 1), (0x10000, 8, DESC_F_NEXT, 0)], [0], {}, "loops"),
        ([(0x10000, 8, DESC_F_NEXT, 9)], [0], {}, "outside the table"),
        ([(0x10000, 8, 0, 0)], [8], {}, "outside the table"),
        ([(RAM - 4, 8, 0, 0)], [0], {}, "not in guest RAM"),
        ([(1 << 62, 8, 0, 0)], [0], {}, "not in guest RAM"),
        ([(0x10000, 0xFFFFFFFF, 0, 0)], [0], {}, "not in guest RAM"),
        ([(0x11000, 4, DESC_F_WRITE | DESC_F_NEXT, 1), (0x10000, 4, 0, 0)], [0], {}, "readable buffer after"),
        ([(0x20000, 32, DESC_F_INDIRECT, 0)], [0], {}, "without VIRTIO_F_INDIRECT_DESC"),
        ([(0x20000, 32, DESC_F_INDIRECT | DESC_F_NEXT, 1), (0x10000, 4, 0, 0)], [0], {"indirect": True}, "both"),
        ([(0x20000, 24, DESC_F_INDIRECT, 0)], [0], {"indirect": True}, "indirect table of 24 bytes"),
        ([(0x30000, 16, DESC_F_INDIRECT, 0)], [0], {"indirect": True}, "inside an indirect table"),
        ([(RAM - 16, 32, DESC_F_INDIRECT, 0)], [0], {"indirect": True}, "not in RAM"),
    ],
)  # fmt: skip
def test_a_bad_chain_is_refused_with_one_line(memory: GuestMemory, descriptors, heads, options, reason: str) -> None:
    memory.write(0x30000, struct.pack("<QIHH", 0x30000, 16, DESC_F_INDIRECT, 0))  # an indirect table pointing at one
    q = ring(memory, descriptors, heads, **options)
    with pytest.raises(ChainError, match=reason) as error:
        q.pop()
    assert "\n" not in str(error.value) and q.errors == 1


def test_an_available_index_that_runs_ahead_is_refused(memory: GuestMemory) -> None:
    q = ring(memory, [(0x10000, 8, 0, 0)], [0])
    memory.write_u16(AVAIL + 2, SIZE + 1)
    with pytest.raises(ChainError, match="ahead"):
        q.pop()


def test_rings_outside_ram_or_misaligned_are_refused(memory: GuestMemory) -> None:
    with pytest.raises(ChainError, match="descriptor table"):
        Virtqueue(memory, SIZE, RAM - 16, AVAIL, USED)
    with pytest.raises(ChainError, match="used ring"):
        Virtqueue(memory, SIZE, DESC, AVAIL, USED + 2)
    with pytest.raises(ChainError, match="power of two"):
        Virtqueue(memory, 6, DESC, AVAIL, USED)


def test_event_idx_and_flags_suppress_interrupts(memory: GuestMemory) -> None:
    assert need_event(0, 1, 0) and not need_event(5, 3, 2) and need_event(0xFFFF, 0, 0xFFFF)
    q = ring(memory, [(0x10000, 8, 0, 0)] * 4, [0, 1, 2], event_idx=True)
    memory.write_u16(AVAIL + 4 + 2 * SIZE, 1)  # used_event: interrupt when used idx passes 1
    q.push(q.pop(), 0)
    assert not q.needs_interrupt()  # used idx 1: not past 1 yet
    q.push(q.pop(), 0)
    assert q.needs_interrupt()
    assert memory.read_u16(USED + 4 + 8 * SIZE) == 2  # avail_event follows every pop: kick me at entry 2
    q.enable_notifications(True)
    assert memory.read_u16(USED + 4 + 8 * SIZE) == 2  # avail_event: the next entry


def test_with_event_idx_the_driver_keeps_kicking(memory: GuestMemory) -> None:
    """Linux's virtqueue_kick_prepare kicks only if need_event(avail_event, new, old): a device
    that leaves avail_event at 0 gets the first kick and no other (Linux's virtio-rng hung)."""
    q = ring(memory, [(0x10000, 8, 0, 0)] * 4, [0, 1, 2], event_idx=True)
    for old in range(3):
        q.pop()
        assert need_event(memory.read_u16(USED + 4 + 8 * SIZE), old + 2, old + 1)  # the driver's next kick
    plain = ring(memory, [(0x10000, 8, 0, 0)], [0])
    memory.write_u16(AVAIL, 1)  # NO_INTERRUPT
    assert not plain.needs_interrupt()
    plain.enable_notifications(False)
    assert memory.read_u16(USED) == 1


# Addresses and lengths drawn around the edges that matter: 0, the end of RAM, the rings and
# the indirect table, and far outside; flags from all 16 bits, mostly the spec's three.
ADDRESSES = [0, 0x10000, 0x20000, DESC, RAM - 16, RAM - 8, RAM, 1 << 63, (1 << 64) - 16]
LENGTHS = [0, 1, 8, 16, 24, 32, 128, 0x1000, 0x80000000, 0xFFFFFFFF]
FLAGS = [0, DESC_F_NEXT, DESC_F_WRITE, DESC_F_INDIRECT, DESC_F_NEXT | DESC_F_WRITE, DESC_F_INDIRECT | DESC_F_NEXT, 0xFFFF]


def descriptor(draw_bytes: bytes, i: int) -> tuple[int, int, int, int]:
    a, b, c, d, e = draw_bytes[5 * i : 5 * i + 5]
    address = (ADDRESSES[a % len(ADDRESSES)] + (b if a & 0x80 else 0)) & ((1 << 64) - 1)
    return address, LENGTHS[c % len(LENGTHS)], FLAGS[d % len(FLAGS)] if d < 0xF0 else d << 8 | c, e % (SIZE + 2)


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=5 * 16, max_size=5 * 16), random_table=st.binary(max_size=16 * SIZE),
       heads=st.binary(min_size=2, max_size=8), avail_idx=st.integers(0, 0xFFFF), indirect=st.booleans(),
       event_idx=st.booleans())  # fmt: skip
def test_random_and_adversarial_rings_never_escape_ram_or_raise_anything_else(
    memory: GuestMemory, raw: bytes, random_table: bytes, heads: bytes, avail_idx: int, indirect: bool, event_idx: bool
) -> None:
    """10,000 rings per run: a descriptor table and an indirect table built from edge values
    (loops, chains off the table, buffers across the end of RAM, nested indirect tables...),
    overwritten in part by raw random bytes. Whatever the driver wrote, the device gets chains
    whose every buffer lies in RAM, or a one-line ChainError, in bounded time."""
    memory.write(0x20000, b"".join(struct.pack("<QIHH", *descriptor(raw, SIZE + i)) for i in range(SIZE)))
    q = ring(memory, [descriptor(raw, i) for i in range(SIZE)], [h % (SIZE + 1) for h in heads],
             indirect=indirect, event_idx=event_idx)  # fmt: skip
    memory.write(DESC, random_table)
    memory.write_u16(AVAIL + 2, avail_idx if avail_idx & 1 else len(heads))
    for _ in range(len(heads)):
        try:
            chain = q.pop()
        except ChainError as error:
            assert "\n" not in str(error)
            return
        if chain is None:
            return
        for buffer in chain.readable + chain.writable:
            assert memory.contains(buffer.address, buffer.length)
        chain.read(memory, 64)
        chain.write(memory, b"x" * 64)
        q.push(chain, min(64, chain.writable_length))
        q.needs_interrupt()
