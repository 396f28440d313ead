"""Every guest, run under QEMU TCG (the reference), prints exactly its expected transcript.

firmware/expected/NAME.txt holds the serial output byte for byte and NAME.status QEMU's
exit status (1 = the guest wrote 0 to the isa-debug-exit port). They were captured with
firmware/capture-expected.sh, which uses the same command line as below; where QEMU is known
to differ from the architecture, the expected file holds the architectural line and
qemu_differences.py declares QEMU's. This checks
the guests (and the expected files) themselves; the emulator's own tests can compare
against the same files.
"""

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
from guest_options import DEVICES
from qemu_differences import qemu_transcript

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
EXPECTED = FIRMWARE / "expected"
GUESTS = sorted(p.stem for p in EXPECTED.glob("*.txt") if not p.stem.startswith("boot-"))  # boot-*: test_boot_guests.py
QEMU = shutil.which("qemu-system-x86_64")
APPEND = "answer=42 greeting=hello"  # the multiboot command line after the kernel path
TERMINAL_INPUT = b"emu"  # what every guest gets on COM1's input (irqs reads it through IRQ 4)


def qemu_command(guest: str, accel: str = "tcg") -> list[str]:
    return [
        QEMU or "qemu-system-x86_64",
        "-accel", accel,
        "-nodefaults", "-display", "none", "-no-reboot",
        "-m", "128M",
        "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", *DEVICES.get(guest, []),
        "-kernel", str(FIRMWARE / "build" / f"{guest}.elf"),
        "-append", APPEND,
    ]  # fmt: skip


def test_every_guest_has_expectations():
    images = sorted(p.stem for p in (FIRMWARE / "build").glob("*.elf") if not p.stem.startswith("bench"))
    assert GUESTS == images
    for guest in GUESTS:
        assert (EXPECTED / f"{guest}.status").is_file(), guest


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.timeout(90)
@pytest.mark.parametrize("guest", GUESTS)
def test_transcript_matches_qemu_tcg(guest: str):
    proc = subprocess.run(
        qemu_command(guest), input=TERMINAL_INPUT, capture_output=True, timeout=60
    )
    expected = qemu_transcript(guest, (EXPECTED / f"{guest}.txt").read_bytes())
    if proc.stdout != expected:
        diff = difflib.unified_diff(
            expected.decode(errors="replace").splitlines(),
            proc.stdout.decode(errors="replace").splitlines(),
            "expected",
            "qemu-tcg",
            lineterm="",
        )
        pytest.fail(f"{guest}: transcript differs\n" + "\n".join(diff))
    status = int((EXPECTED / f"{guest}.status").read_text())
    assert proc.returncode == status, f"{guest}: exit status {proc.returncode}, expected {status}"
