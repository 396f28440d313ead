"""Run emu on a pseudo-terminal that is its controlling terminal, as a shell runs it (tests)."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field


@dataclass
class PtyEmu:
    """emu on a pty that is its controlling terminal; the test holds the master and the slave."""

    args: list[str]
    proc: subprocess.Popen = field(init=False)
    master: int = field(init=False)
    slave: int = field(init=False)
    before: list = field(init=False)  # the terminal's attributes before emu
    output: bytes = b""

    def __post_init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.before = termios.tcgetattr(self.slave)
        # a session of its own (setsid), with the pty (its stdin) as the controlling terminal
        self.proc = subprocess.Popen([sys.executable, *self.args], stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # noqa: PLW1509 # fmt: skip

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 4096)
            except OSError:
                pass

    def wait_for(self, needle: bytes, timeout: float = 60, start: int = 0) -> int:
        """Read until `needle` is in the output from offset `start` on; return where it ends."""
        deadline = time.monotonic() + timeout
        while needle not in self.output[start:]:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self._read(0.2)
                if needle in self.output[start:]:
                    break
                raise AssertionError(f"no {needle!r} within {timeout} s (status {self.proc.poll()}): {self.output!r}")
            self._read(0.1)
        return self.output.index(needle, start) + len(needle)

    def attributes(self) -> list:
        return termios.tcgetattr(self.slave)

    def wait_raw(self, timeout: float = 60) -> None:
        """Until emu has put the terminal in raw mode (it does so when the guest starts)."""
        deadline = time.monotonic() + timeout
        while self.attributes()[3] & termios.ICANON:
            assert time.monotonic() < deadline and self.proc.poll() is None, self.output
            self._read(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 60) -> int:
        try:
            status = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._read(0.2)
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        return status

    def restored(self) -> bool:
        return self.attributes() == self.before

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)
