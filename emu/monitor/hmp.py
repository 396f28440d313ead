"""The interpreter of emu's human monitor: a line in, text out, in QEMU's HMP words.

QEMU has two monitors on the same commands. QMP, the QEMU Machine Protocol, is JSON and is
meant for programs (libvirt). HMP, the Human Monitor Protocol, is a line of text per command,
meant for people: a banner, the prompt `(qemu) `, and commands such as `info registers`,
`x /4xg 0x1000`, `stop`, `cont`, `quit`. emu implements HMP's commands with the same names,
arguments, output and error lines, so a script written for QEMU's monitor works here too.
emu's banner and prompt name emu (`(emu) `) so that nobody takes it for QEMU.

Every command runs on the vCPU thread, between two runs of guest code, with the device lock
held (emu.runstate.RunControl.call): the CPU's registers can only be read there (Unicorn is
not thread-safe, and KVM's vCPU ioctls belong to the vCPU's thread), and the devices are seen
between two guest accesses, never inside one. A command that waits for the vCPU (`stop`) or
lets it go (`cont`, `quit`) runs on the monitor's thread instead.

To add a command, add a `Command` to `COMMANDS` (or to `INFO_COMMANDS` in emu.monitor.info for
`info NAME`). The handler gets the Monitor and the argument words and returns the text to
print. An error is a `MonitorError`, printed as QEMU prints it.

Sources: QEMU 7.2 documentation, "QEMU Monitor" (docs/system/monitor.rst) and the HMP command
reference generated from hmp-commands.hx and hmp-commands-info.hx; monitor/hmp.c (the parser:
"unknown command: '%s'"), monitor/hmp-cmds.c (hmp_stop, hmp_cont, hmp_system_reset),
hw/core/machine-hmp-cmds.c (hmp_info_balloon: "balloon: actual=%d" in MiB), softmmu/balloon.c
(qmp_balloon: "No balloon device has been activated"; a target of 0 is "Parameter 'target'
expects a size"), hw/virtio/virtio-balloon.c (virtio_balloon_to_target: num_pages =
(ram_size - target) >> 12, with the target capped at ram_size).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import __version__
from ..devices.virtio.balloon import PAGE, VirtioBalloon
from ..runstate import RunState

if TYPE_CHECKING:
    from ..machine import Machine

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
    on_vcpu: bool = True  # run on the vCPU thread (RunControl.call); False: on the monitor's thread

    @property
    def names(self) -> list[str]:
        return self.name.split("|")

    def help_line(self, prefix: str = "") -> str:
        return f"{prefix}{self.name} {self.args}".rstrip() + f" -- {self.help}"


def parse_number(text: str, what: str = "expression") -> int:
    """An HMP number: decimal, 0x hex, 0 octal, or $reg is not supported (QEMU's expressions)."""
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"invalid char '{text[0]}' in {what}") from None


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
    return mon.run(command, args[1:])


def _quit(mon: Monitor, args: list[str]) -> str:
    mon.machine.request_exit(0)  # QEMU's quit: the process ends with status 0
    mon.machine.wake()
    mon.quitting = True
    return ""


def _stop(mon: Monitor, args: list[str]) -> str:
    """QEMU's `stop`: the vCPU stops at the next instruction boundary; devices' threads go on."""
    mon.machine.control.stop(RunState.PAUSED, "stop")
    return ""


def _cont(mon: Monitor, args: list[str]) -> str:
    mon.machine.control.cont()
    return ""


def _system_reset(mon: Monitor, args: list[str]) -> str:
    """QEMU's system_reset: as if the reset line were pulled. With -no-reboot, QEMU ends instead."""
    machine = mon.machine
    if machine.config.no_reboot:
        machine.request_exit(0)
        machine.wake()
        mon.quitting = True
        return ""
    machine.reset()
    return ""


def _balloon_device(mon: Monitor) -> VirtioBalloon:
    for transport in [*mon.machine.virtio, *mon.machine.virtio_mmio]:
        if isinstance(transport.device, VirtioBalloon):
            return transport.device
    raise MonitorError("No balloon device has been activated")


