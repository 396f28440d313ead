"""Writing a minimal multiboot v1 ELF32 around a piece of 32-bit code.

The smallest image `qemu -kernel` and emu both boot: an ELF header (System V ABI, i386
supplement), one PT_LOAD program header covering the file, the 12-byte multiboot header
(Multiboot 0.6.96 §3.1.1) and then the code, entered in 32-bit protected mode. Benchmarks and
generated test guests use it; firmware/ builds its guests with a real toolchain.
"""

from __future__ import annotations

import struct

from .multiboot import MULTIBOOT_MAGIC

ELF_HEADER_SIZE, PROGRAM_HEADER_SIZE, MB_HEADER_SIZE = 52, 32, 12
CODE_OFFSET = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE + MB_HEADER_SIZE  # 96


def build_multiboot_elf(code: bytes, load_address: int = 0x100000, bss: int = 0) -> bytes:
    """An ELF32 multiboot kernel whose entry point is the first byte of `code`."""
    entry = load_address + CODE_OFFSET
    size = CODE_OFFSET + len(code)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)  # 32-bit, little-endian, version 1
    header = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, entry, ELF_HEADER_SIZE, 0, 0,
                                 ELF_HEADER_SIZE, PROGRAM_HEADER_SIZE, 1, 40, 0, 0)  # fmt: skip
    program = struct.pack("<IIIIIIII", 1, 0, load_address, load_address, size, size + bss, 7, 0x1000)
    flags = 0x3  # page-align modules, provide memory information
    multiboot = struct.pack("<III", MULTIBOOT_MAGIC, flags, (-(MULTIBOOT_MAGIC + flags)) & 0xFFFFFFFF)
    return header + program + multiboot + code
