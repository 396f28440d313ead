"""The user's terminal as the guest's serial console, as QEMU's `-nographic` makes it.

Raw mode. A terminal normally runs in *canonical* mode: the kernel's line discipline collects
a line before a read sees it, echoes what is typed, lets Backspace edit, and turns Ctrl-C,
Ctrl-Z and Ctrl-\\ into signals (SIGINT, SIGTSTP, SIGQUIT) for the foreground process group.
A serial console must instead hand every key to the guest as it is typed: the guest runs its
own line discipline (Linux's on ttyS0, a shell's line editor) and does its own echo. POSIX
termios (tcgetattr/tcsetattr) sets this per terminal. emu changes what QEMU's
chardev/char-stdio.c changes: it clears ICANON (no line buffering), ECHO and ECHONL (no local
echo), ISIG (Ctrl-C is the byte 03 for the guest, not SIGINT for emu), IEXTEN (Ctrl-V is a
byte too), ICRNL, INLCR and IGNCR (Enter arrives as CR, as from a serial terminal), IXON
(Ctrl-S and Ctrl-Q reach the guest), IGNBRK, BRKINT, PARMRK and ISTRIP, and asks for 8-bit
characters without parity (CS8) and reads that return each byte at once (VMIN=1, VTIME=0).
Output processing (OPOST) stays on, so a "\\n" still returns the carriage, for the guest's
lines and for emu's own messages. The attributes found at the start are put back on every way
out of the run (Machine.run's `finally`, with an atexit hook behind it): the terminal is the
user's, not emu's.

The escape character. With raw input no key can stop emu, so one is kept back: Ctrl-A (0x01),
the convention of QEMU's character-device multiplexer (chardev/char-mux.c; `-echr` changes it),
as GNU screen and minicom use it too. After it: x ends emu (status 0, the status QEMU 7.2 gives
for its Ctrl-A x), h or ? lists the keys, c switches the keyboard between the serial console
and the monitor (emu.monitor; it edits its own line, as QEMU's readline does), and the escape
character again sends one of it to the guest. Any other key after it is dropped, as QEMU drops it.

All of this only when stdin is a terminal. From a pipe or a file, bytes reach the guest
unchanged, Ctrl-A included (QEMU's multiplexer would act on them there too; emu's tests and
scripts feed guests through pipes); with `-monitor stdio`, they are monitor commands instead,
one per line.

Sources: POSIX.1-2017, Base Definitions, chapter 11 "General Terminal Interface"; termios(3);
QEMU 7.2 chardev/char-stdio.c (qemu_chr_set_echo_stdio) and chardev/char-mux.c
(mux_proc_byte, mux_print_help); `qemu-system-x86_64 -nographic` observed in a pty.
"""

from __future__ import annotations

import atexit
import enum
import os
import queue
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

CTRL_A = 0x01
QUIT_MESSAGE = "emu: Terminated"  # QEMU prints "QEMU: Terminated"


class Command(enum.Enum):
    """What a key after the escape character asks of emu."""

    HELP = "h"
    QUIT = "x"
    MONITOR = "c"


COMMANDS = {ord(key): command for command in Command for key in (command.value, command.value.upper())}
COMMANDS[ord("?")] = Command.HELP


def escape_name(escape: int) -> str:
    """How QEMU names the escape key: C-a to C-z for 1-26, "Escape-Char" otherwise."""
    return f"C-{chr(ord('a') + escape - 1)}" if 1 <= escape <= 26 else "Escape-Char"


def help_text(escape: int) -> str:
    """The list Ctrl-A h prints: QEMU's layout, with the keys emu has."""
    key = escape_name(escape)
    lines = [f"Escape-Char set to Ascii: 0x{escape:02x}", ""] if key == "Escape-Char" else []
    lines += [f"{key} h    print this help",
              f"{key} x    exit emulator",
              f"{key} c    switch between console and monitor",
              f"{key} {key}  sends {key}"]  # fmt: skip
    return "\n" + "\n".join(lines) + "\n"


def parse_escape(text: str) -> int:
    """`-echr VALUE`, read as C's strtol with base 0 reads it (QEMU's parser): 20, 0x14, 024."""
    base = 16 if text.lower().startswith("0x") else 8 if len(text) > 1 and text.startswith("0") else 10
    try:
        value = int(text, base)
    except ValueError:
        raise ValueError(f"-echr {text}: expected a character code, like 1 (Ctrl-A) or 0x14 (Ctrl-T)") from None
    if not 0 <= value <= 0xFF:
        raise ValueError(f"-echr {text}: a character code is 0 to 255")
    return value


