"""Differential fuzzing: random instruction sequences on both backends, from the same state.

In the manner of EmuFuzzer and KEmuFuzzer: generate short sequences of valid x86-64
instructions (encoded here from a table of forms, and checked with capstone), run each one in
long mode on tcg and on kvm from one random start, and compare how the two runs end.

The start. Random values in ten general-purpose registers and in the arithmetic flags; RBP
pointing at a 4 KiB data page (DATA, identity mapped, user-accessible) filled with random bytes,
which the table's memory forms address as [rbp + disp8] with disp8 <= 0x78, so that every access
stays inside the page; and a privilege level, drawn per sequence: CPL0 (the kernel segments of
environment.py, RSP 0x80000) or CPL3 (its user selectors 0x23 and 0x2b, DPL3, RSP in a user
stack). All of it comes from the sequence's own random generator: sequence N of a campaign is
the same on every run, whichever worker runs it.

What is compared. A `hlt` follows the sequence. At CPL0 it stops the vCPU. At CPL3 it is
privileged: it raises #GP(0), which the CPU delivers through the IDT to the #GP stub (itself a
hlt, at CPL0) on the stack named by TSS.RSP0; a sequence that faults earlier ends in its
vector's stub instead. Compared are (1) the final registers and RIP (at CPL3: the kernel's, at
the stub, so RIP names the vector), (2) the exception frame on the stack the exception used,
error code, RIP, CS, RFLAGS, RSP and SS as the fields frame.rip ... (at CPL3 it holds the user
state at the fault: the ring-3 result), and (3) the data page, byte by byte.

Why ring 3 matters on this project's hosts. Their /dev/kvm is kvm_pvm (notes/host-kvm.md): CPL0
guest code is run by KVM's instruction emulator, but CPL3 code runs natively on the real CPU. A
CPL0 sequence compares Unicorn's TCG with KVM's emulator, two pieces of software; a CPL3 sequence
compares TCG with silicon. The instructions whose ring-3 result the host itself changes (pushf,
reading CS or SS, in/out) are kept out of the table.

A sequence that ends differently is replayed one instruction at a time, each from the state the
previous one left on tcg (at CPL3 rebuilt from the frame: user_state_from_frame), with the
declared differences (emu.difftest.declared) applied to the registers and to the frame's
register images, so an undefined flag that later reaches a register is not reported as a bug;
a difference in the data page is never declared. What remains is reduced to the shortest
sub-sequence that still differs (delta debugging, dropping one instruction at a time) and saved
in the corpus directory as JSON (bytes, disassembly, ring, registers, data page, the differing
fields and memory offsets) and as a multiboot image (reproducer.py) that `python -m emu diff` runs.

    python -m emu fuzz [--count N] [--seed S] [--length L] [--workers W] [--corpus DIR] [--ring 0|3|both]

A campaign remembers how far it got in DIR/campaign.json and resumes from there; a file written
with other settings, or by an older generator, starts the campaign over.
"""

from __future__ import annotations

import collections
import functools
import json
import multiprocessing
import os
import random
import struct
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..accel import RFLAGS_RF, CpuState, HaltExit, MemoryRegion, Segment
from ..memory import GuestMemory
from . import reproducer
from .declared import explain, shift_count
from .environment import IDT, STUBS, TSS, USER_CS, USER_DS, gate64, long_mode_state

CODE = 0x100000
DATA = 0x200000  # the data page RBP points at (the page tables map the first GiB, user-accessible)
DATA_SIZE = 0x1000
KERNEL_STACK, USER_STACK, RSP0 = 0x80000, 0x60000, 0x70000  # RSP0: what long_mode_state puts in the TSS
REGS = ["rax", "rcx", "rdx", "rbx", None, None, "rsi", "rdi", "r8", "r9", "r10", "r11"]  # no rsp, rbp
USABLE = [i for i, name in enumerate(REGS) if name]
HLT = b"\xf4"
RINGS = (0, 3)
FORMAT = 3  # campaign.json's generator version: 2 = memory forms, data page, rings; 3 = div, lea, imul3


