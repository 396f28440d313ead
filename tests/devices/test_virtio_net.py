"""virtio-net (emu/devices/virtio/net.py) through virtio-pci, on real sockets (emu/net/socket.py):
frames reach the backend without their header, frames from the backend land in posted buffers
behind one, a guest with no buffers leaves frames queued, and broken chains are refused."""

from __future__ import annotations

import re
import socket
import struct
import time
from pathlib import Path

import pytest

from emu.devices.virtio.device import DEVICE_NEEDS_RESET
from emu.devices.virtio.net import F_MAC, F_STATUS, VirtioNet
from emu.devices.virtio.queue import DESC_F_WRITE
from emu.errors import EmuError
from emu.machine import Machine, MachineConfig
from emu.net import parse_netdev

from .virtio_driver import AVAIL, DESC, USED, Driver

ROOT = Path(__file__).resolve().parents[2]
TX = 0x300000  # transmit queue rings: descriptors, available (+0x1000), used (+0x2000)
PACKET, RXBUF = 0x310000, 0x320000
HEADER = 12  # struct virtio_net_hdr_v1 (VERSION_1)
FRAME = bytes.fromhex("ffffffffffff525400123456" "88b5") + b"a frame from the driver".ljust(46, b"\0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nic():
    """A machine with one NIC on a UDP backend, and the test's socket at the other end."""
    mine, peer = free_port(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf",
                              netdevs=[(f"socket,id=n0,udp=127.0.0.1:{peer.getsockname()[1]},"
                                       f"localaddr=127.0.0.1:{mine}")],
                              devices=["virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"]))  # fmt: skip
    driver = Driver(m, device_type=1)
    driver.probe()
    driver.initialize()  # queue 0, the receive queue, at the driver's rings
    driver.setup_queue(1, TX, TX + 0x1000, TX + 0x2000)  # transmitq
    yield m, driver, m.virtio[0].device, peer, ("127.0.0.1", mine)
    m.close()
    peer.close()


def post(m: Machine, desc: int, avail: int, address: int, length: int, flags: int, slot: int = 0) -> None:
    m.memory.write(desc + 16 * slot, struct.pack("<QIHH", address, length, flags, 0))
    idx = m.memory.read_u16(avail + 2)
    m.memory.write_u16(avail + 4 + 2 * (idx % 8), slot)
    m.memory.write_u16(avail + 2, idx + 1)


def arrive(device: VirtioNet) -> None:
    """Let the datagram the test sent reach the backend's socket, then run what the device's
    thread would run when it became readable (this test drives the device without threads)."""
    time.sleep(0.05)
    device.backend_readable()


def test_configuration_space_has_the_mac_and_link_up(nic) -> None:
    _, _, device, _, _ = nic
    assert device.features & F_MAC and device.features & F_STATUS
    assert device.config_read(0, 4).to_bytes(4, "little") + device.config_read(4, 2).to_bytes(2, "little") == \
        bytes.fromhex("525400123456")
    assert device.config_read(6, 2) == 1  # VIRTIO_NET_S_LINK_UP


def test_a_transmitted_frame_reaches_the_backend_without_its_header(nic) -> None:
    m, driver, device, peer, _ = nic
    m.memory.write(PACKET, bytes(HEADER) + FRAME)
    post(m, TX, TX + 0x1000, PACKET, HEADER + len(FRAME), 0)
    driver.mmio.write(driver.notify + 4, 2, 1)
    assert peer.recv(2048) == FRAME
    assert m.memory.read_u16(TX + 0x2000 + 2) == 1 and device.net.frames_sent == 1
    assert device.counters[1].bytes_read == HEADER + len(FRAME) and device.counters[1].notifications == 1


def test_a_received_frame_lands_behind_a_header(nic) -> None:
    m, _, device, peer, address = nic
    post(m, DESC, AVAIL, RXBUF, 1526, DESC_F_WRITE)
    peer.sendto(FRAME, address)
    arrive(device)
    used_len = struct.unpack("<I", m.memory.read(USED + 8, 4))[0]
    assert m.memory.read_u16(USED + 2) == 1 and used_len == HEADER + len(FRAME)
    header = m.memory.read(RXBUF, HEADER)
    assert header[:10] == bytes(10) and struct.unpack_from("<H", header, 10)[0] == 1  # num_buffers
    assert m.memory.read(RXBUF + HEADER, len(FRAME)) == FRAME


