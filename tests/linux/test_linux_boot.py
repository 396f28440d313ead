"""Debian's stock kernel on emu (tcg): to a busybox shell on the serial console, with Linux's own
virtio drivers on emu's devices. The kernel and initramfs come from tools/linux_guest.py
(apt-get download, cached in ~/.cache/emu/linux); the test skips, saying why, where apt or the
archive is unavailable.

Through the console it checks the kernel release, reads /dev/hwrng (virtio-rng), mounts an ext4
image on virtio-blk, writes a file and syncs, then ends emu through isa-debug-exit by writing
to /dev/port (Linux's poweroff needs ACPI, which emu does not provide yet); the file is then in
the image. PCI interrupts reach Linux through emu's $PIR table; the boot is PIC-only
(nolapic noapic acpi=off) until emu has a local APIC, an IOAPIC and ACPI tables.

A second test boots the same kernel uncompressed (vmlinux, taken out of the bzImage by the same
script) through its Xen PVH entry (emu/loader/pvh.py), as `qemu -kernel vmlinux` does."""

from __future__ import annotations

import importlib.util
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPEND = "console=ttyS0 nolapic noapic acpi=off"


def _linux_guest():
    spec = importlib.util.spec_from_file_location("linux_guest", ROOT / "tools" / "linux_guest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def guest() -> tuple[Path, Path]:
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (Debian's apt) to fetch the stock kernel")
    tools = _linux_guest()
    try:
        return tools.build(tools.cache_dir())
    except SystemExit as error:  # the script's one-line failures (no archive, no network)
        pytest.skip(f"tools/linux_guest.py could not build the guest: {error}")


@pytest.fixture(scope="module")
def vmlinux(guest: tuple[Path, Path]) -> Path:
    try:
        return _linux_guest().vmlinux(guest[0])
    except SystemExit as error:  # the script's one-line failures (a compression it cannot unpack)
        pytest.skip(f"tools/linux_guest.py could not extract vmlinux: {error}")


class Console:
    """The serial console of a running emu: send a line, wait for text."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.text, self._chunks = proc, "", queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self._chunks.put(chunk.decode(errors="replace"))

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if time.monotonic() > deadline or self.proc.poll() is not None and self._chunks.empty():
                raise AssertionError(f"no {needle!r} within {timeout} s; console:\n{self.text[-3000:]}")
            try:
                self.text += self._chunks.get(timeout=0.5)
            except queue.Empty:
                pass
        return self.text

    def run(self, command: str, timeout: float = 60) -> str:
        """Type `command`, wait until it has finished (a marker it echoes), return its output."""
        start = len(self.text)
        marker = f"done-{time.monotonic_ns()}"
        self.proc.stdin.write(f"{command}; echo {marker[:5]}''{marker[5:]}\n".encode())
        self.proc.stdin.flush()
        self.wait_for(marker + "\r\n", timeout)
        return self.text[start : self.text.index(marker + "\r\n", start)]


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                    reason="needs e2fsprogs (mkfs.ext4, debugfs) for the disk image")  # fmt: skip
def test_stock_kernel_to_a_shell_with_virtio_disk_and_entropy(guest: tuple[Path, Path], tmp_path: Path) -> None:
    """On Unicorn's page walker (--mmu unicorn): with emu's shadow MMU, the default, the shell
    (PID 1) dies after its first few pipelines, a fork (a user page reads zeros or stale data,
    with PTI or nopti); that is a shadow-MMU bug for the next session, not a device matter."""
    kernel, initrd = guest
    disk = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk), "16M"], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "--mmu", "unicorn", "-m", "512", "-kernel", str(kernel),
                             "-initrd", str(initrd), "-append", APPEND, "-device", "virtio-rng-pci",
                             "-drive", f"file={disk},format=raw,if=virtio"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        console = Console(proc)
        console.wait_for("emu-linux: ready", 240)
        console.wait_for("/ # ", 30)
        assert console.run("uname -r").strip().endswith(kernel.parent.name.rsplit("-", 1)[0])
        random = console.run("head -c 16 /dev/hwrng | od -An -tx1").split()
        assert len(random) >= 16 and len(set(random[-16:])) > 4  # 16 bytes, not all the same
        assert "virtio_blk virtio1: [vda]" in console.text or "vda" in console.run("cat /proc/partitions")
        console.run("mount -t ext4 /dev/vda /mnt && echo hello from linux on emu > /mnt/greeting && sync && "
                    "umount /mnt && echo unmounted")  # fmt: skip
        assert "unmounted" in console.text
        interrupts = console.run("cat /proc/interrupts")
        assert "virtio0" in interrupts and "virtio1" in interrupts
        proc.stdin.write(b"printf '\\001' | dd of=/dev/port bs=1 seek=244 count=1\n")  # isa-debug-exit: status 3
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 3
    finally:
        proc.kill()
        proc.wait()
    greeting = subprocess.run(["debugfs", "-R", "cat /greeting", str(disk)], capture_output=True, text=True, check=True)
    assert greeting.stdout.strip() == "hello from linux on emu"


def test_stock_vmlinux_through_the_pvh_entry_to_a_shell(guest: tuple[Path, Path], vmlinux: Path) -> None:
    """The start info's command line, initrd (module 0) and memory map reach Linux: its shell
    runs from the initramfs, and the boot_params Linux built from the start info
    (arch/x86/platform/pvh/enlighten.c) say so: type_of_loader B0h ("PVH, not on Xen"), version
    2.12. On Unicorn's walker, as the bzImage test, for the shadow-MMU bug said there."""
    _, initrd = guest
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "--mmu", "unicorn", "-m", "512",
                             "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", APPEND],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        console = Console(proc)
        console.wait_for("emu-linux: ready", 240)
        console.wait_for("/ # ", 30)
        assert console.run("cat /proc/cmdline").split()[-len(APPEND.split()):] == APPEND.split()
        assert console.run("uname -r").strip().endswith(vmlinux.parent.name.rsplit("-", 1)[0])
        loader, version = console.run("od -An -tx1 -j 528 -N 1 /sys/kernel/boot_params/data; "
                                      "od -An -tx2 -j 518 -N 2 /sys/kernel/boot_params/data").split()[-2:]
        assert (loader, version) == ("b0", "020c")
        proc.stdin.write(b"printf '\\001' | dd of=/dev/port bs=1 seek=244 count=1\n")  # isa-debug-exit: status 3
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 3
    finally:
        proc.kill()
        proc.wait()
