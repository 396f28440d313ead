"""Lockstep comparison of the two backends, to the first difference (differential testing).

The same image boots on tcg (the leader) and on kvm (the follower), and both execute one
instruction at a time (VCpu.step). After each step the full CpuState of both is compared. To
keep the two machines on the same path, the follower does not run its own devices: every port
and MMIO read it makes is answered with the value the leader's devices gave for the same access
in the same step (a mismatch in the access itself is a difference), and every interrupt the
leader's PIC injected before an instruction is injected into the follower before the same one.
So timers, the UART and the RTC cannot make the runs drift apart.

Differences the manuals allow (emu.difftest.declared) are reported by name, copied from the
leader to the follower so that the runs continue from one state, and do not stop the run.

Where the host cannot stop after every instruction, the comparison happens at the finest
boundary it allows, and the report says so: KVM's instruction emulator may run a whole batch of
`rep` iterations in one step, a `mov ss`/`sti` shadow joins two instructions, and this
project's kvm_pvm hosts single-step CPL0 code only (ring 3 runs natively until the next exit).
Then the leader steps on until it reaches the follower's state (at most `catch_up` steps).
"""

from __future__ import annotations

import collections
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..accel import RFLAGS_TF, CpuState
from ..errors import EmuError, GuestError
from .declared import (
    IRET_KEEPS_DATA_SEGMENTS,
    DeclaredDifference,
    explain,
    explain_memory,
    host_has_quirks,
    host_quirk,  # fmt: skip
    keep_data_segments,
    shift_count,
)
from .symbols import Symbols
from .trace import TraceRecord, fetch_instruction, linear_rip, state_changes

HISTORY = 8
DB, DR6_BS = 1, 1 << 14  # the debug exception; DR6's single-step bit (SDM vol. 3B §18.2.3)
_FIELDS = [name for name in CpuState.__dataclass_fields__ if name != "msrs"]


@dataclass
class Access:
    kind: str  # "in", "out", "mmio-read", "mmio-write"
    address: int
    size: int
    value: int


