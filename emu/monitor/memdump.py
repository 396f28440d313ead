"""`x` and `xp`: guest memory as the monitor dumps it, by linear or by physical address.

`x /FMT ADDR` reads at a linear (virtual) address: emu walks the guest's page tables from the
vCPU's CR3, as the CPU would (emu.mmu.walk, with no Accessed/Dirty bits set: looking must not
change what is looked at), and segmentation is ignored, as QEMU ignores it. `xp /FMT ADDR`
reads guest-physical memory directly. FMT is QEMU's: a count, a format (x hex, d signed, u
unsigned, o octal, t binary, c characters, i instructions) and a unit size (b 1, h 2, w 4, g 8
bytes), each optional: `x /4xg $rsp` shows four quadwords at the stack pointer, `x /3i $rip`
the next three instructions, decoded by capstone for the vCPU's mode (16-, 32- or 64-bit code,
from CS.L and CS.D). ADDR is a number or a
register (`$rip`, `$rsp`, `$cr3`, ...).

Physical addresses that are not RAM or ROM read as zeros, as unassigned memory does on emu's
buses; device registers (MMIO) are not read, because a read can have side effects (a UART's
receive buffer, an interrupt acknowledge).

Source: QEMU 7.2 monitor/misc.c (memory_dump: 16 bytes per line, 8 for bytes; "0x%0*x"
values; the address as 16 hex digits) and hmp-commands.hx (x, xp).
"""

from __future__ import annotations

import ctypes
import re
from typing import TYPE_CHECKING

from ..mmu.walk import Access, PageFault, PagingMode, walk_page_tables
from .hmp import MonitorError, UsageError, parse_number

if TYPE_CHECKING:
    from ..machine import Machine

SIZES = {"b": 1, "h": 2, "w": 4, "g": 8}
FORMATS = "xduotc"
MAX_BYTES = 1 << 20
_FMT = re.compile(r"^/(\d*)([xduotci]?)([bhwg]?)([xduotci]?)$")


def parse_format(text: str) -> tuple[int, str, int]:
    """`/10xw` -> (10, "x", 4); QEMU's defaults are 1, x and w."""
    match = _FMT.match(text)
    if match is None:
        raise UsageError(f"invalid format '{text}'")
    count, fmt, size, fmt2 = match.groups()
    fmt = fmt or fmt2 or "x"
    unit = SIZES[size] if size else (1 if fmt == "c" else 4)
    return int(count or 1), fmt, unit


def register_value(machine: Machine, name: str) -> int:
    state = machine.vcpu.get_state(msrs=False)
    value = getattr(state, name, None)
    if name in ("cs", "ds", "es", "fs", "gs", "ss"):
        value = getattr(state, name).base
    if not isinstance(value, int):
        raise UsageError(f"unknown register '${name}'")
    return value


def read_physical(machine: Machine, address: int, length: int) -> bytes:
    """Guest-physical bytes: RAM, ROM (the BIOS, the tables at F0000), else zeros."""
    out = bytearray()
    while length > 0:
        chunk = min(length, 0x1000 - (address & 0xFFF))
        out += _read_page(machine, address, chunk)
        address, length = address + chunk, length - chunk
    return bytes(out)


def _read_page(machine: Machine, address: int, length: int) -> bytes:
    memory = machine.memory
    if memory.contains(address, length):
        return memory.read(address, length)
    roms = [*(machine.firmware.regions() if machine.firmware else []),
            *([machine.bios_tables.region()] if machine.bios_tables else [])]  # fmt: skip
    for region in roms:
        if region.guest_address <= address and address + length <= region.guest_address + region.size:
            return ctypes.string_at(region.host_address + address - region.guest_address, length)
    return bytes(length)


def read_linear(machine: Machine, linear: int, length: int) -> bytes:
    """Bytes at a linear address through the guest's page tables, or MonitorError where unmapped."""
    state = machine.vcpu.get_state(msrs=False)
    mode = PagingMode(state.cr0, state.cr3, state.cr4, state.efer)
    out = bytearray()
    while length > 0:
        chunk = min(length, 0x1000 - (linear & 0xFFF))
        try:
            t = walk_page_tables(machine.memory, mode, linear, Access.READ, user=False, set_ad=False)
        except PageFault:
            raise MonitorError(f"Cannot access memory at {linear:#x}: not mapped") from None
        out += read_physical(machine, t.physical, chunk)  # the exact address, offset included
        linear, length = linear + chunk, length - chunk
    return bytes(out)


def dump(machine: Machine, args: list[str], physical: bool) -> str:
    if args and args[0].startswith("/"):
        count, fmt, unit = parse_format(args[0])
        args = args[1:]
    else:
        count, fmt, unit = 1, "x", 4
    if len(args) != 1:
        raise UsageError("unexpected end of expression" if not args else "extraneous characters at the end of line")
    text = args[0]
    address = register_value(machine, text[1:].lower()) if text.startswith("$") else parse_number(text)
    if count * unit > MAX_BYTES:
        raise MonitorError(f"at most {MAX_BYTES} bytes at a time")
    if fmt == "i":
        return _instructions(machine, address, count, physical)
    data = read_physical(machine, address, count * unit) if physical else read_linear(machine, address, count * unit)
    line_size = 8 if unit == 1 else 16
    lines = []
    for offset in range(0, len(data), line_size):
        words = []
        for i in range(offset, min(offset + line_size, len(data)), unit):
            value = int.from_bytes(data[i : i + unit], "little")
            words.append(_format(value, fmt, unit))
        lines.append(f"{address + offset:016x}:" + "".join(words))
    return "\n".join(lines) + "\n"


def _instructions(machine: Machine, address: int, count: int, physical: bool) -> str:
    """`x /Ni ADDR`: N instructions, as QEMU prints them ("0x%016x:  mnemonic operands")."""
    from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

    if count > 1000:
        raise MonitorError("at most 1000 instructions at a time")
    state = machine.vcpu.get_state(msrs=False)
    mode = CS_MODE_64 if state.efer & 0x400 and state.cs.l else CS_MODE_32 if state.cs.db else CS_MODE_16
    length = 15 * count  # the longest x86 instruction is 15 bytes
    reader = read_physical if physical else read_linear
    data = b""
    while length > 0 and not data:  # as much as is mapped, from `address` on
        try:
            data = reader(machine, address, length)
        except MonitorError:
            if length <= 0x1000 - (address & 0xFFF):
                raise
            length = 0x1000 - (address & 0xFFF)
    lines = []
    for insn in Cs(CS_ARCH_X86, mode).disasm(data, address):
        lines.append(f"0x{insn.address:016x}:  {insn.mnemonic} {insn.op_str}".rstrip())
        if len(lines) == count:
            break
    if len(lines) < count:  # capstone stops at the first byte sequence that is no instruction
        lines.append("(no further instruction: the next bytes do not decode, or are not mapped)")
    return "\n".join(lines) + "\n"


def _format(value: int, fmt: str, unit: int) -> str:
    bits = 8 * unit
    if fmt == "x":
        return f" 0x{value:0{2 * unit}x}"
    if fmt == "o":
        return f" {value:#o}"
    if fmt == "u":
        return f" {value}"
    if fmt == "d":
        return f" {value - (1 << bits) if value >> (bits - 1) else value}"
    if fmt == "t":
        return f" {value:0{bits}b}"
    return " " + "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in value.to_bytes(unit, "little"))