# ---------------------------------------------------------------------------------------------
# The instruction table: (class, name, encoder(rng) -> bytes)
def _rex(w: int, reg: int, rm: int) -> int:
    return 0x40 | (w << 3) | ((reg >> 3) << 2) | (rm >> 3)


def _modrm(reg: int, rm: int) -> int:
    return 0xC0 | ((reg & 7) << 3) | (rm & 7)


def _rr(opcode: bytes):
    def encode(rng: random.Random) -> bytes:
        reg, rm = rng.choice(USABLE), rng.choice(USABLE)
        return bytes([_rex(1, reg, rm)]) + opcode + bytes([_modrm(reg, rm)])

    return encode


def _imm(rng: random.Random, size: int) -> bytes:
    if size == 1:
        return bytes([rng.randrange(256) if rng.random() < 0.3 else rng.randrange(66)])
    if size == 4:
        return rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, rng.getrandbits(32)]).to_bytes(4, "little")
    return b""


def _group(opcode: bytes, ext: int, imm: int = 0):
    def encode(rng: random.Random) -> bytes:
        rm = rng.choice(USABLE)
        return bytes([_rex(1, 0, rm)]) + opcode + bytes([_modrm(ext, rm)]) + _imm(rng, imm)

    return encode


def _mem(reg: int, rng: random.Random) -> bytes:
    """ModRM and disp8 for [rbp + disp8] (mod=01 rm=101): 8 bytes at DATA + disp8 stay in the page.
    Half the displacements are 8-aligned; the others may straddle a qword or a cache line."""
    disp = 8 * rng.randrange(16) if rng.random() < 0.5 else rng.randrange(0x79)
    return bytes([0x45 | ((reg & 7) << 3), disp])


def _rm(opcode: bytes, lock: bool = False):
    """`op [rbp+d], reg` or `op reg, [rbp+d]` (by the opcode's direction bit), REX.W."""

    def encode(rng: random.Random) -> bytes:
        reg = rng.choice(USABLE)
        return (b"\xf0" if lock else b"") + bytes([_rex(1, reg, 0)]) + opcode + _mem(reg, rng)

    return encode


def _group_mem(opcode: bytes, ext: int, imm: int = 0, lock: bool = False):
    """A group opcode (/ext) on the qword at [rbp+d], with an immediate of `imm` bytes."""

    def encode(rng: random.Random) -> bytes:
        return (b"\xf0" if lock else b"") + b"\x48" + opcode + _mem(ext, rng) + _imm(rng, imm)

    return encode


def _lea(rng: random.Random) -> bytes:
    """lea r64, [r64 + disp8] (mod=01: no SIB for the usable registers)."""
    reg, base = rng.choice(USABLE), rng.choice(USABLE)
    return bytes([_rex(1, reg, base), 0x8D, 0x40 | ((reg & 7) << 3) | (base & 7), rng.randrange(256)])


def _flag_op(byte: int):
    return lambda rng: bytes([byte])


def _setcc(rng: random.Random) -> bytes:
    rm = rng.choice([0, 1, 2, 3])  # al, cl, dl, bl: no REX needed
    return bytes([0x0F, 0x90 + rng.randrange(16), _modrm(0, rm)])


def _cmov(rng: random.Random) -> bytes:
    reg, rm = rng.choice(USABLE), rng.choice(USABLE)
    return bytes([_rex(1, reg, rm), 0x0F, 0x40 + rng.randrange(16), _modrm(reg, rm)])


def _bswap(rng: random.Random) -> bytes:
    r = rng.choice(USABLE)
    return bytes([_rex(1, 0, r), 0x0F, 0xC8 + (r & 7)])


def _mov_imm(rng: random.Random) -> bytes:
    r = rng.choice(USABLE)
    value = rng.choice([0, 1, -1 & (2**64 - 1), 1 << 63, 0x8000, rng.getrandbits(64)])
    return bytes([_rex(1, 0, r), 0xB8 + (r & 7)]) + value.to_bytes(8, "little")