class RecordingIo:
    """The leader's buses, with every access of the current step written down."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.log: list[Access] = []

    def port_read(self, port: int, size: int) -> int:
        value = self.inner.port_read(port, size)
        self.log.append(Access("in", port, size, value))
        return value

    def port_write(self, port: int, size: int, value: int) -> None:
        self.log.append(Access("out", port, size, value))
        self.inner.port_write(port, size, value)

    def mmio_read(self, address: int, size: int) -> int:
        value = self.inner.mmio_read(address, size)
        self.log.append(Access("mmio-read", address, size, value))
        return value

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.log.append(Access("mmio-write", address, size, value))
        self.inner.mmio_write(address, size, value)


class ReplayIo:
    """The follower's buses: the leader's accesses of the same step, replayed in order. When the
    follower runs past the end of the step (its host did not stop after the instruction), the
    leader is stepped on to produce the accesses that follow (`advance`)."""

    def __init__(self) -> None:
        self.expected: collections.deque[Access] = collections.deque()
        self.mismatch: str | None = None
        self.advance = None  # () -> list[Access]: one more leader step's accesses
        self.advanced = 0

    def _next(self, kind: str, address: int, size: int, value: int | None = None) -> int:
        tries = 0
        while not self.expected and self.advance is not None and tries < 64:
            self.expected.extend(self.advance())
            self.advanced += 1
            tries += 1
        want = self.expected.popleft() if self.expected else None
        if want is None or (want.kind, want.address, want.size) != (kind, address, size) or (
            value is not None and want.value != value
        ):
            got = f"{kind} {address:#x}/{size}" + (f"={value:#x}" if value is not None else "")
            lead = "nothing" if want is None else f"{want.kind} {want.address:#x}/{want.size}={want.value:#x}"
            self.mismatch = self.mismatch or f"kvm made {got} where tcg made {lead}"
            return want.value if want is not None else 0xFFFFFFFF
        return want.value

    def port_read(self, port: int, size: int) -> int:
        return self._next("in", port, size)

    def port_write(self, port: int, size: int, value: int) -> None:
        self._next("out", port, size, value)

    def mmio_read(self, address: int, size: int) -> int:
        return self._next("mmio-read", address, size)

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self._next("mmio-write", address, size, value)


class MemoryCheck:
    """The two machines' guest RAM, compared where the backends can say what was written.

    KVM can: with KVM_MEM_LOG_DIRTY_PAGES on the follower's RAM slots, KVM_GET_DIRTY_LOG
    (api.rst §4.8) after each step names the pages that step wrote, and those pages are compared
    at once. tcg cannot cheaply (Unicorn would have to call out on every store), so a write only
    the leader made is found by a comparison of all RAM every FULL_EVERY steps and at the end,
    and reported with the stretch of instructions it happened in."""

    FULL_EVERY = 50_000
    CHUNK = 1 << 20

    def __init__(self, leader, follower) -> None:  # two Machines
        self.leader, self.follower = leader.memory, follower.memory
        follower.accel.enable_dirty_log()
        self.accel = follower.accel
        self.slots = [slot for slot in follower.accel.slots if not slot.region.readonly]
        self.pages_compared = 0
        self.full_checks = 0

    def written(self) -> list[int]:
        """The bytes (guest-physical addresses) that differ in the pages KVM logged as written
        since the last call."""
        found: list[int] = []
        for slot in self.slots:
            bits = self.accel.get_dirty_log(slot)
            while bits:
                low = bits & -bits
                bits ^= low
                self.pages_compared += 1
                found += self._compare(slot.region.guest_address + (low.bit_length() - 1) * 4096, 4096)
        return found

    def everything(self) -> list[int]:
        self.full_checks += 1
        found: list[int] = []
        for r in self.leader.ranges:
            for offset in range(0, r.size, self.CHUNK):
                found += self._compare(r.guest_address + offset, min(self.CHUNK, r.size - offset))
        return found

    def _compare(self, address: int, length: int) -> list[int]:
        ours, theirs = self.leader.read(address, length), self.follower.read(address, length)
        if ours == theirs:
            return []
        return [address + i for i in range(length) if ours[i] != theirs[i]][:4096]

    def bytes_at(self, address: int) -> tuple[bytes, bytes]:
        start = address & ~7
        return self.leader.read(start, 16), self.follower.read(start, 16)


@dataclass
class Planted:
    """A test-only fault: after instruction `index`, XOR `mask` into the follower's `register`,
    or with register "memory", into the byte of follower RAM at guest-physical `address`."""

    index: int
    register: str
    mask: int
    address: int = 0


@dataclass
class Report:
    steps: int = 0
    compared: int = 0
    declared: collections.Counter = field(default_factory=collections.Counter)
    coarse: collections.Counter = field(default_factory=collections.Counter)  # why boundaries were joined
    difference: dict[str, tuple[object, object]] | None = None
    difference_at: TraceRecord | None = None
    difference_note: str = ""
    history: list[TraceRecord] = field(default_factory=list)
    end: str = ""
    symbol: str = ""
    interrupts: list[tuple[int, int]] = field(default_factory=list)  # (instruction index, vector) injected
    memory_pages: int = 0  # pages compared after the steps KVM logged writing them
    memory_full: int = 0  # comparisons of all RAM

    @property
    def agreed(self) -> bool:
        return self.difference is None


@dataclass
class _Step:
    """One compared step, turned into a TraceRecord (decoded, its changes listed) only when a
    report or a declared-difference check needs it: most steps never are."""

    index: int
    before: CpuState
    after: CpuState
    interrupt: int | None
    halted: bool
    memory: object
    _record: TraceRecord | None = None

    def record(self) -> TraceRecord:
        if self._record is None:
            code, mnemonic, operands = fetch_instruction(self.memory, self.before)  # type: ignore[arg-type]
            b = self.before
            self._record = TraceRecord(self.index, b.cs.selector, b.rip, linear_rip(b), code, mnemonic, operands,
                                       state_changes(b, self.after), self.interrupt, self.halted)  # fmt: skip
        return self._record


class Lockstep:
    def __init__(self, image: Path, memory_mib: int = 128, terminal_input: bytes = b"", catch_up: int = 100_000,
                 plant: Planted | None = None, deterministic: bool = False, icount_shift: int = 3) -> None:  # fmt: skip
        """`deterministic`: the leader's clock counts its instructions (as `qemu -icount`), so the
        timer and RTC interrupts, which the follower gets from the leader, come at the same
        instruction on every run of the comparison, not only on both backends of one run."""
        from ..machine import Machine, MachineConfig

        self.image = image
        self.catch_up = catch_up
        self.plant = plant
        self.leader = Machine(MachineConfig(kernel=image, accel="tcg", memory_mib=memory_mib,
                                            deterministic=deterministic, icount_shift=icount_shift))  # fmt: skip
        try:
            self.follower = Machine(MachineConfig(kernel=image, accel="kvm", memory_mib=memory_mib))
        except EmuError:
            self.leader.close()
            raise
        self.recording = RecordingIo(self.leader.vcpu.io)
        self.leader.vcpu.io = self.recording
        self.replay = ReplayIo()
        self.replay.advance = self._advance_leader
        self.follower.vcpu.io = self.replay
        self.leader.start_stepping(terminal_input)
        self.follower.start_stepping(terminal_input)
        self.symbols = Symbols.load(image)
        self.host_quirks = host_has_quirks()
        self.memory = MemoryCheck(self.leader, self.follower)
        self._last_full = 0
        self._memory_note = ""

    def close(self) -> None:
        self.leader.close()
        self.follower.close()

    def _advance_leader(self) -> list[Access]:
        """The follower needs the next step's device answers: the leader takes that step."""
        self.recording.log = []
        self.leader.step(interrupts=False)  # the follower got no interrupt here: nor does the leader
        return list(self.recording.log)

    def run(self, limit: int | None = None) -> Report:
        report = Report()
        history: collections.deque[_Step] = collections.deque(maxlen=HISTORY)
        before = self.leader.vcpu.get_state(msrs=False)
        while limit is None or report.steps < limit:
            self.recording.log = []
            exceptions = sum(self.leader.vcpu.delivered.values())
            single_steps = self.leader.vcpu.delivered.get(DB, 0)
            lead = self.leader.step()
            if lead.finished and not lead.executed:
                report.end = f"the guest ended (exit status {self.leader.exit_status})"
                break
            self.replay.expected = collections.deque(self.recording.log)
            self.replay.mismatch = None
            self.replay.advanced = 0
            follow = self.follower.step(inject=lead.interrupt, interrupts=False)  # its PIC is not the guest's
            if self.leader.exit_status is not None:  # isa-debug-exit (perhaps in a step the follower pulled)
                report.end = f"the guest ended (exit status {self.leader.exit_status})"
                report.steps += 1
                report.compared += 1
                break
            a, b = self.leader.vcpu.get_state(msrs=False), self.follower.vcpu.get_state(msrs=False)
            if self.replay.advanced:
                report.coarse["kvm ran on after an IO exit (the leader followed it)"] += 1
            step = _Step(report.steps, before, a, lead.interrupt, lead.halted, self.leader.memory)
            if lead.interrupt is not None:
                report.interrupts.append((step.index, lead.interrupt))
            history.append(step)
            report.steps += 1
            if self.plant is not None and step.index == self.plant.index:
                b = self._corrupt(b)
            if before.rflags & RFLAGS_TF and self.leader.vcpu.delivered.get(DB, 0) > single_steps:
                # The guest's own TF trapped after this instruction on tcg. On kvm the host's
                # single-step owns TF and took that #DB for itself (api.rst §4.38): give it to
                # the guest, which then runs to the first instruction of its handler.
                self.follower.vcpu.raise_exception(DB, dr6_bits=DR6_BS)
                self.follower.step()
                b = self.follower.vcpu.get_state(msrs=False)
                # KVM pushed the RFLAGS image without the TF it hides: the frame gets tcg's image.
                image = self.follower.vcpu.translate(a.rsp + 16)
                if image is not None and self.follower.memory.read(image, 8) != self.leader.memory.read(image, 8):
                    self.follower.memory.write(image, self.leader.memory.read(image, 8))
                    report.declared["singlestep-hides-tf"] += 1
                report.coarse["kvm took the guest's TF #DB for its own single-step; given to the guest"] += 1
            fields = _differences(a, b)
            if fields and self.replay.mismatch is None:
                record = step.record()
                if a.cpl == 3 and b.cpl != 3:
                    a, fields, note = self._follow_ring3(before, a, b, report)
                    step.after = a
                    if note:
                        return self._stop(report, step, fields, history, note)
                else:
                    if a.rip != b.rip and sum(self.leader.vcpu.delivered.values()) > exceptions + (lead.interrupt is not None):
                        b, fields = self._follower_fetch_fault(a, b, fields, report)
                    a, fields = self._catch_up(a, b, fields, record, report)
                    step.after = a
            if self.replay.mismatch is not None:
                return self._stop(report, step, {}, history, self.replay.mismatch)
            real = {}
            if fields:
                mnemonic = step.record().mnemonic
                count = shift_count(mnemonic, step.record().operands, before)
                for name, (ours, theirs) in fields.items():
                    declared = explain(mnemonic, name, ours, theirs, count) or _rep_resume(mnemonic, name, ours, theirs)
                    if declared is None:
                        real[name] = (ours, theirs)
                    else:
                        report.declared[declared.name] += 1
            if real:
                return self._stop(report, step, real, history, "")
            if fields:  # declared only: the follower continues from the leader's state
                self.follower.vcpu.set_state(a)
            written = self.memory.written()
            note = "a difference in memory the step wrote (pages logged by KVM)"
            if not written and report.steps % MemoryCheck.FULL_EVERY == 0:
                written, note = self._everything(report)
            if written and (real := self._memory_differences(written, a, report)):
                return self._stop(report, step, real, history, note)
            report.compared += 1
            if lead.finished or follow.finished:
                report.end = f"the guest ended (exit status {self.leader.exit_status})"
                break
            if lead.halted:
                self.leader.wait_for_interrupt()
            before = a
        else:
            report.end = f"stopped after {limit} instructions (--max)"
        report.history = [step.record() for step in history]
        written, note = self._everything(report)
        if written and history and (real := self._memory_differences(written, history[-1].after, report)):
            return self._stop(report, history[-1], real, history, note)
        report.memory_pages, report.memory_full = self.memory.pages_compared, self.memory.full_checks
        return report

    def _everything(self, report: Report) -> tuple[list[int], str]:
        """All of RAM compared (the writes only tcg made); the note names the stretch."""
        found = self.memory.everything()
        note = (f"a difference in memory that KVM did not log as written (so a write tcg made alone) between "
                f"instruction {self._last_full} and {report.steps}")  # fmt: skip
        self._last_full = report.steps
        return found, note

    def _memory_differences(self, addresses: list[int], state: CpuState, report: Report) -> dict:
        """The differing bytes that no declared difference explains, as report fields (the
        first one, 16 bytes around it). Declared ones (the GDT's Accessed bits, which KVM stores
        and tcg does not) are copied to the leader, as the CPU would have stored them."""
        gdt = self.follower.vcpu.translate(state.gdt.base) if state.gdt.limit else None
        gdt_entries = frozenset(paging_entries(self.leader.memory, state, state.gdt.base)) if gdt is not None else frozenset()
        tables = paging_structure_pages(self.leader.memory, state)
        for address in addresses:
            ours, theirs = self.leader.memory.read(address, 1)[0], self.follower.memory.read(address, 1)[0]
            declared = explain_memory(address, ours, theirs, gdt, state.gdt.limit, gdt_entries, tables)
            if declared is None:
                return {f"memory {address:#x}": tuple(b.hex(" ") for b in self.memory.bytes_at(address))}
            report.declared[declared.name] += 1
            self.leader.memory.write(address, bytes([theirs]))
        return {}

    # ------------------------------------------------------------------------------------------
    def _catch_up(self, a: CpuState, b: CpuState, fields: dict, record: TraceRecord, report: Report):
        """The follower may have run further than one instruction (see the module doc): step the
        leader on, with the same IO log, until the states meet or the budget is spent."""
        if a.rip == b.rip and not mnemonic_is_rep(record.mnemonic):
            return a, fields
        state = a
        extra = 0
        if mnemonic_is_rep(record.mnemonic) and a.rip == b.rip and a.rcx > b.rcx:
            # kvm ran a batch of iterations: the leader runs as many at once (one per count)
            lead = self.leader.step(interrupts=False, count=a.rcx - b.rcx)
            extra += a.rcx - b.rcx
            state = self.leader.vcpu.get_state(msrs=False)
            remaining = _differences(state, b)
            if not remaining or _all_declared(remaining, record.mnemonic):
                report.coarse[_coarse_reason(record, b, extra)] += 1
                return state, remaining
        for extra in range(extra + 1, extra + self.catch_up + 1):
            lead = self.leader.step(interrupts=False)
            if not lead.executed and not lead.halted:
                continue
            state = self.leader.vcpu.get_state(msrs=False)
            if state.rip == b.rip:
                remaining = _differences(state, b)
                if not remaining or _all_declared(remaining, record.mnemonic):
                    report.coarse[_coarse_reason(record, b, extra)] += 1
                    return state, remaining
            if lead.finished or lead.halted:
                break
        return a, fields

    def _follower_fetch_fault(self, a: CpuState, b: CpuState, fields: dict, report: Report) -> tuple[CpuState, dict]:
        """The leader's step ended with an exception delivered, the follower's did not: a fault
        on fetching the next instruction (a jump to a not-present or NX page) belongs to that
        next instruction on KVM and to this step on tcg. One more follower step delivers it."""
        self.replay.expected.clear()
        self.follower.step()
        moved = self.follower.vcpu.get_state(msrs=False)
        if moved.rip == b.rip:
            self.follower.vcpu.set_state(b)
            return b, fields
        report.coarse["kvm delivered a fault on the next fetch one step later"] += 1
        return moved, _differences(a, moved)

    def _follow_ring3(self, before: CpuState, a: CpuState, b: CpuState, report: Report) -> tuple[CpuState, dict, str]:
        """The follower entered ring 3 and ran it unstepped (kvm_pvm) to the next return to CPL0.
        The leader runs the same stretch one instruction at a time, giving the declared host
        quirks the outcome kvm_pvm gives them, and the states are compared where the follower
        stopped: a few CPL0 instructions after the return."""
        quirks: collections.Counter = collections.Counter()
        if self.host_quirks and (kept := keep_data_segments(before, a)) is not a:
            self.leader.vcpu.set_state(kept)
            a = kept
            quirks[IRET_KEEPS_DATA_SEGMENTS.name] += 1
        state, count = a, 0
        while state.cpl == 3 and count < self.catch_up:
            _, mnemonic, operands = fetch_instruction(self.leader.memory, state)
            quirk = host_quirk(mnemonic, operands, state) if self.host_quirks else None
            if quirk is not None:
                quirk.apply(self.leader.vcpu, state, operands)
                quirks[quirk.name] += 1
            else:
                self.leader.step(interrupts=False)
            count += 1
            state = self.leader.vcpu.get_state(msrs=False)
        applied = ", ".join(f"{name} x{n}" for name, n in sorted(quirks.items()))
        note = (f"kvm ran ring 3 without stopping (this host's KVM single-steps CPL0 code only); tcg stepped "
                f"{count} ring-3 instructions{' with the host quirks ' + applied if applied else ''} and did not "
                "reach kvm's state where it returned to CPL0: the first difference lies in that stretch")  # fmt: skip
        if state.cpl == 3:
            return state, _differences(state, b), note
        for extra in range(1, 17):  # the follower's step ends a few CPL0 instructions after the return
            remaining = _differences(state, b)
            if not remaining or _all_declared(remaining, ""):
                report.declared.update(quirks)
                report.coarse["kvm ran CPL3 code without stopping (kvm_pvm single-steps CPL0 only)"] += 1
                return state, remaining, ""
            if state.rip == b.rip:
                break
            lead = self.leader.step(interrupts=False)
            if lead.finished:
                break
            state = self.leader.vcpu.get_state(msrs=False)
        return state, _differences(state, b), note

    def _corrupt(self, state: CpuState) -> CpuState:
        plant = self.plant
        assert plant is not None
        if plant.register == "memory":
            memory = self.follower.memory
            memory.write(plant.address, bytes([memory.read(plant.address, 1)[0] ^ plant.mask]))
            return state
        setattr(state, plant.register, getattr(state, plant.register) ^ plant.mask)
        self.follower.vcpu.set_state(state)
        return self.follower.vcpu.get_state(msrs=False)

    def _stop(self, report: Report, step: _Step, real: dict, history, note: str) -> Report:
        record = step.record()
        report.difference = real
        report.difference_at = record
        report.difference_note = note
        report.history = [s.record() for s in history]
        report.symbol = self.symbols.describe(record.linear)
        report.memory_pages, report.memory_full = self.memory.pages_compared, self.memory.full_checks
        return report


