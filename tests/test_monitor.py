"""emu's human monitor (emu.monitor): QEMU's HMP words on a Unix socket.

The interpreter is tested on a Machine that is built but not run: the balloon target it
computes is the one QEMU computes. The socket is tested on a running guest: boot-keys waits in
`hlt` for a key that never comes, so it runs until the monitor's `quit` ends emu with 0. The
Linux test (tests/linux/test_linux_balloon.py) shows a real driver inflating on request."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.machine import Machine, MachineConfig
from emu.monitor import BANNER, PROMPT, Monitor, parse_monitor

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "firmware" / "build" / "boot-keys.img"
HELLO = ROOT / "firmware" / "build" / "hello64.elf"


@pytest.mark.parametrize("spec", ["unix:/tmp/m.sock,server=on,wait=off", "unix:/tmp/m.sock,server,nowait",
                                  "unix:/tmp/m.sock,wait=off,server=on"])  # fmt: skip
def test_both_spellings_of_a_listening_socket(spec: str) -> None:
    assert parse_monitor(spec) == "/tmp/m.sock"


@pytest.mark.parametrize(("spec", "needle"), [
    ("stdio", "the terminal is COM1's"),
    ("unix:/tmp/m.sock", "server=on"),
    ("unix:/tmp/m.sock,server=on", "wait=off"),
    ("unix:/tmp/m.sock,server=on,wait=off,telnet=on", "does not know telnet"),
    ("tcp:localhost:4444,server,nowait", "Unix socket"),
])  # fmt: skip
def test_other_monitors_are_refused(spec: str, needle: str) -> None:
    with pytest.raises(EmuError, match=needle):
        parse_monitor(spec)


def test_none_is_no_monitor() -> None:
    assert parse_monitor("none") is None


@pytest.fixture
def machine():
    m = Machine(MachineConfig(kernel=HELLO, memory_mib=128, devices=["virtio-balloon-pci"]))
    yield m
    m.close()


def test_balloon_target_is_ram_minus_the_size_asked_for(machine: Machine) -> None:
    monitor, balloon = Monitor(machine), machine.virtio[0].device
    assert monitor.execute("balloon 96") == ""
    assert balloon.num_pages == 32 * 256  # (128 MiB - 96 MiB) / 4 KiB, as virtio_balloon_to_target
    assert monitor.execute("balloon 0x40") == "" and balloon.num_pages == 64 * 256
    assert monitor.execute("balloon 4096") == "" and balloon.num_pages == 0  # capped at all of RAM
    assert monitor.execute("balloon 0") == "Error: Parameter 'target' expects a size\n"
    assert monitor.execute("info balloon") == "balloon: actual=128\n"  # no driver: an empty balloon
    balloon.actual = 40 * 256  # the driver reports 40 MiB in the balloon
    assert monitor.execute("info balloon") == "balloon: actual=88\n"


def test_errors_in_qemus_words(machine: Machine) -> None:
    monitor = Monitor(machine)
    assert monitor.execute("frobnicate 3") == "unknown command: 'frobnicate'\n"
    assert monitor.execute("info frob") == "unknown command: 'info frob'\n"
    assert monitor.execute("balloon") == 'unexpected end of expression\nTry "help balloon" for more information\n'
    assert monitor.execute("balloon -5").startswith("enter a positive value\n")
    assert monitor.execute("") == ""
    assert "balloon target -- request VM to change its memory allocation (in MB)" in monitor.execute("help")
    assert monitor.execute("?") == monitor.execute("help")
    assert monitor.execute("info") == ("info balloon -- show balloon information\n"
                                       "info status -- show the current VM status (running|paused)\n"
                                       "info stats json -- show the counters of emu.liveview.snapshot as one line of JSON\n")  # fmt: skip


def test_no_balloon_device(tmp_path: Path) -> None:
    m = Machine(MachineConfig(kernel=HELLO))
    try:
        monitor = Monitor(m)
        assert monitor.execute("info balloon") == "Error: No balloon device has been activated\n"
        assert monitor.execute("balloon 64") == "Error: No balloon device has been activated\n"
    finally:
        m.close()


class MonitorClient:
    def __init__(self, path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < deadline, f"no monitor socket at {path}"
            time.sleep(0.05)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(timeout)
        self.greeting = self._until_prompt()

    def _until_prompt(self) -> str:
        data = b""
        while not data.endswith(PROMPT.encode()):
            chunk = self.sock.recv(4096)
            assert chunk, f"the monitor hung up; so far: {data!r}"
            data += chunk
        return data.decode()[: -len(PROMPT)]

    def command(self, line: str) -> str:
        """One command; its output, with QEMU's CRLF line ends."""
        self.sock.sendall(line.encode() + b"\n")
        return self._until_prompt()


def _emu_with_monitor(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emu", "-monitor", f"unix:{path},server=on,wait=off", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip


def test_a_running_guest_answers_on_the_socket_and_quit_ends_emu_with_0(tmp_path: Path) -> None:
    path = tmp_path / "mon.sock"
    proc = _emu_with_monitor(path, str(KEYS))
    try:
        client = MonitorClient(path)
        assert client.greeting == f"{BANNER}\r\n"
        assert client.command("info status") == "VM status: running\r\n"
        assert client.command("info balloon") == "Error: No balloon device has been activated\r\n"
        assert client.command("foo") == "unknown command: 'foo'\r\n"
        assert proc.poll() is None  # the guest still waits for its key
        client.sock.sendall(b"quit\n")
        assert client.sock.recv(100) == b""  # the monitor hangs up, emu ends
        assert proc.wait(timeout=30) == 0
        assert proc.stderr.read() == b""
        assert not path.exists()  # the socket is removed at exit
    finally:
        proc.kill()
        proc.wait()


def test_the_monitor_takes_a_new_client_after_one_leaves(tmp_path: Path) -> None:
    path = tmp_path / "mon.sock"
    proc = _emu_with_monitor(path, "-device", "virtio-balloon-pci", str(KEYS))
    try:
        first = MonitorClient(path)
        assert first.command("info balloon") == "balloon: actual=128\r\n"  # no driver: nothing inflated
        first.sock.close()
        second = MonitorClient(path)
        assert second.command("balloon 100") == ""
        second.sock.sendall(b"q\n")  # quit's alias
        assert second.sock.recv(100) == b""
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_monitor_stdio_is_one_line_error() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "emu", "-monitor", "stdio", str(KEYS)], check=False,
                            capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "-monitor stdio" in result.stderr