def _balloon(mon: Monitor, args: list[str]) -> str:
    if len(args) != 1:
        raise UsageError("balloon: extraneous characters at the end of line" if args else
                         "unexpected end of expression")  # fmt: skip
    mib = parse_number(args[0])
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


def _info_status(mon: Monitor, args: list[str]) -> str:
    """QEMU's words: "running", "paused", "paused (debug)", "paused (prelaunch)"."""
    state = mon.machine.control.state
    if state is RunState.RUNNING:
        return "VM status: running\n"
    if state is RunState.PAUSED:
        return "VM status: paused\n"
    return f"VM status: paused ({state.value})\n"


def _x(mon: Monitor, args: list[str]) -> str:
    from .memdump import dump

    return dump(mon.machine, args, physical=False)


def _xp(mon: Monitor, args: list[str]) -> str:
    from .memdump import dump

    return dump(mon.machine, args, physical=True)


def _plot(mon: Monitor, args: list[str]) -> str:
    if len(args) != 1:
        raise UsageError("plot: expects a file name")
    from ..liveview import write_plot

    sampler = mon.machine.sampler
    if sampler is None:
        raise MonitorError("no counters are sampled in this run (give -monitor, --stats live or --plot)")
    try:
        write_plot(sampler.samples(), args[0])
    except OSError as error:
        raise MonitorError(f"{args[0]}: {error.strerror}") from None
    return ""


COMMANDS: list[Command] = [
    Command("help|?", "[cmd]", "show the help", _help, on_vcpu=False),
    Command("info", "[subcommand]", "show various information about the system state", _info, on_vcpu=False),
    Command("x", "/fmt addr", "virtual memory dump starting at 'addr'", _x),
    Command("xp", "/fmt addr", "physical memory dump starting at 'addr'", _xp),
    Command("stop|s", "", "stop emulation", _stop, on_vcpu=False),
    Command("cont|c", "", "resume emulation", _cont, on_vcpu=False),
    Command("system_reset", "", "reset the system", _system_reset),
    Command("balloon", "target", "request VM to change its memory allocation (in MB)", _balloon),
    Command("plot", "file.png", "write a PNG of exits, TLB fills and interrupts per second so far", _plot),
    Command("quit|q", "", "quit the emulator", _quit, on_vcpu=False),
]


def _info_commands() -> list[Command]:
    from .info import INFO_COMMANDS

    return [Command("balloon", "", "show balloon information", _info_balloon),
            Command("status", "", "show the current VM status (running|paused)", _info_status, on_vcpu=False),
            *INFO_COMMANDS]  # fmt: skip


# --- the interpreter -----------------------------------------------------------------------------
class Monitor:
    """The commands on one machine. execute() is the whole interpreter: a line in, text out."""

    def __init__(self, machine: Machine, commands: list[Command] | None = None,
                 info_commands: list[Command] | None = None) -> None:  # fmt: skip
        self.machine = machine
        self.commands = list(COMMANDS if commands is None else commands)
        self.info_commands = sorted(_info_commands() if info_commands is None else info_commands,
                                    key=lambda c: c.name)  # fmt: skip
        self.quitting = False

    @staticmethod
    def find(table: list[Command], name: str) -> Command | None:
        return next((c for c in table if name in c.names), None)

    def run(self, command: Command, args: list[str]) -> str:
        """The handler, on the vCPU thread with the device lock (or here, for on_vcpu=False)."""
        if command.on_vcpu:
            return self.machine.control.call(lambda: command.handler(self, args))
        return command.handler(self, args)

    def execute(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        if "/" in words[0] and not words[0].startswith("/"):  # `x/4xg $rsp`, as QEMU parses it
            name, _, fmt = words[0].partition("/")
            words[0:1] = [name, "/" + fmt]
        command = self.find(self.commands, words[0])
        if command is None:
            return f"unknown command: '{words[0]}'\n"
        try:
            return self.run(command, words[1:])
        except MonitorError as error:
            return f"Error: {error}\n"
        except UsageError as error:
            text = f"{error}\n"
            if not str(error).startswith("unknown command"):
                text += f'Try "help {words[0]}" for more information\n'
            return text
