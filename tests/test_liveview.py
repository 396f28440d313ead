"""Live views (emu.liveview): --stats live, the CPU time split from /proc, `emu top` through the
monitor socket, and the PNG plot. Real guests on real accelerators; nothing here is mocked.

Guests: firmware/build/irqs64.elf (1000 Hz PIT ticks, halting between them), idle64.elf (a
second asleep in hlt) and two guests made here that never end by themselves: a `jmp $` spin
and an `out 0x80` loop (one port IO exit per iteration). They end through the monitor's
`quit` or Machine.request_exit, which stop a tcg run at the next block (SIGTERM would wait for
the run to end, and with no timer armed it never does).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from guestenv import ACCELS, KVM_OK, KVM_WHY

from emu.liveview import Sampler, snapshot, write_plot
from emu.liveview.cputime import CLK_TCK, HOST_COLUMNS, cpu_times, host_cpu, parse_stat, process_times, thread_times
from emu.liveview.plot import INTERRUPT_COLOUR, SERIES_COLOURS, TLB_COLOUR
from emu.liveview.rates import rates
from emu.loader.multiboot_image import build_multiboot_elf
from emu.machine import Machine, MachineConfig
from emu.monitor import Monitor

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware" / "build"
TICK_S = 1 / CLK_TCK
SPIN = bytes.fromhex("ebfe")  # jmp $
OUT80_LOOP = bytes.fromhex("e680ebfc")  # out 0x80, al; jmp back


def emu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True, cwd=ROOT,
                          stdin=subprocess.DEVNULL, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def guests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("guests")
    made = {}
    for name, code in (("spin", SPIN), ("out80", OUT80_LOOP)):
        made[name] = folder / f"{name}.elf"
        made[name].write_bytes(build_multiboot_elf(code))
    return made


# --- /proc ------------------------------------------------------------------------------------
def test_stat_line_with_parentheses_in_the_name() -> None:
    fields = ["S"] + ["0"] * 40  # fields 3..43
    fields[14 - 3], fields[15 - 3], fields[43 - 3] = "250", "30", "200"
    times = parse_stat("4242 (a (b)) c) " + " ".join(fields))
    assert times.name == "a (b)) c"
    assert (times.user_ns, times.system_ns, times.guest_ns) == (250 * 10**9 // CLK_TCK, 30 * 10**9 // CLK_TCK,
                                                                200 * 10**9 // CLK_TCK)  # fmt: skip


def test_process_times_agree_with_os_times() -> None:
    end = time.process_time() + 0.15
    while time.process_time() < end:  # some CPU time of our own
        pass
    mine, theirs = process_times(), os.times()
    assert abs(mine.user_ns / 1e9 - theirs.user) <= 2 * TICK_S
    assert abs(mine.system_ns / 1e9 - theirs.system) <= 2 * TICK_S
    assert 0 <= mine.guest_ns <= mine.user_ns  # guest time is part of user time (proc_pid_stat(5)); in-process
    # kvm tests earlier in the session may have given this process some


def test_thread_times_follow_one_thread() -> None:
    """A busy thread's /proc/self/task/TID/stat against its own CPU clock (CLOCK_THREAD_CPUTIME_ID)."""
    result = {}

    def burn() -> None:
        result["tid"] = threading.get_native_id()
        start = time.thread_time()
        while time.thread_time() - start < 0.3:
            pass
        proc = thread_times(result["tid"])
        result["own"], result["proc"] = time.thread_time(), (proc.user_ns + proc.system_ns) / 1e9
        result["named"] = cpu_times(None, {result["tid"]: "burner"})["threads"][str(result["tid"])]["name"]

    worker = threading.Thread(target=burn)
    worker.start()
    worker.join()
    assert abs(result["own"] - result["proc"]) <= 3 * TICK_S, result
    assert result["named"] == "burner"


