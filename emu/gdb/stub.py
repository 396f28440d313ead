"""What gdb's packets do to the machine: one debugging session, without the socket.

gdb drives a remote target in "all-stop" mode (GDB manual, Appendix E.2 "Packets", E.3 "Stop
Reply Packets"): while the target is stopped gdb reads and writes registers (`g`, `G`, `p`,
`P`) and memory (`m`, `M`, `X`), plants breakpoints (`Z0` software, `Z1` hardware) and then
resumes it with `c` (continue) or `s` (one instruction; `vCont;c` and `vCont;s` are the same
with thread ids). Each resume owes gdb one *stop reply*: `T05` (SIGTRAP: a breakpoint, a step
done) or `T02` (SIGINT: gdb's Ctrl-C), or `W` + status when the machine ended meanwhile.

emu's vCPU belongs to its own thread (emu.runstate), so everything here reaches the CPU
through `machine.control`: `call()` runs a function on the vCPU thread between two runs,
`stop()` and `cont()` change the run state, and the run state's listeners tell this session
when the vCPU stopped by itself (a breakpoint: the machine's loop enters RunState.DEBUG when
VCpu.run() returns DebugExit). The monitor shares the same controls: its `stop` while gdb
waits is a stop gdb hears of (T02), as with QEMU.

Breakpoints are linear addresses handed to the vCPU (VCpu.set_breakpoints: tcg stops Unicorn
before the instruction; kvm uses the debug registers DR0-DR3, at most 4 in all, because
int3 breakpoints fail on this project's kvm_pvm host). As on x86 hardware, where RFLAGS.RF
lets an instruction that hit a breakpoint run when resumed, a continue from an address with
a breakpoint first steps over it. A step executes one instruction with no interrupts
injected and no timers run (QEMU's SSTEP_NOIRQ | SSTEP_NOTIMER default, Machine.debug_step).

Sources: GDB manual Appendix E "GDB Remote Serial Protocol"; QEMU 7.2 gdbstub.c
(gdb_handle_packet, gdb_vm_state_change, the replies to qSupported, qAttached, qC, `?`).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..accel import CpuState, InternalErrorExit, ShutdownExit
from ..errors import EmuError
from ..runstate import RunState
from . import memory, registers
from .packets import MAX_PACKET

if TYPE_CHECKING:
    from ..machine import Machine

SIGINT, SIGTRAP = 2, 5
MAX_HARDWARE = 4  # DR0-DR3
OK, EMPTY = b"OK", b""
E_FAULT, E_INVAL, E_NOSPC = b"E14", b"E22", b"E28"  # errno values, as QEMU's stub answers
THREAD = 1  # the one vCPU, gdb's thread 1


def stop_reply(signal: int, why: bytes = b"") -> bytes:
    """`T05thread:01;`; `why` is `swbreak:;` or `hwbreak:;` after a breakpoint, for a gdb
    that asked for them (it then takes the PC as it is: an x86 gdb otherwise checks whether
    a breakpoint sits one byte before it, where an int3 would have left it)."""
    return b"T%02x%sthread:%02x;" % (signal, why, THREAD)


def linear_pc(state: CpuState) -> int:
    """CS.base + RIP: where the next instruction is, as breakpoints name it."""
    width = (1 << 64) - 1 if state.mode == "long" else 0xFFFFFFFF
    return (state.cs.base + state.rip) & width


class BadRequest(ValueError):
    """A packet whose arguments do not parse: answered E22."""


def _hex(text: bytes) -> int:
    if not text or text.strip(b"0123456789abcdefABCDEF"):
        raise BadRequest(f"{text!r} is not a hex number")
    return int(text, 16)


def _address_length(args: bytes) -> tuple[int, int]:
    address, comma, length = args.partition(b",")
    if not comma:
        raise BadRequest("expected ADDR,LENGTH")
    return _hex(address), _hex(length)


@dataclass
class Session:
    """One connected gdb. `handle()` answers a packet; stop replies that come later (the
    vCPU reached a breakpoint while gdb waits) are queued and `wake()` is called, so that the
    server's thread picks them up with `take_stop_replies()`."""

    machine: Machine
    wake: Callable[[], None] = lambda: None
    software: set[int] = field(default_factory=set)
    hardware: set[int] = field(default_factory=set)
    killed: bool = False  # `k`: emu is ending
    break_reasons: bool = False  # gdb's qSupported said swbreak+ and hwbreak+
    _waiting: bool = False  # gdb resumed the target and waits for its stop reply
    _replies: deque[tuple[int, str]] = field(default_factory=deque)  # (signal, the run state's reason)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- the session's life ---------------------------------------------------------------
    def attach(self) -> None:
        """A new connection stops the vCPU (QEMU does too), then listens to the run state."""
        control = self.machine.control
        if not control.stopped:
            control.stop(RunState.DEBUG, "interrupt")
        control.listeners.append(self._run_state_changed)

    def close(self) -> None:
        """Detach or disconnect: the breakpoints go and the guest runs on, as under QEMU."""
        control = self.machine.control
        if self._run_state_changed in control.listeners:
            control.listeners.remove(self._run_state_changed)
        with self._lock:
            self._waiting = False
        if self.software or self.hardware:
            self.software.clear()
            self.hardware.clear()
            self._set_breakpoints()
        if not self.killed:
            control.cont()

    def finished(self, status: int) -> bytes | None:
        """The machine ended with `status`: the `W` reply gdb is owed, if it waits for one."""
        with self._lock:
            waiting, self._waiting = self._waiting, False
        return b"W%02x" % (status & 0xFF) if waiting else None

    def take_stop_replies(self) -> list[bytes]:
        """The stop replies queued since the last call, formatted on the server's thread (a
        breakpoint's kind comes from the vCPU's PC, read through machine.control)."""
        with self._lock:
            replies, self._replies = list(self._replies), deque()
        return [stop_reply(signal, self._break_kind() if reason == "breakpoint" else b"") for signal, reason in replies]

    def _break_kind(self) -> bytes:
        if not self.break_reasons:
            return b""
        pc = linear_pc(self.machine.control.call(lambda: self.machine.vcpu.get_state(msrs=False)))
        return b"swbreak:;" if pc in self.software else b"hwbreak:;" if pc in self.hardware else b""

    def _run_state_changed(self, state: RunState, reason: str) -> None:
        """A listener of machine.control: on the vCPU's thread for a breakpoint, on the
        monitor's for its `stop`. Never blocks: the reply is queued for the server's thread."""
        if not state.stopped:
            return
        with self._lock:
            if not self._waiting:
                return
            self._waiting = False
            signal = SIGINT if reason in ("interrupt", "stop") or state is RunState.PAUSED else SIGTRAP
            self._replies.append((signal, reason))
        self.wake()

    def interrupt(self) -> None:
        """gdb's Ctrl-C: stop the running vCPU; the stop reply is T02."""
        with self._lock:
            if not self._waiting:
                return  # stopped already: gdb gets nothing (its next packet finds it stopped)
        self.machine.control.stop(RunState.DEBUG, "interrupt")
        with self._lock:  # stopped by someone else before us, without a word to gdb: say it now
            if self._waiting:
                self._waiting = False
                self._replies.append((SIGINT, "interrupt"))
        self.wake()

    # --- packets --------------------------------------------------------------------------
    def handle(self, packet: bytes) -> list[bytes]:
        """The replies to one packet, in order (none for a resume: its stop reply comes later;
        `O` console output before the reply of `qRcmd`)."""
        try:
            return self._dispatch(packet)
        except BadRequest:
            return [E_INVAL]
        except Exception as error:  # noqa: BLE001 - a debugger's request must never end emu
            name = packet.split(b":")[0][:16].decode("ascii", "replace")
            print(f"emu: gdb: {name}: {type(error).__name__}: {error}", file=sys.stderr)
            return [b"E01"]

    def _dispatch(self, packet: bytes) -> list[bytes]:
        head, args = packet[:1], packet[1:]
        simple = {b"g": self._read_registers, b"?": lambda _a: stop_reply(SIGTRAP)}
        if head in simple:
            return [simple[head](args)]
        table: dict[bytes, Callable[[bytes], bytes]] = {
            b"G": self._write_registers, b"p": self._read_register, b"P": self._write_register,
            b"m": self._read_memory, b"M": self._write_memory, b"X": self._write_binary,
            b"Z": self._insert, b"z": self._remove, b"H": lambda _a: OK, b"T": self._thread_alive,
        }  # fmt: skip
        if head in table:
            return [table[head](args)]
        if head in (b"c", b"C"):
            return self._resume(self._resume_address(head, args))
        if head in (b"s", b"S"):
            return self._step(self._resume_address(head, args))
        if head == b"D":
            self.close()
            return [OK]
        if head == b"k":
            return self._kill()
        if head == b"v":
            return self._v_packet(packet)
        if head in (b"q", b"Q"):
            return self._query(packet)
        return [EMPTY]  # not supported: gdb knows the empty reply means that

    @staticmethod
    def _resume_address(head: bytes, args: bytes) -> int | None:
        """`c[ADDR]`, `s[ADDR]`; `C SIG[;ADDR]`, `S SIG[;ADDR]` (the signal is not delivered:
        a system target has no signals, QEMU ignores it too)."""
        if head in (b"C", b"S"):
            _signal, _, args = args.partition(b";")
        return _hex(args) if args else None

    # registers
    def _state(self) -> CpuState:
        return self.machine.control.call(lambda: self.machine.vcpu.get_state())

    def _read_registers(self, _args: bytes) -> bytes:
        return registers.encode_all(self._state()).encode()

    def _read_register(self, args: bytes) -> bytes:
        number = _hex(args)
        if number >= len(registers.REGISTERS):
            return E_INVAL
        return registers.encode(self._state(), registers.REGISTERS[number]).encode()

    def _change_state(self, change: Callable[[CpuState], bool]) -> bytes:
        """Apply `change` to the vCPU's state on its thread; E22 if emu cannot make it."""

        def apply() -> None:
            state = self.machine.vcpu.get_state()
            if change(state):
                self.machine.vcpu.set_state(state)

        try:
            self.machine.control.call(apply)
        except (registers.RegisterError, ValueError):
            return E_INVAL
        except EmuError as error:  # kvm refused the state (emu.kvm_accel.vcpu._check_sregs)
            print(f"emu: gdb: {error}", file=sys.stderr)
            return E_INVAL
        return OK

    def _write_registers(self, args: bytes) -> bytes:
        text = args.decode("ascii", "replace")
        if len(text) != 2 * registers.G_SIZE:
            return E_INVAL
        return self._change_state(lambda state: registers.assign_all(state, text))

    def _write_register(self, args: bytes) -> bytes:
        number, equals, value = args.partition(b"=")
        if not equals or _hex(number) >= len(registers.REGISTERS):
            return E_INVAL
        reg = registers.REGISTERS[_hex(number)]
        try:
            raw = bytes.fromhex(value.decode("ascii", "replace"))
        except ValueError:
            return E_INVAL
        if len(raw) != reg.size:
            return E_INVAL
        return self._change_state(lambda state: registers.assign(state, reg, raw))

    # memory
    def _memory(self, function: Callable[[CpuState], bytes]) -> bytes:
        def run() -> bytes:
            return function(self.machine.vcpu.get_state(msrs=False))

        try:
            return self.machine.control.call(run)
        except memory.AccessError:
            return E_FAULT

    def _read_memory(self, args: bytes) -> bytes:
        address, length = _address_length(args)
        length = min(length, MAX_PACKET // 2)  # a shorter reply is allowed: gdb asks again for the rest
        return self._memory(lambda state: memory.read(self.machine, state, address, length).hex().encode())

    def _write(self, address: int, data: bytes) -> bytes:
        def run(state: CpuState) -> bytes:
            memory.write(self.machine, state, address, data)
            return OK

        return self._memory(run)

    def _write_memory(self, args: bytes) -> bytes:
        where, colon, text = args.partition(b":")
        address, length = _address_length(where)
        try:
            data = bytes.fromhex(text.decode("ascii", "replace"))
        except ValueError:
            return E_INVAL
        if not colon or len(data) != length:
            return E_INVAL
        return self._write(address, data)

    def _write_binary(self, args: bytes) -> bytes:
        where, colon, data = args.partition(b":")
        address, length = _address_length(where)
        if not colon or len(data) != length:
            return E_INVAL
        return self._write(address, data) if data else OK  # `X addr,0:` probes for X support

    # breakpoints
    def _breakpoint_args(self, args: bytes) -> tuple[int, int]:
        kind, _, rest = args.partition(b",")
        address, _, _size = rest.partition(b",")  # the size (1 for an x86 int3) does not matter
        if _hex(address) >> 64:
            raise BadRequest("an address wider than 64 bits")
        return _hex(kind), _hex(address)

    def _set_breakpoints(self) -> str | None:
        wanted = frozenset(self.software | self.hardware)
        try:
            self.machine.control.call(lambda: self.machine.vcpu.set_breakpoints(wanted))
        except EmuError as error:
            return str(error)
        return None

    def _insert(self, args: bytes) -> bytes:
        kind, address = self._breakpoint_args(args)
        if kind > 1:
            return EMPTY  # watchpoints (Z2-Z4): not supported, gdb then says so itself
        chosen = self.software if kind == 0 else self.hardware
        if address in chosen:
            return OK
        if kind == 1 and len(self.hardware) >= MAX_HARDWARE:
            print(f"emu: gdb: at most {MAX_HARDWARE} hardware breakpoints (DR0-DR3)", file=sys.stderr)
            return E_NOSPC
        chosen.add(address)
        problem = self._set_breakpoints()
        if problem is not None:
            chosen.discard(address)
            print(f"emu: gdb: breakpoint at {address:#x} refused: {problem}", file=sys.stderr)
            return E_NOSPC
        return OK

    def _remove(self, args: bytes) -> bytes:
        kind, address = self._breakpoint_args(args)
        if kind > 1:
            return EMPTY
        chosen = self.software if kind == 0 else self.hardware
        if address in chosen:
            chosen.discard(address)
            self._set_breakpoints()  # fewer than before: every backend holds that
        return OK

    # running
    def _resume(self, address: int | None) -> list[bytes]:
        """Continue. From an address with a breakpoint, step over it first (see the module doc)."""
        breakpoints = self.software | self.hardware

        def prepare() -> object:
            state = self.machine.vcpu.get_state()
            if address is not None:
                state.rip = address
                self.machine.vcpu.set_state(state)
            if linear_pc(state) in breakpoints:
                return self.machine.debug_step()
            return None

        event = self.machine.control.call(prepare)
        with self._lock:
            self._waiting = True
        if isinstance(event, (ShutdownExit, InternalErrorExit)):
            return []  # the guest died in that step: the machine ends, and gdb hears `W`
        self.machine.control.cont()
        return []

    def _step(self, address: int | None) -> list[bytes]:
        def step() -> object:
            if address is not None:
                state = self.machine.vcpu.get_state()
                state.rip = address
                self.machine.vcpu.set_state(state)
            event = self.machine.debug_step()
            self.machine.control.enter(RunState.DEBUG, "step")
            return event

        event = self.machine.control.call(step)
        if isinstance(event, (ShutdownExit, InternalErrorExit)):
            with self._lock:
                self._waiting = True
            return []  # the guest died: gdb hears `W` with emu's status
        return [stop_reply(SIGTRAP)]

    def _kill(self) -> list[bytes]:
        print("emu: Terminated via GDBstub", file=sys.stderr)  # QEMU's words
        self.killed = True
        self.machine.request_exit(0)
        self.machine.wake()
        return []  # gdb expects no reply to `k`

    def _thread_alive(self, args: bytes) -> bytes:
        return OK if _hex(args) == THREAD else b"E01"

    def _v_packet(self, packet: bytes) -> list[bytes]:
        if packet == b"vCont?":
            return [b"vCont;c;C;s;S"]
        if packet.startswith(b"vCont;"):
            for action in packet[6:].split(b";"):
                verb, _, thread = action.partition(b":")
                if thread and thread != b"-1" and _hex(thread) not in (THREAD, 0):
                    continue  # another thread's action: there is none
                if verb[:1] in (b"c", b"C"):
                    return self._resume(None)
                if verb[:1] in (b"s", b"S"):
                    return self._step(None)
                return [E_INVAL]
            return [E_INVAL]
        if packet.startswith(b"vKill"):
            self._kill()
            return [OK]
        return [EMPTY]  # vMustReplyEmpty, vFile, vRun...: not supported

    # queries
    def _query(self, packet: bytes) -> list[bytes]:
        name, _, args = packet.partition(b":")
        fixed = {
            b"qSupported": b"PacketSize=%x;qXfer:features:read+;QStartNoAckMode+" % MAX_PACKET,
            b"qAttached": b"1",  # attached to an existing process: detach leaves it running
            b"qC": b"QC%02x" % THREAD,
            b"qfThreadInfo": b"m%02x" % THREAD,
            b"qsThreadInfo": b"l",
            b"qOffsets": b"Text=0;Data=0;Bss=0",  # the program runs where it was linked
            b"qSymbol": OK,  # no symbols wanted
            b"QStartNoAckMode": OK,  # the server stops acknowledging after this reply
        }  # fmt: skip
        if name == b"qSupported":
            wanted = set(args.split(b";"))
            self.break_reasons = {b"swbreak+", b"hwbreak+"} <= wanted
            return [fixed[name] + (b";swbreak+;hwbreak+" if self.break_reasons else b"")]
        if name in fixed:
            return [fixed[name]]
        if name == b"qXfer" and args.startswith(b"features:read:"):
            return [self._features(args[len(b"features:read:") :])]
        if packet.startswith(b"qThreadExtraInfo,"):
            state = self.machine.control.state
            return [f"CPU#0 [{'running' if state is RunState.RUNNING else state.value}]".encode().hex().encode()]
        if packet.startswith(b"qRcmd,"):
            return self._monitor_command(packet[6:])
        return [EMPTY]

    @staticmethod
    def _features(args: bytes) -> bytes:
        annex, _, window = args.partition(b":")
        if annex != b"target.xml":
            return b"E00"
        offset, length = _address_length(window)
        document = registers.target_xml().encode()
        chunk = document[offset : offset + length]
        return (b"l" if offset + length >= len(document) else b"m") + chunk

    def _monitor_command(self, text: bytes) -> list[bytes]:
        """gdb's `monitor CMD`: the command goes to emu's monitor (emu.monitor), its output
        back as console (`O`) packets, as QEMU's stub does with its HMP."""
        try:
            line = bytes.fromhex(text.decode("ascii", "replace")).decode("utf-8", "replace")
        except ValueError:
            return [E_INVAL]
        output = self.machine.hmp.execute(line)
        chunks = [output[i : i + 1000] for i in range(0, len(output), 1000)]
        return [b"O" + chunk.encode().hex().encode() for chunk in chunks] + [OK]
