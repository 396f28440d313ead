"""Two emu guests exchange Ethernet frames: over the rootless socket backend (a UDP pair, and
QEMU's TCP stream framing), and across a Linux bridge of two tap devices inside a network
namespace that the test creates and removes. The virtio64 guest sends with net=send (repeating
its broadcast until an answer comes) and answers with net=echo; each prints whom it heard. The
two sides run on different accelerators where KVM is available, so the wire is also a check
that tcg and kvm drive the same device model."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from guestenv import KVM_OK

ROOT = Path(__file__).resolve().parents[2]
GUEST = str(ROOT / "firmware" / "build" / "virtio64.elf")
SENDER_MAC, ECHO_MAC = "52:54:00:00:00:02", "52:54:00:00:00:01"
SENDER_ACCEL = "kvm" if KVM_OK else "tcg"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emu(accel: str, netdev: str, mac: str, mode: str, prefix: tuple[str, ...] = ()) -> list[str]:
    return [*prefix, sys.executable, "-m", "emu", "--accel", accel, "-netdev", netdev, "-device",
            f"virtio-net-pci,netdev=n0,mac={mac}", "--append", f"net={mode}", GUEST]  # fmt: skip


def exchange(echo_netdev: str, sender_netdev: str, prefix: tuple[str, ...] = ()) -> tuple[str, str]:
    """Start the echo, wait until its driver has posted receive buffers, run the sender; both outputs."""
    echo = subprocess.Popen(emu("tcg", echo_netdev, ECHO_MAC, "echo", prefix), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = []
        for line in echo.stdout:
            lines.append(line)
            if "receive buffers" in line:
                break
        sender = subprocess.run(emu(SENDER_ACCEL, sender_netdev, SENDER_MAC, "send", prefix), capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        rest, errors = echo.communicate(timeout=60)
    finally:
        echo.kill()
        echo.wait()
    echo_out = "".join(lines) + rest
    assert sender.returncode == 1, sender.stdout + sender.stderr
    assert echo.returncode == 1, echo_out + errors
    return sender.stdout, echo_out


def check(sender: str, echo: str) -> None:
    assert f'net: send: heard {ECHO_MAC}: "an answer from the virtio64 guest"' in sender, sender
    assert f'net: echo: heard {SENDER_MAC}: "a broadcast from the virtio64 guest"' in echo, echo
    assert "net: echo: answered (transmit used)" in echo and "virtio: all checks passed" in sender + echo


def test_over_a_udp_socket_pair() -> None:
    a, b = free_port(), free_port()
    check(*exchange(f"socket,id=n0,udp=127.0.0.1:{b},localaddr=127.0.0.1:{a}",
                    f"socket,id=n0,udp=127.0.0.1:{a},localaddr=127.0.0.1:{b}"))  # fmt: skip


def test_over_a_tcp_stream() -> None:
    port = free_port(socket.SOCK_STREAM)
    check(*exchange(f"socket,id=n0,listen=127.0.0.1:{port}", f"socket,id=n0,connect=127.0.0.1:{port}"))


def _netns_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for a network namespace and tap devices"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


@pytest.fixture
def bridge_namespace():
    """A network namespace holding br0 with tap0 and tap1 on it, IPv6 off (no router
    solicitations on the wire): nothing in it can reach any address outside."""
    name = f"emu-test-{uuid.uuid4().hex[:8]}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", "-n", name, *args], check=True, capture_output=True)

    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True, capture_output=True)  # fmt: skip
        ip("link", "add", "br0", "type", "bridge")
        for tap in ("tap0", "tap1"):
            ip("tuntap", "add", "dev", tap, "mode", "tap")
            ip("link", "set", tap, "master", "br0", "up")
        ip("link", "set", "br0", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.skipif(_netns_missing() is not None, reason=str(_netns_missing()))
def test_across_a_bridge_of_two_taps(bridge_namespace: str) -> None:
    prefix = ("ip", "netns", "exec", bridge_namespace)
    sender, echo = exchange("tap,id=n0,ifname=tap0,script=no,downscript=no",
                            "tap,id=n0,ifname=tap1,script=no,downscript=no", prefix)  # fmt: skip
    check(sender, echo)
    for tap in ("tap0", "tap1"):  # the frames crossed both taps (counters as the host sees them)
        stats = subprocess.run(["ip", "-n", bridge_namespace, "-s", "-j", "link", "show", tap], capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        counters = json.loads(stats)[0]["stats64"]
        assert counters["rx"]["packets"] >= 1 and counters["tx"]["packets"] >= 1, (tap, counters)


def test_the_namespace_is_gone_afterwards() -> None:
    """Namespaces this module made are removed (the fixture's finally), even after failures."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert "emu-test-" not in listed
