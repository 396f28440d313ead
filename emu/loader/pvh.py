"""PVH: starting an uncompressed kernel ELF (Linux's vmlinux) at its 32-bit entry, as `qemu -kernel` does.

Xen defined the PVH boot ABI for guests without firmware, and QEMU, Firecracker and cloud
hypervisors reuse it for a fast direct boot: no real-mode setup code, no decompressor. The
pieces (references by their place in the public sources):

  The note    The kernel ELF carries, in a PT_NOTE segment, an ELF note with name "Xen" and
              type XEN_ELFNOTE_PHYS32_ENTRY = 18 (xen/include/public/elfnote.h) whose
              descriptor is the *physical* address of its 32-bit entry point. Linux emits it
              from arch/x86/platform/pvh/head.S (CONFIG_PVH) as a pointer-sized value: 8 bytes
              in a 64-bit vmlinux, 4 in a 32-bit one. Note headers are three 32-bit words
              (namesz, descsz, type) in ELF32 and ELF64 alike, the name and the descriptor
              each padded to 4 bytes (System V ABI, "Note Section").
  Loading     Every PT_LOAD segment is copied to its physical address (p_paddr; a vmlinux's
              virtual addresses are the kernel's high mapping), the rest of p_memsz zeroed.
  Start info  struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h), here in
              version 1, little-endian, 56 bytes:
                 0 magic 0x336EC578 ("xEn3" with the 0x80 bit of the "E" set)
                 4 version (1: the memory map fields exist)   8 flags (0)
                12 nr_modules   16 modlist_paddr   24 cmdline_paddr   32 rsdp_paddr
                40 memmap_paddr   48 memmap_entries   52 reserved
              A module entry (hvm_modlist_entry) is paddr, size, cmdline_paddr, reserved, all
              64-bit; Linux takes module 0 as its initrd (arch/x86/platform/pvh/enlighten.c,
              init_pvh_bootparams). A memory map entry (hvm_memmap_table_entry) is addr, size
              (64-bit), type (E820 numbering), reserved. A kernel not running on Xen has no
              hypercall to ask for the memory map, so Linux requires version 1 with a map.
              rsdp_paddr is where the ACPI RSDP is, 0 for none (then Linux scans for it).
  Entry       docs/misc/pvh.pandoc in Xen: 32-bit protected mode, paging off; CR0 = PE (other
              writable bits clear), CR4 = 0; CS a 32-bit execute/read segment, DS, ES and SS
              32-bit read/write, all with base 0 and limit 4 GiB (the selectors unspecified);
              TR a 32-bit TSS, base 0, limit 67h; EFLAGS.IF, TF and VM clear; %ebx = physical
              address of the start info. Everything else is the kernel's job (its own GDT,
              IDT, stack, page tables, long mode).

QEMU does this with an option ROM (pc-bios/optionrom/pvh.S and pvh_main.c) that its SeaBIOS
runs: it collects the E820 map through INT 15h, scans E0000-FFFFF for the RSDP, fetches the
command line and initrd over fw_cfg, and jumps to the entry with %ebx set; hw/i386/x86.c
(load_elfboot) loads the segments and reads the note. emu has no BIOS on this path, so it
builds the same structures directly: the map from emu's layout (the one the Linux and
multiboot loaders hand over), the initrd as high below 4 GiB as the firmware's reserved top
allows (QEMU: below_4g_mem_size less its ACPI data), the RSDP found the way QEMU's ROM finds
it, in the ROM of BIOS tables if one holds it.

Where the loader's own structures go (conventional memory, which Linux keeps reserved):
  6000h GDT (null, 08h flat code, 10h flat data, as QEMU's pvh.S)   6040h hvm_start_info
  6080h the module list   6100h the memory map   7000h the command line (up to 4 KiB, the
  size of QEMU's buffer)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..accel import CpuState, DescriptorTable, Segment
from ..errors import EmuError
from ..memory import GuestMemory
from .multiboot import FIRMWARE_RESERVED, e820_map

XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_HVM_START_MAGIC = 0x336EC578
START_INFO_VERSION = 1
GDT_ADDRESS, START_INFO, MODLIST, MEMMAP, CMDLINE = 0x6000, 0x6040, 0x6080, 0x6100, 0x7000
CMDLINE_MAX = 4096  # with its terminating zero
MEMMAP_MAX = 127  # Linux copies the map into boot_params' 128 entries and adds the ISA hole
CODE_SELECTOR, DATA_SELECTOR = 0x08, 0x10
RSDP_SIGNATURE = b"RSD PTR "

PT_LOAD, PT_NOTE = 1, 4
EM_386, EM_X86_64 = 3, 62
# (Ehdr, Phdr) of each ELF class; only the fields a loader needs are named below
ELF32 = (struct.Struct("<16sHHIIIIIHHHHHH"), struct.Struct("<IIIIIIII"))
ELF64 = (struct.Struct("<16sHHIQQQIHHHHHH"), struct.Struct("<IIQQQQQQ"))


@dataclass(frozen=True)
class ProgramHeader:
    """One program header: p_type, p_offset, p_paddr, p_filesz, p_memsz."""

    type: int
    offset: int
    paddr: int
    filesz: int
    memsz: int


@dataclass
class Elf:
    bits: int
    machine: int
    entry: int
    segments: list[ProgramHeader] = field(default_factory=list)


Reader = Callable[[int, int], bytes]  # (offset, length) -> exactly that many bytes, or EmuError


def bytes_reader(image: bytes, name: str) -> Reader:
    def read(offset: int, length: int) -> bytes:
        if offset + length > len(image):
            raise EmuError(f"{name}: truncated ELF file (needs bytes {offset}-{offset + length}, "
                           f"the file has {len(image)})")  # fmt: skip
        return image[offset : offset + length]

    return read


def file_reader(path: Path, name: str) -> tuple[Reader, Callable[[], None]]:
    """A reader over an open file (detection reads a few headers of a 60 MiB vmlinux, not all
    of it), and the function that closes it."""
    try:
        f = path.open("rb")
    except OSError as error:
        raise EmuError(f"{name}: cannot read image ({error.strerror})") from None
    size = path.stat().st_size

    def read(offset: int, length: int) -> bytes:
        if offset + length > size:
            raise EmuError(f"{name}: truncated ELF file (needs bytes {offset}-{offset + length}, the file has {size})")
        f.seek(offset)
        return f.read(length)

    return read, f.close


def parse_elf(read: Reader, name: str) -> Elf:
    """The ELF header and program headers (System V ABI; ELF32 for i386, ELF64 for x86-64)."""
    ident = read(0, 16)
    if ident[:4] != b"\x7fELF":
        raise EmuError(f"{name}: not an ELF file")
    bits = {1: 32, 2: 64}.get(ident[4])
    if bits is None or ident[5] != 1:
        raise EmuError(f"{name}: malformed ELF header (class {ident[4]}, data encoding {ident[5]}; "
                       "emu boots little-endian ELF32 or ELF64 kernels)")  # fmt: skip
    ehdr, phdr = ELF32 if bits == 32 else ELF64
    _, _, machine, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _ = ehdr.unpack(read(0, ehdr.size))
    if phnum and phentsize < phdr.size:
        raise EmuError(f"{name}: malformed ELF header (program header size {phentsize}, "
                       f"ELF{bits} needs {phdr.size})")  # fmt: skip
    table = read(phoff, phnum * phentsize)
    elf = Elf(bits, machine, entry)
    for i in range(phnum):
        fields = phdr.unpack_from(table, i * phentsize)
        if bits == 32:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
            p_type, offset, _, paddr, filesz, memsz, _, _ = fields
        else:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
            p_type, _, offset, _, paddr, filesz, memsz, _ = fields
        elf.segments.append(ProgramHeader(p_type, offset, paddr, filesz, memsz))
    return elf


def pvh_entry(read: Reader, elf: Elf, name: str) -> int | None:
    """The XEN_ELFNOTE_PHYS32_ENTRY note's address, from the PT_NOTE segments; None without one."""
    for seg in elf.segments:
        if seg.type != PT_NOTE:
            continue
        notes = read(seg.offset, seg.filesz)
        pos = 0
        while pos + 12 <= len(notes):
            namesz, descsz, note_type = struct.unpack_from("<III", notes, pos)
            name_at = pos + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            end = desc_at + ((descsz + 3) & ~3)
            if desc_at + descsz > len(notes):
                raise EmuError(f"{name}: malformed ELF note at file offset {seg.offset + pos:#x} (its name and "
                               f"descriptor run past the {seg.filesz}-byte note segment)")  # fmt: skip
            if notes[name_at : name_at + namesz] == b"Xen\0" and note_type == XEN_ELFNOTE_PHYS32_ENTRY:
                if descsz not in (4, 8):
                    raise EmuError(f"{name}: malformed Xen PHYS32_ENTRY note ({descsz}-byte descriptor, "
                                   "expected a 4- or 8-byte address)")  # fmt: skip
                address = int.from_bytes(notes[desc_at : desc_at + descsz], "little")
                if address >= 1 << 32:
                    raise EmuError(f"{name}: the Xen PHYS32_ENTRY note gives {address:#x}, not a 32-bit address")
                return address
            pos = end
    return None


