"""Guest RAM: the PC memory map, host backing (4k, THP, hugetlb) and its measurement, on both
accelerators; the CMOS, e820 and multiboot numbers derived from the layout; --stats output."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asm import assemble, requires_as
from guestenv import ACCELS
from memguest import CODE, RESULTS, make_guest
from test_guests import APPEND, TERMINAL_INPUT, expected_for

from emu.accel import ExitReason
from emu.devices.bus import Buses
from emu.errors import EmuError
from emu.loader import multiboot
from emu.memory import (
    FOUR_GIB,
    Backing,
    GuestMemory,
    GuestMemoryError,
    HugePagePool,
    MemoryLayout,
    RamRange,
    default_huge_page_kib,
)

MIB, GIB = 1 << 20, 1 << 30
ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware" / "build"
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
HUGE_PAGES_FOR_128_MIB = 64


# --- the layout -------------------------------------------------------------------------------


def test_pc_layout_for_128_mib() -> None:
    layout = MemoryLayout.pc(128 * MIB)
    assert layout.ranges == (RamRange(0, 0xA0000, 0), RamRange(0x100000, 127 * MIB, 0x100000))
    assert (layout.below_4g_size, layout.above_4g_size) == (128 * MIB, 0)
    assert [layout.region_name(r) for r in layout.ranges] == ["ram-low", "ram-below-4g"]


def test_pc_layout_for_5000_mib_puts_the_rest_above_4_gib() -> None:
    layout = MemoryLayout.pc(5000 * MIB)
    assert layout.ranges == (
        RamRange(0, 0xA0000, 0),
        RamRange(0x100000, 3 * GIB - 0x100000, 0x100000),  # up to 3 GiB; 3-4 GiB is the PCI hole
        RamRange(FOUR_GIB, 5000 * MIB - 3 * GIB, 3 * GIB),  # host offset 3 GiB appears at 4 GiB
    )
    assert (layout.below_4g_size, layout.above_4g_size) == (3 * GIB, 5000 * MIB - 3 * GIB)
    assert layout.region_name(layout.ranges[2]) == "ram-above-4g"
    assert MemoryLayout.pc(3 * GIB).above_4g_size == 0


def test_flat_layout_is_the_default() -> None:
    memory = GuestMemory(4 * MIB)
    try:
        assert memory.ranges == [(0, 4 * MIB, 0)]
        memory.write(0xB8000, b"ram")  # no hole in a flat layout
        assert memory.read(0xB8000, 3) == b"ram"
    finally:
        memory.close()


def test_accessors_follow_the_guest_physical_map() -> None:
    memory = GuestMemory.pc(128 * MIB)
    try:
        assert [tuple(r) for r in memory.ranges] == [(0, 0xA0000, 0), (0x100000, 127 * MIB, 0x100000)]
        memory.write_u64(0x9FFF8, 0x1122334455667788)  # the last qword of conventional memory
        assert memory.read_u64(0x9FFF8) == 0x1122334455667788 and memory.read_u8(0x9FFFF) == 0x11
        memory.write_u32(0x100000, 0xCAFEF00D)
        assert memory.read_u32(0x100000) == 0xCAFEF00D and memory.read_u16(0x100002) == 0xCAFE
        for address, length in [(0xA0000, 1), (0xFFFFF, 1), (0x9FFFC, 8), (0xFFFFC, 8), (128 * MIB - 4, 8),
                                (128 * MIB, 1), (-1, 1), (FOUR_GIB, 1)]:  # fmt: skip
            assert not memory.contains(address, length)
            with pytest.raises(GuestMemoryError, match="not RAM"):
                memory.read(address, length)
            with pytest.raises(GuestMemoryError):
                memory.write(address, bytes(length))
        with pytest.raises(GuestMemoryError):
            memory.check(0x1000, -1)
        regions = memory.regions()
        assert [(r.guest_address, r.size, r.name) for r in regions] == [
            (0, 0xA0000, "ram-low"), (0x100000, 127 * MIB, "ram-below-4g")]  # fmt: skip
        assert [r.host_address - memory.host_address for r in regions] == [0, 0x100000]
        assert memory.describe() == "0x0-0x9ffff, 0x100000-0x7ffffff"
    finally:
        memory.close()


def test_ram_above_4_gib_is_host_offset_3_gib() -> None:
    memory = GuestMemory.pc(5000 * MIB)
    try:
        memory.write_u64(FOUR_GIB, 0xA5A5_0000_1234_5678)
        assert ctypes.string_at(memory.host_address + 3 * GIB, 8) == (0xA5A5_0000_1234_5678).to_bytes(8, "little")
        memory.write(FOUR_GIB + 5000 * MIB - 3 * GIB - 4, b"end!")  # the last bytes of RAM
        assert not memory.contains(3 * GIB, 1) and not memory.contains(FOUR_GIB - 4, 8)
    finally:
        memory.close()


def test_e820_and_multiboot_sizes_come_from_the_layout() -> None:
    small, big = MemoryLayout.pc(128 * MIB), MemoryLayout.pc(5000 * MIB)
    assert multiboot.memory_sizes(small) == (639, 129920)  # what QEMU's guests print for -m 128
    assert multiboot.e820_map(small) == [
        (0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
        (0x100000, 128 * MIB - 0x20000 - 0x100000, 1), (128 * MIB - 0x20000, 0x20000, 2),
        (0xFFFC0000, 0x40000, 2),
    ]  # fmt: skip
    assert multiboot.memory_sizes(big) == (639, 3 * GIB // 1024 - 128 - 1024)
    assert multiboot.e820_map(big)[3:] == [
        (0x100000, 3 * GIB - 0x20000 - 0x100000, 1), (3 * GIB - 0x20000, 0x20000, 2),
        (0xFFFC0000, 0x40000, 2), (FOUR_GIB, 5000 * MIB - 3 * GIB, 1),
    ]  # fmt: skip


def test_machine_tells_the_cmos_and_the_guest_about_ram_above_4_gib() -> None:
    from emu.machine import Machine, MachineConfig

    machine = Machine(MachineConfig(kernel=FIRMWARE / "hello64.elf", memory_mib=5000))
    try:
        cmos = machine.rtc.ram
        assert cmos[0x34] | cmos[0x35] << 8 == (3 * GIB - 16 * MIB) // (64 << 10)  # 64 KiB units, 16 MiB-3 GiB
        assert cmos[0x5B] | cmos[0x5C] << 8 | cmos[0x5D] << 16 == (5000 * MIB - 3 * GIB) // (64 << 10)
        info = multiboot.MBI_ADDRESS
        mem_upper = machine.memory.read_u32(info + 8)
        mmap_length, mmap_addr = machine.memory.read_u32(info + 44), machine.memory.read_u32(info + 48)
        entries = [machine.memory.read(mmap_addr + i + 4, 20) for i in range(0, mmap_length, 24)]
        assert mem_upper == 3 * GIB // 1024 - 128 - 1024
        assert (FOUR_GIB, 5000 * MIB - 3 * GIB) in [(int.from_bytes(e[:8], "little"), int.from_bytes(e[8:16], "little"))
                                                    for e in entries]  # fmt: skip
    finally:
        machine.close()


# --- guests on both accelerators --------------------------------------------------------------


def unassigned_mmio_value() -> int:
    """What the machine's MMIO bus answers for a 4-byte read nothing claims (emu.devices.bus)."""
    return Buses().mmio_read(0xA0000, 4)


