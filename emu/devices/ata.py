"""A legacy ATA (IDE) hard disk on the PC's primary channel, driven by PIO (0x1F0-0x1F7, 0x3F6, IRQ 14).

The register block is the one fixed by ATA-2/ATA-3 (X3T10 948D, X3T13 2008D) and kept by every
later standard: the host talks to the drive through eight 8-bit registers (the data register
is 16 bits wide) plus one in a separate "control block" (T13 ATA/ATAPI-6, T13/1410D, clause 7):

  0x1F0  data                  16-bit PIO window onto the drive's sector buffer
  0x1F1  error / features      error bits after a command (ABRT 0x04, IDNF 0x10, UNC 0x40);
                               written: the command's parameter (SET FEATURES subcommand)
  0x1F2  sector count          sectors to transfer; 0 means 256 (65536 for the EXT commands)
  0x1F3  LBA low               (sector number in CHS mode, 1-based)
  0x1F4  LBA mid               (cylinder low)
  0x1F5  LBA high              (cylinder high)
  0x1F6  device                bit 6 LBA (else CHS), bit 4 DEV (0 master, 1 slave),
                               bits 3-0 head, or LBA bits 27-24
  0x1F7  status / command      BSY 0x80, DRDY 0x40, DF 0x20, DSC 0x10, DRQ 0x08, ERR 0x01;
                               written: the command opcode, which starts the command
  0x3F6  alternate status /    the same status, but reading it has no side effect; written:
         device control        nIEN (bit 1) masks INTRQ, SRST (bit 2) resets, HOB (bit 7)

Two drives share one cable and see every register write; DEV picks which one answers reads and
runs the command. Here only the master exists: with the slave selected, status and error read
0 (what QEMU returns for an empty slot, hw/ide/core.c ide_ioport_read) and commands are ignored.

Addressing. CHS (cylinder, head, sector) is the original scheme, with the geometry chosen by
INITIALIZE DEVICE PARAMETERS (default: 16 heads, 63 sectors per track, as QEMU's
hd_geometry_guess for a disk without a partition table); LBA28 numbers sectors 0..2^28-1 from
LBA low/mid/high and the device register's low nibble. LBA48 (ATA/ATAPI-6's 48-bit Address
feature set) keeps the same registers but makes features, count and the three LBA
registers two bytes deep: each write pushes the previous byte into a "previous" slot, so the
host writes the high bytes first, then the low ones, and an EXT command (READ SECTORS EXT...)
uses both. Device control's HOB bit selects the previous bytes for reading; any write to the
command block clears it.

Protocols (ATA/ATAPI-6 clause 9). Commands complete here synchronously: BSY is never seen set,
as if the drive were infinitely fast (only SRST shows BSY, while it is held).
- Non-data (§9.4): the drive does the work, sets DRDY (and ERR + the error register on
  failure) and asserts INTRQ.
- PIO data-in (§9.5; IDENTIFY DEVICE, READ SECTORS/MULTIPLE): for each DRQ data block (one
  sector, or up to the SET MULTIPLE count for READ MULTIPLE) the drive fills its buffer, sets
  DRQ and asserts INTRQ; the host reads status (clearing INTRQ) and then 256 words from the
  data register. After the last word of the last block DRQ clears; no interrupt ends the command.
- PIO data-out (§9.6; WRITE SECTORS/MULTIPLE): the drive sets DRQ at once *without* an
  interrupt; the host writes a block, the drive stores it and asserts INTRQ, with DRQ set again
  if more blocks follow. The last interrupt (DRQ clear) is the command's completion.
INTRQ stays asserted until the host reads the Status register (not Alternate Status) or writes a
command; with nIEN set the wire is low, and a pending interrupt shows as soon as nIEN clears.

Reset. Setting SRST (§9.2) makes the drive busy; clearing it ends the reset with the drive's
signature in the registers (count 1, LBA low 1, mid 0, high 0, device 0; a packet device
would show 0x14/0xEB in mid/high), error 0x01 ("diagnostic passed"), status DRDY|DSC and no interrupt. EXECUTE DEVICE
DIAGNOSTIC (§9.10) leaves the same signature, with an interrupt.

IDENTIFY DEVICE returns 256 words describing the drive (ATA8-ACS, "IDENTIFY DEVICE data"). Its
strings are ASCII, space-padded, with two characters per word and the first in the high byte,
so "EMU HARDDISK" reads "ME UAHDRIDKS" byte by byte.

The disk behind it (`DiskImage`) is a raw image file: sector n lives at byte n * 512. Writes go
to the host with pwrite at once (so they survive an emulator crash; only a host crash needs the
fsync), FLUSH CACHE and close() fsync. A file whose size is not a multiple of 512 has a last,
partial sector, counted in the capacity as QEMU counts it (DIV_ROUND_UP): it reads zero-padded,
and a write to it keeps only the bytes inside the file, which never grows or shrinks.

Choices and deviations:
- No DMA (no PCI bus-master function): IDENTIFY offers PIO modes only, DMA commands abort.
- An access beyond the last sector fails before any data moves, with IDNF; a real drive would
  transfer up to the bad sector first. A read-only image fails WRITE commands with ABRT (ATA
  hard disks have no write-protect status), before any data is taken. Host I/O errors show as
  UNC (reads) or ABRT (writes).
- As each block is fetched (reads) or stored (writes), the address and count registers move on
  to the next sector and the sectors left, as QEMU's ide_set_sector does; an error thus leaves
  them at the failing block.
- The write cache is "enabled" by default (IDENTIFY word 85 bit 5), which is what writing into
  the host page cache amounts to; SET FEATURES 0x82 disables it, and each write command then
  ends with an fsync.
- The SET MULTIPLE MODE count, the CHS translation and the write-cache setting survive SRST
  (QEMU resets the first to 16); `reset()`, the power-on reset, restores all three.
- Also accepted, as no-ops: the power-management commands Linux sends at shutdown (STANDBY /
  IDLE IMMEDIATE, CHECK POWER MODE reporting "active"). Anything not listed aborts (ABRT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from .disk import SECTOR, DiskImage
from .interfaces import IrqLine

if TYPE_CHECKING:
    from .bus import PortIoBus

ATA_PRIMARY_BASE, ATA_PRIMARY_CONTROL, ATA_PRIMARY_IRQ = 0x1F0, 0x3F6, 14
MAX_MULTIPLE = 16  # sectors per DRQ block of READ/WRITE MULTIPLE (IDENTIFY word 47)
LBA28_LIMIT = 1 << 28
CHS_LIMIT = 16383 * 16 * 63  # capacity beyond which CHS reports at most 16383 cylinders

# Command block register offsets
REG_DATA, REG_ERROR, REG_COUNT, REG_LBA_LOW, REG_LBA_MID, REG_LBA_HIGH, REG_DEVICE, REG_STATUS = range(8)
REG_FEATURES, REG_COMMAND = REG_ERROR, REG_STATUS

ST_ERR, ST_DRQ, ST_DSC, ST_DF, ST_DRDY, ST_BSY = 0x01, 0x08, 0x10, 0x20, 0x40, 0x80
ER_ABRT, ER_IDNF, ER_UNC = 0x04, 0x10, 0x40
DEV_DEV, DEV_LBA = 0x10, 0x40
DC_NIEN, DC_SRST, DC_HOB = 0x02, 0x04, 0x80

COMMAND_NAMES = {
    0x00: "NOP", 0x20: "READ SECTORS", 0x21: "READ SECTORS", 0x24: "READ SECTORS EXT",
    0x29: "READ MULTIPLE EXT", 0x30: "WRITE SECTORS", 0x31: "WRITE SECTORS", 0x34: "WRITE SECTORS EXT",
    0x39: "WRITE MULTIPLE EXT", 0x40: "READ VERIFY SECTORS", 0x41: "READ VERIFY SECTORS",
    0x42: "READ VERIFY SECTORS EXT", 0x90: "EXECUTE DEVICE DIAGNOSTIC", 0x91: "INITIALIZE DEVICE PARAMETERS",
    0xA0: "PACKET", 0xA1: "IDENTIFY PACKET DEVICE", 0xC4: "READ MULTIPLE", 0xC5: "WRITE MULTIPLE",
    0xC6: "SET MULTIPLE MODE", 0xC8: "READ DMA", 0xCA: "WRITE DMA", 0xE0: "STANDBY IMMEDIATE",
    0xE1: "IDLE IMMEDIATE", 0xE5: "CHECK POWER MODE", 0xE7: "FLUSH CACHE", 0xEA: "FLUSH CACHE EXT",
    0xEC: "IDENTIFY DEVICE", 0xEF: "SET FEATURES",
} | {op: "RECALIBRATE" for op in range(0x10, 0x20)}  # fmt: skip

# SET FEATURES subcommands accepted (QEMU's list): write cache on/off, transfer mode, look-ahead,
# revert to defaults, APM, AAM. Only the write cache changes anything here.
SF_WRITE_CACHE_ON, SF_WRITE_CACHE_OFF, SF_TRANSFER_MODE = 0x02, 0x82, 0x03
SET_FEATURES_ACCEPTED = {0x02, 0x82, 0x03, 0xAA, 0x55, 0xCC, 0x66, 0x05, 0x85, 0x42, 0xC2}


@dataclass
class AtaStats:
    """Counters for --stats."""

    commands: dict[str, int] = field(default_factory=dict)  # by command name
    sectors_read: int = 0
    sectors_written: int = 0
    flushes: int = 0  # FLUSH CACHE (EXT) commands
    errors: int = 0  # commands that ended with ERR

    def as_dict(self) -> dict:
        return {"commands": dict(self.commands), "sectors_read": self.sectors_read,
                "sectors_written": self.sectors_written, "flushes": self.flushes, "errors": self.errors}  # fmt: skip


@dataclass(frozen=True)
class RegisterBlock:
    """One of the controller's two port windows as an IoDevice for the bus."""

    io_read: Callable[[int, int], int] = field(repr=False)
    io_write: Callable[[int, int, int], None] = field(repr=False)
    max_access_size: int = 1


