"""emu's declared CPU model (emu/cpuid.py): the vendor string reads right, in EBX, EDX, ECX order."""

import struct

from emu.cpuid import emu64


def test_vendor_string_is_genuine_intel() -> None:
    _, ebx, ecx, edx = emu64().cpuid(0, 0)
    assert struct.pack("<3I", ebx, edx, ecx) == b"GenuineIntel"  # what Linux's early_cpu_init reads
