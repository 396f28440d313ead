"""Debian's stock kernel on emu (tcg): to a busybox shell on the serial console, with Linux's own
virtio drivers on emu's devices. The kernel and initramfs come from tools/linux_guest.py
(apt-get download, cached in ~/.cache/emu/linux); the test skips, saying why, where apt or the
archive is unavailable.

The main test boots with QEMU's command line and checks, through the console and emu's
monitor, ACPI, the APICs, processes, virtio-rng, virtio-blk, the balloon and `poweroff`. The
other tests in this folder boot the same guest for what one boot cannot show at once: the MP
table path (`acpi=off`) with two guests on a network
(test_linux_network.py), the PVH entry and a reboot (test_linux_pvh.py, when present), and a
real terminal (test_linux_terminal.py)."""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from test_monitor import MonitorClient

ROOT = Path(__file__).resolve().parents[2]
APPEND = "console=ttyS0"  # as under QEMU: Linux finds the APICs and ACPI in emu's tables


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


class Console:
    """The serial console of a running emu: send a line, wait for text."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.text, self._chunks = proc, "", queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(4096):
            self._chunks.put(chunk.decode(errors="replace"))

    def wait_for(self, needle: str, timeout: float, after: int = 0) -> str:
        """Wait until `needle` is in the console's text (from offset `after` on)."""
        deadline = time.monotonic() + timeout
        while needle not in self.text[after:]:
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


CALIBRATION_FAILED = "APIC timer disabled due to verification failure"
MiB_KB = 1024


def _memtotal_kb(console: Console) -> int:
    return int(re.search(r"MemTotal:\s+(\d+) kB", console.run("grep MemTotal /proc/meminfo")).group(1))


def _wait_for_actual(monitor: MonitorClient, mib: int, timeout: float) -> float:
    """Seconds until the monitor's `info balloon` says actual=mib."""
    start = time.monotonic()
    while (answer := monitor.command("info balloon")) != f"balloon: actual={mib}\r\n":
        assert time.monotonic() - start < timeout, f"the balloon did not reach {mib} MiB in {timeout} s: {answer!r}"
        time.sleep(0.25)
    return time.monotonic() - start


def _line(text: str, name: str) -> str:
    return next((row for row in text.splitlines() if name in row), "")


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None or shutil.which("debugfs") is None,
                    reason="needs e2fsprogs (mkfs.ext4, debugfs) for the disk image")  # fmt: skip
