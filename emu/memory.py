"""Guest RAM: where it sits in guest-physical space, and which host pages back it.

A VMM backs guest-physical memory with ordinary host virtual memory. KVM maps it into the guest
with memory slots (KVM_SET_USER_MEMORY_REGION, Documentation/virt/kvm/api.rst §4.35), and the
second stage of translation (EPT/NPT, or KVM's shadow page tables on hosts without them) turns
guest-physical into host-physical addresses. Unicorn maps the same host memory with
`mem_map_ptr`. Device models and the loader reach it through the bounds-checked accessors
here: the host must never touch memory outside guest RAM, whatever address a guest gives it.

**The PC memory map.** On a PC, RAM does not fill guest-physical space from 0 up. The IBM PC/AT
(Technical Reference, "System Memory Map") put video memory and ROMs just below 1 MiB, and
every later PC keeps that layout:

    0x0000_0000-0x0009_FFFF  conventional memory, 640 KiB (IVT, BIOS data area, EBDA at the top)
    0x000A_0000-0x000F_FFFF  the legacy hole: VGA frame buffer 0xA0000-0xBFFFF, option ROMs
                             0xC0000-0xDFFFF, system BIOS 0xE0000-0xFFFFF. Not RAM.
    0x0010_0000-top          extended memory, up to min(RAM, 3 GiB)
    top-0xFFFF_FFFF          the "PCI hole": device BARs, IOAPIC 0xFEC00000, local APIC
                             0xFEE00000, the BIOS flash just below 4 GiB. Not RAM.
    0x1_0000_0000-           the rest of RAM, above 4 GiB

QEMU's pc machine builds the same thing (hw/i386/pc.c, pc_memory_init): one host RAM block of
-m bytes, an alias "ram-below-4g" of its first below_4g_mem_size bytes at guest-physical 0
(the VGA and ROM regions overlay 0xA0000-0xFFFFF), and an alias "ram-above-4g" of the rest at
4 GiB. emu does likewise: one contiguous host mapping, host offset = guest-physical address
below 4 GiB, host offset `below_4g` onward seen at 4 GiB. The 384 KiB of host memory behind
the legacy hole are never mapped into the guest (real chipsets also lose or shadow them).
Where RAM below 4 GiB ends is a chipset choice: QEMU's i440fx stops at 3 GiB once RAM reaches
3.5 GiB, its q35 at 2 or 2.75 GiB; emu always uses min(RAM, 3 GiB).

`MemoryLayout.pc()` gives that map and `MemoryLayout.flat()` a single range at 0 (what small
test VMs and microVMs without legacy devices use; it is GuestMemory's default).

**Host backing** (`--mem-backing`). The page size that backs guest RAM on the host matters
because the second stage can map a 2 MiB guest page with one entry only when a 2 MiB host page
sits behind it, at a guest-physical and a host-virtual address that agree modulo 2 MiB
(Documentation/virt/kvm/x86/mmu.rst, "Large pages"). Three choices:

    4k       private anonymous mmap + madvise(MADV_NOHUGEPAGE): always 4 KiB pages.
    thp      private anonymous mmap, 2 MiB-aligned (over-allocated, then aligned), and
             madvise(MADV_HUGEPAGE): transparent huge pages. The kernel backs each aligned,
             fully mapped 2 MiB with a huge page at fault time when it can, or khugepaged
             collapses 4 KiB pages later; with `enabled=madvise` in
             /sys/kernel/mm/transparent_hugepage the advice is required
             (Documentation/admin-guide/mm/transhuge.rst; madvise(2)). Best effort.
    hugetlb  mmap(MAP_HUGETLB | MAP_HUGE_2MB): pages from the hugetlb pool the administrator
             reserved (vm.nr_hugepages). A private mapping reserves its pages at mmap time, so a
             short pool fails mmap with ENOMEM instead of a SIGBUS on a later fault
             (Documentation/admin-guide/mm/hugetlbpage.rst, "HugePages_Rsvd"). emu checks the
             pool first to say in one line what is missing.

QEMU madvises guest RAM MADV_HUGEPAGE by default and takes hugetlbfs through
-mem-path/memory-backend-file; Firecracker offers `huge_pages: "2M"` (hugetlbfs) and 4 KiB pages.
On this project's nested kvm_pvm host, 2 MiB host pages *and* 2 MiB guest pages make fault-in
5-10x faster and random access 1.3-1.6x (shared/notes/host-kvm.md §3).

What the host actually gave is measured, not assumed: `GuestMemory.usage()` sums the mapping's
entries in /proc/self/smaps (Documentation/filesystems/proc.rst, "/proc/PID/smaps"): `Rss`,
`AnonHugePages` (THP) and `Private_Hugetlb`/`Shared_Hugetlb` (hugetlb pages, not part of Rss).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import mmap
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

from .accel import MemoryRegion
from .errors import EmuError

PAGE_SIZE = 4096
HUGE_PAGE_SIZE = 2 << 20
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

LEGACY_HOLE_START = 0xA0000  # end of conventional memory: VGA, option ROMs, BIOS up to 1 MiB
HIGH_MEMORY_START = 0x100000  # extended memory starts at 1 MiB
BELOW_4G_RAM_LIMIT = 3 * GIB  # RAM below 4 GiB ends here at most; the PCI hole is above
FOUR_GIB = 1 << 32

# <linux/mman.h>, <asm-generic/hugetlb_encode.h>: the Python mmap module lacks these.
MAP_HUGETLB = 0x40000
MAP_HUGE_SHIFT = 26
MAP_HUGE_2MB = 21 << MAP_HUGE_SHIFT  # log2(2 MiB) = 21
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGETLB_POOL_2M = Path("/sys/kernel/mm/hugepages/hugepages-2048kB")
MEMINFO = Path("/proc/meminfo")
SMAPS = Path("/proc/self/smaps")


class GuestMemoryError(Exception):
    """A guest-physical range that is not (entirely) RAM."""


class Backing(enum.Enum):
    """How guest RAM is backed on the host (`--mem-backing`)."""

    SMALL = "4k"
    THP = "thp"
    HUGETLB = "hugetlb"


class RamRange(NamedTuple):
    """A run of guest RAM: `size` bytes at `guest_address`, from `host_offset` of the host mapping."""

    guest_address: int
    size: int
    host_offset: int

    @property
    def end(self) -> int:
        return self.guest_address + self.size


@dataclass(frozen=True)
class MemoryLayout:
    """Where `ram_size` bytes of host RAM appear in guest-physical space."""

    ram_size: int
    ranges: tuple[RamRange, ...]

    @classmethod
    def flat(cls, ram_size: int) -> MemoryLayout:
        """All of RAM at guest-physical 0, no holes."""
        return cls(ram_size, (RamRange(0, ram_size, 0),))

    @classmethod
    def pc(cls, ram_size: int) -> MemoryLayout:
        """The PC map: 0-640 KiB, 1 MiB-min(RAM, 3 GiB), the rest from 4 GiB (see the module doc)."""
        below_4g = min(ram_size, BELOW_4G_RAM_LIMIT)
        ranges = [RamRange(0, min(below_4g, LEGACY_HOLE_START), 0)]
        if below_4g > HIGH_MEMORY_START:
            ranges.append(RamRange(HIGH_MEMORY_START, below_4g - HIGH_MEMORY_START, HIGH_MEMORY_START))
        if ram_size > below_4g:
            ranges.append(RamRange(FOUR_GIB, ram_size - below_4g, below_4g))
        return cls(ram_size, tuple(ranges))

    def __post_init__(self) -> None:
        previous_end = 0
        for r in sorted(self.ranges):
            if r.size <= 0 or (r.guest_address | r.size | r.host_offset) % PAGE_SIZE:
                raise EmuError(f"RAM range {r.guest_address:#x}+{r.size:#x} is not made of whole 4 KiB pages")
            if r.guest_address < previous_end or r.host_offset + r.size > self.ram_size:
                raise EmuError(f"RAM range {r.guest_address:#x}+{r.size:#x} overlaps another or lies past the RAM")
            previous_end = r.end

    @property
    def below_4g_size(self) -> int:
        """Where RAM below 4 GiB ends (QEMU's below_4g_mem_size; the CMOS and e820 report it)."""
        return max((min(r.end, FOUR_GIB) for r in self.ranges if r.guest_address < FOUR_GIB), default=0)

    @property
    def above_4g_size(self) -> int:
        """Bytes of RAM at 4 GiB and above."""
        return sum(r.end - max(r.guest_address, FOUR_GIB) for r in self.ranges if r.end > FOUR_GIB)

    def region_name(self, r: RamRange) -> str:
        """QEMU's names: "ram-below-4g"/"ram-above-4g"; the 640 KiB piece is "ram-low"."""
        if len(self.ranges) == 1:
            return "ram"
        if r.guest_address >= FOUR_GIB:
            return "ram-above-4g"
        return "ram-low" if r.end <= LEGACY_HOLE_START else "ram-below-4g"


@dataclass(frozen=True)
class HugePagePool:
    """The host's pool of 2 MiB hugetlb pages (/sys/kernel/mm/hugepages/hugepages-2048kB)."""

    total: int
    free: int
    reserved: int  # promised to existing mappings but not yet faulted in: not available

    @property
    def available(self) -> int:
        return max(self.free - self.reserved, 0)

    @classmethod
    def read(cls, directory: Path = HUGETLB_POOL_2M) -> HugePagePool | None:
        """None when the kernel has no 2 MiB hugetlb pages at all."""
        try:
            values = [int((directory / name).read_text()) for name in ("nr_hugepages", "free_hugepages", "resv_hugepages")]
        except (OSError, ValueError):
            return None
        return cls(*values)


def default_huge_page_kib() -> int | None:
    """Hugepagesize from /proc/meminfo: the pool /proc/sys/vm/nr_hugepages sizes."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("Hugepagesize:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class BackingUsage:
    """What backs the guest RAM mapping right now, from /proc/self/smaps."""

    requested: str  # the --mem-backing asked for
    backing: str  # what smaps shows: "hugetlb", "thp", "4k", or "none" (nothing faulted in yet)
    size_kib: int  # the host mapping (RAM, rounded and aligned)
    rss_kib: int  # resident 4 KiB and THP pages (hugetlb pages are not counted in Rss)
    anon_huge_kib: int  # AnonHugePages: resident as transparent huge pages
    hugetlb_kib: int  # Private_Hugetlb + Shared_Hugetlb
    kernel_page_kib: int  # KernelPageSize of the mapping: 4, or 2048 for hugetlb

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_smaps(start: int, end: int, path: Path = SMAPS) -> dict[str, int]:
    """Sum the numeric fields (kB) of every smaps entry overlapping host [start, end).

    A mapping shows as one entry per VMA; madvise or mprotect on part of it splits the VMA.
    """
    totals: dict[str, int] = {}
    inside = False
    with open(path) as f:
        for line in f:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):  # "7f12a0000000-7f12a8000000 rw-p ..."
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low < end and high > start
                continue
            if inside and head.endswith(":"):
                words = rest.split()
                if words and words[0].isdigit():
                    key = head[:-1]
                    value = int(words[0])
                    totals[key] = max(totals.get(key, 0), value) if key == "KernelPageSize" else totals.get(key, 0) + value
    return totals


def _map_host_memory(size: int, backing: Backing) -> tuple[mmap.mmap, int]:
    """Map `size` bytes of host memory for guest RAM: (the mapping, offset of guest RAM in it)."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    what = f"{size >> 20} MiB of guest RAM"
    if backing is Backing.HUGETLB:
        length = -(-size // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
        needed = length // HUGE_PAGE_SIZE
        pool = HugePagePool.read()
        if pool is None:
            raise EmuError(f"--mem-backing hugetlb: this host's kernel has no 2 MiB hugetlb pages for {what}")
        if pool.available < needed:
            raise EmuError(_hugetlb_advice(pool, needed, what))
        try:
            return mmap.mmap(-1, length, flags=flags | MAP_HUGETLB | MAP_HUGE_2MB), 0
        except OSError as err:  # raced with another user of the pool
            if err.errno == errno.ENOMEM:
                raise EmuError(_hugetlb_advice(HugePagePool.read() or pool, needed, what)) from None
            raise EmuError(f"--mem-backing hugetlb: cannot map {what}: {err.strerror}") from None
    if backing is Backing.THP:
        try:
            setting = THP_SETTING.read_text()
        except OSError:
            raise EmuError("--mem-backing thp: this host's kernel has no transparent huge pages") from None
        if "[never]" in setting:
            raise EmuError(f"--mem-backing thp: transparent huge pages are off on this host ({THP_SETTING} "
                           "says never); try --mem-backing hugetlb")  # fmt: skip
    length = size + (HUGE_PAGE_SIZE if backing is Backing.THP else 0)
    try:
        buffer = mmap.mmap(-1, length, flags=flags)
    except OSError as err:
        raise EmuError(f"cannot allocate {what}: {err.strerror}") from None
    if backing is Backing.SMALL:
        try:
            buffer.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:  # EINVAL: a kernel without THP, whose pages are all 4 KiB anyway
            pass
        return buffer, 0
    offset = -_address_of(buffer) % HUGE_PAGE_SIZE  # the first 2 MiB boundary inside the mapping
    try:
        buffer.madvise(mmap.MADV_HUGEPAGE)
    except OSError as err:
        buffer.close()
        raise EmuError(f"--mem-backing thp: madvise(MADV_HUGEPAGE) failed: {err.strerror}") from None
    return buffer, offset


def _hugetlb_advice(pool: HugePagePool, needed: int, what: str) -> str:
    target = pool.total + needed - pool.available
    knob = "/proc/sys/vm/nr_hugepages" if default_huge_page_kib() == 2048 else str(HUGETLB_POOL_2M / "nr_hugepages")
    return (f"--mem-backing hugetlb: the host has {pool.available} free 2 MiB huge pages for {what} "
            f"(needs {needed}; as root: echo {target} > {knob})")  # fmt: skip


def _address_of(buffer: mmap.mmap) -> int:
    """The host address of an mmap. The ctypes view is dropped at once: a live export would
    make mmap.close() fail (BufferError) and keep the memory mapped until the process ends."""
    view = ctypes.c_char.from_buffer(buffer)
    address = ctypes.addressof(view)
    del view
    return address


@dataclass
class GuestMemory:
    """`size` bytes of guest RAM laid out by `layout` (default: flat, at guest-physical 0).

    Every accessor takes a guest-physical address and raises GuestMemoryError unless the whole
    access is RAM (a range running into a hole is an error too). `host_address` is the host
    address of host offset 0; `regions()` gives the accelerators one MemoryRegion per range.
    """

    size: int
    layout: MemoryLayout | None = None
    backing: Backing | str = Backing.SMALL
    buffer: mmap.mmap = field(init=False, repr=False)
    host_address: int = field(init=False)
    _write_listeners: list[Callable[[int, int], None]] = field(default_factory=list, repr=False)

    @classmethod
    def pc(cls, size: int, backing: Backing | str = Backing.SMALL) -> GuestMemory:
        """RAM laid out as on a PC (see the module doc)."""
        return cls(size, MemoryLayout.pc(size), backing)

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % PAGE_SIZE:
            raise EmuError(f"guest RAM size {self.size} is not a positive multiple of 4 KiB")
        if self.layout is None:
            self.layout = MemoryLayout.flat(self.size)
        if self.layout.ram_size != self.size:
            raise EmuError(f"memory layout for {self.layout.ram_size:#x} bytes given {self.size:#x} bytes of RAM")
        try:
            self.backing = Backing(self.backing)
        except ValueError:
            choices = ", ".join(b.value for b in Backing)
            raise EmuError(f"--mem-backing {self.backing}: choose one of {choices}") from None
        self.buffer, self._base = _map_host_memory(self.size, self.backing)
        self._map_address = _address_of(self.buffer)
        self.host_address = self._map_address + self._base
        # (start, end, delta): buffer index = guest-physical address + delta. Largest range first:
        # most accesses (kernel, page tables, DMA) land in extended memory.
        self._spans = tuple(
            (r.guest_address, r.end, self._base + r.host_offset - r.guest_address)
            for r in sorted(self.layout.ranges, key=lambda r: -r.size)
        )
        (self._start0, self._end0, self._delta0), self._other_spans = self._spans[0], self._spans[1:]

    # layout ------------------------------------------------------------------------------------
    @property
    def ranges(self) -> list[RamRange]:
        """The RAM ranges in guest-physical order: (guest_address, size, host_offset)."""
        return sorted(self.layout.ranges)

    def regions(self) -> list[MemoryRegion]:
        """One MemoryRegion per RAM range, for Accelerator.add_memory_region (a KVM memory slot)."""
        return [MemoryRegion(r.guest_address, r.size, self.host_address + r.host_offset, name=self.layout.region_name(r))
                for r in self.ranges]  # fmt: skip

    def describe(self) -> str:
        """The RAM ranges as text, e.g. "0-0x9ffff, 0x100000-0x7ffffff"."""
        return ", ".join(f"{r.guest_address:#x}-{r.end - 1:#x}" for r in self.ranges)

    # bounds ------------------------------------------------------------------------------------
    def _index(self, address: int, length: int) -> int:
        """The buffer index of guest-physical `address`, if [address, address + length) is RAM."""
        if self._start0 <= address and address + length <= self._end0:  # the hot path: one compare
            return address + self._delta0
        for start, end, delta in self._other_spans:
            if start <= address and address + length <= end:
                return address + delta
        raise GuestMemoryError(f"guest-physical range {address:#x}+{length:#x} is not RAM (RAM: {self.describe()})")

    def contains(self, address: int, length: int) -> bool:
        if length < 0:
            return False
        return any(start <= address and address + length <= end for start, end, _ in self._spans)

    def check(self, address: int, length: int) -> None:
        if length < 0:
            raise GuestMemoryError(f"negative length {length} at guest-physical {address:#x}")
        self._index(address, length)

    # accessors ---------------------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        if length < 0:
            raise GuestMemoryError(f"negative length {length} at guest-physical {address:#x}")
        i = self._index(address, length)
        return self.buffer[i : i + length]

    def write(self, address: int, data: bytes) -> None:
        """Host write into guest RAM (loader, DMA): tells listeners (tcg drops stale code)."""
        i = self._index(address, len(data))
        self.buffer[i : i + len(data)] = data
        for listener in self._write_listeners:
            listener(address, len(data))

    def read_u8(self, address: int) -> int:
        return self.buffer[self._index(address, 1)]

    def read_u16(self, address: int) -> int:
        return struct.unpack_from("<H", self.buffer, self._index(address, 2))[0]

    def read_u32(self, address: int) -> int:
        return struct.unpack_from("<I", self.buffer, self._index(address, 4))[0]

    def read_u64(self, address: int) -> int:
        return struct.unpack_from("<Q", self.buffer, self._index(address, 8))[0]

    def write_u16(self, address: int, value: int) -> None:
        self.write(address, struct.pack("<H", value & 0xFFFF))

    def write_u32(self, address: int, value: int) -> None:
        struct.pack_into("<I", self.buffer, self._index(address, 4), value & 0xFFFFFFFF)
        for listener in self._write_listeners:
            listener(address, 4)

    def write_u64(self, address: int, value: int) -> None:
        struct.pack_into("<Q", self.buffer, self._index(address, 8), value & 0xFFFFFFFFFFFFFFFF)
        for listener in self._write_listeners:
            listener(address, 8)

    def add_write_listener(self, listener: Callable[[int, int], None]) -> None:
        self._write_listeners.append(listener)

    def page_walker_view(self) -> PageWalkerView:
        """This RAM as emu's page walker uses it (see PageWalkerView)."""
        return PageWalkerView(self)

    # host side ---------------------------------------------------------------------------------
    def give_back(self, address: int, length: int) -> None:
        """Return the host memory behind guest-physical [address, address+length) to the host
        (madvise MADV_DONTNEED, whole 4 KiB pages): a balloon's inflated pages. The guest then
        reads zeros there, and the host allocates again on the next touch."""
        start = self._index(address, length)
        if start % PAGE_SIZE or length % PAGE_SIZE:
            raise GuestMemoryError(f"give_back {address:#x}+{length:#x}: not whole 4 KiB pages")
        self.buffer.madvise(mmap.MADV_DONTNEED, start, length)
        for listener in self._write_listeners:  # the bytes changed under the CPU (tcg drops code)
            listener(address, length)

    def clear(self) -> None:
        """All of RAM reads as zeros again, as after power-on (a machine reset that reloads its
        guest): the host pages go back (MADV_DONTNEED), or are zeroed where the backing refuses
        that (hugetlb before Linux 5.18)."""
        try:
            self.buffer.madvise(mmap.MADV_DONTNEED)
        except OSError:
            ctypes.memset(self._map_address, 0, len(self.buffer))
        for r in self.ranges:  # the bytes changed under the CPU (tcg drops code)
            for listener in self._write_listeners:
                listener(r.guest_address, r.size)

    def usage(self) -> BackingUsage:
        """Measure what backs the mapping now (/proc/self/smaps): see BackingUsage."""
        fields = read_smaps(self._map_address, self._map_address + len(self.buffer))
        hugetlb = fields.get("Private_Hugetlb", 0) + fields.get("Shared_Hugetlb", 0)
        page_kib = fields.get("KernelPageSize", PAGE_SIZE // KIB)
        rss, anon_huge = fields.get("Rss", 0), fields.get("AnonHugePages", 0)
        if hugetlb or page_kib == HUGE_PAGE_SIZE // KIB:
            obtained = "hugetlb"
        elif anon_huge:
            obtained = "thp"
        else:
            obtained = "4k" if rss else "none"
        return BackingUsage(
            requested=self.backing.value, backing=obtained, size_kib=len(self.buffer) // KIB, rss_kib=rss,
            anon_huge_kib=anon_huge, hugetlb_kib=hugetlb, kernel_page_kib=page_kib,
        )  # fmt: skip

    def close(self) -> None:
        """Unmap guest RAM. Accelerators that map it must be closed first."""
        try:
            self.buffer.close()
        except BufferError:  # someone holds a ctypes view; the mapping dies with the process
            pass


@dataclass
class Rom:
    """Read-only memory (a BIOS or option ROM image) at a guest-physical address.

    The image lives in its own host mapping, padded with 0xFF to whole 4 KiB pages. On kvm its
    region becomes a `KVM_MEM_READONLY` slot: reads come from the mapping with no exit, and a
    guest store becomes a `KVM_EXIT_MMIO` the machine can ignore, as a ROM chip ignores it
    (api.rst §4.35, KVM_CAP_READONLY_MEM). On tcg it is mapped read/execute only; a guest store
    stops Unicorn, emu steps the storing instruction and restores the bytes (TcgVCpu.add_rom),
    so that both backends drop the store and count it as an MMIO exit.
    """

    guest_address: int
    data: bytes
    name: str = "rom"
    memory: GuestMemory = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.guest_address % PAGE_SIZE or not self.data:
            raise EmuError(f"ROM {self.name!r}: needs data and a 4 KiB-aligned address, not {self.guest_address:#x}")
        size = -(-len(self.data) // PAGE_SIZE) * PAGE_SIZE
        self.memory = GuestMemory(size)
        self.memory.write(0, self.data + b"\xff" * (size - len(self.data)))

    def region(self) -> MemoryRegion:
        return MemoryRegion(self.guest_address, self.memory.size, self.memory.host_address, readonly=True, name=self.name)

    def read(self, offset: int, length: int) -> bytes:
        """The ROM's bytes as the host sees them (to check that a guest store left them alone)."""
        return self.memory.read(offset, length)

    def close(self) -> None:
        self.memory.close()


class PageWalkerView:
    """Guest RAM for the page walker: the same reads, and stores that no listener hears.

    The walker's stores are Accessed/Dirty bits, made by the CPU as part of a translation: they
    are neither code the translator must drop nor guest stores to a page table (the shadow MMU
    causes them itself). Skipping the listeners keeps a shadow miss cheap."""

    def __init__(self, memory: GuestMemory) -> None:
        self.read_u32 = memory.read_u32
        self.read_u64 = memory.read_u64
        self._memory = memory

    def write_u32(self, address: int, value: int) -> None:
        memory = self._memory
        struct.pack_into("<I", memory.buffer, memory._index(address, 4), value & 0xFFFFFFFF)

    def write_u64(self, address: int, value: int) -> None:
        memory = self._memory
        struct.pack_into("<Q", memory.buffer, memory._index(address, 8), value & 0xFFFFFFFFFFFFFFFF)