def paging_entries(memory, state: CpuState, linear: int) -> list[int]:  # GuestMemory
    """Guest-physical addresses of the 4-level paging entries that map `linear` (long mode
    only), read without touching their Accessed/Dirty flags."""
    if state.mode != "long":
        return []
    entries, table = [], state.cr3 & 0xFFFFFFFFFF000
    for shift in (39, 30, 21, 12):
        address = table + ((linear >> shift) & 0x1FF) * 8
        if not memory.contains(address, 8):
            break
        entries.append(address)
        entry = memory.read_u64(address)
        if not entry & 1 or (shift in (30, 21) and entry & 0x80):
            break
        table = entry & 0xFFFFFFFFFF000
    return entries


def paging_structure_pages(memory, state: CpuState) -> frozenset[int]:  # GuestMemory
    """The guest-physical pages of the 4-level paging structures CR3 leads to (long mode only)."""
    if state.mode != "long":
        return frozenset()
    pages: set[int] = set()
    tables = [(state.cr3 & 0xFFFFFFFFFF000, 4)]
    while tables:
        table, level = tables.pop()
        if table in pages or not memory.contains(table, 4096):
            continue
        pages.add(table)
        if level > 1:
            for (entry,) in struct.iter_unpack("<Q", memory.read(table, 4096)):
                if entry & 1 and not (level in (2, 3) and entry & 0x80):  # present, not a large page
                    tables.append((entry & 0xFFFFFFFFFF000, level - 1))
    return frozenset(pages)


