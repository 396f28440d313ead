"""The monitor: commands that the user gives to the VMM about its guest, in QEMU's words.

A virtual machine monitor has two sides. The guest sees devices and a CPU, and the user runs
the guest on them. The VMM itself also needs a control channel that the guest cannot see, to
look at the machine from outside (its state, its devices), and to act on it: pause it, reset
it, end it, or ask a paravirtual device for something. A balloon is the standard example. Only
the host knows that it is short of memory, so only the host can ask the guest's balloon driver
to give pages back (VIRTIO 1.2 §5.5, emu.devices.virtio.balloon).

QEMU has two monitors on the same commands. QMP, the QEMU Machine Protocol, is JSON and is
meant for programs (libvirt). HMP, the Human Monitor Protocol, is a line of text per command,
meant for people: a banner, the prompt `(qemu) `, and commands such as `info status`,
`balloon 256`, `info balloon`, `quit`. emu implements a small HMP: the same command names, the
same arguments, the same output and error lines. A script written for QEMU's monitor therefore
works here too. emu's banner and prompt name emu (`(emu) `) so that nobody takes it for QEMU.

Where it listens, in QEMU's option syntax: `-monitor unix:PATH,server=on,wait=off` (QEMU's older
`server,nowait` spelling is also accepted) is a Unix socket that takes one client at a time
(`socat - UNIX-CONNECT:PATH`). QEMU turns "\\n" into "\\r\\n" on the way out, and so does emu.
emu does not echo what the client types: a terminal client's own line discipline does that
(QEMU's readline echoes, and so edits lines, on a socket too). `-monitor stdio` is refused
because the terminal is COM1's, the serial console. QEMU can multiplex both on one terminal
(`-serial mon:stdio`, Ctrl-A c), but emu cannot do that yet. `-monitor none` means no monitor.

Commands run on the monitor's own thread. They hold the device lock (`Machine.lock`), as the
device threads do, so a command sees the devices between two accesses of the guest and never
in the middle of one.

To add a command, add a `Command` to `COMMANDS` (or to `INFO_COMMANDS` for `info NAME`). The
handler gets the Monitor and the argument words and returns the text to print. An error is a
`MonitorError`, printed as QEMU prints it.

Sources: QEMU 7.2 documentation, "QEMU Monitor" (docs/system/monitor.rst,
https://www.qemu.org/docs/master/system/monitor.html) and the HMP command reference generated
from hmp-commands.hx and hmp-commands-info.hx; monitor/hmp.c (the parser: "unknown command:
'%s'"), hw/core/machine-hmp-cmds.c (hmp_info_balloon: "balloon: actual=%d" in MiB),
softmmu/balloon.c (qmp_balloon: "No balloon device has been activated"; a target of 0 is
"Parameter 'target' expects a size"), hw/virtio/virtio-balloon.c (virtio_balloon_to_target:
num_pages = (ram_size - target) >> 12, with the target capped at ram_size).
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import __version__
from .devices.virtio.balloon import PAGE, VirtioBalloon
from .errors import EmuError

if TYPE_CHECKING:
    from .machine import Machine

MiB = 1 << 20
BANNER = f"emu {__version__} monitor - type 'help' for more information"
PROMPT = "(emu) "


class MonitorError(Exception):
    """A command's failure. It is printed as QEMU's hmp_handle_error prints it: 'Error: ...'."""


class UsageError(Exception):
    """The arguments could not be parsed (QEMU then says how to get the command's help)."""


@dataclass(frozen=True)
class Command:
    name: str  # "quit|q": the name and its aliases, as QEMU's help lists them
    args: str  # how help shows the arguments ("target", "[cmd]", "")
    help: str
    handler: Callable[[Monitor, list[str]], str]

    @property
    def names(self) -> list[str]:
        return self.name.split("|")

    def help_line(self, prefix: str = "") -> str:
        return f"{prefix}{self.name} {self.args}".rstrip() + f" -- {self.help}"


# --- the commands --------------------------------------------------------------------------------
def _help(mon: Monitor, args: list[str]) -> str:
    if not args:
        return "\n".join(c.help_line() for c in mon.commands) + "\n"
    if args[0] == "info":
        return "\n".join(c.help_line("info ") for c in mon.info_commands) + "\n"
    command = mon.find(mon.commands, args[0])
    return command.help_line() + "\n" if command is not None else ""  # QEMU prints nothing then


def _info(mon: Monitor, args: list[str]) -> str:
    if not args:  # QEMU lists the info commands
        return _help(mon, ["info"])
    command = mon.find(mon.info_commands, args[0])
    if command is None:
        raise UsageError(f"unknown command: 'info {args[0]}'")
    return command.handler(mon, args[1:])


def _quit(mon: Monitor, args: list[str]) -> str:
    mon.machine.request_exit(0)  # QEMU's quit: the process ends with status 0
    mon.machine.wake()
    mon.quitting = True
    return ""


def _info_status(mon: Monitor, args: list[str]) -> str:
    return "VM status: running\n"  # emu cannot pause a guest yet (QEMU's stop/cont)


def _balloon_device(mon: Monitor) -> VirtioBalloon:
    for transport in [*mon.machine.virtio, *mon.machine.virtio_mmio]:
        if isinstance(transport.device, VirtioBalloon):
            return transport.device
    raise MonitorError("No balloon device has been activated")


def _balloon(mon: Monitor, args: list[str]) -> str:
    if len(args) != 1:
        raise UsageError("balloon: extraneous characters at the end of line" if args else
                         "unexpected end of expression")  # fmt: skip
    try:
        mib = int(args[0], 0)
    except ValueError:
        raise UsageError(f"invalid char '{args[0][0]}' in expression") from None
    if mib < 0:
        raise UsageError("enter a positive value")
    device = _balloon_device(mon)
    if mib == 0:
        raise MonitorError("Parameter 'target' expects a size")
    ram = mon.machine.memory.size
    target = min(mib * MiB, ram)  # virtio_balloon_to_target: at most all of RAM, i.e. an empty balloon
    device.set_target((ram - target) // PAGE)
    return ""


def _info_balloon(mon: Monitor, args: list[str]) -> str:
    device = _balloon_device(mon)
    actual = mon.machine.memory.size - device.actual * PAGE  # what the guest keeps, as QEMU's query-balloon
    return f"balloon: actual={actual // MiB}\n"


def _info_stats(mon: Monitor, args: list[str]) -> str:  # the JSON form only, for emu top (emu.liveview)
    import json

    from .liveview import snapshot

    if args != ["json"]:
        raise UsageError("info stats: only 'info stats json' so far")
    return json.dumps(snapshot(mon.machine), separators=(",", ":")) + "\n"


COMMANDS: list[Command] = [
    Command("help|?", "[cmd]", "show the help", _help),
    Command("info", "[subcommand]", "show various information about the system state", _info),
    Command("balloon", "target", "request VM to change its memory allocation (in MB)", _balloon),
    Command("quit|q", "", "quit the emulator", _quit),
]

INFO_COMMANDS: list[Command] = [
    Command("balloon", "", "show balloon information", _info_balloon),
    Command("status", "", "show the current VM status (running|paused)", _info_status),
    Command("stats", "json", "show the counters of emu.liveview.snapshot as one line of JSON", _info_stats),
]


# --- the interpreter -----------------------------------------------------------------------------
class Monitor:
    """The commands on one machine. execute() is the whole interpreter: a line in, text out."""

    def __init__(self, machine: Machine, commands: list[Command] | None = None,
                 info_commands: list[Command] | None = None) -> None:  # fmt: skip
        self.machine = machine
        self.commands = list(COMMANDS if commands is None else commands)
        self.info_commands = list(INFO_COMMANDS if info_commands is None else info_commands)
        self.quitting = False

    @staticmethod
    def find(table: list[Command], name: str) -> Command | None:
        return next((c for c in table if name in c.names), None)

    def execute(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        command = self.find(self.commands, words[0])
        if command is None:
            return f"unknown command: '{words[0]}'\n"
        try:
            with self.machine.lock:
                return command.handler(self, words[1:])
        except MonitorError as error:
            return f"Error: {error}\n"
        except UsageError as error:
            text = f"{error}\n"
            if not str(error).startswith("unknown command"):
                text += f'Try "help {words[0]}" for more information\n'
            return text


# --- where it listens ----------------------------------------------------------------------------
def parse_monitor(spec: str) -> str | None:
    """`-monitor unix:PATH,server=on,wait=off` (or `,server,nowait`): the socket's path;
    `-monitor none`: None. Anything else is refused in one line."""
    if spec == "none":
        return None
    if spec == "stdio":
        raise EmuError("-monitor stdio: the terminal is COM1's (the serial console); emu cannot share it with "
                       "the monitor yet: use -monitor unix:PATH,server=on,wait=off")  # fmt: skip
    kind, _, rest = spec.partition(":")
    path, *items = rest.split(",")
    if kind != "unix" or not path:
        raise EmuError(f"-monitor {spec}: emu's monitor listens on a Unix socket: "
                       "-monitor unix:PATH,server=on,wait=off")  # fmt: skip
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:  # QEMU's older boolean spelling: server is server=on, nowait is wait=off
            key, value = (key[2:], "off") if key.startswith("no") else (key, "on")
        options[key] = value
    if options.pop("server", "off") != "on":
        raise EmuError(f"-monitor {spec}: emu listens for the client (server=on); it does not connect")
    if options.pop("wait", "on") != "off":
        raise EmuError(f"-monitor {spec}: emu does not wait for a client before it starts the guest: add wait=off")
    if options:
        raise EmuError(f"-monitor {spec}: emu does not know {', '.join(sorted(options))}")
    return path


class MonitorServer(threading.Thread):
    """The monitor on a Unix socket: one client at a time, on its own thread. While a client is
    connected, the listener is not watched, so the next client waits in the backlog, as
    QEMU's socket chardev makes it wait."""

    def __init__(self, monitor: Monitor, path: str) -> None:
        super().__init__(name="emu-monitor", daemon=True)
        self.monitor, self.path = monitor, path
        if os.path.exists(path) and not os.path.isdir(path):
            os.unlink(path)  # a socket left by an earlier run (QEMU does the same)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(path)
        except OSError as error:
            self.listener.close()
            raise EmuError(f"-monitor unix:{path}: {error.strerror}") from None
        self.listener.listen(1)
        self.listener.setblocking(False)
        self._stop_r, self._stop_w = os.pipe()
        self._selector = selectors.DefaultSelector()
        self.client: socket.socket | None = None
        self._line = b""
        self.commands_run = 0

    def run(self) -> None:
        self._selector.register(self._stop_r, selectors.EVENT_READ, None)
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                key.data()

    def _send(self, text: str) -> None:
        try:
            self.client.sendall(text.replace("\n", "\r\n").encode())
        except OSError:
            self._hang_up()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        self.client, self._line = client, b""
        self._selector.unregister(self.listener)
        self._selector.register(client, selectors.EVENT_READ, self._readable)
        self._send(f"{BANNER}\n{PROMPT}")

    def _readable(self) -> None:
        try:
            data = self.client.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._hang_up()
            return
        self._line += data
        while self.client is not None and b"\n" in self._line:
            line, _, self._line = self._line.partition(b"\n")
            output = self.monitor.execute(line.decode(errors="replace").strip())
            self.commands_run += 1
            if self.monitor.quitting:
                self._hang_up()
                return
            self._send(output + PROMPT)

    def _hang_up(self) -> None:
        if self.client is None:
            return
        self._selector.unregister(self.client)
        self.client.close()
        self.client = None
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self.is_alive():
            self.join(timeout=5)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        self.listener.close()
        self._selector.close()
        for fd in (self._stop_r, self._stop_w):
            os.close(fd)
        try:
            os.unlink(self.path)
        except OSError:
            pass
