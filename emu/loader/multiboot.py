"""Multiboot v1: loading a kernel the way `qemu -kernel` and GRUB do.

The Multiboot Specification 0.6.96 lets a boot loader start a 32-bit kernel directly. The
kernel carries a header in its first 8192 bytes, 4-byte aligned (§3.1.1): magic 0x1BADB002,
flags, and a checksum that makes the three sum to zero. Flag bit 16 says the header also gives
load addresses (the "a.out kludge": header_addr, load_addr, load_end_addr, bss_end_addr,
entry_addr); otherwise the file is an ELF32 executable loaded by its program headers.

The loader hands over in 32-bit protected mode with paging off (§3.2): EAX = 0x2BADB002,
EBX = physical address of the multiboot information structure (§3.3) with the memory sizes,
the BIOS memory map, the command line, boot modules and the boot loader's name; CS a flat
4 GiB code segment, the other segments flat data; IF clear. As QEMU does, the command line is
the kernel's file name, then a space and the `--append` text, so one image prints the same
under QEMU and emu.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..accel import CpuState, DescriptorTable, Segment
from ..errors import EmuError
from ..memory import FOUR_GIB, GuestMemory, MemoryLayout

MULTIBOOT_MAGIC = 0x1BADB002
BOOTLOADER_MAGIC = 0x2BADB002
SEARCH_LIMIT = 8192
FLAG_AOUT_KLUDGE = 1 << 16
FLAG_VIDEO_MODE = 1 << 2

# multiboot_info flags (§3.3)
MBI_MEMORY, MBI_BOOTDEV, MBI_CMDLINE, MBI_MODS, MBI_MMAP, MBI_LOADER_NAME = 1, 2, 4, 8, 64, 512
MBI_ADDRESS = 0x9000  # below the EBDA; the info, strings and map live in 0x9000-0x9FFFF
LOADER_NAME = b"emu\0"
E820_RAM, E820_RESERVED = 1, 2
LOW_MEMORY_END = 0x9FC00  # 639 KiB of conventional memory, the EBDA above it
FIRMWARE_RESERVED = 0x20000  # top 128 KiB of RAM kept for firmware tables, as SeaBIOS does


@dataclass
class MultibootHeader:
    offset: int
    flags: int
    header_addr: int = 0
    load_addr: int = 0
    load_end_addr: int = 0
    bss_end_addr: int = 0
    entry_addr: int = 0


@dataclass
class LoadedKernel:
    entry: int
    segments: list[tuple[int, int]] = field(default_factory=list)  # (address, size) in memory
    end: int = 0


def find_header(image: bytes, name: str) -> MultibootHeader | None:
    for off in range(0, min(len(image), SEARCH_LIMIT) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", image, off)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            header = MultibootHeader(off, flags)
            if flags & FLAG_AOUT_KLUDGE:
                if off + 32 > len(image):
                    raise EmuError(f"{name}: truncated multiboot header")
                (header.header_addr, header.load_addr, header.load_end_addr, header.bss_end_addr,
                 header.entry_addr) = struct.unpack_from("<5I", image, off + 12)  # fmt: skip
            return header
    return None


def load_kernel(image: bytes, name: str, memory: GuestMemory) -> LoadedKernel:
    header = find_header(image, name)
    if header is None:
        if image[:5] == b"\x7fELF\x01" and _elf_truncated(image):  # ELF32: check its headers
            raise EmuError(f"{name}: truncated ELF file ({len(image)} bytes; its headers describe more)")
        kind = "an ELF file" if image[:4] == b"\x7fELF" else "a file"
        raise EmuError(f"{name}: {kind} without a multiboot header in its first 8 KiB")
    if header.flags & 0xFFFC & ~FLAG_AOUT_KLUDGE & 0xFFFF:
        raise EmuError(f"{name}: multiboot header asks for unsupported features (flags {header.flags:#x})")
    if header.flags & FLAG_AOUT_KLUDGE:
        return _load_aout_kludge(image, name, header, memory)
    return _load_elf(image, name, memory)


def _place(memory: GuestMemory, name: str, address: int, data: bytes, memsz: int) -> None:
    if address < 0x1000 or not memory.contains(address, memsz):
        raise EmuError(f"{name}: segment at {address:#x}-{address + memsz:#x} lies outside guest RAM "
                       f"({memory.describe()}); try a larger -m")  # fmt: skip
    memory.write(address, data + bytes(memsz - len(data)))


def _load_aout_kludge(image: bytes, name: str, h: MultibootHeader, memory: GuestMemory) -> LoadedKernel:
    file_offset = h.offset - (h.header_addr - h.load_addr)
    if h.header_addr < h.load_addr or file_offset < 0:
        raise EmuError(f"{name}: inconsistent multiboot load addresses")
    end = h.load_end_addr or (h.load_addr + len(image) - file_offset)
    size = end - h.load_addr
    if size <= 0 or file_offset + size > len(image):
        raise EmuError(f"{name}: truncated image (multiboot header says {size} bytes from offset {file_offset})")
    bss_end = max(h.bss_end_addr, end)
    _place(memory, name, h.load_addr, image[file_offset : file_offset + size], bss_end - h.load_addr)
    return LoadedKernel(h.entry_addr, [(h.load_addr, bss_end - h.load_addr)], bss_end)


ELF_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")  # Elf32_Ehdr (System V ABI, i386 supplement)
PROGRAM_HEADER = struct.Struct("<IIIIIIII")  # Elf32_Phdr
PT_LOAD = 1
EM_386 = 3


def _elf_truncated(image: bytes) -> bool:
    """Do the ELF headers describe program headers or segment bytes beyond the end of the file?"""
    if len(image) < ELF_HEADER.size:
        return True
    _, _, _, _, _, phoff, _, _, _, phentsize, phnum, _, _, _ = ELF_HEADER.unpack_from(image)
    if phentsize < PROGRAM_HEADER.size or phoff + phnum * phentsize > len(image):
        return True
    for i in range(phnum):
        p_type, offset, _, _, filesz, _, _, _ = PROGRAM_HEADER.unpack_from(image, phoff + i * phentsize)
        if p_type == PT_LOAD and offset + filesz > len(image):
            return True
    return False


def _load_elf(image: bytes, name: str, memory: GuestMemory) -> LoadedKernel:
    """Load the PT_LOAD segments of an ELF32 file at their physical addresses (p_paddr).

    Only the ELF and program headers matter to a boot loader, so they are read with `struct`
    here (pyelftools, ~50 ms to import, is left to the tools that need symbols).
    """
    if image[:4] != b"\x7fELF":
        raise EmuError(f"{name}: multiboot header without the a.out-kludge addresses, and not an ELF file")
    if len(image) < ELF_HEADER.size:
        raise EmuError(f"{name}: truncated ELF header ({len(image)} bytes)")
    ident, _, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _ = ELF_HEADER.unpack_from(image)
    elf_class, data = ident[4], ident[5]
    if elf_class != 1 or data != 1 or machine != EM_386:
        bits = {1: "32", 2: "64"}.get(elf_class, "?")
        raise EmuError(f"{name}: a multiboot ELF must be ELF32 little-endian for i386 (this one is "
                       f"ELF{bits}, machine {machine}), as with qemu -kernel")  # fmt: skip
    if phentsize < PROGRAM_HEADER.size or phoff + phnum * phentsize > len(image):
        raise EmuError(f"{name}: truncated ELF file (program headers end past the file's {len(image)} bytes)")
    loaded = LoadedKernel(entry)
    for i in range(phnum):
        p_type, offset, _, paddr, filesz, memsz, _, _ = PROGRAM_HEADER.unpack_from(image, phoff + i * phentsize)
        if p_type != PT_LOAD or memsz == 0:
            continue
        if filesz > memsz:
            raise EmuError(f"{name}: malformed ELF segment (file size {filesz} > memory size {memsz})")
        if offset + filesz > len(image):
            raise EmuError(f"{name}: truncated ELF file (a segment needs bytes {offset}-{offset + filesz}, "
                           f"the file has {len(image)})")  # fmt: skip
        _place(memory, name, paddr, image[offset : offset + filesz], memsz)
        loaded.segments.append((paddr, memsz))
        loaded.end = max(loaded.end, paddr + memsz)
    if not loaded.segments:
        raise EmuError(f"{name}: ELF file has no loadable segments")
    return loaded


def e820_map(layout: MemoryLayout) -> list[tuple[int, int, int]]:
    """The BIOS memory map (ACPI spec §15, INT 15h E820h) of emu's PC: (base, length, type).

    From the layout: conventional memory up to the EBDA, the BIOS area, extended memory below
    4 GiB less the top 128 KiB the firmware keeps, the BIOS ROM alias below 4 GiB, and any RAM
    above 4 GiB. A flat layout (tests) is described as the PC it stands in for.
    """
    top = layout.below_4g_size
    entries = [
        (0, LOW_MEMORY_END, E820_RAM),
        (LOW_MEMORY_END, 0xA0000 - LOW_MEMORY_END, E820_RESERVED),
        (0xF0000, 0x10000, E820_RESERVED),
        (0x100000, top - FIRMWARE_RESERVED - 0x100000, E820_RAM),
        (top - FIRMWARE_RESERVED, FIRMWARE_RESERVED, E820_RESERVED),
        (0xFFFC0000, 0x40000, E820_RESERVED),  # the BIOS ROM alias below 4 GiB
    ]
    if layout.above_4g_size:
        entries.append((FOUR_GIB, layout.above_4g_size, E820_RAM))
    return entries


def memory_sizes(layout: MemoryLayout) -> tuple[int, int]:
    """(mem_lower, mem_upper) in KiB (§3.3): conventional memory, then contiguous RAM from 1 MiB
    to the first hole (the firmware's top 128 KiB excluded); RAM above 4 GiB is only in the map."""
    return LOW_MEMORY_END // 1024, (layout.below_4g_size - FIRMWARE_RESERVED) // 1024 - 1024


def build_info(memory: GuestMemory, cmdline: str, modules: list[tuple[int, int, str]]) -> int:
    """Write the multiboot information structure (§3.3) and return its address."""
    cursor = MBI_ADDRESS + 0x80  # after the 88-byte structure (rounded)

    def put(data: bytes) -> int:
        nonlocal cursor
        address = cursor
        if address + len(data) > 0x9F000:
            raise EmuError("command line and module strings are too long for the multiboot area")
        memory.write(address, data)
        cursor = (cursor + len(data) + 7) & ~7
        return address

    cmd_addr = put(cmdline.encode() + b"\0")
    name_addr = put(LOADER_NAME)
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in e820_map(memory.layout))
    mmap_addr = put(mmap)
    mod_entries = b""
    for start, end, string in modules:
        mod_entries += struct.pack("<IIII", start, end, put(string.encode() + b"\0"), 0)
    mods_addr = put(mod_entries) if modules else 0
    flags = MBI_MEMORY | MBI_BOOTDEV | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER_NAME
    mem_lower, mem_upper = memory_sizes(memory.layout)
    info = struct.pack(
        "<IIIIIIIIIIIIIIIIIIIIIII",
        flags,
        mem_lower,  # KiB of conventional memory (INT 12h)
        mem_upper,  # KiB of usable RAM from 1 MiB up
        0x8000FFFF,  # boot_device: BIOS disk 0x80, no partition
        cmd_addr,
        len(modules),
        mods_addr,
        0, 0, 0, 0,  # syms (unused: ELF section table not passed)
        len(mmap),
        mmap_addr,
        0, 0,  # drives
        0,  # config table
        name_addr,
        0,  # apm table
        0, 0, 0, 0, 0,  # vbe
    )  # fmt: skip
    memory.write(MBI_ADDRESS, info)
    return MBI_ADDRESS


