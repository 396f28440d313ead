"""Memory accesses by linear address, as the CPU itself makes them.

Delivering an interrupt reads the IDT, the GDT and the TSS and pushes a frame on a stack: all
accesses by *linear* address (SDM vol. 3A §3.3), translated by paging when CR0.PG is set, with
supervisor privilege for the implicit table reads (§4.6: "implicit supervisor-mode accesses").
An access that crosses a page boundary is translated page by page. A `fast_walk` (tcg: the C
walker of emu.tcg.fill_cache) may answer a page first; where it does not, emu.mmu.walk does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..memory import GuestMemory
from .walk import Access, PagingMode, walk_page_tables


@dataclass
class LinearMemory:
    """Guest memory by linear address. `set_ad=False` for a look that is not the CPU's own
    access (a debugger's, a tracer's): the walk then leaves the Accessed/Dirty flags alone."""

    memory: GuestMemory
    mode: PagingMode
    set_ad: bool = True
    fast_walk: Callable[[PagingMode, int, Access, bool], int | None] | None = None  # the physical address, or None

    def _pieces(self, linear: int, length: int, access: Access, user: bool) -> list[tuple[int, int]]:
        pieces = []
        while length > 0:
            chunk = min(length, 4096 - (linear & 0xFFF))
            physical = self.fast_walk(self.mode, linear, access, user) if self.fast_walk and self.set_ad else None
            if physical is None:
                physical = walk_page_tables(self.memory, self.mode, linear, access, user, self.set_ad).physical
            pieces.append((physical, chunk))
            linear += chunk
            length -= chunk
        return pieces

    def read(self, linear: int, length: int, user: bool = False) -> bytes:
        return b"".join(self.memory.read(p, n) for p, n in self._pieces(linear, length, Access.READ, user))

    def write(self, linear: int, data: bytes, user: bool = False) -> None:
        offset = 0
        for p, n in self._pieces(linear, len(data), Access.WRITE, user):
            self.memory.write(p, data[offset : offset + n])
            offset += n

    def read_u16(self, linear: int) -> int:
        return struct.unpack("<H", self.read(linear, 2))[0]

    def read_u32(self, linear: int) -> int:
        return struct.unpack("<I", self.read(linear, 4))[0]

    def read_u64(self, linear: int) -> int:
        return struct.unpack("<Q", self.read(linear, 8))[0]
