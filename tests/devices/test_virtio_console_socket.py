"""virtio-console on a Unix socket (`-chardev socket,...,path=P` + `-device
virtio-console-pci,chardev=ID`), with the device's own thread running: a client's bytes reach
the driver's receive buffers without the vCPU loop, and the guest's output reaches the client."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from emu.devices.virtio.queue import DESC_F_WRITE
from emu.errors import EmuError
from emu.machine import Machine, MachineConfig

from .virtio_driver import AVAIL, DESC, USED, Driver

ROOT = Path(__file__).resolve().parents[2]
TX = 0x300000
TEXT, INPUT = 0x310000, 0x311000


def post(m: Machine, desc: int, avail: int, address: int, length: int, flags: int) -> None:
    with m.lock:  # the device thread may be reading the ring
        m.memory.write(desc, struct.pack("<QIHH", address, length, flags, 0))
        idx = m.memory.read_u16(avail + 2)
        m.memory.write_u16(avail + 4 + 2 * (idx % 8), 0)
        m.memory.write_u16(avail + 2, idx + 1)


def until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.fixture
def console(tmp_path: Path):
    path = tmp_path / "console.sock"
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf",
                              chardevs=[f"socket,id=c0,path={path},server=on,wait=off"],
                              devices=["virtio-console-pci,chardev=c0"]))  # fmt: skip
    driver = Driver(m, device_type=3)
    driver.probe()
    driver.initialize()
    driver.setup_queue(1, TX, TX + 0x1000, TX + 0x2000)
    thread = m.device_threads[0]
    thread.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(path))
    client.settimeout(5)
    assert until(lambda: m.chardevs["c0"].client is not None)
    yield m, driver, client
    client.close()
    m.close()
    assert not path.exists()  # the socket file goes with emu


def test_input_from_the_socket_reaches_the_receive_buffer(console) -> None:
    m, driver, client = console
    post(m, DESC, AVAIL, INPUT, 64, DESC_F_WRITE)
    driver.mmio.write(driver.notify, 2, 0)
    client.sendall(b"uname -a\n")
    assert until(lambda: m.memory.read_u16(USED + 2) == 1)
    assert struct.unpack("<I", m.memory.read(USED + 8, 4))[0] == 9 and m.memory.read(INPUT, 9) == b"uname -a\n"


def test_output_reaches_the_client(console) -> None:
    m, driver, client = console
    m.memory.write(TEXT, b"login: ")
    post(m, TX, TX + 0x1000, TEXT, 7, 0)
    driver.mmio.write(driver.notify + 4, 2, 1)
    assert client.recv(64) == b"login: "
    assert until(lambda: m.memory.read_u16(TX + 0x2000 + 2) == 1)


def test_a_bad_chardev_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmuError, match="server=on"):
        Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf",
                              chardevs=[f"socket,id=c0,path={tmp_path / 's'},server=off"]))  # fmt: skip
    with pytest.raises(EmuError, match="must name a -chardev"):
        Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf",
                              devices=["virtio-console-pci,chardev=nope"]))  # fmt: skip


def test_on_chardev_stdio_typed_keys_go_to_the_console_not_com1() -> None:
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", chardevs=["stdio,id=t"],
                              devices=["virtio-console-pci,chardev=t"]))  # fmt: skip
    try:
        driver = Driver(m, device_type=3)
        driver.probe()
        driver.initialize()
        m.start_stepping(b"ls\n")  # terminal input, as the stdin reader would queue it
        m._service_devices()  # the loop hands it on: to the console, which has no buffer yet
        assert not m.uart.rx and bytes(m.terminal_console.pending) == b"ls\n"
        post(m, DESC, AVAIL, INPUT, 64, DESC_F_WRITE)
        driver.mmio.write(driver.notify, 2, 0)
        assert m.memory.read_u16(USED + 2) == 1 and m.memory.read(INPUT, 3) == b"ls\n"
    finally:
        m.close()
