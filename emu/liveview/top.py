"""`python -m emu top`: watch another emu's exits and CPU time live, as `kvm_stat` watches KVM.

kvm_stat attaches to nothing: KVM's counters are global, in debugfs. emu's live in the emu
process, so `emu top` asks for them through emu's monitor socket (emu.monitor, QEMU's human
monitor protocol): it reads the banner up to the prompt `(emu) `, sends `info stats json`, and
reads one line of JSON, emu.liveview.sampler.snapshot(), up to the next prompt (the monitor ends
lines with "\\r\\n", as QEMU's does). Two snapshots an interval apart give the rates
(emu.liveview.rates). The monitor takes one client at a time, so while `emu top` watches, a
second client waits; it holds the connection only for a command at a time.

On a terminal the table is redrawn in place (ANSI "ESC [H ESC [2J": cursor home, erase the
screen; ECMA-48 CUP and ED), as top does; `-b` (batch) prints plain blocks one after another
for scripts, and `-n N` stops after N of them, as `top -b -n N`.

    python -m emu top [-b] [-n N] [-d SECONDS] unix:PATH | PATH
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from dataclasses import dataclass

from ..errors import EmuError
from .rates import format_table, rates

PROMPT = b"(emu) "
CLEAR_HOME = "\x1b[H\x1b[2J"
TIMEOUT_S = 5.0


@dataclass
class MonitorClient:
    """One connection to an emu monitor socket, reading its replies up to the prompt."""

    path: str
    sock: socket.socket | None = None
    _buffer: bytes = b""

    def connect(self) -> str:
        """Connect and read the banner; returns it. One-line EmuErrors for what is not an emu."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_S)
        try:
            self.sock.connect(self.path)
        except FileNotFoundError:
            raise EmuError(f"top: {self.path}: no such socket (start emu with -monitor unix:{self.path},"
                           "server=on,wait=off)") from None  # fmt: skip
        except ConnectionRefusedError:
            raise EmuError(f"top: {self.path}: connection refused (no emu listening: it has ended?)") from None
        except OSError as error:
            raise EmuError(f"top: {self.path}: {error.strerror or error}") from None
        return self._until_prompt("the banner", banner=True)

    def command(self, line: str) -> str:
        assert self.sock is not None
        try:
            self.sock.sendall(line.encode() + b"\n")
        except OSError as error:
            raise EmuError(f"top: {self.path}: {error.strerror or error} (emu ended?)") from None
        return self._until_prompt(f"the reply to {line!r}")

    def _until_prompt(self, what: str, banner: bool = False) -> str:
        while not self._buffer.endswith(PROMPT):
            if banner and (b"\n" in self._buffer or len(self._buffer) >= 4) and not self._buffer.startswith(b"emu "):
                first = self._buffer.decode(errors="replace").splitlines()[0]
                raise EmuError(f"top: {self.path}: not an emu monitor (it says {first[:60]!r})")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise EmuError(f"top: {self.path}: no prompt in {TIMEOUT_S:g} s waiting for {what} (not an emu "
                               "monitor, or another client holds it: it takes one at a time)") from None  # fmt: skip
            except OSError as error:
                raise EmuError(f"top: {self.path}: {error.strerror or error}") from None
            if not data:
                raise EmuError(f"top: {self.path}: the monitor closed the connection (emu ended?)")
            self._buffer += data
        text, self._buffer = self._buffer[: -len(PROMPT)], b""
        return text.decode(errors="replace").replace("\r\n", "\n")

    def snapshot(self) -> dict:
        """`info stats json`: one line of JSON (emu.liveview.sampler.snapshot)."""
        reply = self.command("info stats json")
        for line in reply.splitlines():
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    break
        raise EmuError(f"top: {self.path}: this emu's monitor gives no stats (`info stats json` said "
                       f"{reply.strip()[:60]!r})")  # fmt: skip

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def socket_path(spec: str) -> str:
    """`unix:PATH` (the -monitor spelling, options after a comma ignored) or a plain PATH."""
    if spec.startswith("unix:"):
        spec = spec[len("unix:") :].split(",")[0]
    if not spec:
        raise EmuError("top: give the monitor socket: emu top unix:PATH (or PATH)")
    return spec


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise EmuError(f"top: {message} (see emu top --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="emu top", description="Exits per second by reason, instructions, TLB fills, interrupts and "
                "CPU time (guest, emulator, idle, steal) of a running emu, read from its monitor socket "
                "(-monitor unix:PATH,server=on,wait=off), as kvm_stat shows KVM's.")  # fmt: skip
    p.add_argument("socket", metavar="unix:PATH|PATH", help="the emu's monitor socket")
    p.add_argument("-b", "--batch", action="store_true", help="plain text blocks one after another (no redraw)")
    p.add_argument("-n", "--iterations", type=int, default=None, metavar="N", help="stop after N updates")
    p.add_argument("-d", "--delay", type=float, default=1.0, metavar="SECONDS", help="interval (default 1 s)")
    return p


def main(argv: list[str]) -> int:
    """Exit status 0 when done (or Ctrl-C), 1 when the monitor cannot be read, 2 for bad arguments."""
    try:
        args = build_parser().parse_args(argv)
        if args.delay <= 0:
            raise EmuError(f"top: -d {args.delay:g}: the interval must be above 0 s")
        if args.iterations is not None and args.iterations < 1:
            raise EmuError(f"top: -n {args.iterations}: at least one update")
        path = socket_path(args.socket)
    except EmuError as error:
        print(f"emu: {error}", file=sys.stderr)
        return 2
    try:
        return watch(path, args.delay, args.iterations, batch=args.batch or not sys.stdout.isatty())
    except EmuError as error:
        print(f"emu: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # top's way out
        return 0


def watch(path: str, delay: float, iterations: int | None, batch: bool) -> int:
    client = MonitorClient(path)
    try:
        client.connect()
        before = client.snapshot()
        shown = 0
        while iterations is None or shown < iterations:
            time.sleep(delay)  # the rates use emu's own timestamps: a late reply only stretches the interval
            after = client.snapshot()
            table = format_table(rates(before, after))
            if batch:
                print(table + "\n", flush=True)
            else:
                print(CLEAR_HOME + table, flush=True)
            before = after
            shown += 1
        return 0
    finally:
        client.close()
