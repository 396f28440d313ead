"""On a terminal, a raw disk's VGA text screen is drawn with ANSI sequences; -nographic (or a pipe)
gives the BIOS's int 10h text as plain stdout instead. Run under a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "firmware" / "build" / "boot-time.img"


def run_on_terminal(*args: str, lines: int = 40, columns: int = 100, timeout: float = 60) -> tuple[int, bytes]:
    """emu with stdin/stdout/stderr on a pty of the given size; (exit status, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty's size first, so that emu sees it at start-up
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        os.execv(sys.executable, [sys.executable, "-m", "emu", *args])
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out


def test_screen_is_drawn_on_a_terminal() -> None:
    status, out = run_on_terminal(str(IMAGE))
    assert status == 1, out[-500:]
    assert out.startswith(b"\x1b[2J\x1b[27;40r")  # cleared; COM1 scrolls below the 25 screen rows
    assert b"\x1b[1;1H" in out and b"boot-time: int 1Ah" in out  # row 1 drawn
    assert b"Booting from Hard Disk..." not in out.split(b"\x1b[2J")[0]  # no teletype mirror on stdout
    assert b"--- screen ---" in out  # the guest's COM1 dump still reaches stdout
    assert out.rstrip().endswith(b"\x1b[r\x1b[40;1H") or b"\x1b[r" in out  # scrolling region restored


def test_nographic_prints_the_text() -> None:
    status, out = run_on_terminal("-nographic", str(IMAGE))
    assert status == 1
    assert b"\x1b[" not in out
    assert out.startswith(b"Booting from Hard Disk...\r")  # (the pty adds a CR to each LF)


def test_small_terminal_falls_back_to_text() -> None:
    status, out = run_on_terminal(str(IMAGE), lines=24, columns=80)
    assert status == 1 and b"\x1b[2J" not in out and b"Booting from Hard Disk..." in out
