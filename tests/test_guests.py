"""Every firmware guest on every accelerator prints its expected transcript, byte for byte.

firmware/expected/NAME.txt is the architectural transcript (QEMU TCG's, with QEMU's one known
bug corrected: see tests/firmware/qemu_differences.py). emu must print exactly it on tcg, and on
kvm wherever the host's KVM can run the guest. This project's hosts are nested kvm_pvm (see
../shared/notes/host-kvm.md): there, KVM itself gets a few things wrong that no VMM can fix
(ring-3 `int n` gives #UD, SYSCALL stays in ring 3, no #NM from ring 3), and the transcripts
KVM produces are recorded in firmware/expected/kvm_pvm/, checked identical to `qemu -accel kvm`
on the same host. The 32-bit guests that need 32-bit paging or a 32-bit `iret` cannot run on
kvm_pvm at all; on a VT-x/AMD-V host they are expected to match the architectural transcript.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import requires_kvm

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
EXPECTED = FIRMWARE / "expected"
GUESTS = sorted(p.stem for p in EXPECTED.glob("*.txt") if not p.stem.startswith("boot-"))  # boot-*: test_boot_guests.py
APPEND = "answer=42 greeting=hello"
TERMINAL_INPUT = b"emu"  # COM1's input, as firmware/capture-expected.sh gives it (irqs reads it)
HOST_IS_KVM_PVM = Path("/sys/module/kvm_pvm").exists()
KVM_PVM_CANNOT_RUN = {
    "exceptions32": "kvm_pvm drops CR0.PG for 32-bit paging, which this guest turns on",
    "rings32": "kvm_pvm's instruction emulator fails on a 32-bit iret (KVM_INTERNAL_ERROR_EMULATION)",
    "irqs32": "kvm_pvm's instruction emulator fails on a 32-bit iret (KVM_INTERNAL_ERROR_EMULATION)",
    "idle32": "kvm_pvm's instruction emulator fails on a 32-bit iret (KVM_INTERNAL_ERROR_EMULATION)",
    "mmu32": "kvm_pvm drops CR0.PG for 32-bit paging, which this guest turns on",
}


sys.path.insert(0, str(ROOT / "tests" / "firmware"))
from guest_options import DEVICES

# What a guest makes emu print on stderr by design.
STDERR = {"virtio64": b"emu: virtio-rng: queue 0: chain at head 0 loops (more than 8 descriptors): device needs reset\n"}


def run_guest(guest: str, accel: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emu", "--accel", accel, *options, *DEVICES.get(guest, []), "--append", APPEND,
         str(FIRMWARE / "build" / f"{guest}.elf")],
        input=TERMINAL_INPUT, capture_output=True, timeout=120,
    )  # fmt: skip


# kvm_pvm transcripts that record a deviation of KVM's in-kernel local APIC/IOAPIC (the same under
# `qemu -accel kvm` here): with emu's own APICs (--irqchip user, the default) the guest prints
# the architectural transcript on this host too. apic64: an ISR bit read in the handler reads 0,
# and a level pin's Remote IRR stays set after the EOI of its second delivery.
KVM_PVM_IN_KERNEL_IRQCHIP_ONLY = {"apic64"}


def expected_for(guest: str, accel: str, irqchip: str = "user") -> tuple[bytes, int, str]:
    """(transcript, exit status, which file) that `guest` must produce on `accel` here."""
    directory = EXPECTED
    if accel == "kvm" and HOST_IS_KVM_PVM and (EXPECTED / "kvm_pvm" / f"{guest}.txt").exists() and (
        irqchip == "kernel" or guest not in KVM_PVM_IN_KERNEL_IRQCHIP_ONLY
    ):
        directory = EXPECTED / "kvm_pvm"
    text = (directory / f"{guest}.txt").read_bytes()
    status = int((directory / f"{guest}.status").read_text())
    return text, status, str(directory.relative_to(ROOT) / f"{guest}.txt")


def check(guest: str, accel: str, *options: str) -> None:
    result = run_guest(guest, accel, *options)
    text, status, source = expected_for(guest, accel, "kernel" if "kernel" in options else "user")
    assert result.stdout.decode(errors="replace") == text.decode(errors="replace"), f"differs from {source}"
    assert result.returncode == status, result.stderr.decode(errors="replace")
    assert result.stderr == STDERR.get(guest, b"")


@pytest.mark.parametrize("mmu", ["shadow", "shadow-python", "unicorn"])
@pytest.mark.parametrize("guest", GUESTS)
def test_guest_on_tcg(guest: str, mmu: str) -> None:
    """tcg with emu's shadow MMU (the default, repeated fills served in C), the same MMU all in
    Python, and Unicorn's own page walker."""
    check(guest, "tcg", "--mmu", mmu)


