"""The one CPU model emu declares to guests, as CPUID leaves (SDM vol. 2A, CPUID).

`cpuid` is a sensitive instruction in practice: a hypervisor answers it (VT-x exits on it
unconditionally, SDM vol. 3C §25.1.2) so that a guest sees a stable, declared CPU instead of the
host's. emu answers from this table on tcg (a UC_HOOK_INSN CPUID hook) and hands the same table
to KVM with KVM_SET_CPUID2 on kvm. The feature bits are ones both backends can honour: Unicorn's
Haswell model has no AVX, and this project's hosts (see notes/host-kvm.md) force leaves 1 and 7
to host values whatever the VMM sets, a declared difference for differential testing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VENDOR = b"GenuineIntel"
BRAND = b"emu virtual CPU (x86-64)".ljust(48, b"\0")

# Leaf 1 EDX: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
# (apic: the xAPIC of emu.devices.lapic)
_L1_EDX = sum(1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26))
# Leaf 1 ECX: sse3 ssse3 cx16 sse4.1 sse4.2 popcnt hypervisor. Not x2apic (bit 21) nor tsc-deadline
# (bit 24): emu's local APIC has neither mode.
_L1_ECX = sum(1 << b for b in (0, 9, 13, 19, 20, 23, 31))
# Leaf 0x80000001 EDX: syscall nx lm; ECX: lahf_lm
_E1_EDX = (1 << 11) | (1 << 20) | (1 << 29)
_E1_ECX = 1 << 0


# IA32_ARCH_CAPABILITIES (SDM vol. 4, table 2-2): the hardware's declaration of which
# speculative-execution flaws it does not have. Unicorn executes nothing speculatively, so on
# tcg every "_NO" bit is true. The one that matters: RDCL_NO (no Meltdown) tells Linux not to
# isolate kernel page tables (PTI), which would reload CR3, and so flush emu's TLB, on every
# entry and exit of the kernel. QEMU's default TCG CPU (qemu64, vendor AMD) gets the same
# from Linux by its vendor.
RDCL_NO, SSB_NO, MDS_NO, PSCHANGE_MC_NO, TAA_NO = 1 << 0, 1 << 4, 1 << 5, 1 << 6, 1 << 8
SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, PBRSB_NO, GDS_NO, RFDS_NO = 1 << 13, 1 << 14, 1 << 15, 1 << 24, 1 << 26, 1 << 27
ARCH_CAPABILITIES = (RDCL_NO | SSB_NO | MDS_NO | PSCHANGE_MC_NO | TAA_NO | SBDR_SSDP_NO | FBSDP_NO | PSDP_NO
                     | PBRSB_NO | GDS_NO | RFDS_NO)  # fmt: skip
MSR_IA32_ARCH_CAPABILITIES = 0x10A


def _regs(data: bytes) -> tuple[int, int, int, int]:
    return struct.unpack("<4I", data)


@dataclass(frozen=True)
class CpuModel:
    """CPUID leaves as {(leaf, subleaf): (eax, ebx, ecx, edx)}; unknown leaves read as zeros."""

    leaves: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        return self.leaves.get((leaf, subleaf)) or self.leaves.get((leaf, -1)) or (0, 0, 0, 0)


def emu64() -> CpuModel:
    """emu's declared CPU: family 6 model 0x3c (Haswell-class), no AVX, long mode, NX."""
    ebx, edx, ecx = struct.unpack("<3I", VENDOR)  # "Genu" "ineI" "ntel": EBX, EDX, ECX (SDM vol. 2A, CPUID leaf 0)
    leaves: dict[tuple[int, int], tuple[int, int, int, int]] = {
        (0, -1): (0xD, ebx, ecx, edx),
        # stepping 3, model 0x3c, family 6; EBX: initial APIC ID 0 (bits 31:24), CLFLUSH line 8 qwords
        (1, -1): (0x000306C3, 0x00000800, _L1_ECX, _L1_EDX),
        # EDX bit 29: the IA32_ARCH_CAPABILITIES MSR (0x10A) exists. On tcg emu serves it
        # (ARCH_CAPABILITIES below); on kvm KVM does, with the host's answers.
        (7, 0): (0, 0, 0, 1 << 29),
        (0x80000000, -1): (0x80000008, 0, 0, 0),
        (0x80000001, -1): (0, 0, _E1_ECX, _E1_EDX),
        (0x80000008, -1): (0x00003028, 0, 0, 0),  # 40-bit physical, 48-bit linear addresses
    }
    for i in range(3):
        leaves[(0x80000002 + i, -1)] = _regs(BRAND[16 * i : 16 * i + 16])
    return CpuModel(leaves)
