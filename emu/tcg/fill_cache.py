"""The C front of emu's TLB fill: repeated translations answered without entering Python.

A TLB fill that emu's shadow page table can answer is cheap in principle (one lookup), but a
call from Unicorn's C into a Python callback costs more than Unicorn's whole page walk. So the
fill hook Unicorn calls is `fc_hook` in fill_cache.c: it repeats answers Python has installed
and falls through to Python (emu.tcg.softmmu) for everything else. This module builds that file
with the host's C compiler at first use (emu.tcg.native) and wraps it with ctypes.

Where no compiler is found `load()` returns None with the reason, and emu runs the same MMU
entirely in Python (`--mmu shadow-python` asks for that explicitly, to compare the two).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

from . import native

SOURCE = Path(__file__).with_name("fill_cache.c")
LOG_CHUNK = 4096
WALK_LOG_MAX = 4096  # fill_cache.c's WALK_LOG_MAX
WALKED_WORDS = 10  # struct walked: cr3, page, user, frame, flags, ntables, tables[4]
WALKED_WRITABLE, WALKED_EXECUTABLE, WALKED_FETCHED = 1, 2, 4


def build() -> Path:
    """Compile fill_cache.c (once per source version); raises OSError with the reason."""
    return native.build(SOURCE)


@dataclass
class NativeLibrary:
    """fill_cache.c, loaded, with its function signatures declared."""

    lib: ctypes.CDLL

    def __post_init__(self) -> None:
        u32, u64, ptr = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
        signatures = {
            "fc_create": (ptr, [ptr, ptr, ptr, ptr, u32, u32, u32, u32, u32, u64, u64, u64, u64]),
            "fc_forget": (None, [ptr, u64, u64, u64]),
            "fc_set_ram": (None, [ptr, u32, u64, u64, ptr]),
            "fc_granted": (None, [ptr, u64]),
            "fc_walk_log": (ptr, [ptr]),
            "fc_walk_log_length": (ptr, [ptr]),
            "fc_walk_counters": (ptr, [ptr]),
            "fc_walk": (ctypes.c_int, [ptr, u64, u64, u64, u64, u64, ctypes.c_int, ctypes.c_int, ptr]),
            "fc_protected_map": (ptr, [ptr]),
            "fc_destroy": (None, [ptr]),
            "fc_set_space": (None, [ptr, u64, u64, u64, u64]),
            "fc_install": (None, [ptr, u64, u64, u64, u64, u32]),
            "fc_invalidate": (None, [ptr]),
            "fc_tlb_flushed": (None, [ptr]),
            "fc_drain_write_grants": (u32, [ptr, ptr, u32]),
            "fc_log_length": (ptr, [ptr]),
            "fc_install_flag": (ptr, [ptr]),
            "fc_hits": (u64, [ptr]),
            "fc_slow_calls": (u64, [ptr]),
        }
        for name, (restype, argtypes) in signatures.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    @property
    def hook(self) -> int:
        """The address of fc_hook, to register as Unicorn's UC_HOOK_TLB_FILL callback."""
        return ctypes.cast(self.lib.fc_hook, ctypes.c_void_p).value


def load() -> tuple[NativeLibrary | None, str]:
    """The built library and "C", or None and the reason it is not available."""
    library, why = native.load(SOURCE)
    if library is None:
        return None, f"python (C front unavailable: {why})"
    return NativeLibrary(library), "C"