def has_pvh_note(path: Path, name: str) -> bool:
    """Is `path` an x86 ELF with a PVH entry note? Malformed or truncated headers: EmuError."""
    read, close = file_reader(path, name)
    try:
        elf = parse_elf(read, name)
        return elf.machine in (EM_386, EM_X86_64) and pvh_entry(read, elf, name) is not None
    finally:
        close()


def find_rsdp(rom: bytes, base: int) -> int:
    """The RSDP's guest address in a ROM image at `base`, or 0: its signature on a 16-byte
    boundary and its first 20 bytes summing to 0 (ACPI 6.5 §5.2.5.1), as QEMU's pvh_main.c
    and Linux's acpi_find_root_pointer search E0000-FFFFF."""
    for offset in range(0, len(rom) - 19, 16):
        if rom[offset : offset + 8] == RSDP_SIGNATURE and sum(rom[offset : offset + 20]) & 0xFF == 0:
            return base + offset
    return 0


@dataclass(frozen=True)
class LoadedPvh:
    entry: int
    segments: list[tuple[int, int]]  # (physical address, memory size)
    end: int
    initrd_address: int
    initrd_size: int
    cmdline: str
    rsdp: int


def load(path: Path, memory: GuestMemory, cmdline: str, initrd: Path | None = None,
         rsdp: int = 0, name: str | None = None) -> tuple[CpuState, LoadedPvh]:  # fmt: skip
    """Load the kernel's segments, the initrd and the start info; the CPU state at the entry."""
    name = name or str(path)
    image = path.read_bytes()
    read = bytes_reader(image, name)
    elf = parse_elf(read, name)
    if elf.machine not in (EM_386, EM_X86_64):
        raise EmuError(f"{name}: an ELF file for machine {elf.machine}, not x86 (EM_386 or EM_X86_64)")
    entry = pvh_entry(read, elf, name)
    if entry is None:
        raise EmuError(f"{name}: an ELF file without a Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")
    placed: list[tuple[int, int]] = []
    for seg in elf.segments:
        if seg.type != PT_LOAD or seg.memsz == 0:
            continue
        if seg.filesz > seg.memsz:
            raise EmuError(f"{name}: malformed ELF segment (file size {seg.filesz} > memory size {seg.memsz})")
        if seg.paddr < 0x100000 or not memory.contains(seg.paddr, seg.memsz):
            raise EmuError(f"{name}: segment at {seg.paddr:#x}-{seg.paddr + seg.memsz:#x} lies outside guest RAM "
                           f"above 1 MiB ({memory.describe()}); try a larger -m")  # fmt: skip
        data = read(seg.offset, seg.filesz)
        memory.write(seg.paddr, data)
        if seg.memsz > seg.filesz:
            memory.write(seg.paddr + seg.filesz, bytes(seg.memsz - seg.filesz))
        placed.append((seg.paddr, seg.memsz))
    if not placed:
        raise EmuError(f"{name}: ELF file has no loadable segments")
    end = max(a + s for a, s in placed)
    if not any(a <= entry < a + s for a, s in placed):
        raise EmuError(f"{name}: the PVH entry {entry:#x} is outside the loaded segments")

    cmd = cmdline.encode() + b"\0"
    if len(cmd) > CMDLINE_MAX:
        raise EmuError(f"-append: {len(cmd) - 1} bytes, more than the {CMDLINE_MAX - 1} a PVH boot passes")
    memory.write(CMDLINE, cmd)

    initrd_address = initrd_size = 0
    if initrd is not None:
        data = initrd.read_bytes()
        top = memory.layout.below_4g_size - FIRMWARE_RESERVED
        initrd_address = (top - len(data)) & ~0xFFF
        if initrd_address < end:
            raise EmuError(f"{initrd}: {len(data) >> 20} MiB does not fit beside the kernel in -m {memory.size >> 20}")
        memory.write(initrd_address, data)
        initrd_size = len(data)
        memory.write(MODLIST, struct.pack("<QQQQ", initrd_address, initrd_size, 0, 0))

    entries = e820_map(memory.layout)[:MEMMAP_MAX]
    memory.write(MEMMAP, b"".join(struct.pack("<QQII", base, length, kind, 0) for base, length, kind in entries))
    memory.write(START_INFO, struct.pack(
        "<IIIIQQQQII", XEN_HVM_START_MAGIC, START_INFO_VERSION, 0, 1 if initrd is not None else 0,
        MODLIST if initrd is not None else 0, CMDLINE, rsdp, MEMMAP, len(entries), 0))  # fmt: skip

    gdt = struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
    memory.write(GDT_ADDRESS, gdt)
    state = CpuState.reset()
    state.rip = entry
    state.rbx = START_INFO
    state.rdx = 0
    state.cr0 = 0x11  # PE, and ET (hardwired on every CPU since the 486)
    state.cs = Segment.flat32(CODE_SELECTOR, code=True)
    for seg_name in ("ds", "es", "fs", "gs", "ss"):
        setattr(state, seg_name, Segment.flat32(DATA_SELECTOR, code=False))
    state.tr = Segment(selector=0, base=0, limit=0x67, type=0xB, s=0)  # a busy 32-bit TSS
    state.gdt = DescriptorTable(GDT_ADDRESS, len(gdt) - 1)
    state.idt = DescriptorTable(0, 0)
    return state, LoadedPvh(entry, placed, end, initrd_address, initrd_size, cmdline, rsdp)