def test_with_no_buffer_the_frame_waits_for_one(nic) -> None:
    m, driver, device, peer, address = nic
    peer.sendto(FRAME, address)
    peer.sendto(FRAME[::-1], address)
    arrive(device)
    assert m.memory.read_u16(USED + 2) == 0 and device.net.backend_pauses == 1
    post(m, DESC, AVAIL, RXBUF, 1526, DESC_F_WRITE)
    driver.mmio.write(driver.notify, 2, 0)  # the driver kicks the receive queue: the held frame goes in
    assert m.memory.read_u16(USED + 2) == 1 and m.memory.read(RXBUF + HEADER, len(FRAME)) == FRAME
    post(m, DESC, AVAIL, RXBUF + 0x1000, 1526, DESC_F_WRITE, slot=1)
    driver.mmio.write(driver.notify, 2, 0)  # and the second, which waited in the socket
    assert m.memory.read_u16(USED + 2) == 2 and m.memory.read(RXBUF + 0x1000 + HEADER, len(FRAME)) == FRAME[::-1]


def test_a_frame_larger_than_the_buffer_is_dropped(nic) -> None:
    m, _, device, peer, address = nic
    post(m, DESC, AVAIL, RXBUF, 64, DESC_F_WRITE)
    peer.sendto(FRAME + bytes(100), address)
    arrive(device)
    assert m.memory.read_u16(USED + 2) == 1 and struct.unpack("<I", m.memory.read(USED + 8, 4))[0] == 0
    assert device.net.dropped_no_buffer == 1


@pytest.mark.parametrize("case", ["writable transmit buffer", "short transmit chain", "readable receive buffer"])
def test_a_broken_chain_needs_reset(nic, capfd, case: str) -> None:
    m, driver, device, peer, address = nic
    if case == "writable transmit buffer":
        post(m, TX, TX + 0x1000, PACKET, 100, DESC_F_WRITE)
        driver.mmio.write(driver.notify + 4, 2, 1)
    elif case == "short transmit chain":
        post(m, TX, TX + 0x1000, PACKET, HEADER - 1, 0)
        driver.mmio.write(driver.notify + 4, 2, 1)
    else:
        post(m, DESC, AVAIL, RXBUF, 1526, 0)
        peer.sendto(FRAME, address)
        arrive(device)
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET
    assert "virtio-net" in capfd.readouterr().err


def test_the_stream_backend_frames_as_qemu_does() -> None:
    """listen= and connect=: each frame behind a 4-byte big-endian length, whole across a split."""
    port = free_port()
    server = parse_netdev(f"socket,id=a,listen=127.0.0.1:{port}")
    client = parse_netdev(f"socket,id=b,connect=127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 5
        while server.receive() is None and server.peer is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the listener accepts when its socket is readable
        client.send(FRAME)
        client.send(b"second")
        got = []
        while len(got) < 2 and time.monotonic() < deadline:
            frame = server.receive()
            if frame is None:
                time.sleep(0.01)
            else:
                got.append(frame)
        assert got == [FRAME, b"second"]
    finally:
        server.close()
        client.close()


@pytest.mark.parametrize("spec, message", [
    ("socket,udp=127.0.0.1:1", "needs id=NAME"),
    ("socket,id=n0", "exactly one of udp=, listen= and connect="),
    ("socket,id=n0,udp=127.0.0.1:1", "needs localaddr="),
    ("socket,id=n0,listen=nowhere", "is not [HOST]:PORT"),
    ("socket,id=n0,connect=127.0.0.1:1", "Connection refused"),
    ("tap,id=n0,ifname=tap0,script=/etc/qemu-ifup", "runs no scripts"),
    ("user,id=n0", "tap and socket backends"),
])  # fmt: skip
def test_a_bad_netdev_is_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(EmuError, match=re.escape(message)):
        parse_netdev(spec)


def test_a_nic_must_name_an_existing_netdev() -> None:
    with pytest.raises(EmuError, match="netdev=n1 names no -netdev"):
        Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf",
                              devices=["virtio-net-pci,netdev=n1"]))  # fmt: skip
