"""Every mapping of a page-table tree: what the monitor's `info tlb` and `info mem` print.

emu.mmu.walk answers one linear address at a time, as the CPU does on a TLB miss. A debugger
asks the other question: what does this address space map, all of it? That is a depth-first
walk of the whole tree from CR3 (Intel SDM vol. 3A §4.3-§4.5), visiting only present entries,
stopping at a large page (PS=1 in a PDPTE or PDE) or at a page-table entry. The rights of a
page are those of every level together (§4.6): writable only if R/W is set at every level,
user only if U/S is, no-execute if XD is set at any level (with EFER.NXE). QEMU's
`info tlb` prints each leaf entry's own bits and `info mem` the combined rights, merged into
ranges (target/i386/monitor.c: tlb_info_64, mem_info_64); emu's monitor does the same from this.

The walk reads guest memory and changes nothing: no Accessed or Dirty bit is set, as a
debugger's look must not change what it looks at. It is bounded: a guest can point every entry
of every table at the same table, which would make 512^4 leaves, so it stops after `limit`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ..accel import CR0_PG, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE
from .walk import PHYS_MASK, PTE_P, PTE_PS, PTE_RW, PTE_US, PTE_XD, PhysicalMemory, _load

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class PageMapping(NamedTuple):
    linear: int
    physical: int
    size: int  # 4 KiB, 2 MiB (4 MiB with 32-bit paging), 1 GiB
    entry: int  # the leaf entry as it is in memory
    writable: bool  # R/W at every level
    user: bool  # U/S at every level
    executable: bool  # no XD at any level (or EFER.NXE clear)


def _canonical(linear: int) -> int:
    return linear - (1 << 48) if linear & (1 << 47) else linear  # bits 63:48 copy bit 47


def page_mappings(mem: PhysicalMemory, cr0: int, cr3: int, cr4: int, efer: int,
                  limit: int = 1 << 20) -> Iterator[PageMapping]:  # fmt: skip
    """Every present page of the address space CR3 names, in linear order (at most `limit`).
    Nothing when paging is off: then linear is physical."""
    if not cr0 & CR0_PG:
        return
    nx = bool(efer & EFER_NXE)
    count = 0

    def leaf(linear: int, entry: int, size: int, rights: int, xd: bool) -> PageMapping:
        physical = entry & PHYS_MASK & ~(size - 1) if size > 4 * KiB else entry & PHYS_MASK
        if size == 4 * MiB:  # 32-bit paging's PSE-36: bits 20:13 are physical bits 39:32
            physical = (entry & 0xFFC0_0000) | ((entry >> 13) & 0xFF) << 32
        return PageMapping(linear, physical, size, entry, bool(rights & PTE_RW), bool(rights & PTE_US),
                           not (nx and xd))  # fmt: skip

    if efer & EFER_LMA:  # 4-level paging (§4.5): PML4 -> PDPT -> PD -> PT
        sizes = (512 * GiB, GiB, 2 * MiB, 4 * KiB)

        def walk64(table: int, level: int, base: int, rights: int, xd: bool) -> Iterator[PageMapping]:
            nonlocal count
            for index in range(512):
                entry = _load(mem, table + 8 * index, 8)
                if not entry & PTE_P:
                    continue
                linear = base + index * sizes[level]
                if level == 0:
                    linear = _canonical(linear) & 0xFFFF_FFFF_FFFF_FFFF
                r, x = rights & entry, xd or bool(entry & PTE_XD)
                if level == 3 or (level in (1, 2) and entry & PTE_PS):
                    if count >= limit:
                        return
                    count += 1
                    yield leaf(linear, entry, sizes[level], r, x)
                else:
                    yield from walk64(entry & PHYS_MASK, level + 1, linear, r, x)

        yield from walk64(cr3 & PHYS_MASK, 0, 0, PTE_RW | PTE_US, False)
        return
    if cr4 & CR4_PAE:  # PAE (§4.4): 4 PDPTEs -> PD -> PT
        for i in range(4):
            pdpte = _load(mem, (cr3 & 0xFFFF_FFE0) + 8 * i, 8)
            if not pdpte & PTE_P:
                continue
            directory = pdpte & PHYS_MASK
            for j in range(512):
                pde = _load(mem, directory + 8 * j, 8)
                if not pde & PTE_P:
                    continue
                linear = i * GiB + j * 2 * MiB
                if pde & PTE_PS:
                    if count >= limit:
                        return
                    count += 1
                    yield leaf(linear, pde, 2 * MiB, pde, bool(pde & PTE_XD))
                    continue
                for k in range(512):
                    pte = _load(mem, (pde & PHYS_MASK) + 8 * k, 8)
                    if pte & PTE_P:
                        if count >= limit:
                            return
                        count += 1
                        yield leaf(linear + k * 4 * KiB, pte, 4 * KiB, pde & pte, bool((pde | pte) & PTE_XD))
        return
    for i in range(1024):  # 32-bit paging (§4.3): PD -> PT, or 4 MiB pages with CR4.PSE
        pde = _load(mem, (cr3 & 0xFFFF_F000) + 4 * i, 4)
        if not pde & PTE_P:
            continue
        if pde & PTE_PS and cr4 & CR4_PSE:
            if count >= limit:
                return
            count += 1
            yield leaf(i * 4 * MiB, pde, 4 * MiB, pde, False)
            continue
        for k in range(1024):
            pte = _load(mem, (pde & 0xFFFF_F000) + 4 * k, 4)
            if pte & PTE_P:
                if count >= limit:
                    return
                count += 1
                yield leaf(i * 4 * MiB + k * 4 * KiB, pte, 4 * KiB, pde & pte, False)


class MappedRange(NamedTuple):
    start: int
    end: int  # exclusive
    user: bool
    writable: bool
    executable: bool


def merged_ranges(mappings: Iterator[PageMapping]) -> list[MappedRange]:
    """Linearly contiguous pages with the same rights as one range (QEMU's `info mem`)."""
    out: list[MappedRange] = []
    for m in mappings:
        rights = (m.user, m.writable, m.executable)
        last = out[-1] if out else None
        if last is not None and last.end == m.linear and (last.user, last.writable, last.executable) == rights:
            out[-1] = last._replace(end=m.linear + m.size)
        else:
            out.append(MappedRange(m.linear, m.linear + m.size, *rights))
    return out
