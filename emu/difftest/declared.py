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

Host quirks (HOST_QUIRKS) are of another kind: this project's hosts provide /dev/kvm through
kvm_pvm, which runs guest ring-3 code on the real CPU with the host's own user segments and
without single-step (notes/host-kvm.md, "Ring-3 quirks"). A few ring-3 instructions therefore
end differently there than the architecture says. Such a stretch is compared where it returns
to CPL0; each quirk is an instruction pattern plus the outcome kvm_pvm gives it, which the
leader (tcg) then reproduces instead of the architectural one, so the comparison at the end of
the stretch checks that the quirk, and nothing else, made the difference. Quirks apply only
when the host's KVM is kvm_pvm (/sys/module/kvm_pvm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

CF, PF, AF, ZF, SF, OF = 0x001, 0x004, 0x010, 0x040, 0x080, 0x800
TF = 0x100
ARITHMETIC_FLAGS = CF | PF | AF | ZF | SF | OF


@dataclass(frozen=True)
class DeclaredDifference:
    name: str
    mnemonics: frozenset[str]
    registers: frozenset[str]  # state fields the difference may touch ("rflags" with `flags`)
    flags: int  # for rflags: the bits that may differ
    reason: str

    def covers(self, mnemonic: str, field: str, ours: object, theirs: object, count: int | None = None) -> bool:
        """Whether this declaration explains `field` differing after `mnemonic`. `count`, the
        masked count of a shift or rotate when known, narrows the undefined flags to what the
        SDM leaves undefined for it: none for 0, AF (shifts) for 1, AF and OF above 1."""
        if self.name == "singlestep-hides-tf":
            return field == "rflags" and isinstance(ours, int) and isinstance(theirs, int) and ours ^ theirs == TF == ours & TF
        if self.name == "null-selector-cache":
            return field in self.registers and _null_segment_views(ours, theirs)
        if self.name in SEGMENT_TYPE_BITS:
            return field in self.registers and _only_type_bits_differ(ours, theirs, SEGMENT_TYPE_BITS[self.name])
        if mnemonic not in self.mnemonics or field not in self.registers:
            return False
        if field == "rflags":
            flags = self.flags
            if count is not None and self.name in COUNTED:
                flags = 0 if count == 0 else flags & ~OF if count == 1 else flags
            return isinstance(ours, int) and isinstance(theirs, int) and not (ours ^ theirs) & ~flags
        return True


COUNTED = frozenset({"shift-flags", "rotate-flags"})  # declarations whose flags depend on the count
_SHIFTS = frozenset({"shl", "sal", "shr", "sar", "shld", "shrd", "rol", "ror", "rcl", "rcr"})


def shift_count(mnemonic: str, operands: str, before: object) -> int | None:
    """The count a shift or rotate used, masked as the CPU masks it (SDM vol. 2B SAL/SAR/SHL/SHR:
    to 6 bits for a 64-bit operand, 5 otherwise), from capstone's operands and the state
    before it (for CL); None for other instructions or an operand form not understood."""
    if mnemonic not in _SHIFTS:
        return None
    parts = [p.strip() for p in operands.split(",")]
    mask = 0x3F if parts[0].startswith(("r", "qword")) and not parts[0].endswith(("d", "w", "b")) else 0x1F
    last = parts[-1] if len(parts) > (2 if mnemonic in ("shld", "shrd") else 1) else "1"
    if last == "cl":
        return getattr(before, "rcx") & mask
    try:
        return int(last, 0) & mask
    except ValueError:
        return None


SEGMENT_TYPE_BITS = {"segment-accessed": 1, "tss-busy": 2}  # which bits of the cached type may differ


def _only_type_bits_differ(ours: object, theirs: object, bits: int) -> bool:
    """Two cached segments equal but for `bits` of the descriptor type."""
    from ..accel import Segment

    if not isinstance(ours, Segment) or not isinstance(theirs, Segment) or (ours.type ^ theirs.type) & ~bits:
        return False
    return replace(ours, type=theirs.type) == theirs