@requires_kvm
@pytest.mark.kvm
@pytest.mark.parametrize("guest", GUESTS)
def test_guest_on_kvm(guest: str) -> None:
    if HOST_IS_KVM_PVM and guest in KVM_PVM_CANNOT_RUN:
        pytest.skip(f"host KVM is kvm_pvm: {KVM_PVM_CANNOT_RUN[guest]}")
    check(guest, "kvm")


@requires_kvm
@pytest.mark.kvm
@pytest.mark.parametrize("guest", ["irqs64", "idle64", "virtio64", "apic64"])
def test_guest_on_kvm_with_the_in_kernel_irqchip(guest: str) -> None:
    """--irqchip kernel: KVM's PIC takes the PIT, UART and RTC lines by KVM_IRQ_LINE and the PCI
    interrupts by irqfd, and the guest's `hlt` waits inside KVM; the transcript is the same.
    apic64 checks KVM's local APIC (as emu sets it up for a direct boot), its I/O APIC (ID 1)
    and emu's GSI routing (the PIT's GSI 0 on IOAPIC pin 2)."""
    check(guest, "kvm", "--irqchip", "kernel")


@requires_kvm
@pytest.mark.kvm
@pytest.mark.skipif(not HOST_IS_KVM_PVM, reason="checks how emu reports kvm_pvm's emulation failures")
def test_kvm_internal_error_is_one_line() -> None:
    result = run_guest("rings32", "kvm")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 4
    assert len(lines) == 1 and lines[0].startswith("emu: kvm: KVM_EXIT_INTERNAL_ERROR")
    assert "instruction bytes cf" in lines[0]  # the 32-bit iret the host could not emulate


def test_transcripts_are_the_same_on_both_accelerators_where_the_host_allows() -> None:
    """The architectural transcripts are one set of files for both backends (no per-accel copy)."""
    per_host = {p.stem for p in (EXPECTED / "kvm_pvm").glob("*.txt")}
    assert per_host <= set(GUESTS)
    for guest in per_host:
        ours, theirs = (EXPECTED / f"{guest}.txt").read_text(), (EXPECTED / "kvm_pvm" / f"{guest}.txt").read_text()
        assert ours != theirs and "MISMATCH" in theirs, guest  # only real host deviations are recorded


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("guest", GUESTS)
def test_emu_and_qemu_print_the_same(guest: str) -> None:
    """Run the guest on QEMU TCG and on emu tcg now; outputs agree but for declared differences."""
    sys.path.insert(0, str(ROOT / "tests" / "firmware"))
    from qemu_differences import qemu_transcript

    qemu = subprocess.run(
        ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot", "-m", "128M",
         "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         *DEVICES.get(guest, []), "-kernel", str(FIRMWARE / "build" / f"{guest}.elf"), "-append", APPEND],
        input=TERMINAL_INPUT, capture_output=True, timeout=120,
    )  # fmt: skip
    ours = run_guest(guest, "tcg")
    assert qemu_transcript(guest, ours.stdout) == qemu.stdout
    assert ours.returncode == qemu.returncode