def _movzx(opcode: int):
    def encode(rng: random.Random) -> bytes:
        reg, rm = rng.choice(USABLE), rng.choice([0, 1, 2, 3])
        return bytes([_rex(1, reg, rm), 0x0F, opcode, _modrm(reg, rm)])

    return encode


ALU = (("add", 0x01), ("or", 0x09), ("adc", 0x11), ("sbb", 0x19), ("and", 0x21), ("sub", 0x29), ("xor", 0x31),
       ("cmp", 0x39))  # fmt: skip
GROUP1 = (("add", 0), ("or", 1), ("adc", 2), ("sbb", 3), ("and", 4), ("sub", 5), ("xor", 6), ("cmp", 7))
SHIFTS = {"rol": 0, "ror": 1, "rcl": 2, "rcr": 3, "shl": 4, "shr": 5, "sar": 7}
BIT_TESTS = {"bt": 4, "bts": 5, "btr": 6, "btc": 7}  # 0F BA /n ib: the imm8 offset is taken mod 64 on memory
# fmt: off
TABLE: list[tuple[str, str, object]] = [
    *[("alu", name, _rr(bytes([op]))) for name, op in (*ALU, ("test", 0x85), ("mov", 0x89), ("xchg", 0x87))],
    *[("alu-imm", name, _group(b"\x81", ext, 4)) for name, ext in GROUP1],
    *[("unary", name, _group(b"\xf7", ext)) for name, ext in (("not", 2), ("neg", 3), ("mul", 4), ("imul", 5))],
    *[("unary", name, _group(b"\xff", ext)) for name, ext in (("inc", 0), ("dec", 1))],
    *[("shift-imm", name, _group(b"\xc1", ext, 1)) for name, ext in SHIFTS.items()],
    *[("shift-cl", name, _group(b"\xd3", ext)) for name, ext in SHIFTS.items()],
    ("mul", "imul2", _rr(b"\x0f\xaf")),
    ("mul", "imul3", lambda rng: _rr(b"\x6b")(rng) + _imm(rng, 1)),
    *[("div", name, _group(b"\xf7", ext)) for name, ext in (("div", 6), ("idiv", 7))],  # #DE often: a fault's frame
    ("move", "lea", _lea),
    *[("bits", name, _rr(bytes([0x0F, op]))) for name, op in
      (("bsf", 0xBC), ("bsr", 0xBD), ("bt", 0xA3), ("bts", 0xAB), ("btr", 0xB3), ("btc", 0xBB))],
    ("bits", "shld", lambda rng: _rr(b"\x0f\xa4")(rng) + bytes([rng.randrange(64)])),
    ("bits", "shrd", lambda rng: _rr(b"\x0f\xac")(rng) + bytes([rng.randrange(64)])),
    ("move", "cmovcc", _cmov),
    ("move", "setcc", _setcc),
    ("move", "bswap", _bswap),
    ("move", "mov-imm64", _mov_imm),
    ("move", "movzx8", _movzx(0xB6)),
    ("move", "movsx8", _movzx(0xBE)),
    ("move", "movsxd", _rr(b"\x63")),
    ("atomic", "xadd", _rr(b"\x0f\xc1")),
    ("atomic", "cmpxchg", _rr(b"\x0f\xb1")),
    *[("flags", name, _flag_op(op)) for name, op in
      (("clc", 0xF8), ("stc", 0xF9), ("cmc", 0xF5), ("lahf", 0x9F), ("sahf", 0x9E))],
    ("move", "cqo", lambda rng: b"\x48\x99"),
    # memory operands: the qword (or byte, word, dword) at [rbp + disp8] in the data page
    *[("alu-mem", f"{name}-to-mem", _rm(bytes([op]))) for name, op in (*ALU, ("test", 0x85), ("mov", 0x89))],
    *[("alu-mem", f"{name}-from-mem", _rm(bytes([op + 2]))) for name, op in (*ALU, ("mov", 0x89))],
    *[("alu-mem", f"{name}-imm-mem", _group_mem(b"\x81", ext, 4)) for name, ext in GROUP1],
    *[("unary-mem", name, _group_mem(b"\xf7", ext)) for name, ext in
      (("not", 2), ("neg", 3), ("mul", 4), ("imul", 5))],
    *[("unary-mem", name, _group_mem(b"\xff", ext)) for name, ext in (("inc", 0), ("dec", 1))],
    *[("shift-mem", f"{name}-imm", _group_mem(b"\xc1", ext, 1)) for name, ext in SHIFTS.items()],
    *[("shift-mem", f"{name}-cl", _group_mem(b"\xd3", ext)) for name, ext in SHIFTS.items()],
    *[("bits-mem", name, _group_mem(b"\x0f\xba", ext, 1)) for name, ext in BIT_TESTS.items()],
    ("atomic-mem", "xadd", _rm(b"\x0f\xc1")),
    ("atomic-mem", "cmpxchg", _rm(b"\x0f\xb1")),
    ("atomic-mem", "xchg", _rm(b"\x87")),  # locked without a prefix (SDM vol. 2B XCHG)
    ("atomic-mem", "lock-add", _rm(b"\x01", lock=True)),
    ("atomic-mem", "lock-xadd", _rm(b"\x0f\xc1", lock=True)),
    ("atomic-mem", "lock-cmpxchg", _rm(b"\x0f\xb1", lock=True)),
    ("atomic-mem", "lock-inc", _group_mem(b"\xff", 0, lock=True)),
    *[("move-mem", name, _rm(op)) for name, op in
      (("movzx8", b"\x0f\xb6"), ("movzx16", b"\x0f\xb7"), ("movsx8", b"\x0f\xbe"), ("movsx16", b"\x0f\xbf"),
       ("movsxd", b"\x63"))],
]
# fmt: on


