"""The memory balloon on request, as a host administrator uses it: Linux's virtio_balloon driver
on emu's virtio-balloon-pci, driven from emu's monitor (emu.monitor) with QEMU's commands.

`balloon 256` on a 512 MiB guest asks the driver to hold 256 MiB. The driver takes that many
pages from the guest's allocator, sends their frame numbers on the inflate queue (emu gives the
host memory behind them back with MADV_DONTNEED), and, without VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
takes them off the guest's managed pages too: /proc/meminfo's MemTotal drops by 256 MiB. The
driver writes its progress to `actual`, which `info balloon` shows as the RAM the guest keeps.
`balloon 512` lets the pages go back through the deflate queue, and MemTotal is back. One boot;
the monitor's `quit` ends it with status 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from test_monitor import MonitorClient

from .test_linux_boot import APPEND, ROOT, Console, guest  # noqa: F401  (the module-scoped fixture)

MiB_KB = 1024


def _memtotal_kb(console: Console) -> int:
    return int(re.search(r"MemTotal:\s+(\d+) kB", console.run("grep MemTotal /proc/meminfo")).group(1))


def _wait_for_actual(monitor: MonitorClient, mib: int, timeout: float) -> float:
    """Seconds until `info balloon` says actual=mib."""
    start = time.monotonic()
    while (answer := monitor.command("info balloon")) != f"balloon: actual={mib}\r\n":
        assert time.monotonic() - start < timeout, f"the balloon did not reach {mib} MiB in {timeout} s: {answer!r}"
        time.sleep(0.25)
    return time.monotonic() - start


def test_balloon_inflates_and_deflates_on_request(guest: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    kernel, initrd = guest
    path = tmp_path / "mon.sock"
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", "tcg", "-m", "512", "-kernel", str(kernel),
                             "-initrd", str(initrd), "-append", APPEND, "-device", "virtio-balloon-pci",
                             "-monitor", f"unix:{path},server=on,wait=off"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        console = Console(proc)
        monitor = MonitorClient(path)
        console.wait_for("emu-linux: ready", 400)
        console.wait_for("/ # ", 30)
        assert monitor.command("info balloon") == "balloon: actual=512\r\n"
        before = _memtotal_kb(console)

        assert monitor.command("balloon 256") == ""
        inflate_s = _wait_for_actual(monitor, 256, 90)
        inflated = _memtotal_kb(console)
        assert abs((before - inflated) - 256 * MiB_KB) <= 4 * MiB_KB, (before, inflated)

        assert monitor.command("balloon 512") == ""
        deflate_s = _wait_for_actual(monitor, 512, 90)
        after = _memtotal_kb(console)
        assert abs(after - before) <= 4 * MiB_KB, (before, after)
        print(f"\nMemTotal {before} kB -> {inflated} kB after balloon 256 ({inflate_s:.1f} s to actual=256) "
              f"-> {after} kB after balloon 512 ({deflate_s:.1f} s to actual=512)")  # fmt: skip

        monitor.sock.sendall(b"quit\n")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
