"""emu's declared CPU model (emu/cpuid.py): the vendor string reads right, in EBX, EDX, ECX order."""

import struct

from emu.cpuid import emu64


def test_vendor_string_is_genuine_intel() -> None:
    _, ebx, ecx, edx = emu64().cpuid(0, 0)
    assert struct.pack("<3I", ebx, edx, ecx) == b"GenuineIntel"  # what Linux's early_cpu_init reads


def test_leaf_1_offers_the_xapic_and_not_x2apic_nor_tsc_deadline() -> None:
    eax, ebx, ecx, edx = emu64().cpuid(1, 0)
    assert edx & 1 << 9  # APIC: emu.devices.lapic at 0xFEE00000
    assert not ecx & 1 << 21 and not ecx & 1 << 24  # x2APIC, TSC-deadline: not modelled
    assert ebx >> 24 == 0  # initial APIC ID of CPU 0, the MP table's processor entry
