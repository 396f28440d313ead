"""Differences between the backends that are known and explained, each with its reason.

Two correct x86 implementations may disagree after an instruction in a few ways the manuals
allow, and emu's two backends are two implementations (Unicorn's TCG, and the host's CPU or
KVM's instruction emulator). A lockstep comparison that stopped at those would never get
anywhere; one that ignored them silently could hide a bug. So each one is declared here once,
with the manual section, and the comparison reports a matching difference by name and goes on.

  undefined flags  Intel SDM vol. 2 leaves some RFLAGS bits "undefined" after an instruction
                   (AF after a shift, SF/ZF/AF/PF after MUL, ...): any value is correct.
  cpuid            the guest asks the CPU who it is: emu's declared model on tcg, the host's
                   answers (partly forced by KVM, notes/host-kvm.md) on kvm.
  rdtsc            the time-stamp counter of two machines is never the same number.
  tss-busy         the same for TR after LTR: busy in memory, available in QEMU's cache.
  segment-accessed QEMU's TCG (inside Unicorn) leaves the Accessed bit of a segment's cached
                   type clear after a far jump or a segment load; the CPU sets it (and KVM
                   shows it). A finding of this tool, declared so that runs can go on.
"""

from __future__ import annotations

from dataclasses import dataclass

CF, PF, AF, ZF, SF, OF = 0x001, 0x004, 0x010, 0x040, 0x080, 0x800
ARITHMETIC_FLAGS = CF | PF | AF | ZF | SF | OF


@dataclass(frozen=True)
class DeclaredDifference:
    name: str
    mnemonics: frozenset[str]
    registers: frozenset[str]  # state fields the difference may touch ("rflags" with `flags`)
    flags: int  # for rflags: the bits that may differ
    reason: str

    def covers(self, mnemonic: str, field: str, ours: object, theirs: object) -> bool:
        if self.name in SEGMENT_TYPE_BITS:
            return field in self.registers and _only_type_bits_differ(ours, theirs, SEGMENT_TYPE_BITS[self.name])
        if mnemonic not in self.mnemonics or field not in self.registers:
            return False
        if field == "rflags":
            return isinstance(ours, int) and isinstance(theirs, int) and not (ours ^ theirs) & ~self.flags
        return True


SEGMENT_TYPE_BITS = {"segment-accessed": 1, "tss-busy": 2}  # which bits of the cached type may differ


def _only_type_bits_differ(ours: object, theirs: object, bits: int) -> bool:
    """Two cached segments equal but for `bits` of the descriptor type."""
    from dataclasses import replace

    from ..accel import Segment

    if not isinstance(ours, Segment) or not isinstance(theirs, Segment) or (ours.type ^ theirs.type) & ~bits:
        return False
    return replace(ours, type=theirs.type) == theirs


def _undefined(name: str, mnemonics: str, flags: int, section: str) -> DeclaredDifference:
    return DeclaredDifference(name, frozenset(mnemonics.split()), frozenset({"rflags"}), flags,
                              f"Intel SDM vol. 2, {section}: these flags are undefined after it")  # fmt: skip


DECLARED: tuple[DeclaredDifference, ...] = (
    _undefined("shift-flags", "shl sal shr sar shld shrd", AF | OF, "SAL/SAR/SHL/SHR, SHLD, SHRD (AF; OF if count > 1)"),
    _undefined("rotate-flags", "rol ror rcl rcr", OF, "RCL/RCR/ROL/ROR (OF if count > 1)"),
    _undefined("mul-flags", "mul imul", SF | ZF | AF | PF, "MUL, IMUL"),
    _undefined("div-flags", "div idiv", ARITHMETIC_FLAGS, "DIV, IDIV"),
    _undefined("bitscan-flags", "bsf bsr", CF | OF | SF | AF | PF, "BSF, BSR"),
    _undefined("bittest-flags", "bt bts btr btc", OF | SF | AF | PF, "BT, BTS, BTR, BTC"),
    _undefined("logic-af", "and or xor test", AF, "AND, OR, XOR, TEST (AF)"),
    _undefined("bcd-flags", "aaa aas daa das aam aad", ARITHMETIC_FLAGS, "AAA, AAS, DAA, DAS, AAM, AAD"),
    DeclaredDifference("cpuid", frozenset({"cpuid"}), frozenset({"rax", "rbx", "rcx", "rdx"}), 0,
                       "CPUID describes the CPU: emu's model (emu/cpuid.py) on tcg; on kvm the host's, with "
                       "leaves 1 and 7 forced by the host KVM (notes/host-kvm.md)"),
    DeclaredDifference("segment-accessed", frozenset(), frozenset({"cs", "ds", "es", "fs", "gs", "ss"}), 0,
                       "SDM vol. 3A §3.4.5.1: loading a segment register sets the descriptor's Accessed "
                       "bit; Unicorn 2.1.4's TCG caches the type without it (KVM and the CPU show it set)"),
    DeclaredDifference("tss-busy", frozenset(), frozenset({"tr"}), 0,
                       "SDM vol. 2, LTR: the TSS descriptor is marked busy (type 9 -> 11) and TR caches it so; "
                       "QEMU's helper_ltr caches the type before it sets the busy bit in memory"),
    DeclaredDifference("rdtsc", frozenset({"rdtsc", "rdtscp"}), frozenset({"rax", "rdx", "rcx"}), 0,
                       "the time-stamp counter (SDM vol. 3B §18.17) counts each machine's own time"),
    DeclaredDifference("fault-rf", frozenset({"hlt"}), frozenset({"rflags"}), 0x10000,
                       "SDM vol. 3B §18.3.1.1 (§17.3.1.1 in older editions): for a fault-class exception the RFLAGS "
                       "image pushed on the stack has RF=1 (the CPU and KVM's injection do so); Unicorn 2.1.4's TCG "
                       "(QEMU 5.0's do_interrupt64) pushes RF=0; QEMU fixed it in 2024 ('target/i386: fix pushed value "
                       "of EFLAGS.RF'). The fuzzer asks about the frame's RFLAGS image with the faulting instruction: "
                       "a ring-3 sequence ends in hlt's #GP(0)"),
)


def explain(mnemonic: str, field: str, ours: object, theirs: object) -> DeclaredDifference | None:
    """The declared difference that covers `field` differing after `mnemonic`, if any."""
    for declared in DECLARED:
        if declared.covers(mnemonic, field, ours, theirs):
            return declared
    return None