@dataclass
class Instruction:
    klass: str
    code: bytes
    text: str
    mnemonic: str  # without a lock prefix: the name declared differences use


@functools.cache
def _capstone():  # a capstone.Cs, made once per process
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    return Cs(CS_ARCH_X86, CS_MODE_64)


def generate(rng: random.Random, length: int) -> list[Instruction]:
    cs = _capstone()
    out = []
    while len(out) < length:
        klass, _name, encode = rng.choice(TABLE)
        code = encode(rng)  # type: ignore[operator]
        decoded = list(cs.disasm_lite(code, 0))
        if len(decoded) != 1 or decoded[0][1] != len(code):  # the table must give one valid instruction
            raise AssertionError(f"bad encoding {code.hex()} for {_name}")
        mnemonic = decoded[0][2]
        out.append(Instruction(klass, code, f"{mnemonic} {decoded[0][3]}".strip(), mnemonic.split()[-1]))
    return out


# ---------------------------------------------------------------------------------------------
# Starts, outcomes and the frame
FRAME = ("error", "rip", "cs", "rflags", "rsp", "ss")  # the 6 qwords below the stack top, lowest first
FRAME_SIZE = 8 * len(FRAME)


def user_segments(state: CpuState) -> None:
    """CPL3: the DPL3 descriptors of environment.write_gdt (0x20 64-bit code, 0x28 data), RPL 3."""
    state.cs = Segment(selector=USER_CS, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1, dpl=3)
    data = Segment(selector=USER_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1, dpl=3)
    state.ss = state.ds = state.es = data
    state.fs, state.gs = replace(data, base=state.fs.base), replace(data, base=state.gs.base)


@dataclass
class Start:
    """Where a sequence starts: a CPU state (CPL0 or CPL3) and the data page's bytes."""

    state: CpuState
    data: bytes

    @property
    def ring(self) -> int:
        return self.state.cpl

    def frame_top(self) -> int:
        """Where an exception pushes its frame: the TSS's RSP0 from CPL3, else the current
        stack, aligned down to 16 bytes (SDM vol. 3A §6.14.2)."""
        return RSP0 if self.ring == 3 else self.state.rsp & ~0xF


