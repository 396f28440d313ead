"""Every virtio device model against random and adversarial rings (hypothesis): 10,000 per
device per run. Whatever the driver wrote, a device either serves requests, answers them with
an error status, or sets DEVICE_NEEDS_RESET; the host never raises, never touches memory
outside guest RAM (GuestMemory refuses it), and the device works again after a reset."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu.devices.disk import DiskImage
from emu.devices.virtio.balloon import VirtioBalloon
from emu.devices.virtio.blk import VirtioBlk
from emu.devices.virtio.console import VirtioConsole
from emu.devices.virtio.device import ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, F_VERSION_1, FEATURES_OK
from emu.devices.virtio.net import VirtioNet
from emu.devices.virtio.rng import VirtioRng
from emu.memory import GuestMemory
from emu.net.socket import UdpBackend

from .test_virtqueue import RAM, SIZE, descriptor

DESC, AVAIL, USED = 0x1000, 0x2000, 0x3000
HEADERS = 0x10000  # blk request headers worth finding: IN/OUT/FLUSH/GET_ID/DISCARD near sector 0


@pytest.fixture(scope="module")
def memory():
    mem = GuestMemory(RAM)
    yield mem
    mem.close()


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "disk.img"
    path.write_bytes(bytes(64 * 512))
    image = DiskImage(path)
    yield image
    image.close()


def make(kind: str, memory: GuestMemory, disk: DiskImage):
    if kind == "rng":
        return VirtioRng(memory)
    if kind == "blk":
        return VirtioBlk(memory, disk=disk)
    if kind == "console":
        return VirtioConsole(memory, sink=_Discard())
    if kind == "net":  # on a real UDP socket that sends to itself: transmitted frames come back
        backend = UdpBackend.open("fuzz", ("127.0.0.1", 0), ("127.0.0.1", 9))
        backend.peer = backend.sock.getsockname()
        return VirtioNet(memory, backend=backend)
    return VirtioBalloon(memory)


class _Discard:
    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def start(device, queue_size: int = SIZE) -> None:
    device.set_status(0)
    device.driver_features = device.features & ~0 & (F_VERSION_1 | 0xFFFFFFFF)
    device.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK)
    for index, q in enumerate(device.queues):
        q.size, q.desc, q.driver, q.device = queue_size, DESC + 0x4000 * index, AVAIL + 0x4000 * index, USED + 0x4000 * index
        device.enable_queue(index)
    device.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)


@pytest.mark.parametrize("kind", ["rng", "blk", "balloon", "console", "net"])
def test_devices_survive_random_and_adversarial_rings(kind: str, memory: GuestMemory, disk: DiskImage, capfd) -> None:
    device = make(kind, memory, disk)
    for i, (request_type, sector) in enumerate([(0, 0), (1, 1), (4, 0), (8, 0), (11, 0), (0, 63), (1, 2**40)]):
        memory.write(HEADERS + 0x100 * i, struct.pack("<IIQ", request_type, 0, sector))
    served = {"ok": 0, "reset": 0}

    @settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              database=None)  # fmt: skip
    @given(raw=st.binary(min_size=5 * 16, max_size=5 * 16), random_table=st.binary(max_size=16 * SIZE),
           heads=st.binary(min_size=1, max_size=6), queue=st.integers(0, 3), shaped=st.integers(0, 3),
           sizes=st.tuples(st.integers(0, 7), st.sampled_from([0, 1, 16, 511, 512, 1024, 4096]), st.booleans()))  # fmt: skip
    def one(raw: bytes, random_table: bytes, heads: bytes, queue: int, shaped: int, sizes: tuple) -> None:
        start(device)
        index = queue % len(device.queues)
        base = 0x4000 * index
        memory.write(DESC + base, b"".join(struct.pack("<QIHH", *descriptor(raw, i)) for i in range(SIZE)))
        memory.write(DESC + base, random_table)
        if shaped:  # a chain of the shape the device expects, with edge values inside (3 in 4 examples)
            header, length, writable = sizes
            memory.write(DESC + base, struct.pack("<QIHH", HEADERS + 0x100 * header, 16, 1, 1)
                         + struct.pack("<QIHH", 0x40000, length, 1 | (2 if writable else 0), 2)
                         + struct.pack("<QIHH", 0x48000, 1, 2, 0))  # fmt: skip
            if kind != "blk":  # one buffer the device writes (rng, console input) or reads, of `length` bytes
                writes = kind == "rng" or (kind in ("console", "net") and index == 0)
                memory.write(DESC + base, struct.pack("<QIHH", 0x40000, length, 2 if writes else 0, 0))
            heads = bytes(len(heads))
        memory.write(AVAIL + base, struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h % SIZE) for h in heads))
        device.queue_notified(index)
        if kind == "console":
            device.receive(raw[:8])  # input arriving while the ring is whatever the driver made it
        if kind == "net":
            device.backend_readable()  # frames arriving (those it sent itself) while the ring is whatever it is
        served["reset" if device.status & DEVICE_NEEDS_RESET else "ok"] += 1

    one()
    capfd.readouterr()  # the one-line reports of the refused chains
    assert served["ok"] > 100 and served["reset"] > 100, served  # both kinds of outcome were exercised
    for index in range(len(device.queues)):  # rings the driver has emptied: a frame the backend still
        memory.write(AVAIL + 0x4000 * index, bytes(4))  # delivers must not meet the fuzzed ones (flaky in CI)
    start(device)  # and after all that, a reset device serves a plain request
    if kind in ("rng", "console"):  # console: a receive buffer, filled by the input still pending
        memory.write(DESC, struct.pack("<QIHH", 0x40000, 16, 2, 0))
        if kind == "console":
            device.pending.extend(b"x")
    elif kind == "net":  # a receive buffer, and a frame on its way to it
        memory.write(DESC, struct.pack("<QIHH", 0x40000, 1526, 2, 0))
        device.backend.send(bytes(60))
        time.sleep(0.05)
    elif kind == "blk":
        memory.write(DESC, struct.pack("<QIHH", HEADERS, 16, 1, 1) + struct.pack("<QIHH", 0x40000, 512, 3, 2)
                     + struct.pack("<QIHH", 0x40200, 1, 2, 0))  # fmt: skip
    else:
        memory.write(DESC, struct.pack("<QIHH", 0x40000, 4, 0, 0))
        memory.write(0x40000, struct.pack("<I", 0x80))
    memory.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    device.queue_notified(0)
    assert not device.status & DEVICE_NEEDS_RESET and memory.read_u16(USED + 2) == 1
    if kind == "net":  # frames went out and came back in along the way
        assert device.net.frames_sent > 100 and device.net.frames_received > 100, device.net
        device.backend.close()