def test_stock_kernel_to_a_shell_and_poweroff(guest: tuple[Path, Path], tmp_path: Path) -> None:
    """One boot, QEMU's command line (`-append console=ttyS0`), emu's default shadow MMU.

    - ACPI and the APICs: Linux reads emu's RSDP, MADT and FADT, routes the PIT (pin 2), COM1
      and the virtio INTx through the I/O APIC (the PCI lines level-triggered: fasteoi) and
      ticks on the local APIC timer (LOC rises while the shell sleeps).
    - Processes: the shell forks for every pipeline, and each fork write-protects the parent's
      pages for copy-on-write, so a stale shadow translation shows up as a shell that reads old
      data and dies (as it did while a #PF retry could run a whole slice under Unicorn's walker,
      which stores to page tables without emu's traps).
    - virtio: /dev/hwrng reads emu's virtio-rng; an ext4 image on virtio-blk is mounted, written
      and synced (the file is in the image afterwards); the balloon inflates by 256 MiB on the
      monitor's `balloon 256` (MemTotal drops: no DEFLATE_ON_OOM) and gives it back.
    - The monitor's view matches the guest's own (_monitor_agrees_with_the_guest): `info pci`
      against /proc/bus/pci/devices, `info irq` against /proc/interrupts, `info tlb` against
      /proc/kallsyms and /proc/iomem.
    - `poweroff -f` ends emu with status 0 through the PM1 control register.

    Linux keeps its local APIC timer only if 25 of its periods measure 23-27 PIT jiffies
    (calibrate_APIC_clock); a host so loaded that emu falls behind real time can fail that check
    by chance, and Linux then ticks on the PIT: the LOC check is skipped then, with a warning."""
    kernel, initrd = guest
    disk = tmp_path / "disk.img"
    monitor_path = tmp_path / "mon.sock"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk), "16M"], check=True, capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "-m", "512", "-kernel", str(kernel),
                             "-initrd", str(initrd), "-append", APPEND, "-device", "virtio-rng-pci",
                             "-drive", f"file={disk},format=raw,if=virtio", "-device", "virtio-balloon-pci",
                             "-monitor", f"unix:{monitor_path},server=on,wait=off"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        console = Console(proc)
        monitor = MonitorClient(monitor_path)
        console.wait_for("emu-linux: ready", 400)
        console.wait_for("/ # ", 30)
        assert "ACPI: RSDP 0x00000000000F1000" in console.text
        assert "IOAPIC[0]: apic_id 1, version 17, address 0xfec00000, GSI 0-23" in console.text
        assert "MP-BIOS bug" not in console.text, "the PIT did not reach the I/O APIC's pin 2 (check_timer)"
        assert "ACPI Error" not in console.text and "ACPI BIOS Error" not in console.text

        for i in range(12):  # fork, exec and copy-on-write, twelve times
            assert console.run(f"echo pipe{i} | cat").split()[-1] == f"pipe{i}"
        assert console.run("uname -r").strip().endswith(kernel.parent.name.rsplit("-", 1)[0])
        random = console.run("head -c 16 /dev/hwrng | od -An -tx1").split()
        assert len(random) >= 16 and len(set(random[-16:])) > 4  # 16 bytes, not all the same
        assert "vda" in console.run("cat /proc/partitions")
        console.run("mount -t ext4 /dev/vda /mnt && echo hello from linux on emu > /mnt/greeting && sync && "
                    "umount /mnt && echo unmounted")  # fmt: skip
        assert "unmounted" in console.text

        first = console.run("cat /proc/interrupts")
        console.run("sleep 1")
        second = console.run("cat /proc/interrupts")
        assert "IO-APIC" in _line(first, "timer") and "2-edge" in _line(first, "timer")
        assert "IO-APIC" in _line(first, "ttyS0"), first
        for virtio in ("virtio0", "virtio1", "virtio2"):
            assert "IO-APIC" in _line(first, virtio) and "fasteoi" in _line(first, virtio), first
        loc = int(_line(first, "LOC:").split()[1]), int(_line(second, "LOC:").split()[1])
        if CALIBRATION_FAILED in console.text:
            warnings.warn(f"{CALIBRATION_FAILED}: the host is too loaded for Linux's APIC timer check", stacklevel=1)
        else:
            assert loc[1] > loc[0] > 0, loc

        _monitor_agrees_with_the_guest(console, monitor)

        assert monitor.command("info balloon") == "balloon: actual=512\r\n"
        before = _memtotal_kb(console)
        assert monitor.command("balloon 256") == ""
        _wait_for_actual(monitor, 256, 120)
        inflated = _memtotal_kb(console)
        assert abs((before - inflated) - 256 * MiB_KB) <= 4 * MiB_KB, (before, inflated)
        assert monitor.command("balloon 512") == ""
        _wait_for_actual(monitor, 512, 120)
        assert abs(_memtotal_kb(console) - before) <= 4 * MiB_KB

        proc.stdin.write(b"poweroff -f\n")  # busybox: the reboot(2) call itself, no init to ask
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    greeting = subprocess.run(["debugfs", "-R", "cat /greeting", str(disk)], capture_output=True, text=True, check=True)
    assert greeting.stdout.strip() == "hello from linux on emu"


