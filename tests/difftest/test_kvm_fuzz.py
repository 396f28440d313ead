"""`python -m emu fuzz`: random instruction sequences on tcg and kvm from the same state."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from guestenv import requires_kvm

from emu.difftest import fuzz
from emu.difftest.environment import STUBS

pytestmark = [requires_kvm, pytest.mark.kvm]
GP = 13


@pytest.fixture(scope="module")
def worker():
    w = fuzz.Worker()
    yield w
    w.close()


def _first(predicate, ring: int, worker: fuzz.Worker, length: int = 8):
    """The first sequence (seeds 0, 1, ...) at `ring` that `predicate` accepts, with its start."""
    for n in range(2000):
        rng = random.Random(n)
        sequence = fuzz.generate(rng, length)
        start = worker.start(rng, ring)
        if predicate(sequence):
            return sequence, start
    raise AssertionError("no such sequence in 2000")


def test_the_table_gives_valid_instructions_of_every_class() -> None:
    rng = random.Random(7)
    sequence = fuzz.generate(rng, 800)  # generate() checks each encoding with capstone
    assert {i.klass for i in sequence} == {k for k, _, _ in fuzz.TABLE}
    assert {"alu-mem", "shift-mem", "atomic-mem", "bits-mem", "unary-mem", "move-mem"} <= {i.klass for i in sequence}
    for i in sequence:
        if i.klass.endswith("-mem"):  # [rbp + disp8], the access inside the data page
            assert "[rbp + " in i.text or "[rbp]" in i.text, i.text
        else:
            assert "ptr" not in i.text and "rbp" not in i.text and "rsp" not in i.text, i.text
    assert {i.text.split()[0] for i in sequence if i.klass == "atomic-mem"} >= {"lock", "xadd", "cmpxchg", "xchg"}


def test_a_difference_is_found_and_reduced_to_its_instruction(worker: fuzz.Worker, monkeypatch) -> None:
    """A planted bug (kvm's result has rbx flipped after any bswap) is reported at the bswap,
    and the sequence is reduced to it alone."""
    real_run = worker.kvm.run

    def buggy(code: bytes, start: fuzz.Start) -> fuzz.Outcome:
        result = real_run(code, start)
        if any(code[k] == 0x0F and 0xC8 <= code[k + 1] <= 0xCF for k in range(len(code) - 1)):
            result.state.rbx ^= 1
        return result

    monkeypatch.setattr(worker.kvm, "run", buggy)
    sequence, start = _first(lambda s: any(i.mnemonic == "bswap" for i in s), 0, worker)
    found = worker.verdict(sequence, start)
    assert found is not None and found["instruction"].startswith("bswap") and set(found["fields"]) == {"rbx"}
    assert found["memory"] == []
    reduced = worker.reduce(sequence, start)
    assert [i.mnemonic for i in reduced] == ["bswap"]


def test_a_memory_difference_is_found_reduced_and_reported_at_its_offset(worker: fuzz.Worker, monkeypatch) -> None:
    """A planted bug: after a `lock xadd` to memory, kvm's data page has the low byte of the
    operand flipped. The campaign's path (run_one) reports it at the xadd, with the offset and
    both bytes, reduced to the xadd alone, and registers agreeing."""
    real_run = worker.kvm.run
    lock_xadd = b"\xf0\x48\x0f\xc1"

    def buggy(code: bytes, start: fuzz.Start) -> fuzz.Outcome:
        result = real_run(code, start)
        if (k := code.find(lock_xadd)) >= 0:
            offset = code[k + 5]  # the disp8 after the ModRM byte
            data = bytearray(result.data)
            data[offset] ^= 0x40
            result = replace(result, data=bytes(data))
        return result

    monkeypatch.setattr(worker.kvm, "run", buggy)
    monkeypatch.setattr(fuzz, "_WORKER", worker)
    for n in range(2000):
        sequence, ring, _ = fuzz.draw(99, n, 8, "both")
        if any(lock_xadd in i.code for i in sequence):
            break
    result = fuzz.run_one((99, n, 8, "both"))
    finding = result["finding"]
    offset = next(i.code[5] for i in sequence if lock_xadd in i.code)
    assert finding["instruction"].startswith("lock xadd") and finding["fields"] == {}, finding
    assert len(finding["memory"]) == 1
    byte = finding["memory"][0]
    assert byte["offset"] == hex(offset) and byte["address"] == hex(fuzz.DATA + offset)
    assert int(byte["tcg"], 16) ^ int(byte["kvm"], 16) == 0x40
    assert finding["sequence"] == [finding["instruction"]] and finding["class"] == "atomic-mem"
    assert finding["ring"] == ring and len(bytes.fromhex(finding["data"])) == fuzz.DATA_SIZE
    assert finding["state"]["rbp"] == hex(fuzz.DATA)


def _stores(sequence: list[fuzz.Instruction]) -> bool:
    return sum(i.klass in ("alu-mem", "atomic-mem", "shift-mem", "bits-mem") for i in sequence) >= 3


def test_a_ring3_sequence_ends_in_the_gp_stub_with_the_user_state_in_the_frame(worker: fuzz.Worker) -> None:
    """At CPL3 the closing hlt raises #GP(0): both backends end at its stub, on the RSP0 stack,
    with a frame that holds the user state at the hlt, and the same data page, changed by the
    sequence's stores, and the same frame: RFLAGS with RF=1, as a fault pushes it (SDM vol. 3B
    §18.3.1.1; emu's delivery pushed RF=0 until the fuzzer found it, tests/difftest/findings)."""
    sequence, start = _first(_stores, 3, worker)
    code = b"".join(i.code for i in sequence)
    a, b = worker.tcg.run(code, start), worker.kvm.run(code, start)
    for outcome in (a, b):
        frame = dict(zip(fuzz.FRAME, outcome.frame, strict=True))
        assert outcome.state.rip == STUBS + GP + 1 and outcome.state.cpl == 0
        assert outcome.state.rsp == fuzz.RSP0 - fuzz.FRAME_SIZE
        user = {"error": 0, "rip": fuzz.CODE + len(code), "cs": 0x23, "rsp": fuzz.USER_STACK, "ss": 0x2B}
        assert frame == frame | user
    assert a.data == b.data != start.data
    assert fuzz.differences(a, b) == {} and a.frame[3] & 0x10000
    assert worker.verdict(sequence, start) is None


def test_ring3_steps_rebuild_the_user_state_from_the_frame(worker: fuzz.Worker) -> None:
    """Run one instruction at a time at CPL3, each from user_state_from_frame of the one before:
    the end is the same user state and data page as the whole sequence's run."""
    sequence, start = _first(_stores, 3, worker)
    whole = worker.tcg.run(b"".join(i.code for i in sequence), start)
    current = start
    for instruction in sequence:
        outcome = worker.tcg.run(instruction.code, current)
        assert outcome.frame[1] == fuzz.CODE + len(instruction.code)  # each ended in its hlt's #GP
        current = fuzz.next_start(outcome, current)
    assert current.ring == 3 and current.state.rip == fuzz.CODE
    rebuilt = fuzz.user_state_from_frame(whole, start)
    assert [getattr(current.state, r) for r in fuzz.COMPARED if r != "rip"] == [
        getattr(rebuilt, r) for r in fuzz.COMPARED if r != "rip"]  # fmt: skip
    assert current.data == whole.data
    assert worker.stepwise(sequence, start) is None


def test_a_ring3_difference_in_the_frame_is_found(worker: fuzz.Worker, monkeypatch) -> None:
    """A planted bug in what kvm's ring 3 leaves behind (the user RSP in the frame) is real:
    the frame is compared field by field, and only RF is declared there."""
    real_run = worker.kvm.run

    def buggy(code: bytes, start: fuzz.Start) -> fuzz.Outcome:
        result = real_run(code, start)
        if b"\x48\x99" in code:  # cqo
            result = replace(result, frame=(*result.frame[:4], result.frame[4] + 8, result.frame[5]))
        return result

    monkeypatch.setattr(worker.kvm, "run", buggy)
    sequence, start = _first(lambda s: any(i.code == b"\x48\x99" for i in s), 3, worker)
    found = worker.verdict(sequence, start)
    assert found is not None and found["instruction"] == "cqo" and set(found["fields"]) == {"frame.rsp"}


def test_a_campaign_runs_both_rings_and_resumes(tmp_path: Path) -> None:
    def campaign(count: int, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emu", "fuzz", "--count", str(count), "--workers", "2",
                               "--corpus", str(tmp_path), *extra], capture_output=True, text=True, timeout=300,
                              check=False)  # fmt: skip

    (tmp_path / "campaign.json").write_text(json.dumps({"seed": 1, "length": 8, "done": 250}))  # an old one
    first = campaign(300)
    assert first.returncode == 0, first.stdout + first.stderr  # no findings: none are known today
    assert "starting over" in first.stderr and "300 sequences of 8 instructions" in first.stdout
    rings = [int(x) for x in __import__("re").findall(r"ring [03]: (\d+) sequences", first.stdout)]
    assert len(rings) == 2 and sum(rings) == 300 and min(rings) > 100, first.stdout
    for klass in ("shift-cl", "alu-mem", "shift-mem", "atomic-mem", "bits-mem"):
        assert f"\n{klass} " in first.stdout
    assert json.loads((tmp_path / "campaign.json").read_text())["done"] == 300
    second = campaign(10_000)  # the campaign size, in CI (about 10-25 s on 2 workers here)
    assert second.returncode == 0, second.stdout + second.stderr  # every finding so far is fixed or declared
    assert "9700 sequences of 8 instructions" in second.stdout  # resumed where the first stopped
    assert json.loads((tmp_path / "campaign.json").read_text())["done"] == 10_000
    assert "0 findings" in second.stdout and "\ndiv " in second.stdout
    third = campaign(550, "--ring", "3")  # other settings: another campaign
    assert "550 sequences" in third.stdout and "ring 0: 0 sequences" in third.stdout


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip


