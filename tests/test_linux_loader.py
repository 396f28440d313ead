"""The Linux boot protocol loader (emu/loader/linux.py), on synthetic bzImages: where the kernel,
initrd and command line go, what the zero page says, the entry state, and one clear line for
images it cannot boot."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.loader import linux
from emu.memory import GuestMemory


def bzimage(version: int = 0x020F, loadflags: int = 0x01, setup_sects: int = 1, kernel: bytes = b"\x90" * 4096,
            relocatable: bool = True, pref: int = 0x1000000) -> bytes:  # fmt: skip
    setup = bytearray(512 * (setup_sects + 1))
    setup[0x1F1] = setup_sects
    setup[0x201] = 0x6A  # the header runs to 0x26C
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, version)
    setup[0x211] = loadflags
    struct.pack_into("<I", setup, 0x214, 0x100000)
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x200000)
    setup[0x234] = int(relocatable)
    struct.pack_into("<I", setup, 0x238, 2047)  # cmdline_size
    struct.pack_into("<Q", setup, 0x258, pref)
    struct.pack_into("<I", setup, 0x260, 0x10000)  # init_size
    return bytes(setup) + kernel


@pytest.fixture
def memory():
    mem = GuestMemory.pc(128 << 20)
    yield mem
    mem.close()


def test_kernel_initrd_cmdline_and_zero_page(tmp_path: Path, memory: GuestMemory) -> None:
    image, initrd = tmp_path / "bzImage", tmp_path / "initrd"
    image.write_bytes(bzimage())
    initrd.write_bytes(b"070701" + bytes(1000))
    state, loaded = linux.load(image, memory, "console=ttyS0", initrd)
    assert loaded.kernel_address == 0x1000000 and memory.read(0x1000000, 4096) == b"\x90" * 4096
    zp = memory.read(linux.ZERO_PAGE, 4096)
    assert zp[0x202:0x206] == b"HdrS" and zp[0x210] == 0xFF  # the header copied; type_of_loader
    ramdisk_image, ramdisk_size = struct.unpack_from("<II", zp, 0x218)
    assert ramdisk_size == 1006 and memory.read(ramdisk_image, 6) == b"070701" and ramdisk_image % 4096 == 0
    assert ramdisk_image + ramdisk_size <= memory.layout.below_4g_size - 0x20000  # below the firmware's top
    cmd_line_ptr = struct.unpack_from("<I", zp, 0x228)[0]
    assert memory.read(cmd_line_ptr, 14) == b"console=ttyS0\0"
    entries = zp[0x1E8]
    e820 = [struct.unpack_from("<QQI", zp, 0x2D0 + 20 * i) for i in range(entries)]
    assert (0x100000, memory.layout.below_4g_size - 0x20000 - 0x100000, 1) in e820
    # 32-bit protocol entry: protected mode, paging off, __BOOT_CS/__BOOT_DS, %esi = zero page
    assert state.rip == 0x1000000 and state.rsi == linux.ZERO_PAGE and state.cr0 & 0x80000001 == 1
    assert state.cs.selector == 0x10 and state.ds.selector == 0x18
    gdt = memory.read(state.gdt.base, state.gdt.limit + 1)
    assert struct.unpack_from("<Q", gdt, 0x10)[0] == 0x00CF9A000000FFFF


def test_a_non_relocatable_kernel_goes_to_1_mib(tmp_path: Path, memory: GuestMemory) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(bzimage(relocatable=False))
    _, loaded = linux.load(image, memory, "")
    assert loaded.kernel_address == 0x100000


@pytest.mark.parametrize("data, message", [
    (bzimage(version=0x0204), "boot protocol 2.04, too old"),
    (bzimage(loadflags=0), "a zImage"),
    (b"MZ" + bytes(1000), "no \"HdrS\" setup header"),
    (bzimage(setup_sects=30, kernel=b""), "truncated"),
])  # fmt: skip
def test_images_it_cannot_boot_are_one_line(tmp_path: Path, memory: GuestMemory, data: bytes, message: str) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(data)
    with pytest.raises(EmuError, match=message):
        linux.load(image, memory, "")
