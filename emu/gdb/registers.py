"""The registers gdb sees: the target description (target.xml) and the `g`/`p` byte layout.

gdb learns a target's registers from an XML target description it reads with
`qXfer:features:read:target.xml` (GDB manual, Appendix G "Target Descriptions"): features of
named registers with their sizes and types; the order of the registers in the document is
their number in `p`/`P` and their place in the `g`/`G` block. For x86-64 gdb requires the
feature `org.gnu.gdb.i386.core` with the 16 general registers, rip, eflags, the 6 segment
selectors and the x87 registers (gdb's features/i386/64bit-core.xml); `org.gnu.gdb.i386.sse`
adds xmm0-15 and mxcsr (64bit-sse.xml).

emu describes the registers as qemu-system-x86_64 does (QEMU's gdb-xml/i386-64bit.xml and
target/i386/gdbstub.c), in the same order, so a client that knows QEMU's layout reads emu's:

   0-15  rax rbx rcx rdx rsi rdi rbp rsp r8-r15    64 bits
     16  rip                                        64
     17  eflags                                     32
  18-23  cs ss ds es fs gs (selectors)              32
  24-26  fs_base gs_base k_gs_base                  64
  27-42  st0-7, fctrl fstat ftag fiseg fioff foseg fooff fop
  43-59  xmm0-15, mxcsr
  60-65  cr0 cr2 cr3 cr4 cr8 efer                  64

emu's CPU state (emu.accel.CpuState) does not carry the x87 and SSE registers, so they are
reported *unavailable* (`xx` bytes, which gdb shows as `<unavailable>`) and cannot be written.

The layout is the 64-bit one in every guest mode, as with qemu-system-x86_64: gdb debugs a
16- or 32-bit guest with `set architecture i386:x86-64` too. Outside 64-bit code the general
registers and rip are shown with their upper halves zero (QEMU masks them the same way), and
rip is the instruction pointer *within CS*: in real mode `$pc` is IP, while memory and
breakpoint addresses are linear (CS.base + IP for the code at hand), as under QEMU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..accel import MSR_KERNEL_GS_BASE, CpuState, Segment

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer")
X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")


@dataclass(frozen=True)
class Register:
    name: str
    bits: int
    type: str
    feature: str
    group: str | None = None
    available: bool = True  # False: emu's CpuState does not hold it

    @property
    def size(self) -> int:
        return self.bits // 8


CORE, SSE, SYS = "org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.qemu.gdb.i386.sys"


def _layout() -> tuple[Register, ...]:
    regs = [Register(n, 64, "data_ptr" if n in ("rbp", "rsp") else "int64", CORE) for n in GPRS]
    regs += [Register("rip", 64, "code_ptr", CORE), Register("eflags", 32, "i386_eflags", CORE)]
    regs += [Register(n, 32, "int32", CORE) for n in SEGMENTS]
    regs += [Register(n, 64, "int64", CORE, group="system") for n in ("fs_base", "gs_base", "k_gs_base")]
    regs += [Register(f"st{i}", 80, "i387_ext", CORE, available=False) for i in range(8)]
    regs += [Register(n, 32, "int", CORE, group="float", available=False) for n in X87_CONTROL]
    regs += [Register(f"xmm{i}", 128, "vec128", SSE, available=False) for i in range(16)]
    regs += [Register("mxcsr", 32, "i386_mxcsr", SSE, group="vector", available=False)]
    regs += [Register(n, 64, "int64", SYS, group="system") for n in CONTROL]
    return tuple(regs)


REGISTERS = _layout()
NUMBERS = {r.name: i for i, r in enumerate(REGISTERS)}
G_SIZE = sum(r.size for r in REGISTERS)  # bytes in a `g` reply


_EFLAGS = [("CF", 0), ("", 1), ("PF", 2), ("AF", 4), ("ZF", 6), ("SF", 7), ("TF", 8), ("IF", 9), ("DF", 10),
           ("OF", 11), ("NT", 14), ("RF", 16), ("VM", 17), ("AC", 18), ("VIF", 19), ("VIP", 20), ("ID", 21)]  # fmt: skip
_MXCSR = ["IE", "DE", "ZE", "OE", "UE", "PE", "DAZ", "IM", "DM", "ZM", "OM", "UM", "PM", "FZ"]
_VECTORS = [("v4f", "ieee_single", 4), ("v2d", "ieee_double", 2), ("v16i8", "int8", 16), ("v8i16", "int16", 8),
            ("v4i32", "int32", 4), ("v2i64", "int64", 2)]  # fmt: skip


def target_xml() -> str:
    """The whole description in one document (QEMU splits it with xi:include; gdb reads both)."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
             "  <architecture>i386:x86-64</architecture>"]  # fmt: skip
    for feature in (CORE, SSE, SYS):
        lines.append(f'  <feature name="{feature}">')
        if feature == CORE:
            lines.append('    <flags id="i386_eflags" size="4">')
            lines += [f'      <field name="{n}" start="{b}" end="{b}"/>' for n, b in _EFLAGS]
            lines.append("    </flags>")
        elif feature == SSE:
            lines += [f'    <vector id="{i}" type="{t}" count="{c}"/>' for i, t, c in _VECTORS]
            lines.append('    <union id="vec128">')
            names = ("v4_float", "v2_double", "v16_int8", "v8_int16", "v4_int32", "v2_int64")
            lines += [f'      <field name="{n}" type="{v[0]}"/>' for n, v in zip(names, _VECTORS)]
            lines += ['      <field name="uint128" type="uint128"/>', "    </union>"]
            lines.append('    <flags id="i386_mxcsr" size="4">')
            lines += [f'      <field name="{n}" start="{b}" end="{b}"/>' for b, n in enumerate(_MXCSR)]
            lines.append("    </flags>")
        for number, reg in enumerate(REGISTERS):
            if reg.feature == feature:
                group = f' group="{reg.group}"' if reg.group else ""
                lines.append(f'    <reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}"'
                             f' regnum="{number}"{group}/>')  # fmt: skip
        lines.append("  </feature>")
    lines.append("</target>")
    return "\n".join(lines) + "\n"


