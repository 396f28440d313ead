"""Walking the guest's page tables: linear address to guest-physical address, or a #PF.

x86 paging (Intel SDM vol. 3A ch. 4) translates a linear address by reading a tree of tables
rooted at CR3. Which tree depends on CR0.PG, CR4.PAE and EFER.LMA:

  32-bit paging   (PG, !PAE)        2 levels of 4-byte entries; 4 MiB pages when CR4.PSE (§4.3)
  PAE paging      (PG, PAE, !LMA)   4 PDPTEs, then 2 levels of 8-byte entries; 2 MiB pages (§4.4)
  4-level paging  (PG, PAE, LMA)    PML4, PDPT, PD, PT of 8-byte entries; 1 GiB/2 MiB pages (§4.5)

Each entry grants P (present), R/W and U/S; in 8-byte entries bit 63 is XD (no-execute, when
EFER.NXE). Rights combine across levels: writable only if every level allows it, user only if
every level does (§4.6). Supervisor writes ignore R/W unless CR0.WP. On success the walk sets
the Accessed bit in every entry it used and, for a write, the Dirty bit in the final one, in
guest memory, as the hardware does (§4.8). A failed walk is a page fault whose error code says
why (§4.7): P (protection, not absence), W/R, U/S, RSVD, I/D.

This walker is used by emu's own interrupt delivery on tcg (stack pushes, IDT and TSS reads are
accesses by linear address) and is the source of truth for the shadow MMU.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from ..accel import CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE

PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7
PTE_XD = 1 << 63
ADDR_MASK_64 = 0x000F_FFFF_FFFF_F000  # bits 51:12 (MAXPHYADDR 52 at most)

# #PF error code bits (SDM vol. 3A §4.7, figure 4-12)
PF_P, PF_W, PF_U, PF_RSVD, PF_I = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4


class Access(enum.IntEnum):
    READ = 0
    WRITE = 1
    FETCH = 2


@dataclass(frozen=True)
class PagingMode:
    """The control-register bits that select and qualify the walk."""

    cr0: int
    cr3: int
    cr4: int
    efer: int

    @property
    def enabled(self) -> bool:
        return bool(self.cr0 & CR0_PG)


@dataclass(frozen=True)
class Translation:
    physical: int
    writable: bool
    user: bool
    executable: bool
    page_size: int


class PageFault(Exception):
    """A walk that failed: deliver #PF with CR2 = `linear` and this error code."""

    def __init__(self, linear: int, error_code: int) -> None:
        super().__init__(f"#PF at {linear:#x} error code {error_code:#x}")
        self.linear = linear
        self.error_code = error_code


class PhysicalMemory(Protocol):
    """What a walker needs of guest-physical memory (emu.memory.GuestMemory provides it)."""

    def read_u32(self, address: int) -> int: ...
    def read_u64(self, address: int) -> int: ...
    def write_u32(self, address: int, value: int) -> None: ...
    def write_u64(self, address: int, value: int) -> None: ...


def walk_page_tables(
    mem: PhysicalMemory, mode: PagingMode, linear: int, access: Access, user: bool, set_ad: bool = True
) -> Translation:
    """Translate `linear` for an access at user (CPL3) or supervisor privilege, or raise PageFault."""
    if not mode.enabled:
        return Translation(linear & 0xFFFF_FFFF, True, True, True, 4096)
    write = access is Access.WRITE
    fetch = access is Access.FETCH
    nxe = bool(mode.efer & EFER_NXE)
    base_code = (PF_W if write else 0) | (PF_U if user else 0) | (PF_I if fetch and nxe else 0)

    if not mode.cr4 & CR4_PAE:
        levels = [(22, 0x3FF), (12, 0x3FF)]
        entry_size, table = 4, mode.cr3 & 0xFFFF_F000
        linear &= 0xFFFF_FFFF
    elif mode.efer & EFER_LMA:
        levels = [(39, 0x1FF), (30, 0x1FF), (21, 0x1FF), (12, 0x1FF)]
        entry_size, table = 8, mode.cr3 & ADDR_MASK_64
    else:
        linear &= 0xFFFF_FFFF
        pdpte_addr = (mode.cr3 & 0xFFFF_FFE0) + ((linear >> 30) & 3) * 8
        pdpte = mem.read_u64(pdpte_addr)
        if not pdpte & PTE_P:
            raise PageFault(linear, base_code)
        levels = [(21, 0x1FF), (12, 0x1FF)]
        entry_size, table = 8, pdpte & ADDR_MASK_64

    writable = user_ok = executable = True
    used: list[tuple[int, int]] = []  # (entry address, entry value)
    for depth, (shift, mask) in enumerate(levels):
        addr = table + ((linear >> shift) & mask) * entry_size
        entry = mem.read_u64(addr) if entry_size == 8 else mem.read_u32(addr)
        if not entry & PTE_P:
            raise PageFault(linear, base_code)
        used.append((addr, entry))
        writable &= bool(entry & PTE_RW)
        user_ok &= bool(entry & PTE_US)
        if entry_size == 8 and nxe and entry & PTE_XD:
            executable = False
        last = depth == len(levels) - 1
        large = not last and entry & PTE_PS and _large_pages_allowed(mode, shift, entry_size)
        if last or large:
            page_size = 1 << shift
            if entry_size == 4 and large:  # 4 MiB page: bits 31:22, plus PSE-36 bits 20:13
                frame = (entry & 0xFFC0_0000) | ((entry >> 13) & 0xFF) << 32
            else:
                frame = entry & ADDR_MASK_64 & ~(page_size - 1)
            break
        table = entry & (ADDR_MASK_64 if entry_size == 8 else 0xFFFF_F000)

    denied = (
        (user and not user_ok)
        or (write and not writable and (user or mode.cr0 & CR0_WP))
        or (fetch and not executable)
    )
    if denied:
        raise PageFault(linear, base_code | PF_P)
    if set_ad:
        _set_accessed_dirty(mem, used, entry_size, write)
    return Translation(frame | (linear & (page_size - 1)), writable, user_ok, executable, page_size)


def _large_pages_allowed(mode: PagingMode, shift: int, entry_size: int) -> bool:
    if entry_size == 4:
        return bool(mode.cr4 & CR4_PSE)
    return shift in (21, 30)  # 2 MiB PDEs always; 1 GiB PDPTEs in 4-level paging


def _set_accessed_dirty(mem: PhysicalMemory, used: list[tuple[int, int]], size: int, write: bool) -> None:
    store = mem.write_u64 if size == 8 else mem.write_u32
    for i, (addr, entry) in enumerate(used):
        new = entry | PTE_A
        if write and i == len(used) - 1:
            new |= PTE_D
        if new != entry:
            store(addr, new)
