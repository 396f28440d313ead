"""The primary ATA channel driven through its ports as a PIO driver (Linux's ata_sff, a BIOS) drives it.

Every test runs on a real image file in tmp_path; the IRQ 14 wire is the recording `Wire`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from emu.devices.ata import (
    ATA_PRIMARY_BASE,
    ATA_PRIMARY_CONTROL,
    AtaController,
    DiskImage,
)
from emu.devices.bus import PortIoBus
from emu.errors import EmuError

# Register offsets and bits with the names of Linux's include/linux/ata.h
DATA, ERROR, FEATURE, NSECT, LBAL, LBAM, LBAH, DEVICE, STATUS, COMMAND = 0, 1, 1, 2, 3, 4, 5, 6, 7, 7
ATA_BUSY, ATA_DRDY, ATA_DSC, ATA_DRQ, ATA_ERR = 0x80, 0x40, 0x10, 0x08, 0x01
ATA_ABORTED, ATA_IDNF = 0x04, 0x10
ATA_NIEN, ATA_SRST, ATA_HOB = 0x02, 0x04, 0x80
ATA_LBA, ATA_DEV1 = 0x40, 0x10
CMD_READ, CMD_READ_EXT, CMD_WRITE, CMD_WRITE_EXT = 0x20, 0x24, 0x30, 0x34
CMD_READ_MULTI, CMD_WRITE_MULTI, CMD_SET_MULTI = 0xC4, 0xC5, 0xC6
CMD_VERIFY, CMD_VERIFY_EXT, CMD_FLUSH, CMD_FLUSH_EXT = 0x40, 0x42, 0xE7, 0xEA
CMD_ID_ATA, CMD_ID_ATAPI, CMD_INIT_DEV_PARAMS, CMD_EDD, CMD_SET_FEATURES = 0xEC, 0xA1, 0x91, 0x90, 0xEF
READY = ATA_DRDY | ATA_DSC
MIB = 1 << 20


def pattern(lba: int) -> bytes:
    """A sector that says which sector it is."""
    return lba.to_bytes(8, "little") * 64


def make_image(path: Path, sectors: int) -> Path:
    path.write_bytes(b"".join(pattern(i) for i in range(sectors)))
    return path


def sparse_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@dataclass
class Host:
    """The driver side: byte registers, the data port and device control, through the bus."""

    bus: PortIoBus

    def inb(self, reg: int) -> int:
        return self.bus.read(ATA_PRIMARY_BASE + reg, 1)

    def outb(self, reg: int, value: int) -> None:
        self.bus.write(ATA_PRIMARY_BASE + reg, 1, value)

    def status(self) -> int:
        return self.inb(STATUS)

    def altstatus(self) -> int:
        return self.bus.read(ATA_PRIMARY_CONTROL, 1)

    def ctl(self, value: int) -> None:
        self.bus.write(ATA_PRIMARY_CONTROL, 1, value)

    def lba28(self, command: int, lba: int, count: int) -> None:
        self.outb(DEVICE, 0xE0 | lba >> 24)
        self.outb(NSECT, count & 0xFF)
        self.outb(LBAL, lba & 0xFF)
        self.outb(LBAM, lba >> 8 & 0xFF)
        self.outb(LBAH, lba >> 16 & 0xFF)
        self.outb(COMMAND, command)

    def lba48(self, command: int, lba: int, count: int) -> None:
        """ata_tf_load(): the high ("previous") bytes first, then the low ones."""
        self.outb(DEVICE, ATA_LBA)
        for reg, shift in ((NSECT, 8), (LBAL, 24), (LBAM, 32), (LBAH, 40)):
            self.outb(reg, (count if reg == NSECT else lba) >> shift & 0xFF)
        for reg, shift in ((NSECT, 0), (LBAL, 0), (LBAM, 8), (LBAH, 16)):
            self.outb(reg, (count if reg == NSECT else lba) >> shift & 0xFF)
        self.outb(COMMAND, command)

    def chs(self, command: int, cylinder: int, head: int, sector: int, count: int) -> None:
        self.outb(DEVICE, 0xA0 | head)
        self.outb(NSECT, count)
        self.outb(LBAL, sector)
        self.outb(LBAM, cylinder & 0xFF)
        self.outb(LBAH, cylinder >> 8)
        self.outb(COMMAND, command)

    def read_block(self, sectors: int = 1, width: int = 2) -> bytes:
        port = ATA_PRIMARY_BASE + DATA
        return b"".join(self.bus.read(port, width).to_bytes(width, "little") for _ in range(sectors * 512 // width))

    def write_block(self, data: bytes, width: int = 2) -> None:
        for i in range(0, len(data), width):
            self.bus.write(ATA_PRIMARY_BASE + DATA, width, int.from_bytes(data[i : i + width], "little"))


@pytest.fixture
def bus() -> PortIoBus:
    return PortIoBus()


@pytest.fixture
def host(bus: PortIoBus) -> Host:
    return Host(bus)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return make_image(tmp_path / "disk.img", 2048)  # 1 MiB


@pytest.fixture
def ata(image: Path, wire, bus: PortIoBus):
    controller = AtaController(DiskImage(image), wire)
    controller.register(bus)
    yield controller
    controller.close()


def words(block: bytes) -> list[int]:
    return [int.from_bytes(block[i : i + 2], "little") for i in range(0, 512, 2)]


def ata_string(block: bytes, first: int, last: int) -> str:
    """Words first..last as ATA's byte-swapped string (ata_id_string)."""
    raw = block[2 * first : 2 * (last + 1)]
    return bytes(b for pair in zip(raw[1::2], raw[0::2]) for b in pair).decode("ascii").rstrip()