@dataclass
class Outcome:
    """How one backend's run ended."""

    state: CpuState  # the final CPU state (after a CPL3 run: the kernel's, at an exception's stub)
    frame: tuple[int, ...]  # the FRAME qwords below Start.frame_top(), zero if nothing was pushed
    data: bytes  # the data page


def user_state_from_frame(outcome: Outcome, start: Start) -> CpuState:
    """The CPL3 state a ring-3 run stopped in, which the kernel's final state no longer holds:
    the general-purpose registers are the kernel's (delivery leaves them alone), RIP, RFLAGS and
    RSP come from the frame the exception pushed (RFLAGS without RF, which belongs to the
    delivery), the segments from `start` (the sequences load none)."""
    frame = dict(zip(FRAME, outcome.frame, strict=True))
    return replace(outcome.state, rip=frame["rip"], rflags=frame["rflags"] & ~RFLAGS_RF, rsp=frame["rsp"],
                   cs=start.state.cs, ss=start.state.ss, ds=start.state.ds, es=start.state.es,
                   fs=start.state.fs, gs=start.state.gs)  # fmt: skip


def next_start(outcome: Outcome, start: Start) -> Start:
    """The start of the next instruction, from how this one ended (on tcg): at RIP=CODE again."""
    state = user_state_from_frame(outcome, start) if start.ring == 3 else replace(outcome.state)
    state.rip = CODE
    return Start(state, outcome.data)


# ---------------------------------------------------------------------------------------------
class Backend:
    """One accelerator with its own RAM, reused for every sequence."""

    def __init__(self, accel: str) -> None:
        self.memory = GuestMemory(8 << 20)
        if accel == "tcg":
            from ..tcg.accel import TcgAccelerator

            self.accel = TcgAccelerator(self.memory, mmu="unicorn")
        else:
            from ..kvm_accel.vm import KvmAccelerator

            self.accel = KvmAccelerator(self.memory)
        self.accel.add_memory_region(MemoryRegion(0, self.memory.size, self.memory.host_address))
        self.vcpu = self.accel.create_vcpu(0, _NoIo())
        self.base = long_mode_state(self.memory, rip=CODE, rsp=KERNEL_STACK)
        assert self.memory.read_u64(TSS + 4) == RSP0
        for vector in range(32):  # each exception lands on its own hlt, so the vector shows in RIP
            self.memory.write(STUBS + vector, HLT)
            self.memory.write(IDT + 16 * vector, gate64(STUBS + vector))

    def run(self, code: bytes, start: Start) -> Outcome:
        """Run `code` from `start` to the hlt after it (or an exception's stub)."""
        top = start.frame_top()
        self.memory.write(CODE, code + HLT)
        # the data page and the frame hold no code: stored past the write listeners, since tcg's
        # would drop all translated code for each (it cannot tell code pages apart with paging on)
        ram = self.memory.buffer  # one RAM range from 0: buffer index = guest-physical address
        ram[DATA : DATA + DATA_SIZE] = start.data
        ram[top - FRAME_SIZE : top] = bytes(FRAME_SIZE)
        self.vcpu.set_state(start.state)
        event = self.vcpu.run()
        if not isinstance(event, HaltExit):
            raise RuntimeError(f"{self.accel.name}: the sequence did not end in hlt: {event}")
        frame = struct.unpack(f"<{len(FRAME)}Q", self.memory.read(top - FRAME_SIZE, FRAME_SIZE))
        return Outcome(self.vcpu.get_state(msrs=False), frame, self.memory.read(DATA, DATA_SIZE))

    def close(self) -> None:
        self.vcpu.close()
        self.accel.close()
        self.memory.close()


class _NoIo:
    def port_read(self, port: int, size: int) -> int:
        return 0xFFFFFFFF

    def port_write(self, port: int, size: int, value: int) -> None:
        pass

    def mmio_read(self, address: int, size: int) -> int:
        return 0

    def mmio_write(self, address: int, size: int, value: int) -> None:
        pass


COMPARED = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "rip", "rflags"]


