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


# mmu32/mmu64: every reserved-bit #PF line (SDM vol. 3A §4.7: RSVD=1 comes with P=1).
_RSVD_REASON = (
    "QEMU's mmu_translate (target/i386/tcg/sysemu/excp_helper.c, do_fault_rsvd; 7.2 and current master) "
    "reports a reserved-bit page fault with PG_ERROR_RSVD_MASK alone; SDM vol. 3A §4.7: reserved bits are "
    "checked only in present entries, so RSVD=1 comes with P=1 (KVM gives 0x09)"
)
_RSVD_LINES = (  # (guest, architectural line without the newline)
    ('mmu32', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40800000  4 MiB PDE bit 21 set (reserved)'),
    ('mmu32', 'ring 3 write  #PF err 0x0f P=1 W=1 U=1 R=1 I=0 cr2=0x40800004  4 MiB PDE bit 21 set'),
    ('mmu32', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40003000  PTE bit 51 set (reserved: MAXPHYADDR 40)'),
    ('mmu32', 'ring 0 write  #PF err 0x0b P=1 W=1 U=0 R=1 I=0 cr2=0x40003000  PTE bit 51 set'),
    ('mmu32', 'ring 3 read   #PF err 0x0d P=1 W=0 U=1 R=1 I=0 cr2=0x40003000  PTE bit 51 set'),
    ('mmu32', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40400000  PDE (not a leaf) bit 51 set'),
    ('mmu32', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40800000  2 MiB PDE bit 13 set (address bits 20:13 reserved)'),
    ('mmu32', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40003000  PTE bit 63 (XD) set, EFER.NXE=0: reserved'),
    ('mmu64', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40003000  PTE bit 51 set (reserved: MAXPHYADDR 40)'),
    ('mmu64', 'ring 0 write  #PF err 0x0b P=1 W=1 U=0 R=1 I=0 cr2=0x40003000  PTE bit 51 set'),
    ('mmu64', 'ring 3 read   #PF err 0x0d P=1 W=0 U=1 R=1 I=0 cr2=0x40003000  PTE bit 51 set'),
    ('mmu64', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40400000  PDE (not a leaf) bit 51 set'),
    ('mmu64', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40800000  2 MiB PDE bit 13 set (address bits 20:13 reserved)'),
    ('mmu64', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x40003000  PTE bit 63 (XD) set, EFER.NXE=0: reserved'),
    ('mmu64', 'ring 0 read   #PF err 0x09 P=1 W=0 U=0 R=1 I=0 cr2=0x18000000000  PML4E with PS=1 (reserved)'),
)


def _rsvd_qemu(line: str) -> str:
    """QEMU's version of a reserved-bit #PF line: P=0 (error code bit 0 clear), labelled by the guest."""
    err = int(line.split("#PF err 0x")[1][:2], 16)
    line = line.replace(f"#PF err 0x{err:02x} P=1 ", f"#PF err 0x{err & ~1:02x} P=0 ")
    return line + " (QEMU TCG bug: RSVD without P)\n"


DIFFERENCES += tuple(QemuDifference(g, line + "\n", _rsvd_qemu(line), _RSVD_REASON) for g, line in _RSVD_LINES)


# Boot-sector guests (firmware/boot/): where QEMU's PC, with SeaBIOS, is a different machine from
# emu's. These are not bugs: the values describe hardware that one machine has and the other lacks.
_NO_I8042 = "emu's PC has no i8042 keyboard controller"
DIFFERENCES += (
    QemuDifference(
        guest="boot-hello",
        architectural="int 11h equipment word: 0222\n",
        qemu="int 11h equipment word: 0226\n",
        reason=f"bit 2 of the equipment word is a PS/2 pointing device: QEMU's i8042 has an AUX port, {_NO_I8042}",
    ),
    QemuDifference(
        guest="boot-memory",
        architectural="int 15h AX=2403h: CF=0 AH=00 BX=0002\n",
        qemu="int 15h AX=2403h: CF=0 AH=00 BX=0003\n",
        reason=f"int 15h AX=2403h BX bit 0 is A20 through the keyboard controller: {_NO_I8042}; both have port 92h",
    ),
    QemuDifference(
        guest="boot-memory",
        architectural="       00000000FFFC0000 0000000000040000 00000002\nE820h: 0006h entries",
        qemu="       00000000FFFC0000 0000000000040000 00000002\n"
        "       000000FD00000000 0000000300000000 00000002\nE820h: 0007h entries",
        reason="QEMU 7.1+ reserves the AMD HyperTransport window (FD_0000_0000-FF_FFFF_FFFF) in E820 when "
        "the CPU model says AuthenticAMD and has 40 physical address bits (hw/i386/pc.c); emu's PC has no such hole",
    ),
    QemuDifference(
        guest="boot-memory",
        architectural="memory: done\n" + "\n" * 7,
        qemu="memory: done\n" + "\n" * 6,
        reason="follows from the E820 entry above: QEMU's screen holds one row more above this line",
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