def identify(host: Host, width: int = 2) -> bytes:
    host.outb(DEVICE, 0xA0)
    host.outb(COMMAND, CMD_ID_ATA)
    assert host.status() == READY | ATA_DRQ
    block = host.read_block(width=width)
    assert host.status() == READY
    return block


# -- IDENTIFY DEVICE ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, cylinders",
    [(10 * MIB, 20), (1 * MIB, 2), (100 * 1024, 2)],  # 20480 / 1008; 2048 / 1008; QEMU's minimum of 2
)
def test_identify_describes_the_disk(tmp_path, bus, host, wire, size, cylinders) -> None:
    ata = AtaController(DiskImage(sparse_image(tmp_path / "d.img", size)), wire)
    ata.register(bus)
    block = identify(host)
    w = words(block)
    sectors = size // 512
    assert w[0] == 0x0040  # ATA, fixed
    assert (w[1], w[3], w[6]) == (cylinders, 16, 63)
    assert (w[54], w[55], w[56]) == (cylinders, 16, 63)
    assert w[57] | w[58] << 16 == cylinders * 16 * 63
    assert ata_string(block, 27, 46) == "EMU HARDDISK"
    assert ata_string(block, 10, 19) == "EMU00001"
    assert ata_string(block, 23, 26) == "1.0"
    assert block[54:94].startswith(b"ME UAHDRIDKS")  # the raw bytes really are swapped
    assert w[47] == 0x8010 and w[59] == 0x0110  # 16 sectors per READ/WRITE MULTIPLE, set
    assert w[49] & 1 << 9  # LBA
    assert w[60] | w[61] << 16 == sectors
    assert w[83] & 1 << 10 and w[86] & 1 << 10  # 48-bit Address supported and enabled
    assert w[83] & 3 << 12 and w[86] & 3 << 12  # FLUSH CACHE and FLUSH CACHE EXT
    assert w[80] & 0x01C0 == 0x01C0  # ATA/ATAPI-6, ATA/ATAPI-7, ATA8-ACS
    assert sum(w[100 + i] << 16 * i for i in range(4)) == sectors
    assert w[255] & 0xFF == 0xA5 and sum(block) & 0xFF == 0  # integrity word
    assert wire.rises == 1
    ata.close()


