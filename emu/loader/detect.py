"""What kind of image the user gave: decided in one place, from the bytes, as QEMU's loaders do.

  multiboot ELF   an ELF whose first 8 KiB hold a multiboot v1 header (Multiboot 0.6.96 §3.1.1):
                  loaded directly, like `qemu -kernel` (emu.loader.multiboot)
  multiboot a.out any file with a multiboot header using the a.out kludge (flags bit 16)
  Linux bzImage   "HdrS" at offset 0x202 (Documentation/arch/x86/boot.rst, "The real-mode
                  kernel header"): the Linux boot protocol (emu.loader.linux)
  PVH ELF         an ELF without a multiboot header but with Xen's PHYS32_ENTRY note, such as
                  Linux's uncompressed vmlinux: entered at that 32-bit entry (emu.loader.pvh)
  raw disk        a disk whose sector 0 ends in the 0x55 0xAA boot signature (even if a
                  multiboot header follows later, as GRUB's core.img in sector 1 has one),
                  booted through the PC firmware from the reset vector, like
                  `qemu-system-x86_64 disk.img`

The order is QEMU's for -kernel (hw/i386/x86.c, x86_load_linux): a setup header first, then a
multiboot header, then the PVH note. An ELF with neither header nor note, a truncated or
malformed ELF, a file shorter than one sector, or a sector 0 without the signature is refused
with one line, before any machine is built.
"""

from __future__ import annotations

import enum
import struct
from pathlib import Path

from ..errors import EmuError
from .pvh import has_pvh_note

SECTOR = 512
MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192
BOOT_SIGNATURE = b"\x55\xaa"


class ImageKind(enum.Enum):
    MULTIBOOT = "multiboot kernel"
    LINUX = "Linux bzImage"
    PVH = "PVH ELF kernel"
    RAW_DISK = "raw disk image"


def has_multiboot_header(head: bytes) -> bool:
    """A multiboot v1 header: magic, flags and checksum summing to 0, 4-byte aligned."""
    for offset in range(0, min(len(head), MULTIBOOT_SEARCH) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", head, offset)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return True
    return False


def detect_image(path: Path) -> ImageKind:
    """The kind of `path`, or EmuError with the one line to show."""
    try:
        with path.open("rb") as f:
            head = f.read(MULTIBOOT_SEARCH)
    except OSError as error:
        raise EmuError(f"{path}: cannot read image ({error.strerror})") from None
    if head.startswith(b"\x7fELF"):
        if has_multiboot_header(head):
            return ImageKind.MULTIBOOT
        # The PVH note: reads the program headers and notes; truncated or malformed ones are one line
        if has_pvh_note(path, str(path)):
            return ImageKind.PVH
        raise EmuError(f"{path}: an ELF file without a multiboot header or a Xen PVH entry note (emu boots "
                       "multiboot v1 kernels, Linux bzImages, PVH kernels such as vmlinux, and raw disk images)")  # fmt: skip
    if len(head) >= 0x206 and head[0x202:0x206] == b"HdrS":  # before the 55 AA test: a bzImage has one too
        return ImageKind.LINUX
    # A disk can hold a multiboot header past its boot sector (GRUB's core.img sits in sector 1
    # and carries one): the boot signature decides, unless the header is in sector 0 itself.
    if head[510:512] == BOOT_SIGNATURE and not has_multiboot_header(head[:SECTOR]):
        return ImageKind.RAW_DISK
    if has_multiboot_header(head):
        return ImageKind.MULTIBOOT
    if not head:
        raise EmuError(f"{path}: empty file (a raw disk image needs at least its 512-byte boot sector)")
    if len(head) < SECTOR:
        raise EmuError(f"{path}: {len(head)} bytes, shorter than one 512-byte sector: not a disk image")
    if head[510:512] != BOOT_SIGNATURE:
        raise EmuError(f"{path}: not bootable: sector 0 does not end in the 0x55 0xAA boot signature "
                       f"(found {head[510]:#04x} {head[511]:#04x})")  # fmt: skip
    return ImageKind.RAW_DISK
