"""virtio-blk on a raw image file (emu/devices/virtio/blk.py), driven through virtio-pci by the
test driver: reads, writes that reach the file, flush, GET_ID, discard, a read-only drive, and
requests the device must refuse."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.devices.virtio.device import DEVICE_NEEDS_RESET
from emu.devices.virtio.queue import DESC_F_WRITE
from emu.machine import Machine, MachineConfig

from .virtio_driver import BUFFER, Driver

ROOT = Path(__file__).resolve().parents[2]
HEADER, DATA, STATUS = BUFFER, BUFFER + 0x1000, BUFFER + 0x3000
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11
F_RO, F_FLUSH, F_DISCARD = 1 << 5, 1 << 9, 1 << 13


def image(tmp_path: Path, sectors: int = 64) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"".join(bytes([i]) * 512 for i in range(sectors)))
    return path


@pytest.fixture
def blk(tmp_path: Path, request):
    readonly = getattr(request, "param", False)
    path = image(tmp_path)
    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", virtio_drives=[(path, readonly)]))
    driver = Driver(m, device_type=2)
    driver.probe()
    driver.initialize(features_low=F_FLUSH | (0 if readonly else F_DISCARD) | (F_RO if readonly else 0))
    yield m, driver, path
    m.close()


def request(driver: Driver, kind: int, sector: int, data_out: bytes = b"", data_in: int = 0) -> tuple[int, bytes]:
    """One request: header, data (out or in), status. (status, bytes read back)."""
    mem = driver.m.memory
    mem.write(HEADER, struct.pack("<IIQ", kind, 0, sector) + data_out)
    mem.write(STATUS, b"\xff")
    chain = [(HEADER, 16 + len(data_out), 0)]
    if data_in:
        chain.append((DATA, data_in, DESC_F_WRITE))
    chain.append((STATUS, 1, DESC_F_WRITE))
    _, written = driver.submit(chain)
    assert written == (data_in + 1 if mem.read(STATUS, 1)[0] == 0 else 1)  # data only when it succeeded
    return mem.read(STATUS, 1)[0], mem.read(DATA, data_in)


def test_capacity_and_features(blk) -> None:
    m, _, _ = blk
    device = m.virtio[0].device
    assert device.config_read(0, 8) == 64 and device.features & F_FLUSH and device.features & F_DISCARD
    assert not device.features & F_RO


def test_read_write_flush_get_id(blk) -> None:
    m, driver, path = blk
    status, data = request(driver, T_IN, 3, data_in=1024)
    assert status == 0 and data == b"\x03" * 512 + b"\x04" * 512
    assert request(driver, T_OUT, 10, data_out=b"A" * 512)[0] == 0
    assert path.read_bytes()[10 * 512 : 11 * 512] == b"A" * 512  # in the file at once (pwrite)
    assert request(driver, T_FLUSH, 0)[0] == 0
    status, ident = request(driver, T_GET_ID, 0, data_in=20)
    assert status == 0 and ident.rstrip(b"\0") == b"emu-virtio-blk"
    counters = m.virtio[0].device.blk
    assert (counters.reads, counters.writes, counters.flushes, counters.sectors_read) == (1, 1, 1, 2)
    queue = m.virtio[0].device.counters[0]  # --stats: what the device read from the driver's buffers and wrote
    assert (queue.requests, queue.bytes_read, queue.bytes_written) == (4, 4 * 16 + 512, 1025 + 1 + 1 + 21)


def test_discard_frees_sectors(blk) -> None:
    _, driver, path = blk
    status, _ = request(driver, T_DISCARD, 0, data_out=struct.pack("<QII", 20, 4, 0))
    assert status == 0 and path.read_bytes()[20 * 512 : 24 * 512] == bytes(2048)
    assert path.read_bytes()[24 * 512 : 25 * 512] == b"\x18" * 512


@pytest.mark.parametrize("blk", [True], indirect=True)
def test_a_read_only_drive_refuses_writes(blk) -> None:
    m, driver, path = blk
    before = path.read_bytes()
    assert m.virtio[0].device.features & F_RO
    assert request(driver, T_OUT, 1, data_out=b"B" * 512)[0] == 1  # IOERR
    assert request(driver, T_IN, 1, data_in=512) == (0, b"\x01" * 512)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("kind", "sector", "data_out", "data_in", "status"),
    [(T_IN, 64, b"", 512, 1), (T_IN, 63, b"", 1024, 1), (T_OUT, 0, b"x" * 100, 0, 1), (T_IN, 2**63, b"", 512, 1),
     (0x77, 0, b"", 0, 2), (T_DISCARD, 0, struct.pack("<QII", 60, 8, 0), 0, 1)],
)  # fmt: skip
def test_bad_requests_get_a_status(blk, kind: int, sector: int, data_out: bytes, data_in: int, status: int) -> None:
    _, driver, path = blk
    before = path.read_bytes()
    assert request(driver, kind, sector, data_out, data_in)[0] == status
    assert path.read_bytes() == before


def test_a_request_without_a_status_byte_needs_reset(blk, capfd) -> None:
    m, driver, _ = blk
    m.memory.write(HEADER, struct.pack("<IIQ", T_IN, 0, 0))
    driver.submit([(HEADER, 16, 0)])  # no writable status byte
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET
    assert "no status byte" in capfd.readouterr().err


def _disk_for_guest(tmp_path: Path) -> Path:
    path = tmp_path / "guest.img"
    data = bytearray(64 * 512)
    data[:24] = b"emu virtio-blk test disk"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("accel", ACCELS)
def test_the_virtio64_guest_reads_and_writes_the_disk(accel: str, tmp_path: Path) -> None:
    """firmware/virtio.c's block part: capacity, sector 0 read, sector 1 written and flushed."""
    path = _disk_for_guest(tmp_path)
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "-drive", f"file={path},if=virtio",
                             str(ROOT / "firmware" / "build" / "virtio64.elf")], capture_output=True, timeout=120,
                            check=False)  # fmt: skip
    out = result.stdout.decode()
    assert result.returncode == 1, out + result.stderr.decode()
    assert "capacity 64 sectors" in out and 'sector 0: status 0, "emu virtio-blk test disk"' in out
    assert "sector 1 written: status 0, flushed: status 0" in out
    assert path.read_bytes()[512:541] == b"written by the virtio64 guest"