def differences(a: Outcome, b: Outcome) -> dict[str, tuple[int, int]]:
    """The registers and frame fields (frame.rip, ...) that differ, as name -> (tcg, kvm)."""
    ours, theirs = a.state, b.state
    out = {n: (getattr(ours, n), getattr(theirs, n)) for n in COMPARED if getattr(ours, n) != getattr(theirs, n)}
    out.update({f"frame.{n}": (x, y) for n, x, y in zip(FRAME, a.frame, b.frame, strict=True) if x != y})
    return out


def memory_differences(a: Outcome, b: Outcome) -> list[tuple[int, int, int]]:
    """(offset in the data page, tcg's byte, kvm's byte) for each byte that differs."""
    if a.data == b.data:
        return []
    return [(i, x, y) for i, (x, y) in enumerate(zip(a.data, b.data, strict=True)) if x != y]


def faulting(sequence: list[Instruction], outcome: Outcome) -> str | None:
    """The mnemonic of the instruction whose fault pushed the frame (the closing hlt at CPL3)."""
    rip, offset = outcome.frame[FRAME.index("rip")], CODE
    for instruction in sequence:
        if rip == offset:
            return instruction.mnemonic
        offset += len(instruction.code)
    return "hlt" if rip == offset and any(outcome.frame) else None


def _declared(mnemonics: tuple[str | None, ...], name: str, ours: int, theirs: int, count: int | None = None) -> bool:
    """Whether declared differences of `mnemonics` explain `name` differing. A frame field is the
    image of a register (frame.rflags: RFLAGS), so it is asked about under the register's name;
    the differing RFLAGS bits may be covered by several declarations (an undefined flag of the
    instruction, RF of the fault), so each bit is asked about on its own."""
    register = name.removeprefix("frame.")
    candidates = [m for m in mnemonics if m]
    if register != "rflags":
        return any(explain(m, register, ours, theirs) for m in candidates)
    bits = ours ^ theirs
    while bits:
        bit = bits & -bits
        if not any(explain(m, "rflags", ours, ours ^ bit, count if m == mnemonics[0] else None) for m in candidates):
            return False
        bits ^= bit
    return True


def real_differences(a: Outcome, b: Outcome, mnemonic: str | None, fault: str | None,
                     count: int | None = None) -> dict[str, tuple[int, int]]:  # fmt: skip
    """The differences no declaration explains: the registers' by `mnemonic` (the instruction
    run; a shift or rotate by `count`), the frame's by it or by `fault` (the instruction that
    faulted and pushed the frame)."""
    return {n: v for n, v in differences(a, b).items()
            if not _declared((mnemonic, fault) if n.startswith("frame.") else (mnemonic,), n, *v, count)}  # fmt: skip