@requires_as
@pytest.mark.parametrize("accel", ACCELS)
def test_guest_uses_ram_above_4_gib_and_sees_the_holes(accel: str) -> None:
    """-m 5000: a long-mode guest stores at and reads from 4 GiB and the last qword of RAM; the
    legacy hole and the PCI hole are not RAM: their reads go to the MMIO bus (an MMIO exit on kvm)
    and return what it answers for unassigned memory."""
    top = FOUR_GIB + 5000 * MIB - 3 * GIB
    code = assemble(f"""
        movabs $0x{FOUR_GIB:x}, %rbx
        movabs $0x1122334455667788, %rax
        mov %rax, (%rbx)
        mov 8(%rbx), %rcx
        mov %rcx, {RESULTS:#x}
        movabs ${top - 8:#x}, %rdx
        mov %rax, (%rdx)
        mov 0xa0000, %eax
        mov %eax, {RESULTS + 8:#x}
        movabs $0xc0000000, %rsi
        mov (%rsi), %eax
        mov %eax, {RESULTS + 12:#x}
        hlt
    """, CODE)  # fmt: skip
    guest = make_guest(accel, GuestMemory.pc(5000 * MIB))
    try:
        guest.memory.write_u64(FOUR_GIB + 8, 0x0BAD_C0DE_0000_0042)
        guest.start(code)
        guest.run_to_halt()
        memory = guest.memory
        assert memory.read_u64(FOUR_GIB) == 0x1122334455667788
        assert ctypes.string_at(memory.host_address + 3 * GIB, 8) == memory.read(FOUR_GIB, 8)
        assert memory.read_u64(top - 8) == 0x1122334455667788
        assert memory.read_u64(RESULTS) == 0x0BAD_C0DE_0000_0042
        ones_or_zeros = unassigned_mmio_value()
        assert (memory.read_u32(RESULTS + 8), memory.read_u32(RESULTS + 12)) == (ones_or_zeros, ones_or_zeros)
        assert guest.io.mmio == [("read", 0xA0000, 4, ones_or_zeros), ("read", 0xC0000000, 4, ones_or_zeros)]
        assert guest.vcpu.stats.counts[ExitReason.MMIO] == 2
    finally:
        guest.close()


