"""How a queue notification reaches the device's thread, counted per path (`--stats`):
tcg's IO hook and kvm's exits both cost an exit to emu per kick; kvm's ioeventfd costs none,
and the device thread still sees every kick (the eventfd's counter adds them up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import requires_kvm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
from guest_options import devices

ROOT = Path(__file__).resolve().parents[2]


def run_virtio64(tmp_path: Path, accel: str, *extra: str, report: str = "devices") -> dict:
    stats = tmp_path / f"{accel}.json"
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", accel, "--stats-json", str(stats), *extra,
                             *devices("virtio64"), "-device", "virtio-rng-device",
                             str(ROOT / "firmware" / "build" / "virtio64.elf")],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1 and "virtio: all checks passed" in result.stdout, result.stdout + result.stderr
    data = json.loads(stats.read_text())
    return data["irqchip"] if report == "irqchip" else {d["transport"]: d for d in data["devices"]}


def kicks(device: dict) -> tuple[int, int]:
    return sum(q["notifications"] for q in device["queues"]), sum(q["exits"] for q in device["queues"])


def test_on_tcg_every_kick_passes_the_io_hook(tmp_path: Path) -> None:
    report = run_virtio64(tmp_path, "tcg")
    assert set(report) == {"pci 00:02.0", "pci 00:03.0", "pci 00:04.0", "mmio 0xfeb00000"}
    for device in report.values():
        notifications, exits = kicks(device)
        assert device["notify_path"] == "io hook" and notifications == exits > 0
        assert 0 < device["thread_wakeups"] <= notifications


@requires_kvm
@pytest.mark.kvm
def test_on_kvm_ioeventfd_kicks_cost_no_exit_to_emu(tmp_path: Path) -> None:
    for device in run_virtio64(tmp_path, "kvm").values():
        notifications, exits = kicks(device)
        assert device["notify_path"] == "ioeventfd" and notifications > 0 and exits == 0, device


@requires_kvm
@pytest.mark.kvm
def test_on_kvm_without_ioeventfd_every_kick_is_an_exit(tmp_path: Path) -> None:
    for device in run_virtio64(tmp_path, "kvm", "--ioeventfd", "off").values():
        notifications, exits = kicks(device)
        assert device["notify_path"] == "exit" and notifications == exits > 0, device


@requires_kvm
@pytest.mark.kvm
def test_interrupts_through_kvm_interrupt_or_irqfd(tmp_path: Path) -> None:
    """User irqchip: emu's PIC decides and every interrupt is a KVM_INTERRUPT. Kernel irqchip:
    the devices' completions raise PCI lines by irqfd, re-raised after EOI through the
    resamplefd while the device still asserts them; emu injects nothing."""
    user = run_virtio64(tmp_path, "kvm", report="irqchip")
    assert user["kind"] == "user" and user["injected"] > 0
    kernel = run_virtio64(tmp_path, "kvm", "--irqchip", "kernel", report="irqchip")
    assert kernel["kind"] == "kernel" and kernel["irqfd_writes"] > 0 and kernel["resamples"] > 0, kernel
    assert kernel["irq_line_ioctls"] > 0  # the PIT, the guest's timeout for the frame, by KVM_IRQ_LINE


@requires_kvm
@pytest.mark.kvm
def test_ioeventfds_follow_the_bars_of_a_transitional_device() -> None:
    """Where the guest places BAR 4 and BAR 0, the modern notify addresses and the legacy notify
    port get ioeventfds; moving or disabling a BAR moves or drops them."""
    from emu.machine import Machine, MachineConfig

    from .virtio_driver import Driver

    m = Machine(MachineConfig(kernel=ROOT / "firmware" / "build" / "hello64.elf", accel="kvm",
                              devices=["virtio-rng-pci"]))  # fmt: skip
    try:
        m._threads_running = True  # as run() does once the device threads are up
        driver = Driver(m)
        driver.probe()  # BAR 4 at the driver's address, memory decoding on
        driver.cfg(0x10, 0xC000)  # BAR 0: the legacy block at port C000h
        driver.cfg(0x04, 0x7, size=2)  # IO and memory decoding, bus master
        events = m.accel.ioeventfds
        fd = m.device_threads[0].eventfds[0]
        assert {(e.address, e.length, e.datamatch, e.pio, e.fd) for e in events} == {
            (driver.notify, 0, None, False, fd), (0xC000 + 0x10, 2, 0, True, fd)}
        driver.cfg(0x10, 0xD000)  # the guest moves BAR 0
        assert {(e.address, e.pio) for e in events} == {(driver.notify, False), (0xD010, True)}
        driver.cfg(0x04, 0x2, size=2)  # memory decoding only: the port goes
        assert {(e.address, e.pio) for e in events} == {(driver.notify, False)}
    finally:
        m.close()


def test_a_resamplefd_read_counts_every_eoi_it_adds_up() -> None:
    """KVM signals the resamplefd once per EOI; if the resample thread wakes late, one read
    returns several, and --stats counts EOIs, not wake-ups."""
    import os

    from emu.kvm_accel.irqchip import IrqFdLine, IrqLineCounters

    line = IrqFdLine(gsi=11, counters=IrqLineCounters())
    try:
        os.eventfd_write(line.resamplefd, 1)
        os.eventfd_write(line.resamplefd, 1)  # two EOIs before the thread reads
        line.resampled()
        line.resampled()  # nothing more to read
        assert (line.counters.resamples, line.counters.reasserts) == (2, 0)
    finally:
        os.close(line.fd)
        os.close(line.resamplefd)