def _null_segment_views(ours: object, theirs: object) -> bool:
    """The same null selector in both, with different hidden parts, at least one not usable."""
    from ..accel import Segment

    return (isinstance(ours, Segment) and isinstance(theirs, Segment) and ours.selector == theirs.selector
            and ours.selector & ~3 == 0 and (not ours.present or not theirs.present or ours.unusable
                                              or theirs.unusable))  # fmt: skip


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
                       "bit; Unicorn 2.1.4's TCG caches the type without it and does not set it in the GDT "
                       "for a far jump (KVM and the CPU do both)"),
    DeclaredDifference("null-selector-cache", frozenset(), frozenset({"cs", "ds", "es", "fs", "gs", "ss"}), 0,
                       "a null selector has no descriptor behind it, so what the register's hidden part holds is "
                       "each implementation's own (64-bit code never uses it, SDM vol. 3A §3.4.4): QEMU's TCG caches "
                       "a flat writable SS for a null SS loaded by IRETQ at CPL0 and marks null data segments "
                       "unusable; VMX marks them unusable (SDM vol. 3C §25.4.1), kvm_pvm only not present"),
    DeclaredDifference("singlestep-hides-tf", frozenset(), frozenset({"rflags"}), TF,
                       "KVM_GUESTDBG_SINGLESTEP uses RFLAGS.TF for the host's own stepping and KVM_GET_REGS hides "
                       "it (api.rst §4.38; arch/x86/kvm/x86.c kvm_get_rflags): the guest's own TF is kept but "
                       "not shown, and its #DB is given to the guest by the comparison (SDM vol. 3B §18.3.1.4)"),
    DeclaredDifference("tss-busy", frozenset(), frozenset({"tr"}), 0,
                       "SDM vol. 2, LTR: the TSS descriptor is marked busy (type 9 -> 11) and TR caches it so; "
                       "QEMU's helper_ltr caches the type before it sets the busy bit in memory"),
    DeclaredDifference("rdtsc", frozenset({"rdtsc", "rdtscp"}), frozenset({"rax", "rdx", "rcx"}), 0,
                       "the time-stamp counter (SDM vol. 3B §18.17) counts each machine's own time"),
)


SEGMENT_ACCESSED = next(d for d in DECLARED if d.name == "segment-accessed")
PTE_PRESENT, PTE_ACCESSED, PTE_ACCESSED_DIRTY = 0x01, 0x20, 0x60
PF_WALK_ACCESSED = DeclaredDifference(
    "pf-walk-accessed", frozenset(), frozenset(), 0,
    "emu's tcg raises a #PF by running the faulting instruction again under Unicorn's walker (QEMU 5.0, "
    "target/i386/excp_helper.c), which sets the Accessed flag of each entry it passes before a lower level "
    "faults; KVM's walker (arch/x86/kvm/mmu/paging_tmpl.h) sets them only once a walk succeeds. SDM vol. 3A "
    "§4.8 has the processor set the flag of each entry it uses; neither is wrong about a walk that faulted")  # fmt: skip


def explain_memory(address: int, ours: int, theirs: int, gdt: int | None, gdt_limit: int,
                   gdt_entries: frozenset[int], tables: frozenset[int]) -> DeclaredDifference | None:  # fmt: skip
    """The declared difference that covers byte `address` (guest-physical) differing in memory:
    the Accessed bit (bit 0 of byte 5) of a descriptor in the GDT (at guest-physical `gdt`), and
    what the CPU's store of it does to the paging entries that map the GDT (`gdt_entries`): it
    sets their Accessed and Dirty flags, which tcg, not storing it, leaves clear; or the Accessed
    flag tcg alone set in an entry of a paging-structure page (`tables`) on a walk that faulted."""
    if gdt is not None and 0 <= address - gdt <= gdt_limit and (address - gdt) % 8 == 5 and ours ^ theirs == 1:
        return SEGMENT_ACCESSED
    if address in gdt_entries and not (ours ^ theirs) & ~PTE_ACCESSED_DIRTY and not ours & ~theirs:
        return SEGMENT_ACCESSED
    if (address & ~0xFFF in tables and address % 8 == 0 and ours ^ theirs == PTE_ACCESSED and ours & PTE_PRESENT
            and ours & PTE_ACCESSED):  # fmt: skip
        return PF_WALK_ACCESSED
    return None


def explain(mnemonic: str, field: str, ours: object, theirs: object, count: int | None = None) -> DeclaredDifference | None:
    """The declared difference that covers `field` differing after `mnemonic` (a shift or
    rotate by `count`, when known: see shift_count), if any."""
    for declared in DECLARED:
        if declared.covers(mnemonic, field, ours, theirs, count):
            return declared
    return None


# ---------------------------------------------------------------------------------------------
# Host quirks of kvm_pvm in ring 3 (see the module doc). `apply(vcpu, state, operands)` makes
# the leader's tcg vCPU, stopped before the instruction, end as kvm_pvm makes it end.
HOST_USER_CS, HOST_USER_SS = 0x33, 0x2B  # Linux x86-64 __USER_CS and __USER_DS
CR0_TS = 1 << 3
MSR_LSTAR, MSR_SFMASK = 0xC0000082, 0xC0000084
RF = 1 << 16


@dataclass(frozen=True)
class HostQuirk:
    name: str
    matches: Callable[[str, str, object], bool]  # (mnemonic, operands, state) -> applies?
    apply: Callable[[object, object, str], None]  # (tcg vcpu, state before, operands)
    reason: str


def _int_n_as_ud(vcpu, state, operands: str) -> None:
    vcpu.raise_exception(6)