def _monitor_agrees_with_the_guest(console: Console, monitor: MonitorClient) -> None:
    """What emu's monitor says about PCI, interrupts and page tables is what Linux reports.

    - PCI: Debian's busybox-static has no lspci, so the guest's /proc/bus/pci/devices (the
      table lspci itself falls back to: bus/devfn, vendor and device, IRQ, the seven base
      addresses) is compared with `info pci`: every function, its IDs, its IRQ line and its BARs.
    - Interrupts: for each IO-APIC line of /proc/interrupts, emu's count of messages sent on
      that pin, read just before and just after, brackets the guest's count.
    - Page tables: the kernel's `_text` (/proc/kallsyms) maps, in `info tlb`, to the start of
      "Kernel code" in /proc/iomem: the guest's own tables, read by emu's walker from outside.
    """
    functions = {}
    for block in monitor.command("info pci").split("  Bus  0, device")[1:]:
        device, function = re.match(r"\s*(\d+), function (\d+):", block).groups()
        ids = re.search(r"PCI device ([0-9a-f]{4}):([0-9a-f]{4})", block).groups()
        irq = re.search(r"IRQ (\d+), pin", block)
        bars = {int(i): int(a, 16) for i, a in re.findall(r"BAR(\d): (?:I/O|[^\n]*memory) at (0x[0-9a-f]+) ", block)}
        functions[(int(device), int(function))] = (ids, int(irq.group(1)) if irq else None, bars)
    rows = [line.split() for line in console.run("cat /proc/bus/pci/devices").splitlines() if "\t" in line or len(line.split()) > 9]
    rows = [r for r in rows if re.fullmatch(r"[0-9a-f]{4}", r[0])]
    assert len(rows) == len(functions) >= 5, (rows, functions)
    for row in rows:
        devfn = int(row[0], 16) & 0xFF
        ids, irq, bars = functions[(devfn >> 3, devfn & 7)]
        assert row[1] == ids[0] + ids[1], (row, ids)
        if irq is not None and int(row[2], 16):
            assert int(row[2], 16) == irq, (row, irq)
        for index in range(6):
            base = int(row[3 + index], 16)
            if base:
                assert bars.get(index) == base & ~(0x3 if base & 1 else 0xF), (row, bars)

    def ioapic_counts() -> dict[int, int]:
        """Per I/O APIC pin, the interrupts the CPU took at its vector, plus those its ISA IRQ
        brought through the 8259 (ExtINT) before Linux set up the I/O APIC: Linux counts both
        on the same IRQ (IRQ 0, the PIT, is pin 2)."""
        text, pic = monitor.command("info irq").split("IRQ statistics for i8259")
        xt = {int(irq): int(n) for irq, n in re.findall(r"(?m)^\s*(\d+): (\d+)\s+XT-PIC", pic)}
        return {int(pin): int(n) + xt.get(2 if int(pin) == 0 else 0 if int(pin) == 2 else int(pin), 0)
                for pin, n in re.findall(r"(?m)^\s*(\d+): (\d+)\s+IO-APIC", text)}  # fmt: skip

    before = ioapic_counts()
    interrupts = console.run("cat /proc/interrupts")  # "  0:  357  IO-APIC   2-edge  timer": IRQ 0 on pin 2
    guest = {int(pin): int(n) for n, pin in re.findall(r"(?m)^\s*\d+:\s+(\d+)\s+IO-APIC\s+(\d+)-", interrupts) if int(n)}
    after = ioapic_counts()
    assert len(guest) >= 3 and set(guest) <= set(after), (guest, after)
    for pin, count in guest.items():
        assert before.get(pin, 0) <= count <= after[pin], (pin, before.get(pin), count, after[pin])

    # virtio: the status byte each driver wrote, as Linux shows it in sysfs and emu in `info virtio`
    guest_status = re.findall(r"0x([0-9a-f]+)", console.run("cat /sys/bus/virtio/devices/*/status"))
    emu_status = re.findall(r"\): status 0x([0-9a-f]+) ", monitor.command("info virtio"))
    assert sorted(int(v, 16) for v in guest_status) == sorted(int(v, 16) for v in emu_status) and len(emu_status) == 3

    text = int(re.search(r"(?m)^([0-9a-f]{16}) T _text\r?$", console.run("grep -w _text /proc/kallsyms")).group(1), 16)
    code = int(re.search(r"(?m)^\s*([0-9a-f]+)-[0-9a-f]+ : Kernel code", console.run("cat /proc/iomem")).group(1), 16)
    assert text >= 0xFFFF_8000_0000_0000 and code > 0, (hex(text), hex(code))
    assert monitor.command("stop") == ""
    try:
        pages = re.findall(r"(?m)^([0-9a-f]{16}): ([0-9a-f]{16}) ([-XGPDACTUW]{9})\r$", monitor.command("info tlb"))
    finally:
        assert monitor.command("cont") == ""
    sizes = {"P": 2 << 20, "-": 4096}
    hits = [(int(v, 16), int(p, 16)) for v, p, flags in pages
            if int(v, 16) <= text < int(v, 16) + sizes[flags[2]]]  # fmt: skip
    assert hits, f"_text {text:#x} is in no page of info tlb ({len(pages)} pages)"
    virtual, physical = hits[0]
    assert physical + (text - virtual) == code, (hex(virtual), hex(physical), hex(text), hex(code))


KVM_PROBE_S = 20  # how long the kvm boot may take to print anything on the console


@pytest.mark.kvm
def test_stock_kernel_on_kvm(guest: tuple[Path, Path]) -> None:
    """The same kernel on /dev/kvm: to the shell and `poweroff -f` where the host's KVM can run
    it. This project's host runs a nested, software-assisted KVM (kvm_pvm, notes/host-kvm.md)
    that emulates all CPL0 guest code: there the kernel's decompressor prints nothing within
    KVM_PROBE_S seconds. Then the test stops emu (SIGTERM: its --stats show what the vCPU did)
    and skips, saying so and quoting emu's figures."""
    from guestenv import KVM_OK, KVM_WHY

    if not KVM_OK:
        pytest.skip(KVM_WHY)
    kernel, initrd = guest
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "kvm", "-m", "512", "-kernel", str(kernel),
                             "-initrd", str(initrd), "-append", APPEND, "--stats"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    console = Console(proc)
    try:
        try:
            console.wait_for("Linux version", KVM_PROBE_S)
        except AssertionError:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
            figures = " ".join(line.strip() for line in stderr.decode().splitlines()
                               if line.startswith(("mmio", "io ", "time:", "mmu:")))  # fmt: skip
            assert proc.returncode == 128 + 15, stderr.decode()  # stopped by us, not an error of emu's
            host = " (kvm_pvm: it emulates CPL0 code)" if Path("/sys/module/kvm_pvm").exists() else ""
            pytest.skip(f"host KVM{host} ran the kernel for {KVM_PROBE_S} s without a line on the console; "
                        f"emu --stats: {figures}")  # fmt: skip
        console.wait_for("/ # ", 600)
        assert console.run("uname -r").strip().endswith(kernel.parent.name.rsplit("-", 1)[0])
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
