"""The CLI end to end: exit statuses, a triple fault, --stats and --stats-json, on both backends."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guestenv import ACCELS

from emu.loader.multiboot_image import build_multiboot_elf

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware" / "build"
# 32-bit entry code: lidt of an empty IDT, then ud2: #UD -> #GP -> #DF -> shutdown.
TRIPLE_FAULT = bytes.fromhex("0f011d 00000000" "0f0b")  # lidt [0]; ud2  (IDTR limit = word at 0)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip


@pytest.mark.parametrize("accel", ACCELS)
def test_triple_fault_is_one_line_and_status_4(tmp_path: Path, accel: str) -> None:
    image = tmp_path / "triple.elf"
    image.write_bytes(build_multiboot_elf(TRIPLE_FAULT))
    result = run("--accel", accel, str(image))
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "triple fault" in lines[0] and "RIP=" in lines[0]
    if accel == "tcg":  # emu delivers each fault itself, so it can name the chain
        assert "#UD -> #GP(0x32) -> #DF(0x0) -> #GP(0x42)" in lines[0]


@pytest.mark.parametrize("accel", ACCELS)
def test_stats_json_and_table(tmp_path: Path, accel: str) -> None:
    out = tmp_path / "stats.json"
    result = run("--accel", accel, "--stats", "--stats-json", str(out), str(FIRMWARE / "irqs64.elf"))
    assert result.returncode == 1
    stats = json.loads(out.read_text())
    for key in ("accel", "exits", "instructions", "guest_seconds", "host_seconds"):
        assert key in stats
    assert stats["accel"] == accel
    assert stats["exits"]["io"] > 100  # every character of the transcript is an OUT at least
    assert stats["exits"]["hlt"] >= 20  # the timer test sleeps between its 20 ticks
    assert stats["exits"]["interrupt" if accel == "tcg" else "io"] >= 20
    assert stats["guest_seconds"] > 0 and stats["host_seconds"] >= 0
    assert (stats["instructions"] or 0) > 1000 if accel == "tcg" else stats["instructions"] is None
    mmu = stats["mmu"]
    if accel == "tcg":  # emu's shadow MMU: irqs64 runs with paging on, so there are fills
        assert mmu["translation"] == "emu shadow MMU" and mmu["walks"] > 0 and mmu["shadow_hits"] >= 0
        assert mmu["walker_disagreements"] == 0 and "mmu (shadow, fills in " in result.stderr
        if shutil.which("cc"):  # the C front of the fill is built with it and serves repeated fills
            assert mmu["fill_path"] == "C" and 0 <= mmu["native_hits"] <= mmu["shadow_hits"]
    else:  # the hardware (or KVM's own shadow MMU) translates: said, not zero counters
        assert mmu["translation"] == "kvm" and "second-stage translation" in result.stderr
    assert "exit reason" in result.stderr and f"emu statistics ({accel})" in result.stderr
    assert "hlt" in result.stderr and "time: guest" in result.stderr


def test_unmapped_ports_are_counted(tmp_path: Path) -> None:
    """A PC's unmapped port reads all ones and drops writes; emu counts and shows both."""
    code = bytes.fromhex("66ba3412" "ec" "e6f4")  # mov dx, 0x1234; in al, dx; out 0xf4, al
    image = tmp_path / "unmapped.elf"
    image.write_bytes(build_multiboot_elf(code))
    out = tmp_path / "stats.json"
    result = run("--stats-json", str(out), str(image))
    assert result.returncode == ((0xFF << 1) | 1) & 0xFF  # al = 0xff (unmapped port) to 0xf4; 8-bit status
    assert json.loads(out.read_text())["unmapped_port_reads"] == {"0x1234": 1}


@pytest.mark.parametrize("accel", ACCELS)
def test_timer_interrupts_a_spinning_guest(tmp_path: Path, accel: str) -> None:
    """Ticks must reach a guest that never exits by itself: the kicker stops the vCPU at each
    PIT deadline (emu_stop on tcg, SIGUSR1 + immediate_exit on kvm)."""
    out = tmp_path / "stats.json"
    result = run("--accel", accel, "--append", "spin", "--stats-json", str(out), str(FIRMWARE / "idle64.elf"))
    assert result.returncode == 1, result.stderr
    assert result.stdout == "idle: 100 ticks at 100 Hz, spinning with interrupts on between them\n"
    stats = json.loads(out.read_text())
    assert stats["exits"]["kick"] >= 100 and stats["exits"]["interrupt"] == 100
    assert stats["exits"].get("hlt", 0) == 0


@pytest.mark.parametrize("options", [pytest.param(("--accel", "tcg"), id="tcg"),
                                     pytest.param(("--accel", "kvm"), id="kvm", marks=ACCELS[1].marks),
                                     pytest.param(("--accel", "kvm", "--irqchip", "kernel"), id="kvm-irqchip-kernel",
                                                  marks=ACCELS[1].marks)])  # fmt: skip
def test_cli_hlt_ends_the_run_with_one_line(tmp_path: Path, options: tuple[str, ...]) -> None:
    """`cli; hlt`: nothing can wake the guest. With KVM's irqchip the `hlt` never leaves KVM,
    so emu looks every half second (KVM_GET_MP_STATE) instead of waiting forever."""
    image = tmp_path / "clihlt.elf"
    image.write_bytes(build_multiboot_elf(bytes.fromhex("fa f4")))  # cli; hlt
    result = run(*options, str(image))
    assert result.returncode == 0 and result.stderr == "emu: guest halted with interrupts disabled; nothing can wake it\n"


@pytest.mark.parametrize("accel", ACCELS)
def test_sigterm_ends_a_guest_that_spins_with_no_timer(tmp_path: Path, accel: str) -> None:
    """`jmp $` with no timer armed: on tcg the main thread never leaves Unicorn's C loop by
    itself, so Python would never run the signal handler; the wakeup-fd watcher kicks it out."""
    import signal
    import time

    image = tmp_path / "spin.elf"
    image.write_bytes(build_multiboot_elf(bytes.fromhex("ebfe")))  # jmp $
    proc = subprocess.Popen([sys.executable, "-m", "emu", "--accel", accel, str(image)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        time.sleep(1.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
