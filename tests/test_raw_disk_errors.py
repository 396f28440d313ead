"""Bad raw disks: refused in one line (exit 2) before boot, or reported in one line (exit 4) when
the boot sector goes wrong, on both accelerators; and --bios runs another ROM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from asm import assemble, requires_as
from guestenv import ACCELS


def run_emu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def boot_sector(code: bytes) -> bytes:
    sector = bytearray(512)
    sector[: len(code)] = code
    sector[510:] = b"\x55\xaa"
    return bytes(sector) + bytes(512 * 7)


def assert_one_line(result: subprocess.CompletedProcess, status: int, *needles: str) -> None:
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emu: ") and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty file"),
        (bytes(511), "511 bytes, shorter than one 512-byte sector"),
        (bytes(4096), "not bootable: sector 0 does not end in the 0x55 0xAA boot signature"),
        (b"HdrS".rjust(0x206, b"\0") + bytes(4096), "a Linux bzImage"),
    ],
    ids=["zero-length", "511-bytes", "no-signature", "bzimage"],
)
def test_refused_before_boot(tmp_path: Path, content: bytes, needle: str) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(content)
    assert_one_line(run_emu(str(image)), 2, needle)


@pytest.mark.parametrize("accel", ACCELS)
def test_reserved_opcode_in_the_boot_sector(tmp_path: Path, accel: str) -> None:
    """ud2 at 0000:7C00: #UD through the IVT to the BIOS, which gives up in one line (exit 4)."""
    image = tmp_path / "ud.img"
    image.write_bytes(boot_sector(b"\x0f\x0b"))
    result = run_emu("--accel", accel, str(image))
    assert_one_line(result, 4, "firmware: Unhandled CPU exception 0006 at 0000:7C00")


@pytest.mark.parametrize("accel", ACCELS)
def test_jump_into_unmapped_memory(tmp_path: Path, accel: str) -> None:
    """jmp far C000:0000: no RAM or ROM there; emu reports the guest's death, not its own."""
    image = tmp_path / "jump.img"
    image.write_bytes(boot_sector(b"\xea\x00\x00\x00\xc0"))
    result = run_emu("--accel", accel, str(image))
    assert_one_line(result, 4, "0xc0000")


@pytest.mark.parametrize("accel", ACCELS)
def test_no_bootable_device_after_int_18h(tmp_path: Path, accel: str) -> None:
    image = tmp_path / "int18.img"
    image.write_bytes(boot_sector(b"\xcd\x18"))  # int 18h: what a boot loader calls when it gives up
    assert_one_line(run_emu("--accel", accel, str(image)), 4, "firmware: No bootable device.")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(bytes(1000), "a BIOS image is a multiple of 64 KiB"), (None, "cannot read it")],
    ids=["wrong-size", "missing"],
)
def test_bad_bios_option(tmp_path: Path, content: bytes | None, needle: str) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(boot_sector(b"\xf4"))
    rom = tmp_path / "rom.bin"
    if content is not None:
        rom.write_bytes(content)
    assert_one_line(run_emu("--bios", str(rom), str(image)), 2, needle)


@requires_as
@pytest.mark.parametrize("accel", ACCELS)
def test_another_bios(tmp_path: Path, accel: str) -> None:
    """--bios: a 64 KiB ROM of our own runs from the reset vector (F000:FFF0, linear FFFFFFF0)."""
    body = assemble(
        """
        mov $0x3f8, %dx
        mov $'R', %al
        out %al, %dx
        mov $0, %al
        out %al, $0xf4
        """,
        0,
        bits=16,
    )
    rom = bytearray(b"\xff" * 0x10000)
    rom[0x8000 : 0x8000 + len(body)] = body
    rom[0xFFF0:0xFFF5] = b"\xea\x00\x80\x00\xf0"  # jmp far F000:8000
    (tmp_path / "rom.bin").write_bytes(bytes(rom))
    image = tmp_path / "disk.img"
    image.write_bytes(boot_sector(b"\xf4"))
    result = run_emu("--accel", accel, "--bios", str(tmp_path / "rom.bin"), str(image))
    assert (result.returncode, result.stdout, result.stderr) == (1, "R", "")


@requires_as
@pytest.mark.parametrize("accel", ACCELS)
def test_stores_to_rom_change_nothing(tmp_path: Path, accel: str) -> None:
    """A PC's ROM ignores stores; the storing instruction's other effects (registers, flags)
    happen. On kvm a read-only slot turns the store into an MMIO exit; on tcg emu steps the
    instruction and puts the bytes back. Either way the guest reads the ROM unchanged."""
    code = assemble(
        """
        mov $0xf000, %ax
        mov %ax, %es
        mov %ax, %ds
        movb $0x55, %ds:0x0000          # a plain store
        mov $0x10, %di
        mov $4, %cx
        mov $0xaa, %al
        rep stosb                       # a string store: CX and DI still advance
        mov $1, %al
        addb %al, %ds:0x0020            # a read-modify-write: flags from the ROM byte + 1
        pushf
        mov $0x3f8, %dx
        mov %ds:0x0000, %al             # print: the three ROM bytes, CX, DI and the flags' low byte
        out %al, %dx
        mov %ds:0x0010, %al
        out %al, %dx
        mov %ds:0x0020, %al
        out %al, %dx
        mov %cl, %al
        out %al, %dx
        mov %di, %ax
        out %al, %dx
        pop %ax
        and $0xd5, %al
        out %al, %dx
        mov $0, %al
        out %al, $0xf4
        """,
        0x7C00,
        bits=16,
    )
    image = tmp_path / "rom.img"
    image.write_bytes(boot_sector(code))
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "-nographic", "--stats-json",
                             str(tmp_path / "stats.json"), str(image)], capture_output=True, timeout=60,
                            stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    rom = (Path(__file__).resolve().parents[1] / "firmware" / "build" / "bios.bin").read_bytes()
    printed = result.stdout[-6:]
    expected_flags = 0
    total = rom[0x20] + 1
    expected_flags |= 0x01 if total > 0xFF else 0
    expected_flags |= 0x40 if total & 0xFF == 0 else 0
    expected_flags |= 0x80 if total & 0x80 else 0
    expected_flags |= 0x10 if (rom[0x20] & 0xF) + 1 > 0xF else 0
    expected_flags |= 0x04 if bin(total & 0xFF).count("1") % 2 == 0 else 0
    assert printed == bytes([rom[0], rom[0x10], rom[0x20], 0, 0x14, expected_flags])
    import json

    assert json.loads((tmp_path / "stats.json").read_text())["exits"]["mmio"] == 6  # 1 + 4 + 1 stores