def test_identify_of_a_200_gib_disk_caps_lba28_and_chs(tmp_path, bus, host, wire) -> None:
    ata = AtaController(DiskImage(sparse_image(tmp_path / "big.img", 200 << 30)), wire)
    ata.register(bus)
    w = words(identify(host))
    assert (w[1], w[3], w[6]) == (16383, 16, 63)
    assert w[60] | w[61] << 16 == 0x0FFFFFFF
    assert sum(w[100 + i] << 16 * i for i in range(4)) == 200 << 21
    ata.close()


def test_identify_through_32_bit_data_port(host, ata) -> None:
    assert identify(host, width=4) == identify(host, width=2)


def test_byte_read_of_the_data_port_is_harmless(host, ata) -> None:
    host.outb(COMMAND, CMD_ID_ATA)
    assert host.inb(DATA) == 0xFF  # a floating byte; the transfer does not move
    assert words(host.read_block())[0] == 0x0040


# -- reads ---------------------------------------------------------------------------------------


def test_lba28_read_gives_one_drq_block_and_interrupt_per_sector(host, ata, wire) -> None:
    host.lba28(CMD_READ, 5, 3)
    for lba in (5, 6, 7):
        assert wire.level and wire.rises == lba - 4
        assert host.altstatus() == READY | ATA_DRQ and wire.level  # alternate status leaves INTRQ alone
        assert host.status() == READY | ATA_DRQ and not wire.level  # status clears it
        assert host.read_block() == pattern(lba)
    assert host.status() == READY and wire.rises == 3  # no interrupt after the last block
    assert (host.inb(LBAL), host.inb(NSECT)) == (8, 0)  # the registers point past the transfer
    assert ata.stats.sectors_read == 3 and ata.stats.commands == {"READ SECTORS": 1}


def test_count_zero_means_256_sectors(host, ata, wire) -> None:
    host.lba28(CMD_READ, 0, 0)
    for lba in range(256):
        host.status()
        assert host.read_block() == pattern(lba)
    assert host.status() == READY and wire.rises == 256


