"""Writing a minimal PVH kernel ELF around a piece of 32-bit code, for tests.

The shape of Linux's vmlinux, in small: an ELF header, a PT_LOAD program header for the whole
file (virtual addresses high, as a kernel's, physical addresses where it is to be loaded), a
PT_NOTE segment with a GNU note first and then Xen's PHYS32_ENTRY note (name "Xen", type 18)
whose descriptor is the physical address of the code.
"""

from __future__ import annotations

import struct

XEN_ELFNOTE_PHYS32_ENTRY = 18
CODE_OFFSET = 0x200
HIGH = 0xFFFFFFFF80000000  # a kernel's virtual addresses (ELF64); ELF32: 0xC0000000


def note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF note: namesz, descsz, type, then the name and the descriptor padded to 4 bytes."""
    name += b"\0"
    return (struct.pack("<III", len(name), len(desc), note_type) + name + bytes(-len(name) % 4)
            + desc + bytes(-len(desc) % 4))  # fmt: skip


def build_pvh_elf(code: bytes, load_address: int = 0x100000, bits: int = 64, entry_size: int | None = None,
                  notes: bytes | None = None, bss: int = 0) -> bytes:  # fmt: skip
    """An ELF kernel whose PVH entry is the first byte of `code` (at CODE_OFFSET in the file)."""
    entry = load_address + CODE_OFFSET
    entry_size = entry_size or bits // 8
    if notes is None:
        xen = note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, entry.to_bytes(entry_size, "little"))
        notes = note(b"GNU", 3, bytes(20)) + xen
    ehdr_size, phdr_size = (52, 32) if bits == 32 else (64, 56)
    notes_offset = ehdr_size + 2 * phdr_size
    assert notes_offset + len(notes) <= CODE_OFFSET
    size = CODE_OFFSET + len(code)
    vaddr = (0xC0000000 if bits == 32 else HIGH) + load_address
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1, 0]) + bytes(8)
    if bits == 32:
        header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, vaddr + CODE_OFFSET, ehdr_size, 0, 0, ehdr_size,
                                     phdr_size, 2, 40, 0, 0)  # fmt: skip
        phdrs = (struct.pack("<IIIIIIII", 1, 0, vaddr, load_address, size, size + bss, 7, 0x1000)
                 + struct.pack("<IIIIIIII", 4, notes_offset, vaddr + notes_offset, load_address + notes_offset,
                               len(notes), len(notes), 4, 4))  # fmt: skip
    else:
        header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, vaddr + CODE_OFFSET, ehdr_size, 0, 0, ehdr_size,
                                     phdr_size, 2, 64, 0, 0)  # fmt: skip
        phdrs = (struct.pack("<IIQQQQQQ", 1, 7, 0, vaddr, load_address, size, size + bss, 0x1000)
                 + struct.pack("<IIQQQQQQ", 4, 4, notes_offset, vaddr + notes_offset, load_address + notes_offset,
                               len(notes), len(notes), 4))  # fmt: skip
    image = bytearray(header + phdrs + notes)
    image += bytes(CODE_OFFSET - len(image))
    return bytes(image) + code