def test_host_cpu_line() -> None:
    host = host_cpu()
    assert set(host) == set(HOST_COLUMNS) and host["idle"] > 0 and host["steal"] >= 0
    assert host["guest"] <= host["user"]  # the kernel counts guest time in user time too
    with pytest.raises(ValueError):
        host_cpu("intr 1 2 3\n")


# --- --stats live and the plot ------------------------------------------------------------------
def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Decode emu's PNG (PNG spec §5, §11.2): every chunk's CRC, IHDR, filter-0 scanlines."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, []
    while offset < len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    assert all(raw[y * stride] == 0 for y in range(height))  # filter type 0 on every row
    return width, height, b"".join(raw[y * stride + 1 : (y + 1) * stride] for y in range(height))


def colour_counts(pixels: bytes) -> Counter:
    return Counter(tuple(pixels[i : i + 3]) for i in range(0, len(pixels), 3))


def live_blocks(stderr: str) -> list[str]:
    return re.findall(r"^live .*?(?=^live |^emu statistics)", stderr, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("accel", ACCELS)
def test_stats_live_prints_rates_and_plot_shows_them(tmp_path: Path, accel: str) -> None:
    plot = tmp_path / "run.png"
    result = emu("--accel", accel, "--stats", "live", "--stats-interval", "0.25", "--plot", str(plot),
                 str(FIRMWARE / "irqs64.elf"))  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "irqs64: all checks passed" in result.stdout  # the guest's COM1 stays on stdout
    blocks = live_blocks(result.stderr)
    assert len(blocks) >= 5, result.stderr  # about 2 s of run at 0.25 s
    assert "emu statistics" in result.stderr  # the table at exit, as with --stats
    for block in blocks:
        assert "exits/s:" in block and "cpu %: guest" in block and "host steal" in block
    ticking = [b for b in blocks if re.search(r"\bhlt [\d.]+k?\b", b) and re.search(r"\binterrupt [\d.]+k?\b", b)]
    assert len(ticking) >= 3, result.stderr  # the timer test halts between PIT interrupts
    rates_seen = [float(m) for b in blocks for m in re.findall(r"interrupts ([\d.]+)/s", b)]
    assert max(rates_seen) > 200, rates_seen  # the PIT runs at 1000 Hz in that test
    if accel == "tcg":
        assert all("instructions " in b and "tlb fills " in b for b in blocks)
    else:
        assert not any("instructions " in b for b in blocks)
    width, height, pixels = png_pixels(plot.read_bytes())
    assert (width, height) == (900, 660)
    colours = colour_counts(pixels)
    assert colours[INTERRUPT_COLOUR] > 200  # the interrupts' line (no legend box)
    assert colours[SERIES_COLOURS[0]] > 200  # the busiest exit's line, beyond its legend box (84 pixels)
    if accel == "tcg":
        assert colours[TLB_COLOUR] > 200  # the TLB fills' line
    else:
        assert colours[TLB_COLOUR] == 0  # KVM fills its TLB unseen


def test_stats_alone_is_the_table_and_the_word_after_it_may_be_the_image() -> None:
    result = emu("--stats", str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 1 and "emu statistics (tcg)" in result.stderr and "exits/s:" not in result.stderr
    result = emu("--stats", "often", str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--stats often" in result.stderr
    result = emu("--stats", "live", "--stats-interval", "0", str(FIRMWARE / "hello64.elf"))
    assert result.returncode == 2 and result.stderr.startswith("emu: --stats-interval 0")


def test_plot_of_too_short_a_history_is_still_a_png(tmp_path: Path) -> None:
    machine = Machine(MachineConfig(kernel=FIRMWARE / "hello64.elf"))
    try:
        write_plot([snapshot(machine)], tmp_path / "one.png")
    finally:
        machine.close()
    assert png_pixels((tmp_path / "one.png").read_bytes())[:2] == (900, 660)


# --- time accounting on real runs ----------------------------------------------------------------
def whole_run(history: list[dict]) -> dict:
    return rates(history[0], history[-1])


@pytest.mark.parametrize("accel", ACCELS)
def test_halting_guest_is_mostly_idle(accel: str, capfd) -> None:
    machine = Machine(MachineConfig(kernel=FIRMWARE / "idle64.elf", accel=accel, sample_interval=0.2))
    try:
        assert machine.run() == 1
        history = machine.sampler.samples()
    finally:
        machine.close()
    assert "idle: 100 ticks at 100 Hz" in capfd.readouterr().out
    split = whole_run(history)["time"]
    assert len(history) >= 5
    assert split["idle"] > 70 and split["guest"] < 15, split
    assert split["idle"] > split["user"] + split["sys"], split
    assert history[-1]["exits"]["hlt"] >= 90 and history[-1]["interrupts"] >= 90


def test_busy_guest_is_mostly_guest_and_seen_while_it_runs(guests: dict[str, Path]) -> None:
    """tcg: a `jmp $` with no timer armed stays in one emu_start until the end: the samples see
    its guest time and instructions grow anyway (the run in progress is counted)."""
    machine = Machine(MachineConfig(kernel=guests["spin"], accel="tcg", count_instructions=True, sample_interval=0.2))
    try:
        threading.Timer(1.2, machine.request_exit, [0]).start()
        assert machine.run() == 0
        history = machine.sampler.samples()
    finally:
        machine.close()
    middle = history[1:-1]
    assert len(middle) >= 3
    assert all(b["guest_ns"] > a["guest_ns"] for a, b in itertools.pairwise(middle))
    assert all(b["instructions"] > a["instructions"] for a, b in itertools.pairwise(middle))
    split = whole_run(history)["time"]
    assert split["guest"] > 60 and split["guest"] > 3 * (split["user"] + split["sys"]), split
    assert split["idle"] == 0
    # the kernel's account of the vCPU thread: busy too, as far as this (shared, 2-CPU) host let it run
    assert split["vcpu_thread"] > 20, split


@pytest.mark.kvm
@pytest.mark.skipif(not KVM_OK, reason=KVM_WHY)
def test_kvm_guest_time_from_proc_moves() -> None:
    """/proc's guest_time of the thread in KVM_RUN, for 64-bit ring-3 code in a loop: KVM runs it
    in guest mode (on this project's kvm_pvm hosts CPL0 code is emulated by the host kernel and
    shows as system time instead; ring 3 runs natively there too). utime includes it (proc(5))."""
    from guestenv import RecordingIo

    from emu.accel import MemoryRegion, Segment
    from emu.difftest.environment import USER_CS, USER_DS, long_mode_state
    from emu.kvm_accel import KvmAccelerator
    from emu.memory import GuestMemory

    memory = GuestMemory(4 << 20)
    accel = KvmAccelerator()
    try:
        accel.add_memory_region(MemoryRegion(0, memory.size, memory.host_address, name="ram"))
        vcpu = accel.create_vcpu(0, RecordingIo())
        state = long_mode_state(memory)
        memory.write(state.rip, SPIN)
        state.cs = Segment(selector=USER_CS, base=0, limit=0xFFFFFFFF, type=0xB, l=1, g=1, dpl=3)
        state.ss = state.ds = state.es = Segment(selector=USER_DS, base=0, limit=0xFFFFFFFF, type=3, db=1, g=1,
                                                 dpl=3)  # fmt: skip
        vcpu.set_state(state)
        tid = threading.get_native_id()
        before = thread_times(tid)
        threading.Timer(0.6, vcpu.kick).start()
        vcpu.run()
        after = thread_times(tid)
    finally:
        accel.close()
        memory.close()
    guest = (after.guest_ns - before.guest_ns) / 1e9
    assert guest >= 0.3, (before, after)
    assert (after.user_ns - before.user_ns) / 1e9 >= guest - 2 * TICK_S


# --- emu top -------------------------------------------------------------------------------------
def start_emu_with_monitor(tmp_path: Path, accel: str, image: Path) -> tuple[subprocess.Popen, Path]:
    sock = tmp_path / "mon.sock"
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", accel, "-monitor",
                             f"unix:{sock},server=on,wait=off", str(image)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while not sock.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no monitor socket"
        time.sleep(0.05)
    return proc, sock


def monitor_quit(sock: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(sock))
        while not client.recv(4096).endswith(b"(emu) "):
            pass
        client.sendall(b"quit\n")
        while client.recv(4096):
            pass


@pytest.mark.parametrize("accel", ACCELS)
def test_top_batch_reads_a_running_emu(tmp_path: Path, guests: dict[str, Path], accel: str) -> None:
    proc, sock = start_emu_with_monitor(tmp_path, accel, guests["out80"])
    try:
        result = emu("top", "-b", "-n", "2", "-d", "0.3", f"unix:{sock}", timeout=30)
        plain = emu("top", "-b", "-n", "1", "-d", "0.2", str(sock), timeout=30)  # a plain path too
        monitor_quit(sock)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.communicate()
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.strip().split("\n\n")
    assert len(blocks) == 2 and all(b.startswith(f"emu top - {accel}, pid {proc.pid}") for b in blocks)
    for block in blocks:
        io = re.search(r"^ io\s+(\d+)\s+[\d.]+\s+(\S+)$", block, flags=re.MULTILINE)
        assert io and int(io.group(1)) > 0 and io.group(2) not in ("0", "-"), block  # io exits, per second
        interval = float(re.search(r"interval ([\d.]+) s", block).group(1))
        assert "cpu %: guest" in block and 0.29 <= interval < 3, block  # -d 0.3, and a monitor reply's delay
    assert "\x1b[" not in result.stdout  # batch: no terminal control sequences
    assert plain.returncode == 0 and plain.stdout.startswith(f"emu top - {accel}"), plain.stderr


def test_top_errors_are_one_line(tmp_path: Path) -> None:
    missing = emu("top", f"unix:{tmp_path / 'absent.sock'}")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no such socket" in missing.stderr
    bad = emu("top", "-n", "0", "x.sock")
    assert bad.returncode == 2 and bad.stderr.startswith("emu: top: -n 0")
    # a monitor that is not emu's: QEMU's banner and prompt
    path = tmp_path / "qemu.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        client, _ = server.accept()
        client.sendall(b"QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ")
        client.recv(100)
        client.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        other = emu("top", "-b", "-n", "1", str(path), timeout=20)
    finally:
        server.close()
    assert other.returncode == 1 and other.stderr.count("\n") == 1, other.stderr
    assert "not an emu monitor" in other.stderr and "QEMU 7.2.0" in other.stderr


def test_info_stats_json_is_one_line_of_snapshot() -> None:
    machine = Machine(MachineConfig(kernel=FIRMWARE / "hello64.elf"))
    try:
        text = Monitor(machine).execute("info stats json")
        usage = Monitor(machine).execute("info stats")
    finally:
        machine.close()
    assert text.endswith("\n") and text.count("\n") == 1
    data = json.loads(text)
    assert {"t_ns", "exits", "instructions", "tlb", "interrupts", "guest_ns", "idle_ns", "cpu"} <= set(data)
    assert data["accel"] == "tcg" and data["pid"] == os.getpid() and data["cpu"]["clk_tck"] == CLK_TCK
    assert usage.startswith("emu statistics (tcg)\n") and "exit reason" in usage  # the --stats table


def test_sampler_keeps_a_long_run_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_HISTORY samples every other one goes: the span stays, the resolution halves."""
    import emu.liveview.sampler as sampler_module

    monkeypatch.setattr(sampler_module, "MAX_HISTORY", 8)
    machine = Machine(MachineConfig(kernel=FIRMWARE / "hello64.elf"))
    try:
        sampler = Sampler(machine, interval=0.01)
        for _ in range(20):
            sampler._sample()
        first = sampler.history[0]["t_ns"]
    finally:
        machine.close()
    assert 4 <= len(sampler.history) <= 9
    assert first == min(s["t_ns"] for s in sampler.history)
    assert [s["t_ns"] for s in sampler.history] == sorted(s["t_ns"] for s in sampler.history)
