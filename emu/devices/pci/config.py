"""One PCI function's configuration space (PCI Local Bus Specification 3.0, §6.1-6.2).

The first 64 bytes are the type 0 header: IDs, command/status, class code, header type, the
six BARs at 0x10-0x24, subsystem IDs, and interrupt line/pin at 0x3C/0x3D. Bytes the function
does not implement read as 0 and ignore writes; read-only fields ignore writes; a BAR keeps
only the address bits above its size, which is how sizing works (§6.2.5.1): software writes all
ones, reads back the mask of writable bits, and the size is its two's complement. Bit 0 of a
BAR tells IO (1) from memory (0); a 64-bit memory BAR (type 10b in bits 2:1) takes two slots.

The command register's IO Space and Memory Space bits switch the function's decoders on;
`on_bars_changed` lets the bus move the function's windows when those bits or a BAR change.
INTx is level-triggered and active while the function holds it (§2.2.6), and the Interrupt
Disable bit (command bit 10) masks it; Interrupt Status (status bit 3) shows it regardless.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION, CLASS_PROG, HEADER_TYPE = 0x08, 0x09, 0x0E
BAR0, SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID, CAPABILITIES = 0x10, 0x2C, 0x2E, 0x34
INTERRUPT_LINE, INTERRUPT_PIN = 0x3C, 0x3D
COMMAND_IO, COMMAND_MEMORY, COMMAND_MASTER, COMMAND_INTX_DISABLE = 0x1, 0x2, 0x4, 0x400
STATUS_INTERRUPT, STATUS_CAPABILITIES = 0x8, 0x10
COMMAND_WRITABLE = COMMAND_IO | COMMAND_MEMORY | COMMAND_MASTER | 0x40 | 0x100 | COMMAND_INTX_DISABLE
HEADER_MULTIFUNCTION = 0x80


class BarKind(enum.Enum):
    IO = "io"
    MEMORY32 = "mem32"
    MEMORY64 = "mem64"


@dataclass
class Bar:
    """A window the function decodes: `size` bytes (a power of two), placed by software."""

    kind: BarKind
    size: int
    prefetchable: bool = False
    address: int = 0

    def __post_init__(self) -> None:
        if self.size & (self.size - 1) or self.size < (4 if self.kind is BarKind.IO else 16):
            raise ValueError(f"BAR size {self.size:#x} is not a power of two of the minimum size")

    @property
    def low_bits(self) -> int:
        """The read-only bits 3:0 (memory) or 1:0 (IO) that say what kind of BAR it is."""
        if self.kind is BarKind.IO:
            return 0x1
        return (0x4 if self.kind is BarKind.MEMORY64 else 0) | (0x8 if self.prefetchable else 0)


@dataclass
class PciFunction:
    """A function's configuration space. Subclasses (devices) fill the IDs and BARs."""

    vendor_id: int
    device_id: int
    class_code: int  # base class << 16 | subclass << 8 | programming interface
    revision: int = 0
    header_type: int = 0
    subsystem_vendor_id: int = 0
    subsystem_id: int = 0
    interrupt_pin: int = 0  # 0 none, 1 INTA# ... 4 INTD#
    bars: dict[int, Bar] = field(default_factory=dict)  # BAR index (0-5) -> Bar
    on_bars_changed: Callable[[PciFunction], None] | None = None
    on_intx_changed: Callable[[PciFunction], None] | None = None
    space: bytearray = field(default_factory=lambda: bytearray(256), repr=False)
    intx_level: bool = False

    def __post_init__(self) -> None:
        struct.pack_into("<HH", self.space, VENDOR_ID, self.vendor_id, self.device_id)
        struct.pack_into("<I", self.space, REVISION, self.revision | self.class_code << 8)
        self.space[HEADER_TYPE] = self.header_type
        struct.pack_into("<HH", self.space, SUBSYSTEM_VENDOR_ID, self.subsystem_vendor_id, self.subsystem_id)
        self.space[INTERRUPT_PIN] = self.interrupt_pin
        for index, bar in self.bars.items():
            if index + (bar.kind is BarKind.MEMORY64) > 5:
                raise ValueError(f"BAR {index} does not fit")
            self._store_bar(index, bar)

    # --- config space access --------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.space[offset : offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        """A write of `size` bytes at `offset`, applied byte by byte through the write rules."""
        bars_before = self._decoded()
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)
        if self._decoded() != bars_before and self.on_bars_changed is not None:
            self.on_bars_changed(self)

    def _write_byte(self, offset: int, byte: int) -> None:
        if offset in (COMMAND, COMMAND + 1):
            mask = (COMMAND_WRITABLE >> (8 * (offset - COMMAND))) & 0xFF
            self.space[offset] = (self.space[offset] & ~mask) | (byte & mask)
            if offset == COMMAND + 1:
                self._update_intx()
        elif offset in (STATUS, STATUS + 1):
            self.space[offset] &= ~byte  # the error bits are write-one-to-clear; the rest read-only
            if offset == STATUS:
                self.space[offset] |= STATUS_INTERRUPT if self.intx_level else 0
                self.space[offset] |= STATUS_CAPABILITIES if self.space[CAPABILITIES] else 0
        elif BAR0 <= offset < BAR0 + 24:
            self._write_bar_byte(offset, byte)
        elif offset == INTERRUPT_LINE or self.writable(offset):
            self.space[offset] = byte

    def reset(self) -> None:
        """RST# (PCI 3.0 §4.3.2, "Reset"): decoders and bus mastering off, BARs unassigned, no
        interrupt line; what firmware finds at power-on. Subclasses add their own registers."""
        self.config_write(COMMAND, 2, 0)  # unmaps the windows (on_bars_changed) and masks nothing
        for index, bar in self.bars.items():
            bar.address = 0
            self._store_bar(index, bar)
        self.space[INTERRUPT_LINE] = 0

    def writable(self, offset: int) -> bool:
        """Device-specific registers a subclass lets software write (default: none)."""
        return False

    def bar_io(self, index: int):  # -> IoDevice | None
        """What serves accesses to BAR `index`'s window (offsets from the BAR's base)."""
        return

    # --- BARs -----------------------------------------------------------------------------
    def _write_bar_byte(self, offset: int, byte: int) -> None:
        slot, byte_index = divmod(offset - BAR0, 4)
        index, bar, high = self._bar_at(slot)
        if bar is None:
            return  # not implemented: reads as 0
        raw = bytearray(self.space[BAR0 + 4 * slot : BAR0 + 4 * slot + 4])
        raw[byte_index] = byte
        value = int.from_bytes(raw, "little")
        address = bar.address
        if high:
            address = (address & 0xFFFFFFFF) | (value << 32)
        else:
            address = (address & ~0xFFFFFFFF) | (value & ~0xF if bar.kind is not BarKind.IO else value & ~0x3)
        # An IO BAR keeps 32 address bits as QEMU's do (x86 decodes 16: the bus ignores a window above)
        bar.address = address & ~(bar.size - 1) & (0xFFFFFFFF if bar.kind is BarKind.IO else (1 << 64) - 1)
        self._store_bar(index, bar)

    def _bar_at(self, slot: int) -> tuple[int, Bar | None, bool]:
        if slot in self.bars:
            return slot, self.bars[slot], False
        below = self.bars.get(slot - 1)
        if below is not None and below.kind is BarKind.MEMORY64:
            return slot - 1, below, True
        return slot, None, False

    def _store_bar(self, index: int, bar: Bar) -> None:
        struct.pack_into("<I", self.space, BAR0 + 4 * index, (bar.address & 0xFFFFFFFF) | bar.low_bits)
        if bar.kind is BarKind.MEMORY64:
            struct.pack_into("<I", self.space, BAR0 + 4 * index + 4, bar.address >> 32)

    @property
    def command(self) -> int:
        return struct.unpack_from("<H", self.space, COMMAND)[0]

    def decoded_bars(self) -> list[tuple[int, Bar]]:
        """The BARs the command register enables, with the addresses software gave them."""
        command = self.command
        return [(i, bar) for i, bar in sorted(self.bars.items())
                if command & (COMMAND_IO if bar.kind is BarKind.IO else COMMAND_MEMORY)]  # fmt: skip

    def _decoded(self) -> list[tuple[int, int]]:
        return [(i, bar.address) for i, bar in self.decoded_bars()]

    # --- INTx -----------------------------------------------------------------------------
    def set_intx(self, level: bool) -> None:
        """The function asserts (True) or releases its interrupt pin."""
        self.intx_level = level
        self._update_intx()

    def _update_intx(self) -> None:
        if self.intx_level:
            self.space[STATUS] |= STATUS_INTERRUPT
        else:
            self.space[STATUS] &= ~STATUS_INTERRUPT
        if self.on_intx_changed is not None:
            self.on_intx_changed(self)

    @property
    def intx_asserted(self) -> bool:
        """The level on the function's pin: held, and not masked by Interrupt Disable."""
        return self.intx_level and not self.command & COMMAND_INTX_DISABLE
