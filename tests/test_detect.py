"""emu.loader.detect: the image kind from its bytes, decided in one place."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.loader.detect import ImageKind, detect_image
from emu.loader.multiboot_image import build_multiboot_elf

MAGIC = 0x1BADB002


def multiboot_header(flags: int = 0x10003) -> bytes:
    return struct.pack("<III", MAGIC, flags, (-(MAGIC + flags)) & 0xFFFFFFFF)


def disk(sector0: bytes = b"", rest: bytes = b"") -> bytes:
    sector = bytearray(512)
    sector[: len(sector0)] = sector0
    sector[510:] = b"\x55\xaa"
    return bytes(sector) + rest


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (build_multiboot_elf(b"\xf4"), ImageKind.MULTIBOOT),
        (multiboot_header() + bytes(4096), ImageKind.MULTIBOOT),  # the a.out kludge, no ELF
        (disk(b"\xeb\xfe"), ImageKind.RAW_DISK),
        # GRUB installed on a disk: core.img, which carries a multiboot header, from sector 1
        (disk(b"\xeb\xfe", bytes(64) + multiboot_header() + bytes(4096)), ImageKind.RAW_DISK),
        (disk(multiboot_header()), ImageKind.MULTIBOOT),  # the header in sector 0 itself: a kernel
        (disk(b"", b"\0\0HdrS" + bytes(4096)), ImageKind.LINUX),  # a bzImage has 55 AA too (HdrS at 0x202)
    ],
    ids=["elf", "aout-kludge", "disk", "disk-with-grub-core", "kernel-with-55aa", "bzimage"],
)
def test_kind(tmp_path: Path, content: bytes, kind: ImageKind) -> None:
    path = tmp_path / "image"
    path.write_bytes(content)
    assert detect_image(path) is kind


def test_unreadable(tmp_path: Path) -> None:
    with pytest.raises(EmuError, match="cannot read image"):
        detect_image(tmp_path / "missing")