# --- values --------------------------------------------------------------------------------------
def _narrow(state: CpuState) -> bool:
    """Outside 64-bit code, general registers and rip are shown 32 bits wide (as QEMU does)."""
    return state.mode != "long"


def value(state: CpuState, reg: Register) -> int | None:
    """The register's value in `state`, or None if emu does not hold it."""
    name = reg.name
    if not reg.available:
        return None
    if name in GPRS or name == "rip":
        raw = getattr(state, name)
        return raw & 0xFFFFFFFF if _narrow(state) else raw
    if name == "eflags":
        return state.rflags & 0xFFFFFFFF
    if name in SEGMENTS:
        return getattr(state, name).selector
    if name in ("fs_base", "gs_base"):
        return getattr(state, name[:2]).base
    if name == "k_gs_base":
        return state.msrs.get(MSR_KERNEL_GS_BASE, 0)
    return getattr(state, name)


def encode(state: CpuState, reg: Register) -> str:
    """Hex bytes in target (little-endian) order, or `xx` per byte for an unavailable register."""
    v = value(state, reg)
    if v is None:
        return "xx" * reg.size
    return (v & ((1 << reg.bits) - 1)).to_bytes(reg.size, "little").hex()


def encode_all(state: CpuState) -> str:
    return "".join(encode(state, reg) for reg in REGISTERS)


class RegisterError(ValueError):
    """A register write emu cannot do (unavailable register, a selector outside real mode)."""


def assign(state: CpuState, reg: Register, raw: bytes) -> bool:
    """Put the little-endian `raw` into `state`; True if anything changed."""
    if not reg.available:
        raise RegisterError(f"emu does not hold {reg.name}")
    new = int.from_bytes(raw[: reg.size], "little")
    name = reg.name
    if name in GPRS or name == "rip":
        if _narrow(state):
            new &= 0xFFFFFFFF
        changed = getattr(state, name) != new
        setattr(state, name, new)
        return changed
    if name == "eflags":
        new = (state.rflags & ~0xFFFFFFFF) | new | 0x2  # bit 1 always reads as 1
        changed, state.rflags = state.rflags != new, new
        return changed
    if name in SEGMENTS:
        segment: Segment = getattr(state, name)
        if segment.selector == new & 0xFFFF:
            return False
        if state.mode != "real":  # a descriptor would have to be loaded (and checked): not done
            raise RegisterError(f"emu loads {name} only in real mode (the base is selector << 4 there)")
        setattr(state, name, dataclasses.replace(segment, selector=new & 0xFFFF, base=(new & 0xFFFF) << 4))
        return True
    if name in ("fs_base", "gs_base"):
        segment = getattr(state, name[:2])
        if segment.base == new:
            return False
        setattr(state, name[:2], dataclasses.replace(segment, base=new))
        return True
    if name == "k_gs_base":
        changed = state.msrs.get(MSR_KERNEL_GS_BASE, 0) != new
        state.msrs = {**state.msrs, MSR_KERNEL_GS_BASE: new}
        return changed
    changed = getattr(state, name) != new
    setattr(state, name, new)
    return changed


def assign_all(state: CpuState, text: str) -> bool:
    """A `G` packet's hex: every available register taken from it; the bytes of unavailable
    ones (gdb sends them back as it got them, `xx` included) are skipped. ValueError on bad hex."""
    changed, offset = False, 0
    for reg in REGISTERS:
        chunk = text[offset : offset + 2 * reg.size]
        offset += 2 * reg.size
        if reg.available and len(chunk) == 2 * reg.size:
            changed |= assign(state, reg, bytes.fromhex(chunk))
    return changed
