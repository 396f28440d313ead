"""The multiboot v1 loader: what the kernel finds in memory and registers at its entry."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.loader import multiboot
from emu.loader.multiboot_image import CODE_OFFSET, build_multiboot_elf
from emu.memory import GuestMemory

HELLO = Path(__file__).resolve().parents[1] / "firmware" / "build" / "hello64.elf"


def c_string(memory: GuestMemory, address: int) -> str:
    data = memory.read(address, 256)
    return data[: data.index(0)].decode()


def test_information_structure(tmp_path: Path) -> None:
    memory = GuestMemory(64 << 20)
    module = tmp_path / "mod.bin"
    module.write_bytes(b"module payload")
    state = multiboot.boot(HELLO, "hello64.elf", memory, "a=1 b=2", [module])
    assert state.rax == multiboot.BOOTLOADER_MAGIC and state.mode == "protected32" and not state.rflags & 0x200
    info = state.rbx
    flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr = struct.unpack_from(
        "<7I", memory.read(info, 28))
    assert flags & 0x24F == 0x24F  # memory, boot device, cmdline, modules, mmap, loader name
    assert (mem_lower, mem_upper) == (639, (64 << 10) - 128 - 1024)  # as SeaBIOS reports to QEMU
    assert boot_device == 0x8000FFFF
    assert c_string(memory, cmdline) == "hello64.elf a=1 b=2"
    assert mods_count == 1
    start, end, string, _ = struct.unpack_from("<4I", memory.read(mods_addr, 16))
    assert memory.read(start, end - start) == b"module payload" and start % 4096 == 0
    assert c_string(memory, string) == str(module)
    mmap_length, mmap_addr = struct.unpack_from("<2I", memory.read(info + 44, 8))
    entries = [struct.unpack_from("<IQQI", memory.read(mmap_addr + i, 24)) for i in range(0, mmap_length, 24)]
    assert (20, 0, 0x9FC00, 1) in entries
    assert (20, 0x100000, (64 << 20) - 0x20000 - 0x100000, 1) in entries
    loader = struct.unpack_from("<I", memory.read(info + 64, 4))[0]
    assert c_string(memory, loader) == "emu"


def test_aout_kludge_header_loads_at_its_addresses() -> None:
    code = b"\xf4"  # hlt
    load = 0x200000
    header = struct.pack("<IIIIIIII", multiboot.MULTIBOOT_MAGIC, 1 << 16, (-(multiboot.MULTIBOOT_MAGIC + (1 << 16))) & 0xFFFFFFFF,
                         load, load, load + 32 + len(code), load + 0x3000, load + 32)  # fmt: skip
    memory = GuestMemory(8 << 20)
    memory.write(load + 0x1000, b"\xaa" * 16)  # inside the bss: must be zeroed
    kernel = multiboot.load_kernel(header + code, "aout", memory)
    assert kernel.entry == load + 32 and memory.read(load + 32, 1) == code
    assert memory.read(load + 0x1000, 16) == bytes(16)


def test_elf64_is_refused_like_qemu() -> None:
    image = bytearray(build_multiboot_elf(b"\xf4"))
    image[4] = 2  # ELFCLASS64
    with pytest.raises(EmuError, match="must be ELF32"):
        multiboot.load_kernel(bytes(image), "k", GuestMemory(4 << 20))


def test_entry_is_the_elf_entry() -> None:
    memory = GuestMemory(4 << 20)
    kernel = multiboot.load_kernel(build_multiboot_elf(b"\x90\xf4"), "k", memory)
    assert kernel.entry == 0x100000 + CODE_OFFSET
    assert memory.read(kernel.entry, 2) == b"\x90\xf4"
