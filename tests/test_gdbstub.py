"""The gdb stub (emu.gdb): gdb itself, and a scripted remote-protocol client, against emu.

Every test runs `python -m emu -gdb tcp::PORT` as gdb users do, on a firmware guest whose ELF
symbols say where to stop: a breakpoint at `guest_main`, continue, registers and memory (the
bytes must be the ELF's), a single step, detach, after which the guest finishes with its usual
output and exit status, on both accelerators, in long mode (hello64), 32-bit protected mode
without paging (hello32) and real mode (the BIOS, then the boot sector at 0x7C00).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from guestenv import ACCELS

from emu.gdb import registers
from emu.gdb.packets import BadPacket, Interrupt, Packet, PacketReader, frame

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "firmware" / "build"
HELLO64, HELLO32, IDLE64, BOOT_HELLO = (BUILD / n for n in ("hello64.elf", "hello32.elf", "idle64.elf",
                                                            "boot-hello.img"))  # fmt: skip
RIP, EFLAGS, CS = registers.NUMBERS["rip"], registers.NUMBERS["eflags"], registers.NUMBERS["cs"]
CR0, EFER = registers.NUMBERS["cr0"], registers.NUMBERS["efer"]


def symbol(image: Path, name: str) -> int:
    with image.open("rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


def elf_bytes(image: Path, address: int, length: int) -> bytes:
    """What the ELF's loadable segments put at `address`."""
    with image.open("rb") as f:
        for segment in ELFFile(f).iter_segments():
            start = segment["p_paddr"]
            if segment["p_type"] == "PT_LOAD" and start <= address < start + segment["p_filesz"]:
                return segment.data()[address - start : address - start + length]
    raise AssertionError(f"{address:#x} is in no segment of {image}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Emu:
    """emu with its gdb stub on a free port (and stopped before the first instruction with -S)."""

    image: Path
    accel: str = "tcg"
    extra: tuple[str, ...] = ()
    paused: bool = True
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        args = ["--accel", self.accel, "-nographic", *(["-S"] if self.paused else []), "-gdb", f"tcp::{self.port}",
                *self.extra, str(self.image)]  # fmt: skip
        self.process = subprocess.Popen([sys.executable, "-m", "emu", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=timeout)
        finally:
            self.process.kill()
        assert "Traceback" not in err, err
        return self.process.returncode, out, err


@pytest.fixture
def emu_runs():
    started: list[Emu] = []
    yield lambda *a, **k: started.append(Emu(*a, **k)) or started[-1]
    for e in started:
        if e.process.poll() is None:
            e.process.kill()
            e.process.communicate()


class Client:
    """A scripted gdb: packets with checksums, `+` for each reply, console (`O`) packets kept."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.reader, self.pending, self.acks, self.console = PacketReader(), [], b"", ""

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self, timeout: float = 20) -> bytes:
        self.sock.settimeout(timeout)
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, Packet):
                    self.sock.sendall(b"+")
                    if event.payload[:1] == b"O" and event.payload != b"OK":
                        self.console += bytes.fromhex(event.payload[1:].decode()).decode()
                        continue
                    return event.payload
                assert not isinstance(event, BadPacket), f"emu sent a bad packet: {event.why}"
                self.acks += b"+" if getattr(event, "ok", False) else b"-"
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("emu closed the connection")
            self.pending += self.reader.feed(data)

    def ask(self, payload: bytes, timeout: float = 20) -> bytes:
        self.send(payload)
        return self.receive(timeout)

    def register(self, number: int) -> int:
        return int.from_bytes(bytes.fromhex(self.ask(b"p%x" % number).decode()), "little")

    def memory(self, address: int, length: int) -> bytes:
        return bytes.fromhex(self.ask(b"m%x,%x" % (address, length)).decode())

    def close(self) -> None:
        self.sock.close()


# --- the wire, without emu ----------------------------------------------------------------------
def test_packets_are_framed_escaped_and_read_back_however_split() -> None:
    payload = b"X100,4:$#}*"
    wire = frame(payload) + b"\x03" + frame(b"g")
    assert wire.startswith(b"$X100,4:}\x04}\x03}]}\x0a#")
    reader, events = PacketReader(), []
    for i in range(len(wire)):  # one byte at a time
        events += reader.feed(wire[i : i + 1])
    assert events == [Packet(payload), Interrupt(), Packet(b"g")]
    assert isinstance(PacketReader().feed(b"$g#00")[0], BadPacket)
    assert isinstance(PacketReader().feed(b"$g#zz")[0], BadPacket)


def test_target_description_matches_the_g_packet() -> None:
    root = ET.fromstring(registers.target_xml())
    assert root.findtext("architecture") == "i386:x86-64"
    regs = root.findall("./feature/reg")
    assert [int(r.get("regnum")) for r in regs] == sorted(int(r.get("regnum")) for r in regs)
    assert sum(int(r.get("bitsize")) for r in regs) // 8 == registers.G_SIZE
    core = [r.get("name") for r in root.findall("./feature[@name='org.gnu.gdb.i386.core']/reg")]
    assert core[:18] == [*registers.GPRS, "rip", "eflags"] and "st7" in core and "fop" in core


# --- gdb itself ---------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
@pytest.mark.parametrize("accel", ACCELS)
def test_gdb_breaks_in_guest_main_steps_and_detaches(accel: str, emu_runs) -> None:
    """The issue's session. The image is an ELF32 holding 64-bit code: gdb reads its symbols,
    and `set architecture` after loading it makes them 64-bit addresses."""
    emu = emu_runs(HELLO64, accel)
    main = symbol(HELLO64, "guest_main")
    gdb = subprocess.run(["gdb", "-batch", "-nx", str(HELLO64), "-ex", "set architecture i386:x86-64",
                          "-ex", f"target remote :{emu.port}", "-ex", "break guest_main", "-ex", "continue",
                          "-ex", "info registers rip", "-ex", "x/4xb $pc", "-ex", "stepi",
                          "-ex", "info registers rip", "-ex", "detach"],
                         check=False, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    status, out, err = emu.finish()
    lines = gdb.stdout.splitlines()
    assert f"Breakpoint 1, {main:#018x} in guest_main ()" in lines, gdb.stdout + gdb.stderr
    rips = [int(line.split()[1], 16) for line in lines if line.startswith("rip ")]
    assert rips[0] == main and rips[1] > main, gdb.stdout  # stepi moved rip (push %rbp: one byte)
    dump = next(line for line in lines if line.startswith(f"{main:#x} <guest_main>:"))
    assert bytes(int(b, 16) for b in dump.split(":")[1].split()) == elf_bytes(HELLO64, main, 4)
    assert "[Inferior 1 (Remote target) detached]" in lines
    assert (status, out.splitlines()[-1]) == (1, "hello: done, exiting with code 0"), err


# --- a scripted client --------------------------------------------------------------------------
@pytest.mark.parametrize("accel", ACCELS)
def test_registers_memory_breakpoints_step_detach(accel: str, emu_runs) -> None:
    emu = emu_runs(HELLO64, accel)
    main, kprintf = symbol(HELLO64, "guest_main"), symbol(HELLO64, "kprintf")
    c = Client(emu.port)
    supported = c.ask(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
    assert b"qXfer:features:read+" in supported and b"PacketSize=" in supported and b"swbreak+;hwbreak+" in supported
    xml = c.ask(b"qXfer:features:read:target.xml:0,ffff")
    assert xml[:1] == b"l" and b"<architecture>i386:x86-64</architecture>" in xml
    for question, answer in [(b"?", b"T05thread:01;"), (b"qAttached", b"1"), (b"qC", b"QC01"),
                             (b"qfThreadInfo", b"m01"), (b"qsThreadInfo", b"l"), (b"Hg0", b"OK"),
                             (b"vCont?", b"vCont;c;C;s;S"), (b"vMustReplyEmpty", b"")]:  # fmt: skip
        assert c.ask(question) == answer, question
    regs = c.ask(b"g")
    assert len(regs) == 2 * registers.G_SIZE
    entry = symbol(HELLO64, "_start")
    assert c.register(RIP) == entry and c.register(CS) == 0x10 and c.register(CR0) & 1  # the multiboot entry
    # memory by linear address: the ELF's bytes; M and X (binary, escaped bytes) written and read back
    assert c.memory(main, 16) == elf_bytes(HELLO64, main, 16)
    scratch = 0x380000
    assert c.ask(b"M%x,4:deadbeef" % scratch) == b"OK" and c.memory(scratch, 4) == bytes.fromhex("deadbeef")
    assert c.ask(b"X%x,4:" % scratch + b"$#}*") == b"OK" and c.memory(scratch, 4) == b"$#}*"
    # a software breakpoint in guest_main and a hardware one in kprintf
    assert c.ask(b"Z0,%x,1" % main) == b"OK" and c.ask(b"Z1,%x,1" % kprintf) == b"OK"
    assert c.ask(b"c") == b"T05swbreak:;thread:01;" and c.register(RIP) == main
    assert c.ask(b"c") == b"T05hwbreak:;thread:01;" and c.register(RIP) == kprintf  # stepped over main's first
    assert c.register(EFER) & 0x400  # long mode active
    assert c.ask(b"s") == b"T05thread:01;" and c.register(RIP) == kprintf + len_of_first_instruction(kprintf)
    assert c.ask(b"z1,%x,1" % kprintf) == b"OK" and c.ask(b"z0,%x,1" % main) == b"OK"
    # a register written and read back, then put back as it was
    r15 = registers.NUMBERS["r15"]
    was = c.ask(b"p%x" % r15)
    assert c.ask(b"P%x=%s" % (r15, (0x1122334455667788).to_bytes(8, "little").hex().encode())) == b"OK"
    assert c.register(r15) == 0x1122334455667788
    assert c.ask(b"P%x=%s" % (r15, was)) == b"OK" and c.ask(b"p%x" % r15) == was
    assert c.ask(b"qRcmd," + b"info status".hex().encode()) == b"OK" and "paused (debug)" in c.console
    assert c.ask(b"D") == b"OK"
    status, out, err = emu.finish()
    assert (status, out.splitlines()[-1]) == (1, "hello: done, exiting with code 0"), err
    assert err == ""


def len_of_first_instruction(address: int) -> int:
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    insn = next(Cs(CS_ARCH_X86, CS_MODE_64).disasm(elf_bytes(HELLO64, address, 15), address))
    return insn.size


@pytest.mark.parametrize("accel", ACCELS)
def test_breakpoint_limits(accel: str, emu_runs) -> None:
    """Four hardware breakpoints, as DR0-DR3; on kvm every breakpoint is one of those four."""
    emu = emu_runs(HELLO64, accel)
    c = Client(emu.port)
    for i in range(4):
        assert c.ask(b"Z1,%x,1" % (0x100100 + i)) == b"OK"
    assert c.ask(b"Z1,100200,1") == b"E28"
    assert c.ask(b"Z0,100300,1") == (b"E28" if accel == "kvm" else b"OK")
    assert c.ask(b"Z2,100400,4") == b""  # watchpoints: not supported
    c.send(b"k")
    status, _out, err = emu.finish()
    assert status == 0 and err.splitlines()[-1] == "emu: Terminated via GDBstub"
    assert "at most 4 hardware breakpoints" in err
    if accel == "kvm":
        assert "at most 4 breakpoints" in err and "KVM_GUESTDBG_USE_HW_BP" in err


@pytest.mark.parametrize("accel", ACCELS)
def test_ctrl_c_and_the_monitor_stop_a_running_guest(accel: str, emu_runs, tmp_path: Path) -> None:
    """idle64 busy-waits for 30 s: gdb's connection stops it, Ctrl-C stops it again after a
    continue (T02), and so does the monitor's `stop` while gdb waits; `k` ends emu."""
    monitor = tmp_path / "m.sock"
    emu = emu_runs(IDLE64, accel, ("--append", "seconds=30 spin", "-monitor", f"unix:{monitor},server=on,wait=off"),
                   paused=False)  # fmt: skip
    c = Client(emu.port)
    assert c.ask(b"?") == b"T05thread:01;"
    c.send(b"c")
    time.sleep(0.5)
    c.sock.sendall(b"\x03")
    assert c.receive(timeout=5) == b"T02thread:01;"
    c.send(b"vCont;c:1")
    time.sleep(0.3)
    with socket.socket(socket.AF_UNIX) as m:
        m.connect(str(monitor))
        m.sendall(b"stop\n")
        assert c.receive(timeout=5) == b"T02thread:01;"
    c.sock.sendall(b"\x03")  # stopped already: no reply
    assert c.ask(b"?") == b"T05thread:01;"
    c.send(b"k")
    status, _out, err = emu.finish()
    assert (status, err.strip()) == (0, "emu: Terminated via GDBstub")


@pytest.mark.parametrize("accel", ACCELS)
def test_a_step_over_hlt_leaves_the_guest_halted_until_its_interrupt(accel: str, emu_runs) -> None:
    """idle64 sleeps in `sti; hlt; cli` between PIT ticks. Stepping the hlt moves past it, and
    the guest goes on from there once the tick comes (on kvm_pvm a single-stepped hlt used to
    come back later as a stale halt exit with IF=0, which ended the run)."""
    main = symbol(IDLE64, "guest_main")
    hlt = main + elf_bytes(IDLE64, main, 512).index(b"\xfb\xf4\xfa") + 1  # sti; hlt; cli
    emu = emu_runs(IDLE64, accel, ("--append", "seconds=1"))
    c = Client(emu.port)
    assert c.ask(b"Z0,%x,1" % hlt) == b"OK" and c.ask(b"c") == b"T05thread:01;" and c.register(RIP) == hlt
    assert c.ask(b"z0,%x,1" % hlt) == b"OK"
    assert c.ask(b"s") == b"T05thread:01;" and c.register(RIP) == hlt + 1
    assert c.ask(b"c", timeout=30) == b"W01"
    status, out, err = emu.finish()
    assert (status, out.strip()) == (1, "idle: 100 ticks at 100 Hz, asleep in hlt between them"), err


# --- 16 and 32 bits -----------------------------------------------------------------------------
@pytest.mark.parametrize("accel", ACCELS)
def test_real_mode_breakpoint_at_the_boot_sector(accel: str, emu_runs) -> None:
    """Through the BIOS to the boot sector at 0000:7C00: breakpoints are linear, $pc is IP."""
    emu = emu_runs(BOOT_HELLO, accel)
    c = Client(emu.port)
    assert (c.register(RIP), c.register(CS)) == (0xFFF0, 0xF000)  # the reset vector
    assert c.ask(b"Z0,7c00,1") == b"OK" and c.ask(b"c") == b"T05thread:01;"
    assert (c.register(RIP), c.register(CS), c.register(CR0) & 1) == (0x7C00, 0, 0)
    assert c.memory(0x7C00, 16) == BOOT_HELLO.read_bytes()[:16]
    assert c.ask(b"s") == b"T05thread:01;" and c.register(RIP) == 0x7C01  # cli
    assert c.ask(b"D") == b"OK"
    status, out, err = emu.finish()
    assert status == 1 and "hello: done" in out, err


@pytest.mark.parametrize("accel", ACCELS)
def test_protected_mode_32bit_breakpoint(accel: str, emu_runs) -> None:
    emu = emu_runs(HELLO32, accel)
    main = symbol(HELLO32, "guest_main")
    c = Client(emu.port)
    assert c.ask(b"Z0,%x,1" % main) == b"OK" and c.ask(b"c") == b"T05thread:01;"
    regs = bytes.fromhex(c.ask(b"g").decode().replace("x", "0"))
    rip = int.from_bytes(regs[16 * 8 : 17 * 8], "little")
    assert rip == main and c.register(CR0) & 1 and not c.register(EFER) & 0x400
    assert all(int.from_bytes(regs[i * 8 : i * 8 + 8], "little") < 1 << 32 for i in range(17))  # upper halves 0
    assert c.memory(main, 8) == elf_bytes(HELLO32, main, 8)
    assert c.ask(b"s") == b"T05thread:01;" and c.register(RIP) > main
    assert c.ask(b"D") == b"OK"
    status, out, err = emu.finish()
    assert (status, out.splitlines()[-1]) == (1, "hello: done, exiting with code 0"), err


# --- bad input ----------------------------------------------------------------------------------
def test_bad_packets_get_nak_or_errors_and_never_break_emu(emu_runs) -> None:
    emu = emu_runs(HELLO64)
    main = symbol(HELLO64, "guest_main")
    c = Client(emu.port)
    c.sock.sendall(b"$g#00")  # bad checksum: `-`, and nothing else
    c.sock.sendall(b"garbage between packets")
    assert c.ask(b"?") == b"T05thread:01;"
    assert b"-" in c.acks
    bad = [b"mzz,4", b"m100000", b"M100000,2:zz", b"M100000,4:00", b"X100000,2:a", b"p999", b"pzz",
           b"P10", b"P10=12", b"Gabcd", b"Z0,zz,1", b"c1x", b"qXfer:features:read:target.xml:0", b"vCont;t:5"]  # fmt: skip
    for packet in bad:
        assert c.ask(packet)[:1] in (b"E", b""), packet
    assert c.ask(b"\x00\xff unknown") == b""
    assert c.ask(b"Z0,%x,1" % main) == b"OK" and c.ask(b"c") == b"T05thread:01;"
    assert c.ask(b"m800000000000,4") == b"E14"  # not canonical
    assert c.ask(b"M800000000000,1:00") == b"E14"
    assert c.ask(b"P%x=0800" % CS) == b"E22"  # a selector outside real mode: not loaded
    c.sock.sendall(b"$" + b"A" * 40000)  # far longer than PacketSize, never finished
    assert c.ask(b"?") == b"T05thread:01;"
    c.close()  # a dropped connection: breakpoints go, the guest runs to its end
    status, out, err = emu.finish()
    assert (status, out.splitlines()[-1]) == (1, "hello: done, exiting with code 0"), err


@pytest.mark.parametrize(("spec", "needle"), [("udp::1234", "listens on TCP"), ("tcp::99999", "listens on TCP"),
                                              ("tcp::1234,telnet", "does not know telnet")])  # fmt: skip
def test_bad_gdb_options(spec: str, needle: str) -> None:
    result = subprocess.run([sys.executable, "-m", "emu", "-gdb", spec, str(HELLO64)], capture_output=True, text=True,
                            check=False, timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_port_in_use_is_one_line_and_status_2() -> None:
    with socket.create_server(("", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "emu", "-gdb", f"tcp::{port}", str(HELLO64)],
                                capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
                                stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"emu: -gdb tcp::{port}: cannot listen: Address already in use"
