"""The serial console as an interactive terminal (emu.terminal), as QEMU's -nographic makes it.

emu runs here on a pseudo-terminal that is its controlling terminal (its session's, in the
foreground), as in a shell: the test types on the master side and watches what comes back.
Most runs boot firmware/boot/keys.S through emu's BIOS, which reads keys from COM1 with
int 16h (waiting in `hlt`), echoes each with int 10h teletype, and after Enter prints every
key's AX and leaves through isa-debug-exit (status 1). The checks: typed keys reach the guest
unchanged and are not echoed by the terminal, Ctrl-C and the other signal keys are the guest's,
Ctrl-A x ends emu with status 0, and the terminal's attributes after emu are the ones before
on every way out. Piped input passes unchanged, Ctrl-A included.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from guestenv import ACCELS
from ptyemu import PtyEmu

from emu.loader.multiboot_image import build_multiboot_elf
from emu.terminal import Command, EscapeDecoder, help_text, parse_escape, raw_attributes

ROOT = Path(__file__).resolve().parents[1]
BOOT_KEYS = ROOT / "firmware" / "build" / "boot-keys.img"
# 32-bit: poll COM1's LSR until a byte is there (mov dx, 0x3fd; in al, dx; test al, 1; jz),
# then lidt of an empty IDT and ud2: #UD -> #GP -> #DF -> triple fault.
FAULT_ON_KEY = bytes.fromhex("66bafd03" "ec" "a801" "74f7" "0f011d00000000" "0f0b")  # fmt: skip


@pytest.fixture
def pty_emu():
    runs: list[PtyEmu] = []

    def start(*args: str) -> PtyEmu:
        run = PtyEmu(["-m", "emu", *args])
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


def keys_read(output: bytes) -> list[int]:
    """The ASCII byte (AL) of every key boot-keys read, from its "keys (AX): ..." line."""
    line = re.search(rb"keys \(AX\):((?: [0-9A-F]{4})+)", output)
    assert line, output
    return [int(ax, 16) & 0xFF for ax in line.group(1).split()]


# -- emu.terminal's parts -------------------------------------------------------------------


def test_the_escape_decoder_splits_guest_bytes_from_commands() -> None:
    decoder = EscapeDecoder()
    assert decoder.feed(b"ab\x01hcd") == [b"ab", Command.HELP, b"cd"]
    assert decoder.feed(b"\x01\x01x") == [b"\x01x"]  # Ctrl-A Ctrl-A: one Ctrl-A for the guest
    assert decoder.feed(b"1\x01") == [b"1"]  # the key after the escape comes in the next read
    assert decoder.feed(b"X") == [Command.QUIT]
    assert decoder.feed(b"\x01z\x01?\x01C") == [Command.HELP, Command.MONITOR]  # unknown keys are dropped
    assert EscapeDecoder(0x14).feed(b"\x01\x14x") == [b"\x01", Command.QUIT]  # -echr 20: Ctrl-T


def test_raw_attributes_are_qemus() -> None:
    """What QEMU 7.2 clears on -nographic, as observed in a pty: ICRNL and IXON in iflag, ISIG,
    ICANON, ECHO and IEXTEN in lflag (the rest of its list is clear on a new pty already)."""
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        raw = raw_attributes(before)
        assert before[0] & ~raw[0] == before[0] & (termios.ICRNL | termios.IXON | termios.BRKINT | termios.INLCR
                                                   | termios.IGNCR | termios.ISTRIP | termios.IGNBRK | termios.PARMRK)  # fmt: skip
        assert raw[1] & termios.OPOST  # "\n" still returns the carriage
        assert raw[3] & (termios.ISIG | termios.ICANON | termios.ECHO | termios.ECHONL | termios.IEXTEN) == 0
        assert raw[2] & termios.CSIZE == termios.CS8 and raw[6][termios.VMIN] == 1 and raw[6][termios.VTIME] == 0
    finally:
        os.close(master)
        os.close(slave)


def test_echr_reads_like_qemus_strtol_and_help_names_the_key() -> None:
    assert [parse_escape(text) for text in ("1", "20", "0x14", "024")] == [1, 20, 20, 20]
    for bad in ("abc", "300", "-1"):
        with pytest.raises(ValueError, match="-echr"):
            parse_escape(bad)
    assert "C-a x    exit emulator" in help_text(1) and "C-a C-a  sends C-a" in help_text(1)
    assert "C-t h    print this help" in help_text(20)
    assert help_text(0x80).startswith("\nEscape-Char set to Ascii: 0x80\n")


# -- on a terminal ---------------------------------------------------------------------------


def test_typed_keys_reach_the_guest_unchanged_and_unechoed(pty_emu) -> None:
    """Ctrl-C, Ctrl-Z and Ctrl-\\ would be SIGINT, SIGTSTP and SIGQUIT in a cooked terminal; Enter
    would be LF (ICRNL). Here each is a byte for the guest, and only the guest echoes."""
    emu = pty_emu("-nographic", str(BOOT_KEYS))
    emu.wait_for(b"type: ")
    emu.wait_raw()
    assert not emu.restored()
    emu.type(b"a\x03\x1a\x1c\x01\x01b\r")
    assert emu.finish() == 1  # Enter ends boot-keys, through isa-debug-exit
    assert keys_read(emu.output) == [ord("a"), 0x03, 0x1A, 0x1C, 0x01, ord("b"), 0x0D]
    assert b"type: a\x03\x1a\x1c\x01b\r\n" in emu.output  # the guest's teletype echo and nothing else
    assert emu.restored()


@pytest.mark.parametrize("accel", ACCELS)
def test_ctrl_a_x_quits_with_status_0(pty_emu, accel: str) -> None:
    emu = pty_emu("--accel", accel, "-nographic", str(BOOT_KEYS))
    emu.wait_for(b"type: ")
    emu.wait_raw()
    emu.type(b"\x01h")
    emu.wait_for(b"C-a x    exit emulator\r\n")
    emu.type(b"\x01c")  # to the monitor: it edits its own line (echo, Backspace), runs it at Enter
    at = emu.wait_for(b"monitor - type 'help' for more information\r\n(emu) ")
    emu.type(b"info statx\x7fus\r")
    at = emu.wait_for(b"info statx\x08 \x08us\r\nVM status: running\r\n(emu) ", start=at)
    emu.type(b"\x01c")  # back to the console
    emu.type(b"\x01")
    time.sleep(0.2)  # the escape and its key in two reads
    emu.type(b"x")
    assert emu.finish() == 0
    assert emu.output.endswith(b"emu: Terminated\r\n")
    assert b"keys (AX)" not in emu.output  # no key reached the guest
    assert emu.restored()


def test_echr_changes_the_escape_key(pty_emu) -> None:
    emu = pty_emu("-echr", "0x14", "-nographic", str(BOOT_KEYS))
    emu.wait_for(b"type: ")
    emu.wait_raw()
    emu.type(b"\x14h")
    emu.wait_for(b"C-t x    exit emulator\r\n")
    emu.type(b"\x01\x14\x14\r")  # Ctrl-A is the guest's now; Ctrl-T Ctrl-T sends one Ctrl-T
    assert emu.finish() == 1
    assert keys_read(emu.output) == [0x01, 0x14, 0x0D]
    assert emu.restored()


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signals_end_the_run_and_restore_the_terminal(pty_emu, signum: int, status: int) -> None:
    emu = pty_emu("-nographic", str(BOOT_KEYS))
    emu.wait_for(b"type: ")
    emu.wait_raw()
    emu.proc.send_signal(signum)
    assert emu.finish() == status
    assert emu.restored()


@pytest.mark.parametrize("accel", ACCELS)
def test_a_dying_guest_restores_the_terminal(pty_emu, tmp_path: Path, accel: str) -> None:
    image = tmp_path / "fault-on-key.elf"
    image.write_bytes(build_multiboot_elf(FAULT_ON_KEY))
    emu = pty_emu("--accel", accel, str(image))
    emu.wait_raw()
    emu.type(b"!")
    assert emu.finish() == 4
    assert b"triple fault" in emu.output
    assert emu.restored()


def test_an_exception_inside_emu_restores_the_terminal(pty_emu) -> None:
    """A bug in emu's main loop, once the terminal is raw: the traceback, and the terminal back."""
    crash = ("import sys, termios\n"
             "from emu import machine\n"
             "def loop(self, kicker):\n"
             "    assert not termios.tcgetattr(0)[3] & termios.ICANON, 'not raw'\n"
             "    raise RuntimeError('a bug in the loop')\n"
             "machine.Machine._loop = loop\n"
             "from emu.cli import main\n"
             "sys.exit(main(sys.argv[1:]))\n")  # fmt: skip
    emu = PtyEmu(["-c", crash, "-nographic", str(BOOT_KEYS)])
    try:
        assert emu.finish() == 1
        assert b"RuntimeError: a bug in the loop" in emu.output and b"not raw" not in emu.output
        assert emu.restored()
    finally:
        emu.close()


def test_chardev_stdio_is_raw_and_has_the_escapes_too(pty_emu) -> None:
    """With -chardev stdio typed keys go to the virtio console, so boot-keys never sees them."""
    emu = pty_emu("-nographic", "-chardev", "stdio,id=t", "-device", "virtio-console-pci,chardev=t", str(BOOT_KEYS))
    emu.wait_for(b"type: ")
    emu.wait_raw()
    emu.type(b"emu\r\x03")
    time.sleep(0.5)
    assert emu.proc.poll() is None
    emu.type(b"\x01x")
    assert emu.finish() == 0
    assert b"keys (AX)" not in emu.output and emu.output.endswith(b"emu: Terminated\r\n")
    assert emu.restored()


# -- from a pipe -----------------------------------------------------------------------------


def test_piped_input_passes_unchanged() -> None:
    """No terminal, no escapes: Ctrl-A x from a pipe is two bytes for the guest."""
    result = subprocess.run([sys.executable, "-m", "emu", "-nographic", str(BOOT_KEYS)], input=b"a\x01x\x03\r",
                            capture_output=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert keys_read(result.stdout) == [ord("a"), 0x01, ord("x"), 0x03, 0x0D]
    assert b"Terminated" not in result.stdout
