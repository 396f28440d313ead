"""The declared differences: each covers only what its manual section leaves open."""

from __future__ import annotations

import pytest

from emu.accel import CpuState
from emu.difftest.declared import AF, OF, explain, shift_count


@pytest.mark.parametrize(
    ("mnemonic", "operands", "rcx", "count"),
    [("shl", "rax, cl", 0x141, 1), ("shl", "eax, cl", 0x3F, 0x1F), ("shr", "rax, 5", 0, 5), ("sar", "rax", 0, 1),
     ("shld", "rax, rbx, cl", 0x42, 2), ("shrd", "rax, rbx, 0x41", 0, 1), ("rol", "qword ptr [rbp + 8], 1", 0, 1),
     ("shl", "r8d, cl", 0x21, 1), ("add", "rax, 1", 0, None)],
)  # fmt: skip
def test_shift_count_is_masked_as_the_cpu_masks_it(mnemonic: str, operands: str, rcx: int, count: int | None) -> None:
    assert shift_count(mnemonic, operands, CpuState(rcx=rcx)) == count


def test_a_shift_by_one_defines_of_and_by_zero_every_flag() -> None:
    """SDM vol. 2B SAL/SAR/SHL/SHR: OF is defined for 1-bit shifts, undefined above; a count of 0
    changes no flag; AF is undefined for any other count."""
    flags = 0x202
    assert explain("shl", "rflags", flags, flags ^ OF, count=3).name == "shift-flags"
    assert explain("shl", "rflags", flags, flags ^ OF, count=1) is None
    assert explain("shl", "rflags", flags, flags ^ AF, count=1).name == "shift-flags"
    assert explain("shl", "rflags", flags, flags ^ AF, count=0) is None
    assert explain("rol", "rflags", flags, flags ^ OF, count=1) is None
    assert explain("rol", "rflags", flags, flags ^ OF, count=2).name == "rotate-flags"
    assert explain("shl", "rflags", flags, flags ^ OF).name == "shift-flags"  # count unknown: as the table says