def test_a_reproducer_image_runs_under_diff(tmp_path: Path) -> None:
    """A finding's sequence and registers, as a multiboot image: long mode, the registers, the
    sequence, exit. `emu diff` runs it to the end (here the sequence is one without a bug)."""
    from emu.difftest import reproducer

    state = {r: (i + 1) * 0x0101_0101_0101 for i, r in enumerate(reproducer.REGISTERS)} | {"rflags": 0x2}
    image = tmp_path / "finding.elf"
    if not reproducer.build(bytes.fromhex("48c1e005480fc8"), state, image):  # shl rax, 5; bswap rax
        pytest.skip("GNU as/ld not installed")
    result = _run("diff", str(image))
    assert result.returncode == 0 and "the guest ended (exit status 1)" in result.stdout, result.stdout
    traced = _run("trace", "--format", "jsonl", str(image))
    records = [json.loads(line) for line in traced.stdout.splitlines()]
    shl = next(r for r in records if r["asm"] == "shl rax, 5")
    assert records[records.index(shl) + 1]["asm"] == "bswap rax"
    assert json.loads(traced.stdout.splitlines()[records.index(shl) - 10])["asm"].startswith("movabs")


def test_a_ring3_reproducer_sets_up_the_data_page_and_ends_as_the_fuzzer_run(worker: fuzz.Worker,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    """A ring-3 finding's image: the data page and RBP, iretq to CPL3, the sequence, hlt -> #GP,
    whose stub exits with 0x20 + 13. On tcg it reaches the hlt with the registers and flags the
    fuzzer's tcg run left in the frame; `emu diff` runs it to the end on both."""
    from emu.difftest import reproducer

    sequence, start = _first(lambda s: _stores(s) and any(i.klass == "alu-mem" and "ptr [" in i.text.split(",")[-1]
                                                         for i in s), 3, worker)  # fmt: skip
    code = b"".join(i.code for i in sequence)
    state = {r: getattr(start.state, r) for r in fuzz.COMPARED}
    image = tmp_path / "finding.elf"
    if not reproducer.build(code, state, image, ring=3, data=start.data):
        pytest.skip("GNU as/ld not installed")
    fuzzed = worker.tcg.run(code, start)
    expected = fuzz.user_state_from_frame(fuzzed, start)
    traced = _run("trace", "--format", "jsonl", str(image))
    assert "exit status 91" in traced.stderr, traced.stderr  # (0x2d << 1) | 1
    registers: dict[str, int] = {}
    for line in traced.stdout.splitlines():
        record = json.loads(line)
        if record["asm"] == "hlt" and record["cs"] == 0x23:
            break
        registers |= {k: int(v, 16) for k, v in record["changes"].items() if k in fuzz.COMPARED}
    assert record["asm"] == "hlt" and record["cs"] == 0x23
    for name in ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "rsp", "rflags"):
        assert registers.get(name, 0) == getattr(expected, name), name  # absent: never changed from 0
    result = _run("diff", str(image))
    assert result.returncode == 0 and "the guest ended (exit status 91)" in result.stdout, result.stdout


