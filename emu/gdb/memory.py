"""Guest memory as a debugger reads and writes it: by linear address, through the page tables.

gdb's `m`/`M`/`X` packets name addresses as the program sees them. For an x86 system stub that
is the linear address (QEMU: cpu_memory_rw_debug), translated through the guest's page tables
from the vCPU's CR3 by emu's own walker (emu.mmu.walk) with no Accessed/Dirty bits set:
looking must not change what is looked at. Segmentation is not applied, as in QEMU. A write
goes to the physical page the walk found whatever its R/W bit says (a debugger may patch
read-only code), and through GuestMemory.write, whose listeners drop what the accelerator
cached from those bytes (tcg's translated code: TcgAccelerator.notify_host_write).

Reads of physical addresses that are neither RAM nor ROM return zeros, as the monitor's `x`
does (emu.monitor.memdump); device registers are never read (a read can have side effects).
Writes outside RAM are refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..accel import EFER_LMA, RFLAGS_AC, CpuState
from ..mmu.walk import Access, PageFault, PagingMode, walk_page_tables
from ..monitor.memdump import read_physical

if TYPE_CHECKING:
    from ..machine import Machine

PAGE = 0x1000


class AccessError(Exception):
    """A linear address with no mapping (or no RAM behind it, for a write)."""


def _pages(state: CpuState, linear: int, length: int) -> Iterator[tuple[int, int]]:
    width = 1 << 64 if state.mode in ("long", "compat") else 1 << 32
    while length > 0:
        linear %= width
        chunk = min(length, PAGE - (linear & (PAGE - 1)))
        yield linear, chunk
        linear, length = linear + chunk, length - chunk


def _physical(machine: Machine, state: CpuState, linear: int) -> int:
    if state.efer & EFER_LMA and not -(1 << 47) <= (linear ^ (1 << 63)) - (1 << 63) < 1 << 47:
        raise AccessError(f"linear address {linear:#x} is not canonical")
    # RFLAGS.AC set: a supervisor's look at a user page is not refused by SMAP
    mode = PagingMode(state.cr0, state.cr3, state.cr4, state.efer, RFLAGS_AC)
    try:
        return walk_page_tables(machine.memory, mode, linear, Access.READ, user=False, set_ad=False).physical
    except PageFault:
        raise AccessError(f"linear address {linear:#x} is not mapped") from None


def read(machine: Machine, state: CpuState, linear: int, length: int) -> bytes:
    out = bytearray()
    for address, chunk in _pages(state, linear, length):
        out += read_physical(machine, _physical(machine, state, address), chunk)
    return bytes(out)


def write(machine: Machine, state: CpuState, linear: int, data: bytes) -> None:
    """All or nothing: every page is translated and checked before a byte is written."""
    pieces, offset = [], 0
    for address, chunk in _pages(state, linear, len(data)):
        physical = _physical(machine, state, address)
        if not machine.memory.contains(physical, chunk):
            raise AccessError(f"linear address {address:#x} (physical {physical:#x}) is not RAM")
        pieces.append((physical, data[offset : offset + chunk]))
        offset += chunk
    for physical, piece in pieces:
        machine.memory.write(physical, piece)