def mnemonic_is_rep(mnemonic: str) -> bool:
    return mnemonic.startswith("rep")


def _differences(a: CpuState, b: CpuState) -> dict[str, tuple[object, object]]:
    da, db = a.__dict__, b.__dict__
    if da == db:  # the common case, compared in C (both read with msrs=False: {} == {})
        return {}
    return {name: (da[name], db[name]) for name in _FIELDS if da[name] != db[name]}


def _all_declared(fields: dict, mnemonic: str) -> bool:
    return all(explain(mnemonic, n, x, y) or _rep_resume(mnemonic, n, x, y) for n, (x, y) in fields.items())


_REP_RESUME = DeclaredDifference(
    "rep-resume-flag", frozenset(), frozenset({"rflags"}), 1 << 16,
    "KVM's emulator leaves RFLAGS.RF set between batches of a rep string instruction it executes in "
    "pieces (SDM vol. 3A §18.3.1.1: RF lets an interrupted instruction resume without a debug fault)",
)  # fmt: skip


def _rep_resume(mnemonic: str, name: str, ours: object, theirs: object) -> DeclaredDifference | None:
    if not mnemonic_is_rep(mnemonic) or name != "rflags":
        return None
    return _REP_RESUME if isinstance(ours, int) and isinstance(theirs, int) and not (ours ^ theirs) & ~(1 << 16) else None


