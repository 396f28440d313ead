"""The virtio64 guest with every device emu has at once: a virtio-blk disk, entropy, a balloon
and a NIC over PCI, and entropy over virtio-mmio; each accelerator prints the same transcript,
and the disk image holds what the guest wrote."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from guestenv import KVM_OK, KVM_WHY

ROOT = Path(__file__).resolve().parents[2]


def run(accel: str, tmp_path: Path) -> tuple[str, bytes]:
    disk = tmp_path / f"{accel}.img"
    disk.write_bytes(b"virtio64 disk, sector 0".ljust(512, b"\0") + bytes(63 * 512))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([sys.executable, "-m", "emu", "--accel", accel,
                             "-drive", f"file={disk},format=raw,if=virtio", "-device", "virtio-rng-pci",
                             "-device", "virtio-balloon-pci",
                             "-netdev", f"socket,id=n0,udp=127.0.0.1:{port},localaddr=127.0.0.1:{port}",
                             "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-device",
                             str(ROOT / "firmware" / "build" / "virtio64.elf")],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 1 and result.stdout.endswith("virtio: all checks passed\n"), result.stdout + result.stderr
    return result.stdout, disk.read_bytes()


@pytest.mark.kvm
def test_every_device_in_one_run_the_same_on_both_accelerators(tmp_path: Path) -> None:
    tcg, tcg_disk = run("tcg", tmp_path)
    for part in ("device type 2 (block)", "device type 4 (entropy)", "device type 5 (memory balloon)",
                 "device type 1 (network)", "mmio 0xfeb00000: magic ok", "balloon: deflated 4 pages",
                 "net: sent 60 bytes, received 60 bytes, frame matches"):  # fmt: skip
        assert part in tcg, part
    assert tcg_disk[512:1024] != bytes(512)  # the guest's write of sector 1 is in the file
    if not KVM_OK:
        pytest.skip(f"tcg checked; no kvm to compare with: {KVM_WHY}")
    kvm, kvm_disk = run("kvm", tmp_path)
    assert kvm == tcg and kvm_disk == tcg_disk
