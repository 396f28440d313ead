"""Walking the guest's page tables: linear address to guest-physical address, or a #PF.

x86 paging (Intel SDM vol. 3A ch. 4) translates a linear address by reading a tree of tables
rooted at CR3. Which tree depends on CR0.PG, CR4.PAE and EFER.LMA:

  32-bit paging   (PG, !PAE)        2 levels of 4-byte entries; 4 MiB pages when CR4.PSE (§4.3)
  PAE paging      (PG, PAE, !LMA)   4 PDPTEs, then 2 levels of 8-byte entries; 2 MiB pages (§4.4)
  4-level paging  (PG, PAE, LMA)    PML4, PDPT, PD, PT of 8-byte entries; 1 GiB/2 MiB pages (§4.5)

Each entry grants P (present), R/W and U/S; in 8-byte entries bit 63 is XD (no-execute, when
EFER.NXE). Rights combine across levels: writable only if every level allows it, user only if
every level does (§4.6). Supervisor writes ignore R/W unless CR0.WP; with CR4.SMEP the
supervisor may not fetch from user pages, with CR4.SMAP it may not read or write them unless
RFLAGS.AC is set. An entry with a reserved bit set (address bits at or above MAXPHYADDR, XD
without EFER.NXE, PS where no large page can be) faults with RSVD (§4.7). On success the walk
sets the Accessed bit in every entry it used and, for a write, the Dirty bit in the final one,
in guest memory, as the hardware does (§4.8). A failed walk is a page fault whose error code
says why (§4.7): P (protection, not absence), W/R, U/S, RSVD, I/D.

A table outside RAM reads as zeros, as unassigned memory does in emu (and QEMU, and KVM's own
walker): not present, so such a walk ends in a #PF, never in a host error.

This walker is the single source of truth for the tcg MMU (emu.mmu.shadow caches its results)
and serves emu's own accesses by linear address (interrupt delivery).
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Protocol

from ..accel import CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE, RFLAGS_AC

PTE_P, PTE_RW, PTE_US, PTE_A, PTE_D, PTE_PS, PTE_G = 1 << 0, 1 << 1, 1 << 2, 1 << 5, 1 << 6, 1 << 7, 1 << 8
PTE_XD = 1 << 63
CR4_SMEP, CR4_SMAP = 1 << 20, 1 << 21
MAXPHYADDR = 40  # emu's CPU model (CPUID 0x80000008), as Unicorn's Haswell model has it

# #PF error code bits (SDM vol. 3A §4.7, figure 4-12)
PF_P, PF_W, PF_U, PF_RSVD, PF_I = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4


class Access(enum.IntEnum):
    READ = 0
    WRITE = 1
    FETCH = 2


class PagingMode(NamedTuple):
    """The control-register bits that select and qualify the walk (a NamedTuple: immutable, and
    built once per shadow miss, several times cheaper than a frozen dataclass)."""

    cr0: int
    cr3: int
    cr4: int
    efer: int
    rflags: int = 0  # only AC matters (SMAP)

    @property
    def enabled(self) -> bool:
        return bool(self.cr0 & CR0_PG)


# Enum members are slow to look up on CPython 3.11 (a class attribute through the metaclass);
# the walk runs once per shadow miss, so it compares against these module-level aliases.
_WRITE, _FETCH = Access.WRITE, Access.FETCH


class Translation(NamedTuple):
    physical: int
    writable: bool  # for the privilege the walk was made at (CR0.WP applied)
    user: bool  # the page is a user page (U/S=1 at every level)
    executable: bool
    page_size: int
    dirty: bool  # the leaf's D bit (after this walk)
    global_: bool  # G in the leaf (CR4.PGE): survives CR3 loads on hardware
    tables: tuple[int, ...]  # guest-physical frames of the tables this walk read
    ad_writes: int  # how many A/D updates this walk wrote back


class PageFault(Exception):
    """A walk that failed: deliver #PF with CR2 = `linear` and this error code."""

    def __init__(self, linear: int, error_code: int, tables: tuple[int, ...] = ()) -> None:
        super().__init__(f"#PF at {linear:#x} error code {error_code:#x}")
        self.linear = linear
        self.error_code = error_code
        self.tables = tables


class PhysicalMemory(Protocol):
    """What a walker needs of guest-physical memory (emu.memory.GuestMemory provides it)."""

    def read_u32(self, address: int) -> int: ...
    def read_u64(self, address: int) -> int: ...
    def write_u32(self, address: int, value: int) -> None: ...
    def write_u64(self, address: int, value: int) -> None: ...


def _load(mem: PhysicalMemory, address: int, size: int) -> int:
    try:
        return mem.read_u64(address) if size == 8 else mem.read_u32(address)
    except Exception:  # noqa: BLE001 - unassigned memory reads as zeros (emu.devices.bus)
        return 0


PHYS_MASK = ((1 << MAXPHYADDR) - 1) & ~0xFFF
RSVD_HIGH = ((1 << 52) - 1) & ~((1 << MAXPHYADDR) - 1)  # bits 51:MAXPHYADDR