def entry_state(entry: int, info_address: int) -> CpuState:
    """CPU state at the multiboot hand-over (§3.2)."""
    state = CpuState.reset()
    state.rip = entry
    state.rax = BOOTLOADER_MAGIC
    state.rbx = info_address
    state.rdx = 0
    state.cr0 = 0x11  # PE, ET
    state.cs = Segment.flat32(0x10, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(state, name, Segment.flat32(0x18, code=False))
    state.tr = Segment(selector=0, base=0, limit=0xFFFF, type=0xB, s=0)
    state.gdt = DescriptorTable(0, 0)
    state.idt = DescriptorTable(0, 0)
    return state


def boot(path: Path, display_name: str, memory: GuestMemory, append: str,
         modules: list[Path] | None = None) -> CpuState:  # fmt: skip
    """Load a multiboot kernel (and modules) into RAM; return the CPU state to start it with."""
    image = path.read_bytes()
    kernel = load_kernel(image, display_name, memory)
    placed: list[tuple[int, int, str]] = []
    cursor = (kernel.end + 0xFFF) & ~0xFFF
    for module in modules or []:
        data = module.read_bytes()
        _place(memory, str(module), cursor, data, len(data))
        placed.append((cursor, cursor + len(data), str(module)))
        cursor = (cursor + len(data) + 0xFFF) & ~0xFFF
    cmdline = display_name + (" " + append if append else "")
    info = build_info(memory, cmdline, placed)
    return entry_state(kernel.entry, info)