def test_chs_read_uses_the_default_then_the_initialized_geometry(host, ata) -> None:
    host.chs(CMD_READ, cylinder=1, head=2, sector=3, count=1)
    assert host.status() == READY | ATA_DRQ
    assert host.read_block() == pattern((1 * 16 + 2) * 63 + 2)
    # INITIALIZE DEVICE PARAMETERS: 4 heads (max head 3 in the device register), 17 sectors/track
    host.outb(NSECT, 17)
    host.outb(DEVICE, 0xA0 | 3)
    host.outb(COMMAND, CMD_INIT_DEV_PARAMS)
    assert host.status() == READY
    host.chs(CMD_READ, cylinder=1, head=2, sector=3, count=2)
    host.status()
    # The first block is in the buffer; the registers already name the next sector: C1 H2 S4
    assert (host.inb(LBAL), host.inb(LBAM), host.inb(DEVICE) & 0x0F, host.inb(NSECT)) == (4, 1, 2, 1)
    assert host.read_block() == pattern((1 * 4 + 2) * 17 + 2)
    host.status()
    assert host.read_block() == pattern((1 * 4 + 2) * 17 + 3)
    w = words(identify(host))
    assert (w[54], w[55], w[56]) == (2048 // 68, 4, 17)
    assert (w[1], w[3], w[6]) == (2, 16, 63)  # the default geometry does not change


def test_chs_sector_zero_is_not_found(host, ata) -> None:
    host.chs(CMD_READ, cylinder=0, head=0, sector=0, count=1)
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_IDNF


def test_lba48_read_above_2_28_on_a_sparse_disk(tmp_path, bus, host, wire) -> None:
    path = sparse_image(tmp_path / "big.img", 200 << 30)
    lba = (1 << 28) + 0x123456  # beyond LBA28; bytes 3-5 of the address are non-zero
    fd = os.open(path, os.O_WRONLY)
    os.pwrite(fd, pattern(lba) + pattern(lba + 1), lba * 512)
    os.close(fd)
    ata = AtaController(DiskImage(path), wire)
    ata.register(bus)
    host.lba48(CMD_READ_EXT, lba, 2)
    for n in range(2):
        assert host.status() == READY | ATA_DRQ
        assert host.read_block() == pattern(lba + n)
    assert host.status() == READY and wire.rises == 2
    end = lba + 2  # the registers point past the transfer, in both bytes of each
    assert [host.inb(r) for r in (LBAL, LBAM, LBAH)] == [end & 0xFF, end >> 8 & 0xFF, end >> 16 & 0xFF]
    host.ctl(ATA_HOB)
    assert [host.inb(r) for r in (LBAL, LBAM, LBAH)] == [end >> 24 & 0xFF, end >> 32 & 0xFF, end >> 40 & 0xFF]
    ata.close()
    assert os.stat(path).st_size == 200 << 30


def test_hob_reads_the_previous_bytes_until_a_register_is_written(host, ata) -> None:
    for value in (0x12, 0x34):
        host.outb(LBAM, value)
    host.outb(NSECT, 0x56)
    assert host.inb(LBAM) == 0x34
    host.ctl(ATA_HOB)
    assert host.inb(LBAM) == 0x12
    host.outb(NSECT, 0x78)  # any command block write clears HOB
    assert host.inb(LBAM) == 0x34 and host.inb(NSECT) == 0x78


def test_read_multiple_transfers_blocks_of_the_multiple_count(host, ata, wire) -> None:
    host.outb(NSECT, 4)
    host.outb(COMMAND, CMD_SET_MULTI)
    assert host.status() == READY
    host.lba28(CMD_READ_MULTI, 100, 10)
    for first, n in ((100, 4), (104, 4), (108, 2)):
        assert host.status() == READY | ATA_DRQ
        assert host.read_block(n) == b"".join(pattern(first + i) for i in range(n))
    assert host.status() == READY and wire.rises == 1 + 3
    host.outb(NSECT, 3)  # not a power of two
    host.outb(COMMAND, CMD_SET_MULTI)
    assert host.status() & ATA_ERR and host.inb(ERROR) == ATA_ABORTED
    host.outb(NSECT, 0)  # disables READ/WRITE MULTIPLE
    host.outb(COMMAND, CMD_SET_MULTI)
    host.lba28(CMD_READ_MULTI, 0, 1)
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_ABORTED


def test_read_verify_checks_the_range_with_count_zero_meaning_the_maximum(tmp_path, bus, host, wire) -> None:
    ata = AtaController(DiskImage(sparse_image(tmp_path / "d.img", 32 * MIB)), wire)  # 65536 sectors
    ata.register(bus)
    host.lba28(CMD_VERIFY, 65536 - 256, 0)
    assert host.status() == READY
    host.lba28(CMD_VERIFY, 65536 - 255, 0)
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_IDNF
    host.lba48(CMD_VERIFY_EXT, 0, 0)  # 65536 sectors
    assert host.status() == READY
    host.lba48(CMD_VERIFY_EXT, 1, 0)
    assert host.inb(ERROR) == ATA_IDNF
    ata.close()


def test_access_beyond_the_end_is_idnf_before_any_data(host, ata, wire, image) -> None:
    before = image.read_bytes()
    host.lba28(CMD_READ, 2047, 2)
    assert wire.level
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_IDNF
    host.lba28(CMD_WRITE, 2048, 1)
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_IDNF
    host.write_block(b"\xee" * 512)  # nobody asked for it: ignored
    assert image.read_bytes() == before
    assert ata.stats.errors == 2


# -- writes ----------------------------------------------------------------------------------------


def test_write_then_read_back_reaches_the_host_file(host, ata, wire, image) -> None:
    data = bytes(range(256)) * 6  # 3 sectors
    host.lba28(CMD_WRITE, 10, 3)
    assert host.altstatus() == READY | ATA_DRQ and not wire.level  # PIO data-out: DRQ, no interrupt
    for n in range(3):
        host.write_block(data[n * 512 : (n + 1) * 512])
        assert wire.rises == n + 1  # one interrupt per block written
        assert host.status() == (READY | ATA_DRQ if n < 2 else READY)
    assert image.read_bytes()[10 * 512 : 13 * 512] == data  # pwrite: in the file already
    assert image.read_bytes()[9 * 512 : 10 * 512] == pattern(9)
    assert image.read_bytes()[13 * 512 : 14 * 512] == pattern(13)
    host.lba28(CMD_READ, 10, 3)
    got = b""
    for _ in range(3):
        host.status()
        got += host.read_block()
    assert got == data
    assert ata.stats.sectors_written == 3 and ata.stats.sectors_read == 3


def test_write_multiple_ext_and_32_bit_data_port(host, ata, image) -> None:
    host.outb(NSECT, 2)
    host.outb(COMMAND, CMD_SET_MULTI)
    data = os.urandom(5 * 512)
    host.lba48(0x39, 1000, 5)  # WRITE MULTIPLE EXT
    for first, n in ((0, 2), (2, 2), (4, 1)):
        assert host.status() == READY | ATA_DRQ
        host.write_block(data[first * 512 : (first + n) * 512], width=4)
    assert host.status() == READY
    assert image.read_bytes()[1000 * 512 : 1005 * 512] == data


def test_flush_cache_reaches_fsync(host, ata, image, monkeypatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    host.lba28(CMD_WRITE, 0, 1)
    host.write_block(b"\xab" * 512)
    assert synced == []  # the write cache is on: durable only at the flush
    host.outb(COMMAND, CMD_FLUSH)
    assert host.status() == READY
    assert synced == [ata.disk.fd]
    with open(image, "rb") as f:  # the data is in the file, the image still open
        assert f.read(512) == b"\xab" * 512
    host.outb(COMMAND, CMD_FLUSH_EXT)
    assert host.status() == READY
    assert ata.stats.flushes == 2 and ata.stats.commands["FLUSH CACHE EXT"] == 1


def test_write_cache_off_makes_every_write_command_durable(host, ata, monkeypatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    host.outb(FEATURE, 0x82)  # SET FEATURES: disable write cache
    host.outb(COMMAND, CMD_SET_FEATURES)
    assert host.status() == READY
    assert not words(identify(host))[85] & 1 << 5
    host.lba28(CMD_WRITE, 0, 2)
    host.write_block(b"\x01" * 512)
    assert synced == []
    host.write_block(b"\x02" * 512)
    assert synced == [ata.disk.fd]
    host.outb(FEATURE, 0x99)  # not a subcommand we know
    host.outb(COMMAND, CMD_SET_FEATURES)
    assert host.inb(ERROR) == ATA_ABORTED


def test_read_only_image_rejects_writes_and_stays_untouched(image, wire, bus, host) -> None:
    before, mtime = image.read_bytes(), image.stat().st_mtime_ns
    ata = AtaController(DiskImage(image, readonly=True), wire)
    ata.register(bus)
    host.lba28(CMD_WRITE, 0, 1)
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_ABORTED
    host.write_block(b"\xff" * 512)
    host.lba28(CMD_READ, 1, 1)  # reads still work
    host.status()
    assert host.read_block() == pattern(1)
    with pytest.raises(PermissionError):
        ata.disk.write(0, b"\0" * 512)
    host.outb(COMMAND, CMD_FLUSH)
    assert host.status() == READY
    ata.close()
    assert image.read_bytes() == before and image.stat().st_mtime_ns == mtime


# -- errors, interrupts, reset, absent devices ---------------------------------------------------


@pytest.mark.parametrize("command", [0x00, CMD_ID_ATAPI, 0xC8, 0x50])  # NOP, IDENTIFY PACKET, READ DMA, ?
def test_unknown_or_unsupported_commands_abort(host, ata, wire, command) -> None:
    host.outb(COMMAND, command)
    assert wire.level
    assert host.status() == ATA_DRDY | ATA_ERR and host.inb(ERROR) == ATA_ABORTED
    assert ata.stats.errors == 1


def test_nien_masks_the_line_but_keeps_the_interrupt_pending(host, ata, wire) -> None:
    host.ctl(ATA_NIEN)
    host.outb(COMMAND, CMD_EDD)
    assert not wire.level and wire.rises == 0
    host.ctl(0)  # unmasked: the pending interrupt shows
    assert wire.level
    host.ctl(ATA_NIEN)
    assert not wire.level
    host.ctl(0)
    host.status()
    assert not wire.level


def test_a_new_command_clears_the_interrupt(host, ata, wire) -> None:
    host.outb(COMMAND, CMD_EDD)
    assert wire.level
    host.outb(NSECT, 0)  # a register write does not
    assert wire.level
    host.outb(COMMAND, CMD_ID_ATA)  # cleared, then raised again for the data
    assert [level for _, level in wire.history] == [True, False, True]


def test_srst_leaves_the_signature(host, ata, wire) -> None:
    host.lba28(CMD_READ, 3, 2)  # abandoned mid-transfer
    host.ctl(ATA_SRST | ATA_NIEN)
    assert host.altstatus() == ATA_BUSY
    host.ctl(ATA_NIEN)
    assert host.altstatus() == READY
    assert [host.inb(r) for r in (NSECT, LBAL, LBAM, LBAH, DEVICE)] == [1, 1, 0, 0, 0]
    assert host.inb(ERROR) == 0x01  # diagnostic passed
    host.ctl(0)
    assert not wire.level  # no interrupt from a reset
    assert host.bus.read(ATA_PRIMARY_BASE, 2) == 0  # the transfer is gone


def test_execute_device_diagnostic_signature_with_interrupt(host, ata, wire) -> None:
    host.outb(LBAM, 0x55)
    host.outb(COMMAND, CMD_EDD)
    assert wire.level
    assert host.status() == READY and host.inb(ERROR) == 0x01
    assert [host.inb(r) for r in (NSECT, LBAL, LBAM, LBAH)] == [1, 1, 0, 0]


def test_absent_slave_reads_zero_and_ignores_commands(host, ata, wire) -> None:
    host.outb(DEVICE, 0xA0 | ATA_DEV1)
    assert host.status() == 0 and host.altstatus() == 0 and host.inb(ERROR) == 0
    host.outb(COMMAND, CMD_ID_ATA)
    assert not wire.level and ata.stats.commands == {}
    host.outb(DEVICE, 0xA0)
    assert host.status() == READY


def test_no_disk_reads_zero(bus, host, wire) -> None:
    ata = AtaController(None, wire)
    ata.register(bus)
    host.outb(NSECT, 0x55)
    assert [host.inb(r) for r in range(1, 8)] == [0] * 7
    assert host.altstatus() == 0
    host.outb(COMMAND, CMD_ID_ATA)
    assert not wire.level
    ata.close()


# -- the image file --------------------------------------------------------------------------------


def test_partial_last_sector_reads_zero_padded_and_the_file_keeps_its_size(tmp_path) -> None:
    path = tmp_path / "odd.img"
    path.write_bytes(b"\x11" * 1000)
    with DiskImage(path) as disk:
        assert disk.sectors == 2
        assert disk.read(1, 1) == b"\x11" * 488 + b"\0" * 24
        disk.write(1, b"\x22" * 512)
        with pytest.raises(ValueError):
            disk.read(2, 1)
        with pytest.raises(ValueError):
            disk.write(1, b"\0" * 1024)
    assert path.read_bytes() == b"\x11" * 512 + b"\x22" * 488


def test_close_flushes_and_the_image_is_locked_while_open(image, monkeypatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    disk = DiskImage(image)
    with pytest.raises(EmuError, match="in use"):
        DiskImage(image, readonly=True)
    disk.write(0, b"\x5a" * 512)
    fd = disk.fd
    disk.close()
    disk.close()  # twice is fine
    assert synced == [fd] and disk.closed
    with DiskImage(image, readonly=True), DiskImage(image, readonly=True):
        pass  # readers share the image


def test_missing_image_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(EmuError, match="nope.img"):
        DiskImage(tmp_path / "nope.img")
    with pytest.raises(EmuError, match="not a regular file"):
        DiskImage(tmp_path, readonly=True)