def _syscall_stays_in_ring3(vcpu, state, operands: str) -> None:
    msrs = vcpu.get_state().msrs
    after = replace(state, rcx=state.rip + 2, r11=state.rflags, rip=msrs[MSR_LSTAR],
                    rflags=state.rflags & ~msrs[MSR_SFMASK] & ~RF)  # fmt: skip
    vcpu.set_state(after)


_GPR64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"]


def _register(name: str) -> tuple[str, int] | None:
    """A capstone register name -> (its 64-bit register, width in bits)."""
    legacy = {r[1:]: r for r in _GPR64}  # ax -> rax, si -> rsi, ...
    if name in _GPR64 or (name.startswith("r") and name[1:].isdigit()):
        return name, 64
    if name.startswith("e") and name[1:] in legacy:
        return legacy[name[1:]], 32
    if name in legacy:
        return legacy[name], 16
    if name.startswith("r") and name[1:-1].isdigit() and name[-1] in "dw":
        return name[:-1], 32 if name[-1] == "d" else 16
    return None


def _selector_read(vcpu, state, operands: str) -> None:
    """`mov reg, cs|ss`: run it, then put the host's selector where the guest's landed."""
    vcpu.step()
    destination, source = (part.strip() for part in operands.split(","))
    target = _register(destination)
    after = vcpu.get_state(msrs=False)
    if target is None:
        return  # a memory destination: left architectural (the comparison then shows it)
    name, width = target
    value = HOST_USER_CS if source == "cs" else HOST_USER_SS
    if width == 16:
        value |= getattr(after, name) & ~0xFFFF
    setattr(after, name, value)
    vcpu.set_state(after)


def _fpu_ignores_ts(vcpu, state, operands: str) -> None:
    vcpu.set_state(replace(state, cr0=state.cr0 & ~CR0_TS))
    vcpu.step()
    vcpu.set_state(replace(vcpu.get_state(msrs=False), cr0=state.cr0))


HOST_QUIRKS: tuple[HostQuirk, ...] = (
    HostQuirk("pvm-ring3-int-n", lambda m, o, s: m == "int", _int_n_as_ud,
              "kvm_pvm: `int n` in ring 3 raises #UD whatever the gate's DPL (the architecture enters a DPL3 "
              "gate or raises #GP(n*8+2), SDM vol. 3A §6.12.1.1)"),
    HostQuirk("pvm-ring3-syscall", lambda m, o, s: m == "syscall", _syscall_stays_in_ring3,
              "kvm_pvm: `syscall` in ring 3 jumps to LSTAR with RCX, R11 and RFLAGS as architected but stays "
              "in ring 3 (the architecture loads CS from STAR and enters CPL0, SDM vol. 2B SYSCALL)"),
    HostQuirk("pvm-ring3-selectors", lambda m, o, s: m == "mov" and o.replace(" ", "").endswith((",cs", ",ss")),
              _selector_read,
              "kvm_pvm runs ring-3 code with the host's user segments: reading CS or SS gives Linux's "
              "__USER_CS 0x33 / __USER_DS 0x2b, not the guest's selectors (SDM vol. 2B MOV, segment registers)"),
    HostQuirk("pvm-ring3-cr0-ts", lambda m, o, s: bool(s.cr0 & CR0_TS) and (m.startswith("f") or m == "wait"),
              _fpu_ignores_ts,
              "kvm_pvm runs ring-3 code on the host's FPU state: x87 instructions with the guest's CR0.TS=1 "
              "complete instead of raising #NM (SDM vol. 3A §2.5, CR0.TS)"),
)


IRET_KEEPS_DATA_SEGMENTS = HostQuirk(
    "pvm-iret-keeps-data-segments", lambda m, o, s: False, lambda v, s, o: None,
    "kvm_pvm's return to ring 3 leaves DS/ES/FS/GS as they were; IRET loads NULL into a data segment "
    "register whose DPL is below the new CPL (SDM vol. 2A IRET, 'RETURN-TO-OUTER-PRIVILEGE-LEVEL')")


def keep_data_segments(before, after):  # CpuState in and out
    """`after` (the state entering ring 3) with the data segments IRET nulled put back as they were."""
    changed = {name: getattr(before, name) for name in ("ds", "es", "fs", "gs")
               if getattr(after, name) != getattr(before, name) and not getattr(after, name).present}  # fmt: skip
    return replace(after, **changed) if changed else after


def host_has_quirks() -> bool:
    """True when /dev/kvm comes from kvm_pvm, whose ring-3 quirks HOST_QUIRKS describes."""
    return Path("/sys/module/kvm_pvm").exists()


def host_quirk(mnemonic: str, operands: str, state: object) -> HostQuirk | None:
    for quirk in HOST_QUIRKS:
        if quirk.matches(mnemonic, operands, state):
            return quirk
    return None
