"""The monitor on a running firmware guest, on both accelerators: what `info` says is checked
against what is known from outside (the ELF's entry and bytes, the guest's own PIC setup), and
`stop` must really stop the CPU (two register dumps alike), `system_reset` put it back at the
entry, `cont` and `quit` go on and end.

The guest is firmware/idle.c in long mode, asleep in `hlt` between PIT ticks for 20 seconds
(`seconds=20`); emu starts with -S, so the first look is at the CPU before its first instruction.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from guestenv import ACCELS
from test_monitor import MonitorClient

ROOT = Path(__file__).resolve().parents[1]
IDLE = ROOT / "firmware" / "build" / "idle64.elf"


def _elf_bytes(path: Path, address: int, length: int) -> bytes:
    with path.open("rb") as f:
        elf = ELFFile(f)
        for segment in elf.iter_segments():
            start = segment["p_paddr"]
            if segment["p_type"] == "PT_LOAD" and start <= address < start + segment["p_filesz"]:
                return segment.data()[address - start : address - start + length]
    raise AssertionError(f"{address:#x} is in no loaded segment of {path}")


def _entry(path: Path) -> int:
    with path.open("rb") as f:
        return ELFFile(f).header["e_entry"]


def _xbytes(dump: str) -> bytes:
    """The bytes of an `x /Nxb` dump."""
    return bytes(int(v, 16) for line in dump.splitlines() for v in line.split(":", 1)[1].split())


def _until(client: MonitorClient, command: str, pattern: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = client.command(command)
        if re.search(pattern, out):
            return out
        assert time.monotonic() < deadline, f"{command!r} never showed {pattern!r}; last:\n{out}"
        time.sleep(0.1)


@pytest.mark.parametrize("accel", ACCELS)
def test_a_session_with_the_monitor(tmp_path: Path, accel: str) -> None:
    path = tmp_path / "mon.sock"
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", accel, "-S", "-monitor",
                             f"unix:{path},server=on,wait=off", "--append", "seconds=20", str(IDLE)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
    try:
        mon = MonitorClient(path)
        entry = _entry(IDLE)
        assert mon.command("info status") == "VM status: paused (prelaunch)\r\n"
        regs = mon.command("info registers")
        assert f"EIP={entry:08x}" in regs and "CR0=00000011" in regs  # the multiboot entry: 32-bit, no paging
        assert _xbytes(mon.command(f"xp /16xb {entry:#x}")) == _elf_bytes(IDLE, entry, 16)
        assert mon.command("info mem") == "PG disabled\r\n"
        assert mon.command("cont") == ""
        # Long mode and the PIC programmed: the guest's own doing, seen from outside
        regs = _until(mon, "info registers", r"RIP=")
        assert "EFER=0000000000000d01" in regs or "EFER=0000000000000500" in regs
        _until(mon, "info pic", r"pic0: irr=.. imr=fe isr=.. hprio=\d irq_base=20")
        _until(mon, "info irq", r"\n +0: +\d+ +XT-PIC +timer")

        assert mon.command("stop") == ""
        assert mon.command("info status") == "VM status: paused\r\n"
        first = mon.command("info registers")
        time.sleep(0.3)  # the PIT still ticks on the host side; a stopped CPU must not take it
        assert mon.command("info registers") == first
        rip = int(re.search(r"RIP=([0-9a-f]{16})", first).group(1), 16)
        mapping = re.search(r"(?m)^([0-9a-f]{16})-([0-9a-f]{16}) [0-9a-f]{16} ([u-])r([w-])\r$", mon.command("info mem"))
        assert mapping is not None and int(mapping.group(1), 16) <= rip < int(mapping.group(2), 16)
        tlb = mon.command("info tlb")
        pages = [(int(a, 16), int(b, 16)) for a, b in re.findall(r"(?m)^([0-9a-f]{16}): ([0-9a-f]{16}) [-XGPDACTUW]{9}\r$", tlb)]
        page = max(p for p in pages if p[0] <= rip)  # the guest's tables map RIP's page (identity here)
        physical = page[1] + rip - page[0]
        assert mon.command("x /2i $rip").startswith(f"0x{rip:016x}:  ")  # decoded for 64-bit code
        code = _xbytes(mon.command("x /8xb $rip"))
        assert code == _xbytes(mon.command(f"xp /8xb {physical:#x}")) == _elf_bytes(IDLE, physical, 8)
        if accel == "tcg":
            shadow = mon.command("info tlb shadow")
            assert "translations cached" in shadow and " stale" not in shadow
            assert re.search(rf"(?m)^{rip & ~0xFFF:016x}: {physical & ~0xFFF:016x} -X sup  ok\r$", shadow), shadow
        else:
            assert "EPT/NPT" in mon.command("info tlb shadow")

        assert "dumping local APIC state for CPU 0" in mon.command("info lapic")
        mtree = mon.command("info mtree")
        assert "(prio 0, ram): ram-below-4g" in mtree and "(prio 0, i/o): com1" in mtree
        cpus = mon.command("info cpus")
        assert re.match(rf"\* CPU #0: pc=0x{rip:016x} \(paused\) thread_id=\d+\r\n$", cpus), cpus
        stats = mon.command("info stats")
        assert f"emu statistics ({accel})" in stats and "exit reason" in stats

        assert mon.command("system_reset") == ""  # while stopped: back at the entry, still stopped
        assert f"EIP={entry:08x}" in mon.command("info registers")
        assert mon.command("cont") == "" and mon.command("info status") == "VM status: running\r\n"
        _until(mon, "info registers", r"RIP=")  # in long mode again
        mon.sock.sendall(b"quit\n")
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()
