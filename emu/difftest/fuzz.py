"""Differential fuzzing: random instruction sequences on both backends, from the same state.

In the manner of EmuFuzzer and KEmuFuzzer: generate short sequences of valid x86-64
instructions (encoded here from a table of forms, and checked with capstone), run each one at
CPL0 in long mode on tcg and on kvm from one random register state, and compare the final CPU
states. A sequence that ends differently is replayed one instruction at a time with the
declared differences (emu.difftest.declared) applied, so an undefined flag that later reaches a
register is not reported as a bug; what remains is reduced to the shortest sub-sequence that
still differs (delta debugging, by dropping one instruction at a time) and saved in the corpus
directory as JSON with its bytes and disassembly, and as a multiboot image (reproducer.py) that
`python -m emu diff` runs.

    python -m emu fuzz [--count N] [--seed S] [--length L] [--workers W] [--corpus DIR]

A campaign remembers how far it got in DIR/campaign.json and resumes from there.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..accel import CpuState, HaltExit, MemoryRegion
from ..memory import GuestMemory
from . import reproducer
from .declared import explain
from .environment import IDT, STUBS, gate64, long_mode_state

CODE = 0x100000
REGS = ["rax", "rcx", "rdx", "rbx", None, None, "rsi", "rdi", "r8", "r9", "r10", "r11"]  # no rsp, rbp
USABLE = [i for i, name in enumerate(REGS) if name]
HLT = b"\xf4"


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


def _group(opcode: bytes, ext: int, imm: int = 0):
    def encode(rng: random.Random) -> bytes:
        rm = rng.choice(USABLE)
        tail = b""
        if imm == 1:
            tail = bytes([rng.randrange(256) if rng.random() < 0.3 else rng.randrange(66)])
        elif imm == 4:
            tail = rng.choice([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, rng.getrandbits(32)]).to_bytes(4, "little")
        return bytes([_rex(1, 0, rm)]) + opcode + bytes([_modrm(ext, rm)]) + tail

    return encode


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


SHIFTS = {"rol": 0, "ror": 1, "rcl": 2, "rcr": 3, "shl": 4, "shr": 5, "sar": 7}
TABLE: list[tuple[str, str, object]] = [
    *[("alu", name, _rr(bytes([op]))) for name, op in
      (("add", 0x01), ("or", 0x09), ("adc", 0x11), ("sbb", 0x19), ("and", 0x21), ("sub", 0x29), ("xor", 0x31),
       ("cmp", 0x39), ("test", 0x85), ("mov", 0x89), ("xchg", 0x87))],
    *[("alu-imm", name, _group(b"\x81", ext, 4)) for name, ext in
      (("add", 0), ("or", 1), ("adc", 2), ("sbb", 3), ("and", 4), ("sub", 5), ("xor", 6), ("cmp", 7))],
    *[("unary", name, _group(b"\xf7", ext)) for name, ext in (("not", 2), ("neg", 3), ("mul", 4), ("imul", 5))],
    *[("unary", name, _group(b"\xff", ext)) for name, ext in (("inc", 0), ("dec", 1))],
    *[("shift-imm", name, _group(b"\xc1", ext, 1)) for name, ext in SHIFTS.items()],
    *[("shift-cl", name, _group(b"\xd3", ext)) for name, ext in SHIFTS.items()],
    ("mul", "imul2", _rr(b"\x0f\xaf")),
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
]


@dataclass
class Instruction:
    klass: str
    code: bytes
    text: str
    mnemonic: str


def generate(rng: random.Random, length: int) -> list[Instruction]:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    out = []
    while len(out) < length:
        klass, _name, encode = rng.choice(TABLE)
        code = encode(rng)  # type: ignore[operator]
        decoded = list(cs.disasm_lite(code, 0))
        if len(decoded) != 1 or decoded[0][1] != len(code):  # the table must give one valid instruction
            raise AssertionError(f"bad encoding {code.hex()} for {_name}")
        out.append(Instruction(klass, code, f"{decoded[0][2]} {decoded[0][3]}".strip(), decoded[0][2]))
    return out


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
        self.base = long_mode_state(self.memory, rip=CODE, rsp=0x80000)
        for vector in range(32):  # each exception lands on its own hlt, so the vector shows in RIP
            self.memory.write(STUBS + vector, HLT)
            self.memory.write(IDT + 16 * vector, gate64(STUBS + vector))

    def run(self, code: bytes, state: CpuState) -> CpuState:
        """Run `code` from `state` to the hlt after it (or an exception's stub): the final state."""
        self.memory.write(CODE, code + HLT)
        self.vcpu.set_state(state)
        event = self.vcpu.run()
        if not isinstance(event, HaltExit):
            raise RuntimeError(f"{self.accel.name}: the sequence did not end in hlt: {event}")  # noqa: TRY004
        return self.vcpu.get_state(msrs=False)

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


COMPARED = ["rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11", "rsp", "rip", "rflags"]


def differences(a: CpuState, b: CpuState) -> dict[str, tuple[int, int]]:
    return {n: (getattr(a, n), getattr(b, n)) for n in COMPARED if getattr(a, n) != getattr(b, n)}


@dataclass
class Worker:
    tcg: Backend = field(default_factory=lambda: Backend("tcg"))
    kvm: Backend = field(default_factory=lambda: Backend("kvm"))

    def initial_state(self, rng: random.Random) -> CpuState:
        state = CpuState(**{k: getattr(self.tcg.base, k) for k in CpuState.__dataclass_fields__})
        for index in USABLE:
            setattr(state, REGS[index], rng.choice([0, 1, 2**64 - 1, 1 << 63, 0x80, rng.getrandbits(64)]))
        state.rflags = 0x2 | (rng.getrandbits(12) & 0x8D5)  # CF PF AF ZF SF OF
        return state

    def verdict(self, sequence: list[Instruction], state: CpuState) -> dict | None:
        """None if both backends agree (up to declared differences), else the real difference."""
        code = b"".join(i.code for i in sequence)
        a = self.tcg.run(code, state)
        b = self.kvm.run(code, state)
        if not differences(a, b):
            return None
        return self.stepwise(sequence, state)

    def stepwise(self, sequence: list[Instruction], state: CpuState) -> dict | None:
        """Instruction by instruction, declared differences copied over; the first real one."""
        current = state
        for index, instruction in enumerate(sequence):
            a = self.tcg.run(instruction.code, current)
            b = self.kvm.run(instruction.code, current)
            real = {n: v for n, v in differences(a, b).items() if not explain(instruction.mnemonic, n, *v)}
            if real:
                return {"index": index, "instruction": instruction.text, "bytes": instruction.code.hex(),
                        "fields": {n: [hex(x), hex(y)] for n, (x, y) in real.items()}}  # fmt: skip
            current = a
            current.rip = CODE
        return None

    def reduce(self, sequence: list[Instruction], state: CpuState) -> list[Instruction]:
        """Drop instructions one at a time while the sequence still differs."""
        changed = True
        while changed and len(sequence) > 1:
            changed = False
            for i in range(len(sequence)):
                shorter = sequence[:i] + sequence[i + 1 :]
                if self.verdict(shorter, state) is not None:
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


def run_one(args: tuple[int, int, int]) -> dict:
    """Sequence number `n` of campaign `seed`: its classes and, if any, the reduced finding."""
    seed, n, length = args
    assert _WORKER is not None
    rng = random.Random(f"{seed}:{n}")
    sequence = generate(rng, length)
    state = _WORKER.initial_state(rng)
    result = {"n": n, "classes": sorted({i.klass for i in sequence})}
    found = _WORKER.verdict(sequence, state)
    if found is not None:
        reduced = _WORKER.reduce(sequence, state)
        found = _WORKER.verdict(reduced, state) or found
        result["finding"] = {**found, "sequence": [i.text for i in reduced],
                             "code": b"".join(i.code for i in reduced).hex(),
                             "state": {r: hex(getattr(state, r)) for r in COMPARED}}  # fmt: skip
    return result


def campaign(count: int, seed: int, length: int, workers: int, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    progress_file = corpus / "campaign.json"
    done = 0
    if progress_file.exists():
        saved = json.loads(progress_file.read_text())
        if saved.get("seed") == seed and saved.get("length") == length:
            done = saved.get("done", 0)
    by_class: collections.Counter = collections.Counter()
    findings = 0
    start = time.monotonic()
    jobs = [(seed, n, length) for n in range(done, count)]
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
        for i, result in enumerate(pool.imap_unordered(run_one, jobs, chunksize=16), start=1):
            by_class.update(result["classes"])
            if "finding" in result:
                findings += 1
                name = corpus / f"finding-{seed}-{result['n']}"
                name.with_suffix(".json").write_text(json.dumps(result["finding"], indent=2))
                finding = result["finding"]
                state = {r: int(v, 16) for r, v in finding["state"].items()}
                reproducer.build(bytes.fromhex(finding["code"]), state, name.with_suffix(".elf"))
            if i % 500 == 0 or i == len(jobs):
                rate = i / max(time.monotonic() - start, 1e-9)
                print(f"\rfuzz: {done + i}/{count} sequences, {findings} findings, {rate:.0f}/s", end="",
                      file=sys.stderr, flush=True)  # fmt: skip
                progress_file.write_text(json.dumps({"seed": seed, "length": length, "done": done + i}))
    elapsed = time.monotonic() - start
    print(file=sys.stderr)
    print(f"{count - done} sequences of {length} instructions in {elapsed:.1f} s "
          f"({(count - done) / max(elapsed, 1e-9):.0f}/s on {workers} workers); {findings} findings in {corpus}")  # fmt: skip
    print(f"{'class':<12}{'sequences':>10}")
    for klass, n in sorted(by_class.items()):
        print(f"{klass:<12}{n:>10}")
    return 1 if findings else 0


def fuzz_main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="emu fuzz", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--length", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--corpus", default="fuzz-corpus")
    args = p.parse_args(argv)
    try:
        return campaign(args.count, args.seed, args.length, args.workers, Path(args.corpus))
    except OSError as error:
        print(f"emu fuzz: {error}", file=sys.stderr)
        return 2