FINDINGS = sorted((Path(__file__).parent / "findings").glob("*.json"))


@pytest.mark.parametrize("path", FINDINGS, ids=[p.stem for p in FINDINGS])
def test_a_known_finding_replays_as_declared(path: Path, worker: fuzz.Worker, monkeypatch) -> None:
    """Each finding kept in tests/difftest/findings/ (a campaign's JSON, with its explanation)
    replays through Worker.stepwise from its start. A bug in emu, since fixed: no difference at
    all, with no declared difference to hide behind. A declared one: with its declaration nothing
    real remains; without it, the difference recorded then comes back, field for field."""
    from emu.difftest import declared

    finding = json.loads(path.read_text())
    start, sequence = fuzz.start_from_finding(finding, worker), fuzz.sequence_from_finding(finding)
    assert [i.text for i in sequence] == finding["sequence"] and start.ring == finding["ring"]
    if "fixed" in finding["expect"]:  # a bug in emu, fixed: no difference, with nothing declared for it
        monkeypatch.setattr(declared, "DECLARED", ())
        assert worker.stepwise(sequence, start) is None
        return
    name = finding["expect"]["declared"]
    assert name in {d.name for d in declared.DECLARED}
    assert worker.stepwise(sequence, start) is None
    monkeypatch.setattr(declared, "DECLARED", tuple(d for d in declared.DECLARED if d.name != name))
    found = worker.stepwise(sequence, start)
    assert found is not None
    assert (found["fields"], found["memory"], found.get("fault")) == (finding["fields"], finding["memory"],
                                                                        finding.get("fault"))  # fmt: skip