@requires_as
@pytest.mark.parametrize("accel", ACCELS)
def test_vga_window_is_not_ram(accel: str) -> None:
    """The host mapping is contiguous, but 0xA0000-0xFFFFF is not in the guest's RAM: a store to
    the VGA text buffer reaches the MMIO bus (nothing there), and the host bytes stay zero."""
    code = assemble(f"""
        movl $0x0741, 0xb8000
        mov 0xb8000, %eax
        mov %eax, {RESULTS:#x}
        hlt
    """, CODE)  # fmt: skip
    guest = make_guest(accel, GuestMemory.pc(128 * MIB))
    try:
        guest.start(code)
        guest.run_to_halt()
        assert guest.memory.read_u32(RESULTS) == unassigned_mmio_value()
        assert guest.io.mmio == [("write", 0xB8000, 4, 0x741), ("read", 0xB8000, 4, unassigned_mmio_value())]
        assert ctypes.string_at(guest.memory.host_address + 0xB8000, 4) == bytes(4)
    finally:
        guest.close()


TOUCH_8_MIB = """
    mov $0x400000, %rdi
    mov $2048, %ecx
1:  mov %rdi, (%rdi)
    add $0x1000, %rdi
    dec %ecx
    jnz 1b
    hlt
"""


@requires_as
@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("backing", ["4k", "thp"])
def test_backing_obtained_is_measured(accel: str, backing: str) -> None:
    """A guest writes one qword per page over 8 MiB (4 aligned 2 MiB pages); smaps shows 8 MiB
    more resident, as transparent huge pages with thp and as 4 KiB pages with 4k."""
    # What the kernel hands out at fault time is its choice (fragmentation, DAMON reclaim on
    # these hosts): a measurement that misses gets one more run before it counts as wrong.
    for attempt in range(2):
        guest = make_guest(accel, GuestMemory.pc(64 * MIB, backing=backing))
        try:
            guest.start(assemble(TOUCH_8_MIB, CODE))
            before = guest.memory.usage()
            guest.run_to_halt()
            after = guest.memory.usage()
            assert guest.memory.read_u64(0x400000 + 8 * MIB - 0x1000) == 0x400000 + 8 * MIB - 0x1000
            assert after.requested == backing and after.size_kib >= 64 * 1024
        finally:
            guest.close()
        grew = after.rss_kib - before.rss_kib >= 8 * 1024
        huge = after.anon_huge_kib - before.anon_huge_kib
        if grew and ((backing == "thp" and after.backing == "thp" and huge >= 8 * 1024)
                     or (backing == "4k" and after.backing == "4k" and after.anon_huge_kib == 0)):  # fmt: skip
            break
    assert after.rss_kib - before.rss_kib >= 8 * 1024
    if backing == "thp":
        assert after.backing == "thp"
        assert after.anon_huge_kib - before.anon_huge_kib >= 8 * 1024
    else:
        assert after.backing == "4k" and after.anon_huge_kib == 0


def test_thp_mapping_is_2_mib_aligned() -> None:
    memory = GuestMemory.pc(6 * MIB, backing="thp")
    try:
        assert memory.host_address % (2 * MIB) == 0 and memory.backing is Backing.THP
        assert memory.usage().backing == "none"  # nothing faulted in yet
    finally:
        memory.close()


def test_unknown_backing_is_one_line() -> None:
    with pytest.raises(EmuError, match="--mem-backing 1g: choose one of 4k, thp, hugetlb"):
        GuestMemory(2 * MIB, backing="1g")


# --- hugetlb ----------------------------------------------------------------------------------


def _set_pool(pages: int) -> None:
    NR_HUGEPAGES.write_text(f"{pages}\n")


@pytest.fixture
def huge_pages() -> Iterator[None]:
    """64 free 2 MiB hugetlb pages (enough for -m 128), reserved as root; the old pool size
    is restored afterwards."""
    pool = HugePagePool.read()
    if pool is None or default_huge_page_kib() != 2048:
        pytest.skip("the host kernel has no default 2 MiB hugetlb pool")
    old = int(NR_HUGEPAGES.read_text())
    changed = False
    try:
        if pool.available < HUGE_PAGES_FOR_128_MIB:
            try:
                _set_pool(old + HUGE_PAGES_FOR_128_MIB - pool.available)
                changed = True
            except OSError as err:
                pytest.skip(f"cannot reserve hugetlb pages ({err.strerror}; needs root)")
            got = HugePagePool.read()
            if got is None or got.available < HUGE_PAGES_FOR_128_MIB:
                pytest.skip(f"the kernel found only {got and got.available} free 2 MiB pages (fragmented memory)")
        yield
    finally:
        if changed:
            _set_pool(old)


