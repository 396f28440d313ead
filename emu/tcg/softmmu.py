"""emu as the MMU of a Unicorn CPU: TLB fills answered by emu's walker and shadow page table.

In `UC_TLB_VIRTUAL` mode Unicorn ignores the guest's page tables and calls `UC_HOOK_TLB_FILL`
for every (page, privilege) its TLB misses, with the page-aligned address and the access kind;
the hook answers with a guest-physical page and permissions (notes/unicorn-2.1.md §2). That is
the position of a shadow-paging hypervisor's page-fault handler, and emu fills it the same way:
emu.mmu.shadow first, emu.mmu.walk on a miss, write protection of page-table frames to stay
coherent. Repeated answers are served by a C front (emu.tcg.fill_cache) without entering Python;
`native=False` (`--mmu shadow-python`) runs every fill here, to compare the two.

Two things the hook cannot do are handled around it:
- **The exact faulting address.** The hook sees only the page. When emu's walker faults, the
  hook refuses the fill, Unicorn stops, and emu re-runs the faulting instruction once with
  Unicorn's own walker (`UC_TLB_CPU`), which raises the #PF with the exact CR2; emu delivers it
  through the IDT and switches back. The retry is one instruction long (an instruction budget
  of 1): Unicorn's walker honours no write protection, so guest code must never run under it
  longer. The two walkers are checked against each other on every fault; a disagreement is
  counted, Unicorn's answer wins for that instruction, and the shadow table is dropped, since
  that instruction may have stored to a page table unseen. A fill refused while Unicorn only
  probes (it goes on without stopping) is forgotten when the next run starts.
- **The privilege of implicit accesses.** The hook is not told the MMU index, so a descriptor
  table read that QEMU makes on behalf of CPL3 code (`iret`, a segment load) looks like a user
  access. emu treats CPL3 accesses inside the GDT, LDT, IDT or TSS as supervisor accesses; the
  one imprecision left is that user code may read a supervisor page holding those tables.
"""

from __future__ import annotations

import ctypes
import struct
import time
from dataclasses import dataclass, field

from unicorn import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_HOOK_TLB_FILL, UC_TLB_CPU, UC_TLB_VIRTUAL, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib

from ..accel import CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PSE, EFER_LMA, EFER_NXE
from ..memory import GuestMemory
from ..mmu.shadow import MmuCounters, ShadowEntry, ShadowPageTable
from ..mmu.walk import CR4_SMAP, CR4_SMEP, Access, PageFault, PagingMode, walk_page_tables
from .context import HEADER, OFF_CR, OFF_EFER, OFF_EFLAGS, OFF_HFLAGS, OFF_SEGS, SEG_SIZE, SavedContext
from .fill_cache import WALKED_EXECUTABLE, WALKED_FETCHED, WALKED_WRITABLE, FillCache
from .fill_cache import load as load_fill_cache

UC_PROT_READ, UC_PROT_WRITE, UC_PROT_EXEC = 1, 2, 4
UC_MEM_READ, UC_MEM_WRITE, UC_MEM_FETCH = 16, 17, 18
ACCESS = {UC_MEM_READ: Access.READ, UC_MEM_WRITE: Access.WRITE, UC_MEM_FETCH: Access.FETCH}
_ACCESS_TYPE = {access: kind for kind, access in ACCESS.items()}
_WRITE = Access.WRITE  # enum members are slow to look up on CPython 3.11; the fill is hot
_FETCH = Access.FETCH
MODE_CR0 = CR0_PG | CR0_WP | CR0_PE
# The bits that change what a walk answers. Not CR4.PGE: it only says whether the TLB keeps
# global entries across CR3 loads, and toggling it is Linux's way to flush them (with no PCID):
# Unicorn flushes its TLB then, but the shadow table, kept coherent by write traps and not by the
# guest's flushes, stays valid (a boot toggled it 415 times, each a full shadow flush before).
MODE_CR4 = CR4_PAE | CR4_PSE | CR4_SMEP | CR4_SMAP
MODE_EFER = EFER_LMA | EFER_NXE
FLUSH_INTERVAL_NS = 10_000_000  # re-protect written page-table frames at most every 10 ms
# hflags, cr[0..4] and EFER from one saved context (offsets in emu.tcg.context)
_STATE = struct.Struct(f"<{OFF_HFLAGS}xI{OFF_CR - OFF_HFLAGS - 4}x5Q{OFF_EFER - OFF_CR - 40}xQ")
_U64 = struct.Struct("<Q")
_SYSTEM_TABLES = (6, 7, 8, 9)  # LDT, TR, GDTR, IDTR caches