def default_geometry(sectors: int) -> tuple[int, int, int]:
    """Cylinders, heads, sectors per track as QEMU guesses them for a disk (hw/block/hd-geometry.c)."""
    return min(max(sectors // (16 * 63), 2), 16383), 16, 63


def ata_string(text: str, length: int) -> bytes:
    """An IDENTIFY string: ASCII, space-padded to `length` bytes, each byte pair swapped."""
    raw = text.encode("ascii", "replace")[:length].ljust(length, b" ")
    swapped = bytearray(length)
    swapped[0::2], swapped[1::2] = raw[1::2], raw[0::2]
    return bytes(swapped)


@dataclass
class AtaController:
    """The primary channel with `disk` as its master (or no drive); INTRQ drives `irq` (IRQ 14).

    `register(ports)` claims 0x1F0-0x1F7 and 0x3F6; `close()` flushes and closes the disk.
    """

    disk: DiskImage | None = None
    irq: IrqLine | None = None
    model: str = "EMU HARDDISK"
    serial: str = "EMU00001"
    firmware: str = "1.0"
    stats: AtaStats = field(default_factory=AtaStats)

    command_block: RegisterBlock = field(init=False, repr=False)
    control_block: RegisterBlock = field(init=False, repr=False)
    regs: list[int] = field(init=False)  # features..LBA high: (previous byte << 8) | current byte
    device: int = field(init=False)
    status: int = field(init=False)
    error: int = field(init=False)
    control: int = field(init=False)
    cylinders: int = field(init=False)  # current CHS translation
    heads: int = field(init=False)
    sectors_per_track: int = field(init=False)
    multiple: int = field(init=False)  # sectors per block of READ/WRITE MULTIPLE, 0 = disabled
    write_cache: bool = field(init=False)
    pending: bool = field(init=False)  # INTRQ, before nIEN
    _irq_level: bool = field(init=False, default=False)
    # The PIO transfer in progress: its buffer, direction and what is left of the command.
    _buffer: bytearray = field(init=False, repr=False)
    _pos: int = field(init=False)
    _data_in: bool = field(init=False)  # True: device to host (DRQ means "read me")
    _lba: int = field(init=False)  # next sector to read or write
    _remaining: int = field(init=False)  # sectors not yet transferred
    _block: int = field(init=False)  # sectors per DRQ block
    _ext: bool = field(init=False)  # an LBA48 command (for the register updates)

    def __post_init__(self) -> None:
        self.command_block = RegisterBlock(self._read_command, self._write_command, 4)
        self.control_block = RegisterBlock(self._read_control, self._write_control, 1)
        self.reset()

    def register(self, ports: PortIoBus) -> None:
        """Claim the primary channel: command block 0x1F0-0x1F7, control block 0x3F6."""
        ports.register(ATA_PRIMARY_BASE, 8, self.command_block, "ata0")
        ports.register(ATA_PRIMARY_CONTROL, 1, self.control_block, "ata0-control")

    def close(self) -> None:
        """Flush and close the disk image (the machine calls this on every way out)."""
        if self.disk is not None:
            self.disk.close()

    def reset(self) -> None:
        """Power-on / hardware reset: defaults, then the signature, as after SRST."""
        self.control = 0
        total = self.disk.sectors if self.disk else 0
        self.cylinders, self.heads, self.sectors_per_track = default_geometry(total)
        self.multiple = MAX_MULTIPLE
        self.write_cache = True
        self._soft_reset_done()

    # -- interrupts -------------------------------------------------------------------------

    def _set_pending(self, pending: bool) -> None:
        self.pending = pending
        self._update_irq()

    def _update_irq(self) -> None:
        level = self.pending and not self.control & DC_NIEN
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                self.irq.set_level(level)

    # -- registers --------------------------------------------------------------------------

    def _present(self) -> bool:
        """Is the selected device there? (Only a master with a disk is.)"""
        return self.disk is not None and not self.device & DEV_DEV

    def _read_command(self, offset: int, size: int) -> int:
        if offset == REG_DATA:
            return self._read_data(size)
        if size > 1:  # the task file is 8 bits wide: a wider access reads consecutive registers
            return sum(self._read_command(offset + i, 1) << 8 * i for i in range(min(size, 8 - offset)))
        if self.disk is None:
            return 0
        if offset == REG_STATUS:
            self._set_pending(False)
            return self.status if self._present() else 0
        if offset == REG_DEVICE:
            return self.device
        hob = bool(self.control & DC_HOB)
        if offset == REG_ERROR:
            if not self._present():
                return 0
            return self.regs[REG_FEATURES] >> 8 if hob else self.error  # QEMU: HOB reads previous features
        return self.regs[offset] >> 8 if hob else self.regs[offset] & 0xFF

    def _write_command(self, offset: int, size: int, value: int) -> None:
        if offset == REG_DATA:
            self._write_data(size, value)
            return
        if size > 1:
            for i in range(min(size, 8 - offset)):
                self._write_command(offset + i, 1, value >> 8 * i & 0xFF)
            return
        self.control &= ~DC_HOB  # any command block write clears HOB
        if offset == REG_COMMAND:
            self._set_pending(False)
            self._command(value)
        elif self._present() and self.status & (ST_BSY | ST_DRQ):
            return  # ignored while a command is busy or moving data (QEMU does the same)
        elif offset == REG_DEVICE:
            self.device = value
        else:
            self.regs[offset] = (self.regs[offset] << 8 | value) & 0xFFFF

    def _read_control(self, offset: int, size: int) -> int:
        return self.status if self._present() else 0  # alternate status: no side effect

    def _write_control(self, offset: int, size: int, value: int) -> None:
        old, self.control = self.control, value
        if value & DC_SRST and not old & DC_SRST:
            self._stop_transfer()
            self.status = ST_BSY
            self.pending = False
        elif old & DC_SRST and not value & DC_SRST:
            self._soft_reset_done()
        self._update_irq()

    def _signature(self) -> None:
        """What a non-packet device leaves after reset or diagnostics (ATA/ATAPI-6 §9.2, §9.10)."""
        self.regs = [0, 0, 1, 1, 0, 0]  # (data), features, count 1, LBA low 1, mid 0, high 0
        self.device = 0

    def _soft_reset_done(self) -> None:
        self._signature()
        self._stop_transfer()
        self.status = ST_DRDY | ST_DSC
        self.error = 0x01  # diagnostic passed; device 1 absent
        self.pending = False
        self._update_irq()

    # -- addresses --------------------------------------------------------------------------

    def _target(self, ext: bool) -> tuple[int, int] | None:
        """The command's first sector and sector count, or None if it does not fit the disk."""
        r = self.regs
        if ext:
            count = r[REG_COUNT] or 65536
            lba = 0
            for i, reg in enumerate((REG_LBA_LOW, REG_LBA_MID, REG_LBA_HIGH)):
                lba |= (r[reg] & 0xFF) << 8 * i | (r[reg] >> 8) << 8 * (i + 3)
        else:
            count = r[REG_COUNT] & 0xFF or 256
            low, mid, high = r[REG_LBA_LOW] & 0xFF, r[REG_LBA_MID] & 0xFF, r[REG_LBA_HIGH] & 0xFF
            if self.device & DEV_LBA:
                lba = (self.device & 0x0F) << 24 | high << 16 | mid << 8 | low
            else:
                head, sector = self.device & 0x0F, low
                if not 1 <= sector <= self.sectors_per_track or head >= self.heads:
                    return None
                lba = ((high << 8 | mid) * self.heads + head) * self.sectors_per_track + sector - 1
        assert self.disk is not None
        return (lba, count) if lba + count <= self.disk.sectors else None

    def _set_progress(self, lba: int, remaining: int) -> None:
        """Point the address registers at sector `lba` and the count at `remaining` (QEMU's ide_set_sector)."""
        r = self.regs
        if self._ext:
            for i, reg in enumerate((REG_LBA_LOW, REG_LBA_MID, REG_LBA_HIGH)):
                r[reg] = (lba >> 8 * (i + 3) & 0xFF) << 8 | lba >> 8 * i & 0xFF
            r[REG_COUNT] = remaining & 0xFFFF
            return
        if self.device & DEV_LBA:
            low, mid, high, top = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF, lba >> 24 & 0x0F
        else:
            cylinder, rest = divmod(lba, self.heads * self.sectors_per_track)
            top, sector = divmod(rest, self.sectors_per_track)
            low, mid, high = sector + 1, cylinder & 0xFF, cylinder >> 8 & 0xFF
        for reg, value in ((REG_LBA_LOW, low), (REG_LBA_MID, mid), (REG_LBA_HIGH, high), (REG_COUNT, remaining)):
            r[reg] = r[reg] & 0xFF00 | value & 0xFF
        self.device = self.device & 0xF0 | top

    # -- PIO data ---------------------------------------------------------------------------

    def _stop_transfer(self) -> None:
        self._buffer = bytearray()
        self._pos = self._remaining = self._lba = 0
        self._data_in = self._ext = False
        self._block = 1

    def _read_data(self, size: int) -> int:
        if size == 1 or not (self._data_in and self.status & ST_DRQ and self._present()):
            return 0xFF if size == 1 else 0  # as QEMU: bytes float, words outside DRQ read 0
        pos = self._pos
        value = int.from_bytes(self._buffer[pos : pos + size], "little")
        self._pos = pos + size
        if self._pos >= len(self._buffer):
            self.status &= ~ST_DRQ
            if self._remaining:
                self._next_read_block()
        return value

    def _write_data(self, size: int, value: int) -> None:
        if size == 1 or self._data_in or not (self.status & ST_DRQ and self._present()):
            return
        pos = self._pos
        self._buffer[pos : pos + size] = value.to_bytes(size, "little")
        self._pos = pos + size
        if self._pos >= len(self._buffer):
            self.status &= ~ST_DRQ
            self._store_block()

    def _start_data(self, data: bytes | bytearray, data_in: bool) -> None:
        self._buffer, self._pos, self._data_in = bytearray(data), 0, data_in
        self.status = ST_DRDY | ST_DSC | ST_DRQ

    def _next_read_block(self) -> None:
        """PIO data-in: the next DRQ block is in the buffer; tell the host."""
        assert self.disk is not None
        n = min(self._remaining, self._block)
        try:
            data = self.disk.read(self._lba, n)
        except OSError:
            self._fail(ER_UNC)
            return
        self._lba += n
        self._remaining -= n
        self.stats.sectors_read += n
        self._set_progress(self._lba, self._remaining)
        self._start_data(data, data_in=True)
        self._set_pending(True)

    def _store_block(self) -> None:
        """PIO data-out: the host filled the buffer; write it, then ask for more or complete."""
        assert self.disk is not None
        n = len(self._buffer) // SECTOR
        try:
            self.disk.write(self._lba, self._buffer)
            if self._remaining == n and not self.write_cache:
                self.disk.flush()  # write-through when the guest turned the cache off
        except OSError:
            self._fail(ER_ABRT)
            return
        self._lba += n
        self._remaining -= n
        self.stats.sectors_written += n
        self._set_progress(self._lba, self._remaining)
        if self._remaining:
            self._start_data(bytes(min(self._remaining, self._block) * SECTOR), data_in=False)
        else:
            self._stop_transfer()
            self.status = ST_DRDY | ST_DSC
        self._set_pending(True)

    # -- commands ---------------------------------------------------------------------------

    def _command(self, op: int) -> None:
        if not self._present() or self.status & (ST_BSY | ST_DRQ):
            return  # no such device, or mid-command (only SRST gets a drive out of a transfer)
        name = COMMAND_NAMES.get(op, f"{op:#04x}")
        self.stats.commands[name] = self.stats.commands.get(name, 0) + 1
        self.error = 0
        handler = self._handlers.get(op)
        if handler is None:
            self._fail(ER_ABRT)
        else:
            handler(self, op)

    def _complete(self) -> None:
        self.status = ST_DRDY | ST_DSC
        self._set_pending(True)

    def _fail(self, error: int) -> None:
        self._stop_transfer()
        self.status = ST_DRDY | ST_ERR
        self.error = error
        self.stats.errors += 1
        self._set_pending(True)

    def _begin(self, op: int, ext: bool, multiple: bool) -> bool:
        """Set up a sector transfer from the registers; False (the command failed) if it cannot run."""
        if multiple and not self.multiple:
            self._fail(ER_ABRT)  # READ/WRITE MULTIPLE before SET MULTIPLE MODE
            return False
        target = self._target(ext)
        if target is None:
            self._fail(ER_IDNF)
            return False
        self._stop_transfer()
        self._lba, self._remaining = target
        self._ext, self._block = ext, self.multiple if multiple else 1
        return True

    def _cmd_read(self, op: int) -> None:
        if self._begin(op, ext=op in (0x24, 0x29), multiple=op in (0xC4, 0x29)):
            self._next_read_block()

    def _cmd_write(self, op: int) -> None:
        assert self.disk is not None
        if self.disk.readonly:
            self._fail(ER_ABRT)
        elif self._begin(op, ext=op in (0x34, 0x39), multiple=op in (0xC5, 0x39)):
            self._start_data(bytes(min(self._remaining, self._block) * SECTOR), data_in=False)  # no interrupt yet

    def _cmd_verify(self, op: int) -> None:
        if self._target(ext=op == 0x42) is None:
            self._fail(ER_IDNF)
        else:
            self._complete()

    def _cmd_identify(self, op: int) -> None:
        self._stop_transfer()
        self._start_data(self.identify(), data_in=True)
        self._set_pending(True)

    def _cmd_set_multiple(self, op: int) -> None:
        count = self.regs[REG_COUNT] & 0xFF
        if count > MAX_MULTIPLE or count & (count - 1):
            self._fail(ER_ABRT)  # a power of two up to word 47's maximum, or 0 to disable
        else:
            self.multiple = count
            self._complete()

    def _cmd_initialize_parameters(self, op: int) -> None:
        """INITIALIZE DEVICE PARAMETERS: the CHS translation, sectors per track from count, max head from device."""
        assert self.disk is not None
        sectors, heads = self.regs[REG_COUNT] & 0xFF, (self.device & 0x0F) + 1
        if not sectors:
            self._fail(ER_ABRT)
            return
        self.heads, self.sectors_per_track = heads, sectors
        self.cylinders = min(min(self.disk.sectors, CHS_LIMIT) // (heads * sectors), 65535)
        self._complete()

    def _cmd_flush(self, op: int) -> None:
        assert self.disk is not None
        self.stats.flushes += 1
        try:
            self.disk.flush()
        except OSError:
            self._fail(ER_ABRT)
            return
        self._complete()

    def _cmd_set_features(self, op: int) -> None:
        sub = self.regs[REG_FEATURES] & 0xFF
        if sub not in SET_FEATURES_ACCEPTED or sub == SF_TRANSFER_MODE and self.regs[REG_COUNT] & 0xF8 > 0x08:
            self._fail(ER_ABRT)  # unknown subcommand, or a DMA transfer mode
            return
        if sub in (SF_WRITE_CACHE_ON, SF_WRITE_CACHE_OFF):
            self.write_cache = sub == SF_WRITE_CACHE_ON
            if not self.write_cache:
                assert self.disk is not None
                self.disk.flush()
        self._complete()

    def _cmd_diagnostic(self, op: int) -> None:
        self._signature()
        self.error = 0x01
        self._complete()

    def _cmd_nop(self, op: int) -> None:  # RECALIBRATE, STANDBY/IDLE IMMEDIATE: nothing to do
        self._complete()

    def _cmd_check_power_mode(self, op: int) -> None:
        self.regs[REG_COUNT] = 0xFF  # active or idle
        self._complete()

    # -- IDENTIFY DEVICE --------------------------------------------------------------------

    def identify(self) -> bytes:
        """The 512-byte IDENTIFY DEVICE block (ATA8-ACS, "IDENTIFY DEVICE data")."""
        assert self.disk is not None
        total = self.disk.sectors
        w = [0] * 256
        w[0] = 0x0040  # ATA device, fixed (not removable) media
        w[1], w[3], w[6] = default_geometry(total)
        w[47] = 0x8000 | MAX_MULTIPLE
        w[49] = 1 << 9  # LBA supported (no DMA bit: there is no bus master)
        w[50] = 0x4000  # "shall be one"
        w[53] = 0x0003  # words 54-58 and 64-70 are valid
        w[54], w[55], w[56] = self.cylinders, self.heads, self.sectors_per_track
        current = self.cylinders * self.heads * self.sectors_per_track
        w[57], w[58] = current & 0xFFFF, current >> 16 & 0xFFFF
        w[59] = 0x0100 | self.multiple if self.multiple else 0
        lba28 = min(total, LBA28_LIMIT - 1)
        w[60], w[61] = lba28 & 0xFFFF, lba28 >> 16
        w[64] = 0x0003  # PIO modes 3 and 4
        w[65] = w[66] = w[67] = w[68] = 120  # cycle times, ns
        w[80] = 0x01F0  # major versions: ATA/ATAPI-4 to ATA8-ACS
        w[82] = 1 << 14 | 1 << 5  # supported: NOP, write cache
        w[83] = 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10  # FLUSH CACHE EXT, FLUSH CACHE, 48-bit Address
        w[84] = 1 << 14
        w[85] = 1 << 14 | (1 << 5 if self.write_cache else 0)  # enabled: NOP, write cache
        w[86] = 1 << 13 | 1 << 12 | 1 << 10
        w[87] = 1 << 14
        for i in range(4):
            w[100 + i] = total >> 16 * i & 0xFFFF
        data = bytearray(b"".join(v.to_bytes(2, "little") for v in w))
        data[20:40] = ata_string(self.serial, 20)  # words 10-19
        data[46:54] = ata_string(self.firmware, 8)  # words 23-26
        data[54:94] = ata_string(self.model, 40)  # words 27-46
        data[510] = 0xA5  # word 255: integrity signature and checksum (all 512 bytes sum to 0)
        data[511] = -sum(data[:511]) & 0xFF
        return bytes(data)

    _handlers: ClassVar[dict[int, Callable[[AtaController, int], None]]] = {
        0x20: _cmd_read, 0x21: _cmd_read, 0x24: _cmd_read, 0xC4: _cmd_read, 0x29: _cmd_read,
        0x30: _cmd_write, 0x31: _cmd_write, 0x34: _cmd_write, 0xC5: _cmd_write, 0x39: _cmd_write,
        0x40: _cmd_verify, 0x41: _cmd_verify, 0x42: _cmd_verify,
        0xEC: _cmd_identify, 0xC6: _cmd_set_multiple, 0x91: _cmd_initialize_parameters,
        0xE7: _cmd_flush, 0xEA: _cmd_flush, 0xEF: _cmd_set_features, 0x90: _cmd_diagnostic,
        0xE0: _cmd_nop, 0xE1: _cmd_nop, 0xE5: _cmd_check_power_mode,
    } | dict.fromkeys(range(0x10, 0x20), _cmd_nop)  # fmt: skip
