"""QEMU's isa-debug-exit device: a port that ends the emulator with a status the guest picks.

QEMU hw/misc/debugexit.c (properties iobase=0x501, iosize=2 by default; emu uses iobase=0xf4,
iosize=4, the values test harnesses commonly pass). A write of value V, of whatever size
the guest used, exits the emulator with status (V << 1) | 1, so a guest can never produce
status 0 and a clean exit cannot be confused with a guest-chosen one. A host process status
keeps only the low 8 bits, so writing 0x10 gives status 0x21 = 33. Reads return all ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .interfaces import SystemControl

DEBUG_EXIT_BASE = 0xF4
DEBUG_EXIT_SIZE = 4


@dataclass
class DebugExit:
    """isa-debug-exit: register it at DEBUG_EXIT_BASE with length DEBUG_EXIT_SIZE."""

    system: SystemControl
    max_access_size: ClassVar[int] = 4

    def io_read(self, offset: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.system.request_exit((value << 1) | 1)