@pytest.mark.parametrize("accel", ACCELS)
def test_an_acknowledged_write_survives_sigterm(accel: str, tmp_path: Path) -> None:
    """The guest writes sector 1, gets the flush's completion, says "waiting" and sleeps; emu
    is killed with SIGTERM then. The data is in the image file, and emu ends with 143."""
    path = _disk_for_guest(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", accel, "-drive", f"file={path},if=virtio",
                             "--append", "wait", str(ROOT / "firmware" / "build" / "virtio64.elf")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.decode())
            if line == b"waiting\n":
                break
        assert "sector 1 written: status 0, flushed: status 0\n" in lines, lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
        proc.wait()
    assert path.read_bytes()[512:541] == b"written by the virtio64 guest"


@pytest.mark.parametrize(("kind", "data_out", "data_in"), [(T_IN, b"x" * 512, 0), (T_OUT, b"", 512)])
def test_data_buffers_the_wrong_way_round_need_reset(blk, kind: int, data_out: bytes, data_in: int, capfd) -> None:
    _, driver, path = blk
    before = path.read_bytes()
    driver.m.memory.write(HEADER, struct.pack("<IIQ", kind, 0, 1) + data_out)
    chain = [(HEADER, 16 + len(data_out), 0)] + ([(DATA, data_in, DESC_F_WRITE)] if data_in else [])
    driver.submit([*chain, (STATUS, 1, DESC_F_WRITE)])
    assert driver.common_read(0x14, 1) & DEVICE_NEEDS_RESET and "the wrong way round" in capfd.readouterr().err
    assert path.read_bytes() == before
