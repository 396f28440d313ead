"""Where QEMU TCG (the reference) differs from the architecture, declared once with the reason.

firmware/expected/ holds the architectural transcripts that emu must print. Each entry here is
a line QEMU prints instead, and why; the QEMU comparisons substitute it before comparing, so
nothing is masked silently and a new difference still fails.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QemuDifference:
    guest: str
    architectural: str
    qemu: str
    reason: str


DIFFERENCES = (
    QemuDifference(
        guest="exceptions64",
        architectural="vec 13 #GP err 0x010a  int $0x21 in ring 3, gate DPL0\n",
        qemu="vec 13 #GP err 0x0212  int $0x21 in ring 3, gate DPL0 (QEMU TCG bug: a CPU pushes 0x010a)\n",
        reason="QEMU 7.2's do_interrupt64 builds the #GP error code for a gate DPL check from the "
        "16-byte gate offset (vector*16+2) instead of the IDT selector index (vector<<3 | IDT bit, "
        "SDM vol. 3A §6.13 figure 6-6)",
    ),
)


def qemu_transcript(guest: str, architectural: bytes) -> bytes:
    """What QEMU TCG prints for `guest`, given the architectural transcript."""
    text = architectural.decode()
    for diff in DIFFERENCES:
        if diff.guest == guest:
            assert diff.architectural in text, f"declared difference no longer applies to {guest}"
            text = text.replace(diff.architectural, diff.qemu)
    return text.encode()


def architectural_transcript(guest: str, qemu: bytes) -> bytes:
    """The inverse of qemu_transcript: what a CPU prints where QEMU TCG is known to differ."""
    text = qemu.decode()
    for diff in DIFFERENCES:
        if diff.guest == guest:
            text = text.replace(diff.qemu, diff.architectural)
    return text.encode()


if __name__ == "__main__":  # used by firmware/capture-expected.sh: fix QEMU's known-wrong lines
    import sys
    from pathlib import Path

    for path in map(Path, sys.argv[1:]):
        path.write_bytes(architectural_transcript(path.stem, path.read_bytes()))