def _hex_fields(fields: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    return {n: [hex(x), hex(y)] for n, (x, y) in fields.items()}


def _hex_memory(diffs: list[tuple[int, int, int]]) -> list[dict[str, str]]:
    return [{"address": hex(DATA + i), "offset": hex(i), "tcg": f"{x:#04x}", "kvm": f"{y:#04x}"} for i, x, y in diffs]


@dataclass
class Worker:
    tcg: Backend = field(default_factory=lambda: Backend("tcg"))
    kvm: Backend = field(default_factory=lambda: Backend("kvm"))

    def start(self, rng: random.Random, ring: int = 0) -> Start:
        """A random start at CPL `ring`: registers, arithmetic flags, the data page's bytes."""
        state = CpuState(**{k: getattr(self.tcg.base, k) for k in CpuState.__dataclass_fields__})
        for index in USABLE:
            setattr(state, REGS[index], rng.choice([0, 1, 2**64 - 1, 1 << 63, 0x80, rng.getrandbits(64)]))
        state.rflags = 0x2 | (rng.getrandbits(12) & 0x8D5)  # CF PF AF ZF SF OF
        state.rbp = DATA
        if ring == 3:
            user_segments(state)
            state.rsp = USER_STACK
        return Start(state, rng.randbytes(DATA_SIZE))

    def verdict(self, sequence: list[Instruction], start: Start) -> dict | None:
        """None if both backends agree (up to declared differences), else the real difference."""
        code = b"".join(i.code for i in sequence)
        a = self.tcg.run(code, start)
        b = self.kvm.run(code, start)
        # the instruction that faulted ran last: its declared differences may show in the frame
        if not real_differences(a, b, None, faulting(sequence, a)) and a.data == b.data:
            return None
        return self.stepwise(sequence, start)

    def stepwise(self, sequence: list[Instruction], start: Start) -> dict | None:
        """Instruction by instruction, each from the state (and data page) the one before left on
        tcg, declared differences allowed; the first real difference."""
        current = start
        for index, instruction in enumerate(sequence):
            a = self.tcg.run(instruction.code, current)
            b = self.kvm.run(instruction.code, current)
            fault = faulting([instruction], a)
            operands = instruction.text.removeprefix(instruction.mnemonic).strip()
            count = shift_count(instruction.mnemonic, operands, current.state)
            real = real_differences(a, b, instruction.mnemonic, fault, count)
            memory = memory_differences(a, b)
            if real or memory:
                found = {"index": index, "instruction": instruction.text, "bytes": instruction.code.hex(),
                         "fields": _hex_fields(real), "memory": _hex_memory(memory)}  # fmt: skip
                if fault and any(n.startswith("frame.") for n in real):
                    found["fault"] = fault  # the frame was pushed by this instruction's fault, or the hlt's
                return found
            current = next_start(a, current)
        return None

    def reduce(self, sequence: list[Instruction], start: Start) -> list[Instruction]:
        """Drop instructions one at a time while the sequence still differs."""
        changed = True
        while changed and len(sequence) > 1:
            changed = False
            for i in range(len(sequence)):
                shorter = sequence[:i] + sequence[i + 1 :]
                if self.verdict(shorter, start) is not None:
                    sequence, changed = shorter, True
                    break
        return sequence

    def close(self) -> None:
        self.tcg.close()
        self.kvm.close()


# ---------------------------------------------------------------------------------------------
_WORKER: Worker | None = None


def _init_worker() -> None:
    global _WORKER
    _WORKER = Worker()


def draw(seed: int, n: int, length: int, rings: str) -> tuple[list[Instruction], int, random.Random]:
    """Sequence number `n` of campaign `seed`, its ring, and the generator to draw its start from.
    The ring's draw comes first and is always made, so --ring does not change the sequences."""
    rng = random.Random(f"{seed}:{n}")
    drawn = RINGS[rng.random() >= 0.5]
    ring = drawn if rings == "both" else int(rings)
    return generate(rng, length), ring, rng


def run_one(args: tuple[int, int, int, str]) -> dict:
    """Sequence number `n` of campaign `seed`: its ring, its classes and, if any, the reduced finding."""
    seed, n, length, rings = args
    assert _WORKER is not None
    sequence, ring, rng = draw(seed, n, length, rings)
    start = _WORKER.start(rng, ring)
    result = {"n": n, "ring": ring, "classes": sorted({i.klass for i in sequence})}
    found = _WORKER.verdict(sequence, start)
    if found is not None:
        reduced = _WORKER.reduce(sequence, start)
        found = _WORKER.verdict(reduced, start) or found
        result["finding"] = {**found, "class": reduced[found["index"]].klass if found["index"] < len(reduced) else "",
                             "sequence": [i.text for i in reduced], "code": b"".join(i.code for i in reduced).hex(),
                             "ring": ring, "state": {r: hex(getattr(start.state, r)) for r in COMPARED},
                             "data": start.data.hex()}  # fmt: skip
    return result


def start_from_finding(finding: dict, worker: Worker) -> Start:
    """The start a saved finding ran from (a finding written before rings and the data page: CPL0,
    the data page zero)."""
    state = CpuState(**{k: getattr(worker.tcg.base, k) for k in CpuState.__dataclass_fields__})
    for name, value in finding["state"].items():
        setattr(state, name, int(value, 16))
    if finding.get("ring", 0) == 3:
        user_segments(state)
    return Start(state, bytes.fromhex(finding.get("data", "")) or bytes(DATA_SIZE))


def sequence_from_finding(finding: dict) -> list[Instruction]:
    """The finding's instructions, decoded again from its bytes."""
    code = bytes.fromhex(finding["code"])
    out = []
    for offset, size, mnemonic, operands in _capstone().disasm_lite(code, 0):
        text = f"{mnemonic} {operands}".strip()
        out.append(Instruction("", code[offset : offset + size], text, mnemonic.split()[-1]))
    return out


def _resume_point(progress_file: Path, settings: dict) -> int:
    """How many sequences of this campaign are done; 0 (and a note) for another campaign's file."""
    if not progress_file.exists():
        return 0
    try:
        saved = json.loads(progress_file.read_text())
    except ValueError:
        saved = {}
    if {k: saved.get(k) for k in settings} != settings:
        print(f"fuzz: {progress_file} is from another campaign ({ {k: saved.get(k) for k in settings} }): "
              "starting over", file=sys.stderr)  # fmt: skip
        return 0
    return int(saved.get("done", 0))


def campaign(count: int, seed: int, length: int, workers: int, corpus: Path, rings: str = "both") -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    progress_file = corpus / "campaign.json"
    settings = {"format": FORMAT, "seed": seed, "length": length, "ring": rings}
    done = _resume_point(progress_file, settings)
    by_class: collections.Counter = collections.Counter()  # (class, ring) -> sequences
    by_ring: collections.Counter = collections.Counter()
    found_by: collections.Counter = collections.Counter()  # ring and class -> findings
    findings = 0
    start = time.monotonic()
    jobs = [(seed, n, length, rings) for n in range(done, count)]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        for i, result in enumerate(pool.imap_unordered(run_one, jobs, chunksize=16), start=1):
            by_ring[result["ring"]] += 1
            by_class.update((klass, result["ring"]) for klass in result["classes"])
            if "finding" in result:
                findings += 1
                finding = result["finding"]
                found_by.update([result["ring"], finding["class"]])
                name = corpus / f"finding-{seed}-{result['n']}"
                name.with_suffix(".json").write_text(json.dumps(finding, indent=2))
                state = {r: int(v, 16) for r, v in finding["state"].items()}
                reproducer.build(bytes.fromhex(finding["code"]), state, name.with_suffix(".elf"),
                                 ring=finding["ring"], data=bytes.fromhex(finding["data"]))  # fmt: skip
            if i % 500 == 0 or i == len(jobs):
                rate = i / max(time.monotonic() - start, 1e-9)
                print(f"\rfuzz: {done + i}/{count} sequences, {findings} findings, {rate:.0f}/s", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
                progress_file.write_text(json.dumps({**settings, "done": done + i}))
    elapsed = time.monotonic() - start
    print(file=sys.stderr)
    ran = count - done
    print(f"{ran} sequences of {length} instructions in {elapsed:.1f} s "
          f"({ran / max(elapsed, 1e-9):.0f}/s on {workers} workers); {findings} findings in {corpus}")  # fmt: skip
    print(", ".join(f"ring {r}: {by_ring[r]} sequences ({found_by[r]} findings)" for r in RINGS))
    print(f"{'class':<12}{'sequences':>10}{'ring 0':>8}{'ring 3':>8}{'findings':>10}")
    for klass in sorted({k for k, _ in by_class}):
        counts = [by_class[klass, r] for r in RINGS]
        print(f"{klass:<12}{sum(counts):>10}{counts[0]:>8}{counts[1]:>8}{found_by[klass]:>10}")
    return 1 if findings else 0


def fuzz_main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="emu fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--corpus", default="fuzz-corpus")
    p.add_argument("--ring", choices=("0", "3", "both"), default="both",
                   help="the CPL the sequences run at (both: drawn per sequence, about half each)")  # fmt: skip
    args = p.parse_args(argv)
    try:
        return campaign(args.count, args.seed, args.length, args.workers, Path(args.corpus), args.ring)
    except OSError as error:
        print(f"emu fuzz: {error}", file=sys.stderr)
        return 2
