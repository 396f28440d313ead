"""Debian's stock kernel with ACPI on (no `acpi=off`): it finds emu's tables, takes the PM timer
as its clocksource and TSC reference, routes virtio-rng's PCI interrupt by the DSDT's _PRT,
reboots through the FADT's reset register (emu boots it again, or ends with -no-reboot) and
powers off through PM1_CNT (emu ends with status 0). PIC mode (nolapic noapic) until emu has a
local APIC and an IOAPIC. Three kernel boots on tcg: about a minute each on an idle host."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_linux_boot import Console, guest  # noqa: F401 - `guest` is the fixture (apt-get download, cached)

APPEND = "console=ttyS0 nolapic noapic"  # ACPI on, PIC mode: the _PRT and the SCI through the 8259 (the main test has the APICs)
BOOT_TIMEOUT = 400


def start(kernel: Path, initrd: Path, *options: str) -> tuple[subprocess.Popen, Console]:
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "-m", "512",
                             "-kernel", str(kernel), "-initrd", str(initrd), "-append", APPEND,
                             "-device", "virtio-rng-pci", *options],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    return proc, Console(proc)


def type_line(proc: subprocess.Popen, line: str) -> None:
    proc.stdin.write(line.encode() + b"\n")
    proc.stdin.flush()


def read_hwrng(console: Console) -> None:
    random = console.run("head -c 16 /dev/hwrng | od -An -tx1").split()
    assert len(random) >= 16 and len(set(random[-16:])) > 4  # 16 bytes, not all the same


def test_acpi_tables_clock_interrupts_reboot_and_poweroff(guest: tuple[Path, Path]) -> None:  # noqa: F811
    kernel, initrd = guest
    proc, console = start(kernel, initrd)
    try:
        console.wait_for("emu-linux: ready", BOOT_TIMEOUT)
        console.wait_for("/ # ", 30)
        boot = console.text
        assert "ACPI: RSDP 0x00000000000F1000 000024 (v02 EMU   )" in boot
        assert "ACPI: PM: (supports S0 S5)" in boot and "ACPI: PCI Root Bridge [PCI0]" in boot
        assert "ACPI Error" not in boot and "ACPI BIOS Error" not in boot and "ACPI Warning" not in boot
        assert "tsc: using PMTIMER reference calibration" in boot  # acpi=off: "No reference (HPET/PMTIMER)"
        assert "clocksource: acpi_pm: mask: 0xffffff " in boot  # 24 bits
        # acpi_pm, or the TSC where the jiffies watchdog (PIT ticks lost on a busy host) kept it
        assert console.run("cat /sys/devices/system/clocksource/clocksource0/current_clocksource").split()[-1] in (
            "acpi_pm", "tsc")
        assert "i8042: PNP: No PS/2 controller found." in boot  # the FADT says: no 8042
        # Guest time keeps up with host time while the guest is busy (never halts): Linux reads the
        # 24-bit PM timer at every tick, and must, before it wraps (4.7 s).
        before = time.monotonic()
        busy = console.run("cat /proc/uptime; end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do :; done; "
                           "cat /proc/uptime")  # fmt: skip
        host = time.monotonic() - before
        guest_time = float(busy.split()[-2]) - float(busy.split()[-4])
        assert guest_time >= 7 and host < 1.5 * guest_time + 3, f"{guest_time:.1f} s in the guest took {host:.1f} s"
        read_hwrng(console)  # virtio-rng's INTA#: _PRT says GSI 10 for slot 2; the PIIX3 routes it there
        interrupts = console.run("cat /proc/interrupts")
        assert any(line.split()[:1] == ["10:"] and "virtio0" in line for line in interrupts.splitlines())
        assert any(line.split()[:1] == ["9:"] and "acpi" in line for line in interrupts.splitlines())  # the SCI

        second = len(console.text)
        type_line(proc, "reboot -f")  # Linux writes 6 to CF9h (the FADT's RESET_REG): emu resets and boots it again
        console.wait_for("Linux version", BOOT_TIMEOUT, after=second)
        console.wait_for("emu-linux: ready", BOOT_TIMEOUT, after=second)
        console.wait_for("/ # ", 30, after=second)
        assert "ACPI: RSDP" in console.text[second:]
        read_hwrng(console)  # the virtio device was reset with the machine and works again
        type_line(proc, "poweroff -f")  # SLP_TYP(\_S5) | SLP_EN in PM1_CNT
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr.read() == b""


def test_reboot_with_no_reboot_ends_emu_with_status_0(guest: tuple[Path, Path]) -> None:  # noqa: F811
    kernel, initrd = guest
    proc, console = start(kernel, initrd, "-no-reboot")
    try:
        console.wait_for("emu-linux: ready", BOOT_TIMEOUT)
        console.wait_for("/ # ", 30)
        type_line(proc, "reboot -f")
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert console.text.count("Linux version") == 1 and proc.stderr.read() == b""
