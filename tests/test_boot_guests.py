"""Raw disk images boot from the reset vector through emu's BIOS, on both accelerators.

The boot-sector guests (firmware/boot/) print through int 10h, then dump the text screen to
COM1 after a "--- screen ---" line and exit through port 0xf4. firmware/expected/boot-NAME.txt
is that dump as emu's PC must show it: captured under QEMU with SeaBIOS, where QEMU's machine
differs (an i8042, an E820 hole) declared in tests/firmware/qemu_differences.py. Real mode and
the real->long mode switch run on this host's KVM too (kvm_pvm emulates CPL0 code).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import ACCELS

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "firmware" / "build"
EXPECTED = ROOT / "firmware" / "expected"
GUESTS = sorted(p.stem for p in BUILD.glob("boot-*.img"))
MARKER = b"--- screen ---\n"
KEYS = b"emu\n"  # boot-keys reads them through int 16h (a newline from a pipe is Enter)


def run_disk(image: Path, accel: str, *options: str, stdin: bytes = KEYS, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "emu", "--accel", accel, *options, str(image)], input=stdin,
                          capture_output=True, timeout=timeout, check=False)  # fmt: skip


def test_every_boot_guest_has_expectations() -> None:
    assert GUESTS == ["boot-disk", "boot-hello", "boot-keys", "boot-memory", "boot-modes", "boot-time"]
    for guest in GUESTS:
        assert (EXPECTED / f"{guest}.txt").is_file() and (EXPECTED / f"{guest}.status").is_file()


@pytest.mark.parametrize("accel", ACCELS)
@pytest.mark.parametrize("guest", GUESTS)
def test_boot_guest(guest: str, accel: str, tmp_path: Path) -> None:
    """The screen the guest dumps is the expected one; emu's own --screendump agrees with it."""
    image = tmp_path / f"{guest}.img"
    shutil.copyfile(BUILD / f"{guest}.img", image)  # boot-disk writes to its disk
    screen = tmp_path / "screen.txt"
    result = run_disk(image, accel, "--screendump", str(screen))
    expected = (EXPECTED / f"{guest}.txt").read_bytes()
    status = int((EXPECTED / f"{guest}.status").read_text())
    assert MARKER in result.stdout, result.stderr.decode(errors="replace")
    dump = result.stdout[result.stdout.index(MARKER) :]
    assert dump.decode(errors="replace") == expected.decode(errors="replace")
    assert result.returncode == status, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    assert screen.read_bytes() == dump[len(MARKER) :]
    # Before the dump, stdout holds what int 10h printed (the firmware console, port E9h).
    assert result.stdout.startswith(b"Booting from Hard Disk...\r\n")


def test_disk_writes_reach_the_image(tmp_path: Path) -> None:
    """boot-disk writes LBA 1000 (AH=43h) and 1001 (AH=03h): the host file holds them after the run."""
    image = tmp_path / "disk.img"
    shutil.copyfile(BUILD / "boot-disk.img", image)
    before = image.read_bytes()
    result = run_disk(image, "tcg")
    assert result.returncode == 1, result.stderr
    after = image.read_bytes()
    changed = sorted({offset // 512 for offset in range(len(after)) if after[offset] != before[offset]})
    assert changed == [1000, 1001]
    assert (BUILD / "boot-disk.img").read_bytes() == before  # the committed image was not touched


def test_stats_count_unsupported_bios_calls_and_disk_work(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    shutil.copyfile(BUILD / "boot-disk.img", image)
    stats = tmp_path / "stats.json"
    result = run_disk(image, "tcg", "--stats", "--stats-json", str(stats))
    import json

    firmware = json.loads(stats.read_text())["firmware"]
    assert firmware["unsupported_calls"] == {"int 13h AH=77h": 1}  # boot-disk's deliberate invalid call
    assert firmware["disk"]["sectors_written"] == 2 and firmware["disk"]["sectors_read"] > 80
    assert "bios: unsupported calls: int 13h AH=77h x1" in result.stderr.decode()


def test_drive_option_spells_out_the_disk(tmp_path: Path) -> None:
    image = tmp_path / "hello.img"
    shutil.copyfile(BUILD / "boot-hello.img", image)
    result = subprocess.run([sys.executable, "-m", "emu", "-drive", f"file={image},format=raw,if=ide"],
                            capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert result.returncode == 1 and MARKER in result.stdout


QEMU = shutil.which("qemu-system-x86_64")


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("guest", [g for g in GUESTS if g != "boot-keys"])  # SeaBIOS reads keys from PS/2
def test_same_screen_as_qemu(guest: str, tmp_path: Path) -> None:
    """The same image under QEMU (SeaBIOS, with a VGA so that int 10h has a screen) dumps the
    expected screen, once the declared differences of QEMU's machine are applied."""
    sys.path.insert(0, str(ROOT / "tests" / "firmware"))
    from qemu_differences import qemu_transcript

    image = tmp_path / f"{guest}.img"
    shutil.copyfile(BUILD / f"{guest}.img", image)
    qemu = subprocess.run(
        [QEMU, "-accel", "tcg", "-nodefaults", "-device", "VGA", "-display", "none", "-no-reboot", "-m", "128M",
         "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-drive", f"file={image},format=raw,if=ide"],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert qemu.stdout == qemu_transcript(guest, (EXPECTED / f"{guest}.txt").read_bytes())
    assert qemu.returncode == int((EXPECTED / f"{guest}.status").read_text())


@pytest.mark.parametrize("accel", ACCELS)
def test_vcpu_starts_at_the_reset_vector(accel: str, tmp_path: Path) -> None:
    """SDM vol. 3A §9.1.1, table 9-1: real mode, CS selector F000 with base FFFF0000, IP FFF0,
    CR0 60000010, EDX = the processor signature; the first fetch is the ROM's last 16 bytes."""
    from emu.machine import Machine, MachineConfig

    image = tmp_path / "hello.img"
    shutil.copyfile(BUILD / "boot-hello.img", image)
    machine = Machine(MachineConfig(kernel=image, accel=accel))
    try:
        state = machine.vcpu.get_state()
        assert (state.cs.selector, state.cs.base, state.cs.limit, state.rip) == (0xF000, 0xFFFF0000, 0xFFFF, 0xFFF0)
        assert (state.mode, state.cr0, state.rflags, state.rdx) == ("real", 0x60000010, 0x2, 0x600)
        assert (state.ss.base, state.ss.limit, state.ds.base, state.efer) == (0, 0xFFFF, 0, 0)
    finally:
        machine.close()