def walk_page_tables(
    mem: PhysicalMemory, mode: PagingMode, linear: int, access: Access, user: bool, set_ad: bool = True
) -> Translation:
    """Translate `linear` for an access at user (CPL3) or supervisor privilege, or raise PageFault."""
    if not mode.cr0 & CR0_PG:
        return Translation(linear & 0xFFFF_FFFF, True, True, True, 4096, True, False, (), 0)
    write = access is _WRITE
    fetch = access is _FETCH
    nxe = bool(mode.efer & EFER_NXE) and bool(mode.cr4 & CR4_PAE)  # XD exists in 8-byte entries only
    code = (PF_W if write else 0) | (PF_U if user else 0) | (PF_I if fetch and (nxe or mode.cr4 & CR4_SMEP) else 0)
    tables: list[int] = []
    used: list[tuple[int, int]] = []  # (entry address, entry value), to set A/D

    if not mode.cr4 & CR4_PAE:  # 32-bit paging
        linear &= 0xFFFF_FFFF
        levels, size, table = ((22, 0x3FF), (12, 0x3FF)), 4, mode.cr3 & 0xFFFF_F000
        rsvd_xd = 0
    elif mode.efer & EFER_LMA:  # 4-level paging
        levels, size, table = ((39, 0x1FF), (30, 0x1FF), (21, 0x1FF), (12, 0x1FF)), 8, mode.cr3 & PHYS_MASK
        rsvd_xd = 0 if nxe else PTE_XD
    else:  # PAE: the PDPTE selected by bits 31:30, then a page directory and a page table
        linear &= 0xFFFF_FFFF
        tables.append(mode.cr3 & 0xFFFF_F000)
        pdpte = _load(mem, (mode.cr3 & 0xFFFF_FFE0) + ((linear >> 30) & 3) * 8, 8)
        if not pdpte & PTE_P:
            raise PageFault(linear, code, tuple(tables))
        # Bits 2:1 and 8:5 are reserved too, but a CPU checks those when MOV CR3 loads the
        # PDPTEs (#GP), not during a walk; like QEMU, the walk checks address bits and XD.
        if pdpte & (RSVD_HIGH | PTE_XD):
            raise PageFault(linear, code | PF_P | PF_RSVD, tuple(tables))
        levels, size, table = ((21, 0x1FF), (12, 0x1FF)), 8, pdpte & PHYS_MASK
        rsvd_xd = 0 if nxe else PTE_XD

    writable = user_page = executable = True
    for depth, (shift, mask) in enumerate(levels):
        tables.append(table)
        addr = table + ((linear >> shift) & mask) * size
        entry = _load(mem, addr, size)
        if not entry & PTE_P:
            raise PageFault(linear, code, tuple(tables))
        last = depth == len(levels) - 1
        large = not last and bool(entry & PTE_PS)
        if size == 8:
            reserved = RSVD_HIGH | rsvd_xd
            if large and (depth == 0 and len(levels) == 4):
                reserved |= PTE_PS  # no large pages in a PML4E
            elif large:
                reserved |= ((1 << shift) - 1) & ~0x1FFF  # a large frame's low address bits
            if entry & reserved:
                raise PageFault(linear, code | PF_P | PF_RSVD, tuple(tables))
        elif large:
            if not mode.cr4 & CR4_PSE:
                large = False  # PS is ignored in a PDE without CR4.PSE
            elif entry & (1 << 21):  # bit 21 of a 4 MiB PDE is reserved (PSE-36 uses 20:13)
                raise PageFault(linear, code | PF_P | PF_RSVD, tuple(tables))
        used.append((addr, entry))
        writable &= bool(entry & PTE_RW)
        user_page &= bool(entry & PTE_US)
        if size == 8 and nxe and entry & PTE_XD:
            executable = False
        if last or large:
            page_size = 1 << shift
            if size == 4 and large:  # 4 MiB page: bits 31:22, plus PSE-36 bits 20:13
                frame = (entry & 0xFFC0_0000) | ((entry >> 13) & 0xFF) << 32
            else:
                frame = entry & PHYS_MASK & ~(page_size - 1)
            break
        table = entry & (PHYS_MASK if size == 8 else 0xFFFF_F000)

    smap = mode.cr4 & CR4_SMAP and not mode.rflags & RFLAGS_AC
    denied = (
        (user and not user_page)
        or (write and not writable and (user or mode.cr0 & CR0_WP))
        or (fetch and not executable)
        or (not user and user_page and fetch and mode.cr4 & CR4_SMEP)
        or (not user and user_page and not fetch and smap)
    )
    if denied:
        raise PageFault(linear, code | PF_P, tuple(tables))
    leaf = used[-1][1]
    ad = _set_accessed_dirty(mem, used, size, write) if set_ad else 0
    effective_writable = writable or (not user and not mode.cr0 & CR0_WP)
    return Translation(frame | (linear & (page_size - 1)), effective_writable, user_page, executable, page_size,
                       bool(leaf & PTE_D) or write, bool(leaf & PTE_G), tuple(tables), ad)  # fmt: skip


def _set_accessed_dirty(mem: PhysicalMemory, used: list[tuple[int, int]], size: int, write: bool) -> int:
    store = mem.write_u64 if size == 8 else mem.write_u32
    writes = 0
    for i, (addr, entry) in enumerate(used):
        new = entry | PTE_A
        if write and i == len(used) - 1:
            new |= PTE_D
        if new != entry:
            try:
                store(addr, new)
                writes += 1
            except Exception:  # noqa: BLE001 - a table outside RAM: the write goes nowhere
                pass
    return writes
