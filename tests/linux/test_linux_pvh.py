"""Debian's kernel uncompressed (vmlinux, taken out of the bzImage by tools/linux_guest.py)
through its Xen PVH entry (emu/loader/pvh.py), as `qemu -kernel vmlinux` does, and a reboot.

The start info's command line, initrd (module 0) and memory map reach Linux: its shell runs
from the initramfs, and the boot_params Linux built from the start info
(arch/x86/platform/pvh/enlighten.c) say so: type_of_loader B0h ("PVH, not on Xen"), version
2.12. Then `reboot -f`: Linux resets through ACPI's reset register (the FADT's, port CF9h), and
with `-no-reboot` emu ends with status 0, as QEMU. (A reset without `-no-reboot` loads the
kernel again: tests/test_reset_poweroff.py shows it on small guests, the Linux boot of that is in
test_pvh_reboots_into_a_second_boot.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_linux_boot import APPEND, Console, _linux_guest, guest  # noqa: F401  (the module-scoped fixture)


@pytest.fixture(scope="module")
def vmlinux(guest: tuple[Path, Path]) -> Path:  # noqa: F811
    try:
        return _linux_guest().vmlinux(guest[0])
    except SystemExit as error:  # the script's one-line failures (a compression it cannot unpack)
        pytest.skip(f"tools/linux_guest.py could not extract vmlinux: {error}")


def _boot(vmlinux: Path, initrd: Path, *options: str) -> tuple[subprocess.Popen, Console]:
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "-m", "512", *options,
                             "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", APPEND],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    console = Console(proc)
    console.wait_for("emu-linux: ready", 400)
    console.wait_for("/ # ", 30)
    return proc, console


def test_stock_vmlinux_through_the_pvh_entry(guest: tuple[Path, Path], vmlinux: Path) -> None:  # noqa: F811
    proc, console = _boot(vmlinux, guest[1], "-no-reboot")
    try:
        assert console.run("cat /proc/cmdline").split()[-len(APPEND.split()):] == APPEND.split()
        assert console.run("uname -r").strip().endswith(vmlinux.parent.name.rsplit("-", 1)[0])
        loader, version = console.run("od -An -tx1 -j 528 -N 1 /sys/kernel/boot_params/data; "
                                      "od -An -tx2 -j 518 -N 2 /sys/kernel/boot_params/data").split()[-2:]
        assert (loader, version) == ("b0", "020c")
        proc.stdin.write(b"reboot -f\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
        console.wait_for("reboot: Restarting system", 10)
    finally:
        proc.kill()
        proc.wait()


def test_pvh_reboots_into_a_second_boot(guest: tuple[Path, Path], vmlinux: Path) -> None:  # noqa: F811
    proc, console = _boot(vmlinux, guest[1])
    try:
        first_boot = len(console.text)
        proc.stdin.write(b"reboot -f\n")
        proc.stdin.flush()
        console.wait_for("reboot: Restarting system", 60, after=first_boot)
        console.wait_for("emu-linux: ready", 400, after=first_boot)
        console.wait_for("/ # ", 30, after=first_boot)
        assert console.run("echo second''boot").split()[-1] == "secondboot"
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