class TlbEntry(ctypes.Structure):
    """unicorn.h's uc_tlb_entry: the answer to a TLB fill."""

    _fields_ = [("paddr", ctypes.c_uint64), ("perms", ctypes.c_int)]


# The entry is taken as a plain address (no ctypes pointer object per call): it is written with
# struct.pack_into through a view that is reused while Unicorn passes the same stack slot.
_FILL_HOOK = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p,
                              ctypes.c_void_p)  # fmt: skip
_ENTRY = struct.Struct("<Qi")


NON_CANONICAL = -1  # PendingFault.error_code for a non-canonical address: #GP(0) or #SS(0), not #PF


@dataclass
class PendingFault:
    page: int
    access: Access
    error_code: int  # the #PF error code emu's walker computed, or NON_CANONICAL

    def matches(self, vector: int, error_code: int | None) -> bool:
        """Does the exception Unicorn's walker raised agree with emu's?"""
        if self.error_code == NON_CANONICAL:
            return vector in (12, 13)
        return vector == 14 and error_code == self.error_code


@dataclass
class SoftMmu:
    """Installs itself as the TLB-fill hook of `uc` and serves every translation."""

    uc: Uc
    ctx: SavedContext  # a context this module may save into at will (not the vCPU's own)
    memory: GuestMemory
    shadow: ShadowPageTable = field(default_factory=ShadowPageTable)
    fault: PendingFault | None = None
    _mode: tuple[int, int, int] | None = None
    _cr3: int | None = None
    _last_flush_ns: int = 0
    _uncached_at_flush: int = 0
    native: bool = True  # serve repeated answers from the C front when it can be built
    fill_path: str = "python"  # "C" or "python (reason)", for --stats
    front: FillCache | None = None
    _front_space: tuple[int, int] | None = None
    _entry_address: int = 0
    _entry: TlbEntry | None = None
    code_frames: set[int] = field(default_factory=set)  # frames a fill gave execute rights (see holds_code)
    untracked_code: bool = True  # code may have been translated without a recorded fill
    code_flushes_avoided: int = 0  # host writes that needed no flush of translated code
    _c_walk_counters: tuple[int, int, int] = (0, 0, 0)  # the C front's (walks, uncached, A/D writes) seen
    # Fills that reached Python (_fill). With the C front's own hits and walks, a count of all fills
    # that another thread may read while the guest runs (emu.liveview): `counters` folds the C
    # front's numbers into the shadow table's as it reads them, which only the vCPU thread may do.
    python_fills: int = 0

    def __post_init__(self) -> None:
        self._raw = self.ctx.raw  # the state a fill reads: this context, saved per fill, or the C front's
        self._save_state = True
        self._walker_memory = self.memory.page_walker_view()
        self._hook = _FILL_HOOK(self._fill)
        hook, user_data = self._hook, None
        if self.native:
            library, self.fill_path = load_fill_cache()
            if library is not None:
                self._front_ctx = SavedContext(self.uc)
                self._front_ctx.truncate(OFF_EFER + 8)  # what fc_hook reads
                frames = max(r.end for r in self.memory.ranges) >> 12  # page tables live in RAM
                handle = library.lib.fc_create(
                    self._front_ctx.address, self._front_ctx.address + HEADER,
                    ctypes.cast(uclib.uc_context_save, ctypes.c_void_p),
                    ctypes.cast(self._hook, ctypes.c_void_p), OFF_HFLAGS, OFF_CR, OFF_EFER, OFF_SEGS, SEG_SIZE,
                    MODE_CR0, MODE_CR4, MODE_EFER, frames)  # fmt: skip
                if handle:
                    self.front = FillCache(library, handle, frames)
                    self._raw, self._save_state = self._front_ctx.raw, False  # fc_hook saved it just now
                    self.shadow.front = self.front
                    self.front.set_ram([(r.guest_address, r.end, self.memory.host_address + r.host_offset)
                                        for r in self.memory.ranges])  # fmt: skip
                    hook, user_data = ctypes.cast(library.hook, _FILL_HOOK), ctypes.c_void_p(handle)
        else:
            self.fill_path = "python (--mmu shadow-python)"
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(self.uc._uch, ctypes.byref(handle), UC_HOOK_TLB_FILL, hook, user_data,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))  # fmt: skip
        if status != 0:
            raise UcError(status)
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._flush_unicorn("start")

    @property
    def counters(self) -> MmuCounters:
        counters = self.shadow.counters
        if self.front is not None:
            self._absorb()
            hits = self.front.hits
            counters.shadow_hits += hits - counters.native_hits
            counters.native_hits = hits
            walked = self.front.walk_counters
            seen = self._c_walk_counters
            counters.walks += walked[0] - seen[0]
            counters.native_walks += walked[0] - seen[0]
            counters.uncached_fills += walked[1] - seen[1]
            counters.ad_writes += walked[2] - seen[2]
            self._c_walk_counters = walked
        return counters

    def fills_so_far(self) -> tuple[int, int, int]:
        """(fills answered by the C front, fills that reached Python, #PF delivered), readable from
        another thread while the guest runs: C's hit and walk counters are plain loads of C
        uint64s, the others plain ints only the vCPU thread writes. Not `counters`, which folds.
        The reader must be done before close() frees the C front."""
        front, in_c = self.front, 0
        if front is not None and front.handle:
            in_c = front.hits + front.walk_counters[0]
        return in_c, self.python_fills, self.shadow.counters.page_faults

    def _uncached_fills(self) -> int:
        """Uncached fills so far, Python's and the C front's (cheaper than `counters`: after every run)."""
        fills = self.shadow.counters.uncached_fills
        if self.front is not None:
            fills += self.front.walk_counters[1] - self._c_walk_counters[1]
        return fills

    def _absorb(self) -> None:
        """Take the shadow entries the C front walked into this table (fill_cache.c, walk4):
        before anything here reads or changes the table."""
        front = self.front
        if front is None or not front.walk_log_length:
            return
        shadow = self.shadow
        for cr3, page, user, frame, flags, tables in front.take_walked():
            shadow.insert(cr3, page, user, ShadowEntry(frame, bool(flags & WALKED_WRITABLE),
                                                       bool(flags & WALKED_EXECUTABLE), tables))  # fmt: skip
            if flags & WALKED_FETCHED:
                self.code_frames.add(frame)

    def close(self) -> None:
        self.counters  # noqa: B018 - fold the C front's hits in before it goes
        if self.front is not None:
            self.shadow.front = None
            self.front.close()
            self.front = None
            self._front_ctx.free()
        self.ctx.free()

    # the hook --------------------------------------------------------------------------------
    def _fill(self, _uc: int, vaddr: int, access_type: int, entry_address: int, _ud: int) -> bool:
        self.python_fills += 1
        if entry_address != self._entry_address:
            self._entry_address = entry_address
            self._entry = TlbEntry.from_address(entry_address)
        try:
            return self._translate(vaddr, ACCESS[access_type], self._entry)
        except Exception:  # noqa: BLE001 - a bug here must not vanish inside ctypes
            import traceback

            traceback.print_exc()
            return False

    def fast_walk(self, mode: PagingMode, linear: int, access: Access, user: bool) -> int | None:
        """The physical address of `linear` by the C front's walker (4-level paging, with A/D set
        as the CPU's own access), or None where it leaves the walk to emu.mmu.walk (a fault, SMAP
        or another paging mode): for emu's own accesses as the CPU (interrupt delivery)."""
        front = self.front
        if front is None or not mode.efer & EFER_LMA or mode.cr4 & CR4_SMAP or not mode.cr0 & CR0_PG:
            return None
        page = front.walk(mode.cr0, mode.cr3, mode.cr4, mode.efer, linear & ~0xFFF, _ACCESS_TYPE[access], user)
        return None if page is None else page | (linear & 0xFFF)

    def _translate(self, page: int, access: Access, out: TlbEntry) -> bool:
        """One TLB fill. The hit path (a translation already in the shadow table) is the hot one:
        one context save, one unpack, one dict lookup."""
        self._absorb()
        if self._save_state:
            self.ctx.save()
        hflags, cr0, _, _, cr3, cr4, efer = _STATE.unpack_from(self._raw, HEADER)
        if not cr0 & CR0_PG:
            self.untracked_code = True
            out.paddr, out.perms = page & 0xFFFF_FFFF, UC_PROT_READ | UC_PROT_WRITE | UC_PROT_EXEC
            return True
        shadow = self.shadow
        mode = (cr0 & MODE_CR0) | (cr4 & MODE_CR4) << 32 | (efer & MODE_EFER) << 64
        if mode != self._mode:
            self.untracked_code = True  # code translated before this fill went unrecorded
            if self._mode is not None:
                shadow.flush("paging mode")
            shadow.tlb_flushed("paging mode")  # QEMU flushed its TLB on that CR0/CR4/EFER write
            self._mode = mode
            self._cr3 = cr3
        elif cr3 != self._cr3:
            shadow.tlb_flushed("cr3 load")  # a MOV to CR3 flushed Unicorn's TLB
            self._cr3 = cr3
        front = self.front
        if front is not None and (mode, cr3) != self._front_space:
            front.set_space(cr0, cr4, efer, cr3)  # the C front serves this space from now on
            self._front_space = (mode, cr3)
        if efer & EFER_LMA and (page >> 47) not in (0, 0x1FFFF):
            self.fault = PendingFault(page, access, NON_CANONICAL)  # QEMU's walker raises #GP/#SS
            return False
        user = hflags & 3 == 3
        if user and self._in_system_table(page):
            user = False  # an implicit supervisor access made for CPL3 code (see module doc)
        smap_sensitive = not user and cr4 & CR4_SMAP
        hit = None if smap_sensitive else shadow.entries.get((cr3, page, user))
        counters = shadow.counters
        cached = not smap_sensitive
        if hit is not None and (access is not _WRITE or hit.writable):
            counters.shadow_hits += 1
            frame, writable, executable = hit.physical_page, hit.writable, hit.executable
        else:
            rflags = _U64.unpack_from(self._raw, HEADER + OFF_EFLAGS)[0]
            try:  # the walker's A/D stores bypass the write listeners (GuestMemory.page_walker_view)
                t = walk_page_tables(self._walker_memory, PagingMode(cr0, cr3, cr4, efer, rflags), page, access, user)
            except PageFault as pf:
                counters.walks += 1
                self.fault = PendingFault(page, access, pf.error_code)
                return False
            counters.walks += 1
            counters.ad_writes += t.ad_writes
            frame = t.physical & ~0xFFF
            writable, executable = t.writable and t.dirty, t.executable
            if not smap_sensitive and shadow.cacheable(t.tables):
                shadow.insert(cr3, page, user, ShadowEntry(frame, writable, executable, t.tables))
            else:
                counters.uncached_fills += 1
                cached = False
        if executable and access is _FETCH:  # execute rights only to a fetch: code_frames then knows
            perms = UC_PROT_READ | UC_PROT_EXEC  # every frame Unicorn can translate code from
            self.code_frames.add(frame)
        else:
            perms = UC_PROT_READ
        if writable:
            if shadow.dependents.get(frame):  # a page table that cached translations came from
                if access is _WRITE:
                    shadow.page_table_write(frame)  # the store proceeds; dependents are gone
                    perms |= UC_PROT_WRITE
                    shadow.writable_frames.add(frame)
                    if front is not None:
                        front.granted(frame)
                    cached = False
            else:
                perms |= UC_PROT_WRITE
                shadow.writable_frames.add(frame)
                if front is not None:
                    front.granted(frame)
        out.paddr = frame
        out.perms = perms
        if cached and front is not None:
            front.repeat_this_fill(user)  # fc_hook installs this answer and repeats it until invalidated
        return True

    def cached_physical(self, linear: int, user: bool) -> int | None:
        """The guest-physical address of `linear` if the shadow table holds its page for the
        current paging mode and CR3 (no walk, no A/D side effects); None otherwise."""
        self._absorb()
        self.ctx.save()
        _, cr0, _, _, cr3, cr4, efer = _STATE.unpack_from(self._raw, HEADER)
        if not cr0 & CR0_PG:
            return linear & 0xFFFF_FFFF
        mode = (cr0 & MODE_CR0) | (cr4 & MODE_CR4) << 32 | (efer & MODE_EFER) << 64
        if mode != self._mode or cr3 != self._cr3:
            return None
        hit = self.shadow.entries.get((cr3, linear & ~0xFFF, user))
        return None if hit is None else hit.physical_page | (linear & 0xFFF)

    def _in_system_table(self, page: int) -> bool:
        raw = self._raw
        for index in _SYSTEM_TABLES:
            _, base, limit, _ = struct.unpack_from("<I4xQII", raw, HEADER + OFF_SEGS + SEG_SIZE * index)
            if base <= page + 0xFFF and page <= base + limit:
                return True
        return False

    def holds_code(self, address: int, size: int) -> bool:
        """Can translated code come from guest-physical [address, address+size)? Only from a frame
        some fill gave execute rights (code_frames never shrinks), or from code translated while
        paging was off or in another paging mode (`untracked_code`, until the next full flush)."""
        if self.untracked_code:
            return True
        self._absorb()
        code = self.code_frames
        return any(frame in code for frame in range(address & ~0xFFF, address + size, 0x1000))

    def host_wrote(self, address: int, size: int) -> None:
        """A store by the host (emu's interrupt delivery, DMA) to page-table frames counts too."""
        frames = range(address & ~0xFFF, address + size, 0x1000)
        front = self.front
        if front is not None and not any(front.is_protected(frame) for frame in frames):
            return  # the C front's map covers every protected frame, absorbed or not: nothing to do
        self._absorb()
        shadow = self.shadow
        for frame in frames:
            if shadow.protected(frame):
                shadow.page_table_write(frame)

    # around emu_start ------------------------------------------------------------------------
    def _flush_unicorn(self, cause: str) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self.shadow.tlb_flushed(cause)
        self._last_flush_ns = time.monotonic_ns()
        self._uncached_at_flush = self._uncached_fills()

    def after_run(self) -> None:
        """Between runs: re-protect page-table frames the guest wrote, at most every 10 ms."""
        if self._uncached_fills() != self._uncached_at_flush:
            if time.monotonic_ns() - self._last_flush_ns >= FLUSH_INTERVAL_NS:
                self._flush_unicorn("re-protect page tables")

    def use_unicorn_walker(self) -> None:
        """For one instruction: let Unicorn's walker raise the #PF with the exact CR2."""
        self.uc.ctl_set_tlb_mode(UC_TLB_CPU)
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def use_own_walker(self) -> None:
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self._flush_unicorn("after #PF")
