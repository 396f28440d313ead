"""Instruction traces: one record per executed instruction, the same from both backends.

A record holds the instruction's index, where it was (CS:RIP and the linear address), its
bytes and disassembly (capstone, in the CPU's mode at that moment), the registers it changed,
and the interrupt injected just before it. Both accelerators run one instruction at a time
(VCpu.step: a budget of one on tcg, KVM_GUESTDBG_SINGLESTEP on kvm), so the same guest gives
the same records on both, except where the backends really differ: which is what
emu.difftest.lockstep looks for.

Two formats: text for people (`format_text`), and JSON lines for tools (`as_json`), one object
per instruction with integers in hex strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from ..accel import CpuState, Segment
from ..memory import GuestMemory, GuestMemoryError
from ..mmu.linear import LinearMemory
from ..mmu.walk import PageFault, PagingMode

MAX_INSTRUCTION = 15
_COMPARED = [f.name for f in fields(CpuState) if f.name != "msrs"]


@dataclass
class TraceRecord:
    index: int
    cs: int
    rip: int
    linear: int
    code: bytes
    mnemonic: str
    operands: str
    changes: dict[str, object] = field(default_factory=dict)  # register -> its value after
    interrupt: int | None = None  # vector injected before this instruction
    halted: bool = False

    @property
    def text(self) -> str:
        return f"{self.mnemonic} {self.operands}".strip()

    def format_text(self, symbol: str = "") -> str:
        lines = []
        if self.interrupt is not None:
            lines.append(f"{'':>9} ! interrupt vector {self.interrupt:#04x} injected")
        where = f"{self.cs:04x}:{self.rip:08x}"
        changes = " ".join(f"{name}={_show(value)}" for name, value in self.changes.items())
        label = f" <{symbol}>" if symbol else ""
        lines.append(f"{self.index:>9} {where}{label} {self.code.hex(' '):<30} {self.text:<36} {changes}".rstrip())
        if self.halted:
            lines.append(f"{'':>9} ! halted")
        return "\n".join(lines)

    def as_json(self) -> str:
        return json.dumps({
            "i": self.index, "cs": self.cs, "rip": hex(self.rip), "linear": hex(self.linear),
            "bytes": self.code.hex(), "asm": self.text,
            "changes": {k: _show(v) for k, v in self.changes.items()},
            **({"interrupt": self.interrupt} if self.interrupt is not None else {}),
            **({"halted": True} if self.halted else {}),
        }, separators=(",", ":"))  # fmt: skip


def _show(value: object) -> object:
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, Segment):
        return f"{value.selector:#x}/base={value.base:#x}"
    return str(value)


def state_changes(before: CpuState, after: CpuState) -> dict[str, object]:
    """The fields of `after` that differ from `before` (MSRs left out: read only on demand)."""
    out = {}
    for name in _COMPARED:
        value = getattr(after, name)
        if getattr(before, name) != value:
            out[name] = value
    return out


def linear_rip(state: CpuState) -> int:
    linear = state.cs.base + state.rip
    return linear if state.mode == "long" else linear & 0xFFFF_FFFF


def fetch_instruction(memory: GuestMemory, state: CpuState) -> tuple[bytes, str, str]:
    """The bytes at CS:RIP and their disassembly in the state's mode."""
    paging = PagingMode(state.cr0, state.cr3, state.cr4, state.efer)
    linear = linear_rip(state)
    code = b""
    try:
        code = LinearMemory(memory, paging, set_ad=False).read(linear, MAX_INSTRUCTION)
    except (PageFault, GuestMemoryError):
        for length in range(MAX_INSTRUCTION - 1, 0, -1):  # near the end of RAM or a mapping
            try:
                code = LinearMemory(memory, paging, set_ad=False).read(linear, length)
                break
            except (PageFault, GuestMemoryError):
                continue
    for address, size, mnemonic, operands in _disassembler(state).disasm_lite(code, linear):
        return code[:size], mnemonic, operands
    return code[:1], "(bad)", ""


_DISASSEMBLERS: dict[int, object] = {}


def _disassembler(state: CpuState):
    from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs

    mode = {"real": CS_MODE_16, "protected16": CS_MODE_16, "long": CS_MODE_64}.get(state.mode, CS_MODE_32)
    cs = _DISASSEMBLERS.get(mode)
    if cs is None:
        cs = _DISASSEMBLERS[mode] = Cs(CS_ARCH_X86, mode)
    return cs


def trace(machine: Machine, limit: int | None = None, terminal_input: bytes = b""):
    """Run `machine` one instruction at a time; yield a TraceRecord for each."""
    machine.start_stepping(terminal_input)
    before = machine.vcpu.get_state()
    index = 0
    while limit is None or index < limit:
        code, mnemonic, operands = fetch_instruction(machine.memory, before)
        result = machine.step()
        if result.finished and not result.executed:
            return
        after = machine.vcpu.get_state()
        if result.executed or result.halted:
            yield TraceRecord(index, before.cs.selector, before.rip, linear_rip(before), code, mnemonic, operands,
                              state_changes(before, after), result.interrupt, result.halted)  # fmt: skip
            index += 1
        if result.finished:
            return
        if result.halted:
            machine.wait_for_interrupt()
        before = after