def raw_attributes(attributes: list) -> list:
    """`attributes` (from tcgetattr) changed as QEMU's stdio character device changes them."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attributes
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR | termios.IGNCR
               | termios.ICRNL | termios.IXON)  # fmt: skip
    oflag |= termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN | termios.ISIG)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


@dataclass
class EscapeDecoder:
    """Splits typed bytes into bytes for the guest and commands for emu (the escape character
    and the key after it may arrive in different reads)."""

    escape: int = CTRL_A
    _pending: bool = False  # the last byte seen was the escape character

    def feed(self, data: bytes) -> list[bytes | Command]:
        items: list[bytes | Command] = []
        start = 0  # the guest's bytes not yet handed out begin here
        for i, byte in enumerate(data):
            if self._pending:
                self._pending = False
                if byte != self.escape:  # escape, escape: one escape for the guest (it starts the chunk)
                    if byte in COMMANDS:
                        items.append(COMMANDS[byte])
                    start = i + 1  # the key after the escape is never the guest's
            elif byte == self.escape:
                if i > start:
                    items.append(data[start:i])
                self._pending = True
                start = i + 1
        if start < len(data):
            items.append(data[start:])
        return items


@dataclass
class TerminalSession:
    """stdin for the guest: a thread reads it into `data` and calls `wake`; on a terminal, in
    raw mode and with the escape character. `close()` puts the terminal back as it was."""

    wake: Callable[[], None]  # bytes are queued: wake the machine
    quit: Callable[[], None]  # Ctrl-A x: end the run (the status is the machine's to set)
    escape: int = CTRL_A
    fd: int = 0
    out_fd: int = 1  # where help and the quit line go: the console, as QEMU writes them
    data: queue.SimpleQueue[bytes] = field(default_factory=queue.SimpleQueue)
    interactive: bool = False  # stdin is a terminal: raw mode and escapes
    quit_requested: bool = False
    monitor: Callable[[str], str] | None = None  # a monitor line in, its output out (emu.monitor)
    monitor_focus: bool = False  # typed lines go to the monitor (-monitor stdio; Ctrl-A c switches)
    banner: str = ""  # the monitor's, printed with its first prompt
    monitor_done: Callable[[], bool] = lambda: False  # the monitor ended the run (`quit`)
    _line: bytearray = field(default_factory=bytearray, repr=False)
    _greeted: bool = False
    _last_cr: bool = False  # the last byte was CR: an LF right after it ends no second line
    _saved: list | None = field(default=None, repr=False)  # the terminal's attributes before raw mode

    def start(self) -> None:
        self.interactive = os.isatty(self.fd)
        if self.interactive:
            self._saved = termios.tcgetattr(self.fd)
            atexit.register(self.restore)  # behind Machine.run's finally, for ways out that skip it
            termios.tcsetattr(self.fd, termios.TCSANOW, raw_attributes(self._saved))
        if self.monitor_focus and self.monitor is not None:
            self.prompt()
        threading.Thread(target=self._read, name="emu-stdin", daemon=True).start()

    def restore(self) -> None:
        """Put the terminal's attributes back (TCSANOW, as QEMU: no wait for output to drain)."""
        saved, self._saved = self._saved, None
        if saved is None:
            return
        atexit.unregister(self.restore)
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, saved)
        except (termios.error, OSError):
            pass  # the terminal is gone (hung up): nothing to restore

    def close(self) -> None:
        """The run is over: the terminal back, then the quit line if Ctrl-A x ended it."""
        self.restore()
        if self.quit_requested:
            self._write(QUIT_MESSAGE + "\n")

    def _read(self) -> None:
        decoder = EscapeDecoder(self.escape)
        while True:
            try:
                chunk = os.read(self.fd, 1024)
            except OSError:
                return
            if not chunk:
                return
            for item in decoder.feed(chunk) if self.interactive else [chunk]:
                if isinstance(item, bytes) and self.monitor_focus and self.monitor is not None:
                    if not self._monitor_input(item):
                        return  # `quit`: the run ends
                elif isinstance(item, bytes):
                    self.data.put(item)
                    self.wake()
                elif item is Command.QUIT:
                    self.quit_requested = True
                    self.quit()
                    return  # what follows is the shell's, once emu has gone
                elif item is Command.HELP:
                    self._write(help_text(self.escape))
                elif self.monitor is not None:  # Ctrl-A c: to the monitor, or back to the console
                    self.monitor_focus = not self.monitor_focus
                    if self.monitor_focus:
                        self.prompt()
                    else:
                        self._write("\n")

    def prompt(self) -> None:
        """The monitor's prompt (its banner before the first one)."""
        if not self._greeted:
            self._greeted = True
            self._write(f"{self.banner}\n")
        self._write("(emu) " + self._line.decode(errors="replace"))

    def _monitor_input(self, data: bytes) -> bool:
        """Typed bytes for the monitor: edit the line (echo, Backspace), run it at Enter.
        False once a command ended the run."""
        for byte in data:
            if byte in (0x0D, 0x0A):
                if byte == 0x0A and not self.interactive and not self._line and self._last_cr:
                    continue
                line = self._line.decode(errors="replace")
                self._line.clear()
                self._write(line + "\n" if not self.interactive else "\n")
                output = self.monitor(line)
                self._write(output)
                if self.monitor_done():
                    return False
                self._write("(emu) ")
            elif byte in (0x7F, 0x08):
                if self._line:
                    self._line.pop()
                    if self.interactive:
                        self._write("\b \b")
            elif byte >= 0x20:
                self._line.append(byte)
                if self.interactive:
                    self._write(chr(byte))
            self._last_cr = byte == 0x0D
        return True

    def _write(self, text: str) -> None:
        data = text.encode()
        while data:
            try:
                data = data[os.write(self.out_fd, data) :]
            except BlockingIOError:
                continue
            except OSError:
                return
