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