def _coarse_reason(record: TraceRecord, follower: CpuState, extra: int) -> str:
    if mnemonic_is_rep(record.mnemonic):
        return "kvm ran several rep iterations in one step"
    if follower.cpl == 3:
        return "kvm ran CPL3 code without stopping (kvm_pvm single-steps CPL0 only)"
    return f"kvm stopped {extra + 1} instructions later"


def format_report(report: Report, leader_status: int | None) -> str:
    lines = []
    if report.declared:
        lines.append("declared differences (allowed by the manuals, see emu/difftest/declared.py): "
                     + ", ".join(f"{name} x{n}" for name, n in sorted(report.declared.items())))  # fmt: skip
    if report.coarse:
        lines.append("coarser boundaries: " + ", ".join(f"{why} x{n}" for why, n in sorted(report.coarse.items())))
    lines.append(f"memory: {report.memory_pages} pages compared after the steps that wrote them (KVM's dirty log), "
                 f"all of RAM {report.memory_full} times (for writes only tcg made)")  # fmt: skip
    if report.agreed:
        lines.insert(0, f"agreement: {report.compared} instructions compared in lockstep; {report.end}")
        return "\n".join(lines)
    record = report.difference_at
    assert record is not None
    lines.insert(0, f"DIFFERENCE at instruction {record.index}, {record.cs:04x}:{record.rip:#x} "
                    f"(linear {record.linear:#x}){' <' + report.symbol + '>' if report.symbol else ''}: "
                    f"{record.text}")  # fmt: skip
    if report.difference_note:
        lines.append(f"  {report.difference_note}")
    for name, (tcg, kvm) in (report.difference or {}).items():
        lines.append(f"  {name:<8} tcg {_value(tcg):<24} kvm {_value(kvm)}")
        if name == "rflags" and isinstance(tcg, int) and isinstance(kvm, int):
            lines.append(f"  {'':<8} flags that differ: {_flag_names(tcg ^ kvm)}")
    lines.append("last instructions (tcg):")
    lines.extend("  " + r.format_text() for r in report.history)
    return "\n".join(lines)


def _value(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) else str(value)


_FLAG_NAMES = {0: "CF", 2: "PF", 4: "AF", 6: "ZF", 7: "SF", 8: "TF", 9: "IF", 10: "DF", 11: "OF", 16: "RF", 17: "VM",
               18: "AC", 21: "ID"}  # fmt: skip


def _flag_names(bits: int) -> str:
    return " ".join(name for bit, name in sorted(_FLAG_NAMES.items()) if bits >> bit & 1) or f"{bits:#x}"


__all__ = ["GuestError", "Lockstep", "Planted", "Report", "format_report"]
