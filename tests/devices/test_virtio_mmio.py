"""virtio-mmio version 2 (emu/devices/virtio/mmio.py): the register window, a driver's init
sequence and one request, the level interrupt and its ACK, and the kernel parameter that
announces the device to Linux."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import ACCELS, requires_kvm

from emu.devices.virtio.device import ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK
from emu.devices.virtio.queue import DESC_F_WRITE
from emu.machine import MMIO_BASE, Machine, MachineConfig

from .virtio_driver import AVAIL, BUFFER, DESC, USED

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "firmware" / "build" / "hello64.elf"


@pytest.fixture
def machine():
    m = Machine(MachineConfig(kernel=HELLO, devices=["virtio-rng-device"]))
    yield m
    m.close()


def test_identity_and_a_request_with_its_interrupt(machine: Machine) -> None:
    bus, mem = machine.buses.mmio, machine.memory

    def reg(offset: int, value: int | None = None) -> int:
        if value is not None:
            bus.write(MMIO_BASE + offset, 4, value)
        return bus.read(MMIO_BASE + offset, 4)

    assert (reg(0x000), reg(0x004), reg(0x008), reg(0x00C)) == (0x74726976, 2, 4, 0x554D4551)
    reg(0x070, 0)
    reg(0x070, ACKNOWLEDGE | DRIVER)
    reg(0x014, 1)
    assert reg(0x010) & 1  # VIRTIO_F_VERSION_1 (feature bit 32)
    reg(0x024, 1)
    reg(0x020, 1)
    reg(0x070, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert reg(0x070) & FEATURES_OK
    reg(0x030, 0)
    assert reg(0x034) == 256
    reg(0x038, 8)
    for offset, address in ((0x080, DESC), (0x090, AVAIL), (0x0A0, USED)):
        reg(offset, address)
        reg(offset + 4, 0)
    mem.write(DESC, bytes(128))
    mem.write(AVAIL, bytes(22))
    mem.write(USED, bytes(70))
    reg(0x044, 1)
    assert reg(0x044) == 1
    reg(0x070, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    mem.write(DESC, struct.pack("<QIHH", BUFFER, 32, DESC_F_WRITE, 0))
    mem.write(AVAIL, struct.pack("<HHH", 0, 1, 0))
    reg(0x050, 0)  # QueueNotify
    assert struct.unpack("<2xHII", mem.read(USED, 12)) == (1, 0, 32)
    assert reg(0x060) == 1 and machine.pic.slave.irr == 0 and machine.pic.master.irr & (1 << 5)  # IRQ 5 held
    reg(0x064, 1)  # InterruptACK
    assert reg(0x060) == 0


def test_the_device_is_announced_on_the_kernel_command_line(capfd) -> None:
    result = subprocess.run([sys.executable, "-m", "emu", "-device", "virtio-rng-device", "-device",
                             "virtio-rng-device", "--append", "quiet", str(HELLO)], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1
    assert ('command line arguments: "quiet virtio_mmio.device=512@0xfeb00000:5 '
            'virtio_mmio.device=512@0xfeb01000:9"') in result.stdout


def test_a_closed_stdout_ends_the_run_without_a_traceback() -> None:
    """`emu IMAGE | head -1`: the console's reader is gone; emu ends with 141 (128 + SIGPIPE)."""
    proc = subprocess.run(f"{sys.executable} -m emu {ROOT / 'firmware' / 'build' / 'irqs64.elf'} | head -1; "
                          "exit ${PIPESTATUS[0]}",
                          shell=True, capture_output=True, text=True, timeout=60, executable="/bin/bash",
                          check=False)  # fmt: skip
    assert proc.stdout == "irqs64: long mode\n" and "Traceback" not in proc.stderr
    assert proc.returncode == 141


def _virtio64(accel: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "-device", "virtio-rng-pci", "-device",
                           "virtio-rng-device", str(ROOT / "firmware" / "build" / "virtio64.elf")],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("accel", ACCELS)
def test_the_virtio64_guest_drives_an_entropy_device_over_pci_and_one_over_mmio(accel: str) -> None:
    """It finds the MMIO one from its kernel command line, as Linux does, maps the window (near
    4 GiB) and runs the same checks through the MMIO registers, with IRQ 5 edge-triggered."""
    result = _virtio64(accel)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "mmio 0xfeb00000: magic ok, version 2, device type 4 (entropy), IRQ 5\n" in result.stdout
    assert result.stdout.count("request of 64 bytes: used idx 1, id 0, len 64, interrupt yes, bytes varied") == 2
    assert result.stdout.count("a looping chain: status DEVICE_NEEDS_RESET, configuration interrupt yes") == 2
    assert result.stdout.endswith("virtio: all checks passed\n")


@requires_kvm
@pytest.mark.kvm
def test_tcg_and_kvm_print_the_same_transcript() -> None:
    assert _virtio64("tcg").stdout == _virtio64("kvm").stdout


def _all_mmio(accel: str) -> subprocess.CompletedProcess:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "-device", "virtio-balloon-device",
                           "-netdev", f"socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{port}",
                           "-device", "virtio-net-device,netdev=n0", "-device", "virtio-rng-device",
                           str(ROOT / "firmware" / "build" / "virtio64.elf")],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


@pytest.mark.parametrize("accel", ACCELS)
def test_balloon_net_and_rng_all_over_mmio(accel: str) -> None:
    """Every device type the guest knows, on virtio-mmio only: no PCI function, three windows."""
    result = _all_mmio(accel)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "00:0" not in result.stdout  # no PCI device
    for line in ("mmio 0xfeb00000: magic ok, version 2, device type 5 (memory balloon), IRQ 5",
                 "mmio 0xfeb01000: magic ok, version 2, device type 1 (network), IRQ 9",
                 "mmio 0xfeb02000: magic ok, version 2, device type 4 (entropy), IRQ 10",
                 "balloon: deflated 4 pages (used len 0, interrupt yes), actual 0",
                 "net: sent 60 bytes, received 60 bytes, frame matches", "virtio: all checks passed"):  # fmt: skip
        assert line + "\n" in result.stdout, result.stdout
