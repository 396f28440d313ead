"""Two Linux guests on one Ethernet: Linux's virtio-net driver on emu's device, a tap device per
guest, both taps on a Linux bridge inside a fresh network namespace (the fixture of
tests/devices/test_net_two_guests.py: nothing in it reaches the host's networks).

Each guest is the stock kernel of tests/linux/test_linux_boot.py with its own MAC; the shell
brings eth0 up with a static address and one guest pings the other. An ICMP echo crossing the
bridge means: the driver negotiated the device, transmit chains reached the tap (with the
virtio-net header stripped to a plain frame), frames from the bridge were placed in receive
buffers, and the used-buffer interrupt reached the driver (through the PIIX3 routing the
guest set up). The guests boot with `acpi=off`, so Linux finds the APICs in emu's MP table
(the main test goes through ACPI).
The two boots run side by side, so the test costs about one boot.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from devices.test_net_two_guests import _netns_missing, bridge_namespace  # noqa: F401  (a fixture)

from .test_linux_boot import Console, guest  # noqa: F401  (the module-scoped fixture)

APPEND = "console=ttyS0 acpi=off"  # the MP table's path to the APICs (the main test has ACPI's)


def _start(namespace: str, kernel: Path, initrd: Path, tap: str, mac: str) -> Console:
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "emu", "--accel", "tcg", "-m", "256",
               "-kernel", str(kernel), "-initrd", str(initrd), "-append", APPEND,
               "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]  # fmt: skip
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return Console(proc)


@pytest.mark.skipif(_netns_missing() is not None, reason=str(_netns_missing()))
def test_two_guests_ping_across_a_bridge(guest: tuple[Path, Path], bridge_namespace: str) -> None:  # noqa: F811
    kernel, initrd = guest
    consoles = [_start(bridge_namespace, kernel, initrd, f"tap{i}", f"52:54:00:12:34:{0x56 + i:02x}") for i in (0, 1)]
    try:
        for console in consoles:
            console.wait_for("emu-linux: ready", 600)
        for i, console in enumerate(consoles):
            console.wait_for("/ # ", 60)
            link = console.run(f"ip link set eth0 up && ip addr add 10.0.2.{i + 1}/24 dev eth0 && ip -o link show eth0")
            assert f"52:54:00:12:34:{0x56 + i:02x}" in link  # the MAC the device's config space gave
        ping = consoles[0].run("ping -c 3 -W 10 10.0.2.2", timeout=120)
        received = re.search(r"(\d+) packets received", ping)
        assert received and int(received.group(1)) >= 1, ping
        counters = consoles[1].run("cat /sys/class/net/eth0/statistics/rx_packets").split()
        assert int(counters[-1]) >= 1
        assert "IOAPIC[0]: apic_id 1, version 17, address 0xfec00000, GSI 0-23" in consoles[0].text  # MP table
        assert "IO-APIC" in next(row for row in consoles[0].run("cat /proc/interrupts").splitlines() if "virtio0" in row)
        for console in consoles:  # isa-debug-exit: status 3 (without ACPI there is no power-off)
            console.proc.stdin.write(b"printf '\\001' | dd of=/dev/port bs=1 seek=244 count=1\n")
            console.proc.stdin.flush()
        assert [console.proc.wait(timeout=60) for console in consoles] == [3, 3]
    finally:
        for console in consoles:
            console.proc.kill()
            console.proc.wait()
