"""Linux's shell on emu's serial console, typed at through a terminal as a user types at one.

emu runs on a pty that is its controlling terminal (tests/ptyemu.py). What
the firmware guests cannot show: a guest with its own line discipline (Linux's n_tty on ttyS0)
does the echo, turns Enter (CR) into a line and Ctrl-C into SIGINT for the program in the
foreground, so the user's terminal must pass every key through raw. One boot (tcg, the default
shadow MMU, as tests/linux/test_linux_boot.py), then Ctrl-A x, status 0, the terminal back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from ptyemu import PtyEmu

from .test_linux_boot import APPEND, guest  # noqa: F401  (the module-scoped fixture)


def test_a_shell_on_the_terminal(guest: tuple[Path, Path]) -> None:  # noqa: F811
    kernel, initrd = guest
    emu = PtyEmu(["-m", "emu", "--accel", "tcg", "-m", "512", "-kernel", str(kernel),
                  "-initrd", str(initrd), "-append", APPEND])  # fmt: skip
    try:
        emu.wait_for(b"emu-linux: ready", 400)
        at = emu.wait_for(b"/ # ", 60)
        emu.type(b"echo h\x7fhi\r")  # DEL erases: the guest's line editing, not the host's
        at = emu.wait_for(b"\nhi\r", 60, at)
        at = emu.wait_for(b"/ # ", 60, at)
        emu.type(b"sleep 600; echo sl''ept\r")
        at = emu.wait_for(b"sleep 600", 60, at)
        time.sleep(2)
        emu.type(b"\x03")  # SIGINT for sleep, from the guest's tty; emu lives on
        at = emu.wait_for(b"^C", 60, at)  # the guest's echo of it (ECHOCTL)
        emu.wait_for(b"/ # ", 60, at)
        assert b"slept" not in emu.output[at:] and emu.proc.poll() is None
        emu.type(b"\x01x")
        assert emu.finish() == 0
        assert emu.output.endswith(b"emu: Terminated\r\n")
        assert emu.restored()
    finally:
        emu.close()