@pytest.fixture
def no_huge_pages() -> Iterator[None]:
    """An empty hugetlb pool (forced as root when needed); the old size is restored afterwards."""
    pool = HugePagePool.read()
    if pool is None or default_huge_page_kib() != 2048:
        pytest.skip("the host kernel has no default 2 MiB hugetlb pool")
    old = int(NR_HUGEPAGES.read_text())
    changed = False
    try:
        if pool.available:
            try:
                _set_pool(0)
                changed = True
            except OSError as err:
                pytest.skip(f"cannot empty the hugetlb pool ({err.strerror}; needs root)")
            if (HugePagePool.read() or pool).available:
                pytest.skip("hugetlb pages in use elsewhere keep the pool from emptying")
        yield
    finally:
        if changed:
            _set_pool(old)


def run_emu(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], input=stdin, capture_output=True, timeout=120,
                          check=False)  # fmt: skip


def test_hugetlb_without_pages_is_one_line(no_huge_pages: None) -> None:
    result = run_emu("--mem-backing", "hugetlb", str(FIRMWARE / "hello64.elf"))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and result.stdout == b""
    assert lines == [("emu: --mem-backing hugetlb: the host has 0 free 2 MiB huge pages for 128 MiB of guest RAM "
                      "(needs 64; as root: echo 64 > /proc/sys/vm/nr_hugepages)")]  # fmt: skip


def check_guest(guest: str, accel: str, backing: str, tmp_path: Path) -> dict:
    """Run a firmware guest with `backing`: its transcript must be the usual one. Returns
    the `memory` section of --stats-json."""
    stats = tmp_path / f"{guest}-{accel}-{backing}.json"
    result = run_emu("--accel", accel, "--mem-backing", backing, "--stats-json", str(stats), "--append", APPEND,
                     str(FIRMWARE / f"{guest}.elf"), stdin=TERMINAL_INPUT)  # fmt: skip
    text, status, source = expected_for(guest, accel)
    assert result.stdout.decode(errors="replace") == text.decode(errors="replace"), f"differs from {source}"
    assert result.returncode == status, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    return json.loads(stats.read_text())["memory"]


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("guest", ["hello64", "irqs64"])
@pytest.mark.parametrize("backing", ["4k", "thp"])
def test_guest_output_is_the_same_with_each_backing(guest: str, accel: str, backing: str, tmp_path: Path) -> None:
    # The transcript must match on every run. Whether the kernel hands out a huge page at fault
    # time is its choice (fragmentation, DAMON on these hosts), so the measured backing gets a
    # second run before it counts as wrong.
    for attempt in range(2):
        memory = check_guest(guest, accel, backing, tmp_path)
        assert memory["requested"] == backing
        measured_ok = memory["backing"] == backing and (memory["anon_huge_kib"] > 0) == (backing == "thp")
        if measured_ok:
            break
    assert memory["backing"] == backing  # the guest touched memory: measured in smaps
    assert (memory["anon_huge_kib"] > 0) == (backing == "thp")


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("guest", ["hello64", "irqs64"])
def test_guest_output_is_the_same_on_hugetlb(guest: str, accel: str, tmp_path: Path, huge_pages: None) -> None:
    memory = check_guest(guest, accel, "hugetlb", tmp_path)
    assert memory["backing"] == "hugetlb" and memory["hugetlb_kib"] >= 2048 and memory["kernel_page_kib"] == 2048


def test_stats_report_memory_on_tcg(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    result = run_emu("--stats", "--stats-json", str(stats), "-m", "5000", str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 1, result.stderr
    memory = json.loads(stats.read_text())["memory"]
    assert memory["size_mib"] == 5000 and memory["dirty_log"] is False and memory["dirty_pages"] is None
    assert [(r["guest_address"], r["size"]) for r in memory["ranges"]] == [
        (0, 0xA0000), (0x100000, 3 * GIB - 0x100000), (FOUR_GIB, 5000 * MIB - 3 * GIB)]  # fmt: skip
    for key in ("backing", "requested", "rss_kib", "anon_huge_kib", "hugetlb_kib", "size_kib"):
        assert key in memory
    assert "memory: 5000 MiB at 0x0-0x9ffff, 0x100000-0xbfffffff, 0x100000000-0x1787fffff; backing 4k" in (
        result.stderr.decode())


def test_dirty_log_on_tcg_is_one_line() -> None:
    result = run_emu("--dirty-log", str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode().strip().splitlines() == [
        "emu: --dirty-log is a kvm feature (KVM_GET_DIRTY_LOG); --accel tcg does not log dirty pages"]