@dataclass
class FillCache:
    """One vCPU's C front: answers installed by Python, invalidated by emu.mmu.shadow."""

    native: NativeLibrary
    handle: int
    frames: int  # guest-physical frames the protected map covers (fc_create's `frames`)
    _grants: ctypes.Array = field(default_factory=lambda: (ctypes.c_uint64 * LOG_CHUNK)())

    def __post_init__(self) -> None:
        self._log_length = ctypes.c_uint32.from_address(self.native.lib.fc_log_length(self.handle))
        self._install_flag = ctypes.c_uint32.from_address(self.native.lib.fc_install_flag(self.handle))
        self._protected = (ctypes.c_uint8 * max(1, self.frames)).from_address(
            self.native.lib.fc_protected_map(self.handle))  # fmt: skip
        self._forget = self.native.lib.fc_forget
        lib = self.native.lib
        self._walk_log = (ctypes.c_uint64 * (WALK_LOG_MAX * WALKED_WORDS)).from_address(lib.fc_walk_log(self.handle))
        self._walk_log_length = ctypes.c_uint32.from_address(lib.fc_walk_log_length(self.handle))
        self._walk_counters = (ctypes.c_uint64 * 3).from_address(lib.fc_walk_counters(self.handle))
        self._walked = (ctypes.c_uint64 * WALKED_WORDS)()

    def set_ram(self, ranges: list[tuple[int, int, int]]) -> None:
        """Guest RAM as (guest start, guest end, host address) runs: the C front walks 4-level
        page tables itself from now on (fill_cache.c, walk4)."""
        for index, (start, end, host) in enumerate(ranges[:4]):
            self.native.lib.fc_set_ram(self.handle, index, start, end, host)

    def is_protected(self, frame: int) -> bool:
        """Marked protected here: by Python, or by a C walk not yet absorbed (so a superset)."""
        index = frame >> 12
        return index >= self.frames or bool(self._protected[index])

    def walk(self, cr0: int, cr3: int, cr4: int, efer: int, page: int, access_type: int, user: bool) -> int | None:
        """fill_cache.c's walk4 for one page (A/D set): its frame, or None if it leaves the walk
        to Python (a fault, a reserved bit, a table outside RAM)."""
        out = self._walked
        if not self.native.lib.fc_walk(self.handle, cr0, cr3, cr4, efer, page, access_type, user, out):
            return None
        return out[3]

    def granted(self, frame: int) -> None:
        """Python gave Unicorn a writable mapping of `frame` (until the next TLB flush)."""
        self.native.lib.fc_granted(self.handle, frame)

    def take_walked(self) -> list[tuple[int, int, bool, int, int, tuple[int, ...]]]:
        """Shadow entries the C front walked and installed since the last call, as
        (cr3, page, user, frame, flags, tables), oldest first (and the log emptied)."""
        n = self._walk_log_length.value
        if not n:
            return []
        words = self._walk_log[: n * WALKED_WORDS]
        self._walk_log_length.value = 0
        out = []
        for i in range(0, n * WALKED_WORDS, WALKED_WORDS):
            cr3, page, user, frame, flags, ntables = words[i : i + 6]
            out.append((cr3, page, bool(user), frame, flags, tuple(words[i + 6 : i + 6 + ntables])))
        return out

    @property
    def walk_log_length(self) -> int:
        return self._walk_log_length.value

    @property
    def walk_counters(self) -> tuple[int, int, int]:
        """(walks, uncached fills, A/D writes) made in C."""
        return self._walk_counters[0], self._walk_counters[1], self._walk_counters[2]

    def protect(self, frame: int) -> None:
        """`frame` (an address) holds a page table now: no writable answer for it from C."""
        index = frame >> 12
        if index < self.frames:
            self._protected[index] = 1

    def unprotect(self, frame: int) -> None:
        index = frame >> 12
        if index < self.frames:
            self._protected[index] = 0

    def forget(self, cr3: int, page: int, user: bool) -> None:
        """The shadow table dropped (cr3, page, user): so does the C front."""
        self._forget(self.handle, cr3, page, user)

    def set_space(self, cr0: int, cr4: int, efer: int, cr3: int) -> None:
        self.native.lib.fc_set_space(self.handle, cr0, cr4, efer, cr3)

    def repeat_this_fill(self, user: bool) -> None:
        """During a fill the C front passed on: install the answer Python is about to give, for
        this page and CR3, under the privilege `user` (cheaper than `install`)."""
        self._install_flag.value = 1 + user

    def invalidate(self) -> None:
        """Forget every answer and every protected frame (the shadow table was flushed)."""
        self.native.lib.fc_invalidate(self.handle)

    def tlb_flushed(self) -> None:
        self.native.lib.fc_tlb_flushed(self.handle)

    def drain_write_grants(self) -> list[int]:
        """Frames the C front granted write access to since the last drain or TLB flush."""
        if not self._log_length.value:  # the common case, without a call into C
            return []
        out: list[int] = []
        while n := self.native.lib.fc_drain_write_grants(self.handle, self._grants, LOG_CHUNK):
            out.extend(self._grants[:n])
        return out

    @property
    def hits(self) -> int:
        return self.native.lib.fc_hits(self.handle)

    def close(self) -> None:
        if self.handle:
            self.native.lib.fc_destroy(self.handle)
            self.handle = 0
