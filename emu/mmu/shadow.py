"""The shadow page table: translations emu has handed out, kept coherent with the guest's.

A hypervisor without EPT/NPT cannot let the hardware walk the guest's page tables, so it keeps
its own ("shadow") tables of guest-virtual to host-physical translations and loads those into
the MMU instead (KVM's arch/x86/kvm/mmu, "shadow paging"; Intel SDM vol. 3C §32 on why EPT
made this optional). emu's software CPU has the same structure: Unicorn's TLB asks for each
missing translation (UC_HOOK_TLB_FILL), emu answers from this table, and only on a miss here
does it walk the guest's tables (emu.mmu.walk, the single source of truth).

Keeping a cache of the guest's page tables coherent is the whole difficulty. The trick is the
one shadow-paging hypervisors use: **write-protect the guest's page-table pages**. Every frame a
cached translation was derived from is handed to Unicorn without write permission, so the
guest's next store to it comes back as a fill for a write: a *page-table write trap*. emu then
drops every translation that depended on that frame and lets the store proceed. Because Unicorn
may now cache a writable mapping of that frame, translations walked through it are not cached
again until the next full TLB flush (a CR3 load, a paging-mode change, or one emu requests).

Other rules, all from the SDM: a translation is cached per address space (the CR3 it was walked
under) and privilege (user or supervisor); a change of CR0/CR4/EFER paging bits drops all of it;
A and D bits are set by the walker, and write permission is granted only once D is set, so the
first write to a page still reaches the walker and sets D (§4.8).

A `front` (emu.tcg.fill_cache, in C) may repeat answers given from this table without entering
Python; the table tells it when to forget them and learns from it which frames it made writable.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

MAX_ENTRIES = 1 << 16  # beyond this the table is dropped and refilled (a capacity flush)


class ShadowEntry(NamedTuple):
    physical_page: int
    writable: bool  # may be granted write access (writable for this privilege, D set, frame not protected)
    executable: bool
    tables: tuple[int, ...]  # the page-table frames this translation was walked through


class TlbFront(Protocol):
    """A cache of this table's answers in front of it (emu.tcg.fill_cache.FillCache)."""

    def invalidate(self) -> None: ...  # forget every answer and protected frame
    def forget(self, cr3: int, page: int, user: bool) -> None: ...  # forget one answer
    def protect(self, frame: int) -> None: ...  # no writable answer for `frame` any more
    def unprotect(self, frame: int) -> None: ...  # `frame` is no page table of any entry now
    def tlb_flushed(self) -> None: ...  # Unicorn's TLB is empty: write grants start over
    def drain_write_grants(self) -> list[int]: ...  # frames it granted write access to


@dataclass
class MmuCounters:
    """What the MMU did, for --stats ("mmu" in --stats-json)."""

    walks: int = 0  # page-table walks by emu's walker
    shadow_hits: int = 0  # TLB fills served from the shadow table, without a walk
    native_hits: int = 0  # of those, served by the C front without entering Python
    native_walks: int = 0  # walks (counted in `walks`) made by the C front (4-level paging)
    uncached_fills: int = 0  # fills walked but not cacheable (a table frame may be writable in the TLB)
    pt_write_traps: int = 0  # guest stores to a write-protected page-table frame
    dropped_entries: int = 0  # shadow entries dropped by those traps
    ad_writes: int = 0  # Accessed/Dirty bits written back to guest page tables
    page_faults: int = 0  # #PF delivered to the guest
    flushes: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by cause
    walker_disagreements: int = 0  # emu's walker faulted but Unicorn's did not (or vice versa)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "flushes"}
        out["flushes"] = dict(self.flushes)
        return out


@dataclass
class ShadowPageTable:
    """Translations by (CR3, page, user) with the reverse map needed to keep them coherent."""

    counters: MmuCounters = field(default_factory=MmuCounters)
    entries: dict[tuple[int, int, bool], ShadowEntry] = field(default_factory=dict)
    dependents: dict[int, set[tuple[int, int, bool]]] = field(default_factory=lambda: defaultdict(set))
    # Frames Unicorn may hold a writable TLB mapping of, since the last full TLB flush: a
    # translation walked through one of these cannot be cached (its tables are not protected).
    writable_frames: set[int] = field(default_factory=set)
    front: TlbFront | None = None

    def lookup(self, cr3: int, page: int, user: bool) -> ShadowEntry | None:
        return self.entries.get((cr3, page, user))

    def protected(self, frame: int) -> bool:
        """True if `frame` holds a page table that cached translations depend on."""
        deps = self.dependents.get(frame)
        return bool(deps)

    def cacheable(self, tables: tuple[int, ...]) -> bool:
        if self.front is not None:
            self.writable_frames.update(self.front.drain_write_grants())
        return self.writable_frames.isdisjoint(tables)

    def insert(self, cr3: int, page: int, user: bool, entry: ShadowEntry) -> None:
        if len(self.entries) >= MAX_ENTRIES:
            self.flush("capacity")
        key = (cr3, page, user)
        self.entries[key] = entry
        front = self.front
        for table in entry.tables:
            keys = self.dependents[table]
            if not keys and front is not None:
                front.protect(table)  # it may hold writable answers for a frame that is a table now
            keys.add(key)

    def granted_write(self, frame: int) -> None:
        """Unicorn was given a writable mapping of `frame` (until its next full TLB flush)."""
        self.writable_frames.add(frame)

    def page_table_write(self, frame: int) -> None:
        """The guest stores to page-table frame `frame`: drop what depended on it."""
        keys = self.dependents.pop(frame, set())
        front = self.front
        if front is not None:
            front.unprotect(frame)
        for key in keys:
            entry = self.entries.pop(key, None)
            if entry is None:
                continue
            if front is not None:
                front.forget(*key)
            for table in entry.tables:
                if table != frame:
                    others = self.dependents.get(table)
                    if others is not None:
                        others.discard(key)
                        if not others:
                            del self.dependents[table]
                            if front is not None:
                                front.unprotect(table)
        self.counters.pt_write_traps += 1
        self.counters.dropped_entries += len(keys)

    def tlb_flushed(self, cause: str) -> None:
        """Unicorn's TLB is empty again: no writable mappings of table frames remain in it."""
        self.writable_frames.clear()
        self.counters.flushes[cause] += 1
        if self.front is not None:
            self.front.tlb_flushed()

    def flush(self, cause: str) -> None:
        """Drop every cached translation (the guest's paging mode changed, or capacity)."""
        self.entries.clear()
        self.dependents.clear()
        self.counters.flushes[cause] += 1
        if self.front is not None:
            self.front.invalidate()
