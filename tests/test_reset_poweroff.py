"""A guest resets the machine (ACPI's reset register, port CF9h, or port 92h) or powers it off
(ACPI PM1_CNT with \\_S5's SLP_TYP and SLP_EN), on both accelerators: a reset reloads the guest
into cleared RAM with devices reset and boots it again, or with -no-reboot ends the run with
status 0, as QEMU does; a power-off ends the run with status 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.loader import acpi
from emu.loader.multiboot_image import build_multiboot_elf
from emu.machine import Machine, MachineConfig

RESETS = {
    "cf9": bytes.fromhex("b006" "66baf90c" "ee"),  # mov al, 6 (SYS_RST | RST_CPU); mov dx, 0xcf9; out dx, al
    "port92": bytes.fromhex("e492" "0c01" "e692"),  # in al, 0x92; or al, 1 (fast reset); out 0x92, al
}


def reset_guest(reset: bytes) -> bytes:
    """32-bit code. CMOS byte 40h (battery-backed: it survives a reset) says which boot this is.
    First boot: set it, print 'A', leave a mark in RAM at 2 MiB, reset. Second boot: print 'B',
    then 'Z' if RAM came back zeroed ('N' if the mark survived), exit through isa-debug-exit."""
    first = (bytes.fromhex("b040e670" "b001e671")  # CMOS[40h] = 1
             + bytes.fromhex("66baf803" "b041ee")  # 'A' to COM1
             + bytes.fromhex("c70500002000efbeadde")  # mov dword [0x200000], 0xdeadbeef
             + reset + bytes.fromhex("ebfe"))  # fmt: skip  (jmp $ until the reset lands)
    second = (bytes.fromhex("66baf803" "b042ee")  # 'B'
              + bytes.fromhex("a100002000" "85c0" "b05a" "7402" "b04e" "ee")  # 'Z' if [0x200000] == 0 else 'N'
              + bytes.fromhex("31c0e6f4"))  # fmt: skip  (out 0xf4, 0: status 1)
    check = bytes.fromhex("b040e670" "e471" "84c0") + bytes([0x75, len(first)])  # CMOS[40h] != 0: jnz second
    return check + first + second


def reset_boot_sector() -> bytes:
    """The same in a boot sector (16-bit real mode at 0000:7C00): 'A' and a port 92h reset on
    the first boot, 'B' and an exit on the second; the BIOS runs from the reset vector twice."""
    first = bytes.fromhex("b040e670" "b001e671" "baf803" "b041ee" "e4920c01e692" "ebfe")
    second = bytes.fromhex("baf803" "b042ee" "31c0e6f4")
    code = bytes.fromhex("b040e670" "e471" "84c0") + bytes([0x75, len(first)]) + first + second
    return code.ljust(510, b"\0") + b"\x55\xaa"


def poweroff_guest() -> bytes:
    """'P' to COM1, then PM1_CNT = SLP_TYP(S5) | SLP_EN: the machine turns off."""
    value = acpi.SLP_TYP_S5 << 10 | 1 << 13
    return (bytes.fromhex("66baf803" "b050ee") + b"\x66\xb8" + value.to_bytes(2, "little")
            + bytes.fromhex("66ba0406" "66ef" "ebfe"))  # fmt: skip  (mov dx, 0x604; out dx, ax; jmp $)


def run(image: Path, accel: str, **config) -> tuple[int, Machine]:
    machine = Machine(MachineConfig(kernel=image, accel=accel, **config))
    try:
        return machine.run(), machine
    finally:
        machine.close()


@pytest.mark.parametrize("how", sorted(RESETS))
@pytest.mark.parametrize("accel", ACCELS)
def test_a_reset_boots_the_guest_again_in_cleared_ram(accel: str, how: str, tmp_path: Path, capfdbinary) -> None:
    image = tmp_path / "reset.elf"
    image.write_bytes(build_multiboot_elf(reset_guest(RESETS[how])))
    status, machine = run(image, accel)
    assert status == 1 and machine.resets == 1
    assert capfdbinary.readouterr().out == b"ABZ"


@pytest.mark.parametrize("how", sorted(RESETS))
@pytest.mark.parametrize("accel", ACCELS)
def test_no_reboot_makes_a_reset_end_the_run_with_status_0(accel: str, how: str, tmp_path: Path, capfdbinary) -> None:
    image = tmp_path / "reset.elf"
    image.write_bytes(build_multiboot_elf(reset_guest(RESETS[how])))
    status, machine = run(image, accel, no_reboot=True)
    assert status == 0 and machine.resets == 0
    captured = capfdbinary.readouterr()
    assert captured.out == b"A" and captured.err == b""


@pytest.mark.parametrize("accel", ACCELS)
def test_a_raw_disk_reboots_through_the_bios(accel: str, tmp_path: Path) -> None:
    image = tmp_path / "reset.img"
    image.write_bytes(reset_boot_sector())
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "-nographic", str(image)],
                            capture_output=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    assert (result.returncode, result.stderr) == (1, b"")
    banner = b"Booting from Hard Disk...\r\n"  # the BIOS's int 10h text, mirrored to stdout
    assert result.stdout == banner + b"A" + banner + b"B"


@pytest.mark.parametrize("accel", ACCELS)
def test_acpi_poweroff_ends_the_run_with_status_0(accel: str, tmp_path: Path, capfdbinary) -> None:
    image = tmp_path / "poweroff.elf"
    image.write_bytes(build_multiboot_elf(poweroff_guest()))
    status, machine = run(image, accel)
    assert status == 0 and machine.acpi_pm.poweroffs == 1
    assert machine.acpi_pm.s5_type == acpi.SLP_TYP_S5  # what the DSDT's \_S5 tells the guest
    assert capfdbinary.readouterr().out == b"P"


def test_the_cli_spells_it_as_qemu_does(tmp_path: Path) -> None:
    image = tmp_path / "reset.elf"
    image.write_bytes(build_multiboot_elf(reset_guest(RESETS["cf9"])))
    args = [sys.executable, "-m", "emu", "--accel", "tcg", str(image)]
    for extra, status, out in (([], 1, "ABZ"), (["-no-reboot"], 0, "A"), (["--no-reboot"], 0, "A")):
        result = subprocess.run(args[:3] + extra + args[3:], capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (status, out, ""), extra
