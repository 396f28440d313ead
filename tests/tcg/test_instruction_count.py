"""--stats on tcg counts guest instructions by block: in C (emu/tcg/block_count.c, a call into
Python only to decode a block never seen before) or, without a C compiler, by a Python hook.
Both give the count of a loop whose length is known, and the same count on a real guest.

Counting by block is exact but for preemption: a run that ends inside a block (emu's time
slices are instruction budgets) has counted the whole block, and the rest of it is a block of
its own when the run resumes, so each such stop adds an instruction or two: a few per thousand
here, where the timer slices a tight loop."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from emu.loader.multiboot_image import build_multiboot_elf
from emu.machine import Machine, MachineConfig
from emu.tcg import native, vcpu

ROOT = Path(__file__).resolve().parents[2]
N = 100_000


def loop(iterations: int) -> bytes:
    """mov ecx, N; 1: dec ecx; jnz 1b; xor eax, eax; out 0xf4, al: 2N + 3 instructions."""
    return b"\xb9" + struct.pack("<I", iterations) + b"\x49\x75\xfd" + b"\x31\xc0\xe6\xf4"


def count(image: Path, python: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[int, bool]:
    with monkeypatch.context() as patch:
        if python:
            real = native.load
            patch.setattr(native, "load", lambda source: (None, "test") if source == vcpu.BLOCK_COUNT_SOURCE
                          else real(source))  # fmt: skip
        machine = Machine(MachineConfig(kernel=image, accel="tcg", count_instructions=True))
        try:
            machine.run()
            return machine.vcpu.stats.instructions, machine.vcpu._counter is not None
        finally:
            machine.close()


@pytest.mark.parametrize("python", [False, True], ids=["c", "python"])
def test_exact_count_of_a_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: bool) -> None:
    if not python and native.load(vcpu.BLOCK_COUNT_SOURCE)[0] is None:
        pytest.skip(native.load(vcpu.BLOCK_COUNT_SOURCE)[1])
    image = tmp_path / "loop.elf"
    image.write_bytes(build_multiboot_elf(loop(N)))
    instructions, in_c = count(image, python, monkeypatch)
    assert in_c is not python
    assert 2 * N + 3 <= instructions <= (2 * N + 3) * 1.005


def test_c_and_python_agree_on_a_guest_with_interrupts_and_paging(monkeypatch: pytest.MonkeyPatch) -> None:
    if native.load(vcpu.BLOCK_COUNT_SOURCE)[0] is None:
        pytest.skip(native.load(vcpu.BLOCK_COUNT_SOURCE)[1])
    image = ROOT / "firmware" / "build" / "mmu64.elf"
    c, _ = count(image, False, monkeypatch)
    python, _ = count(image, True, monkeypatch)
    assert python > 1000 and abs(c - python) <= python * 0.005
