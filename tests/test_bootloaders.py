"""Real boot loaders that nobody here wrote boot on emu's PC: syslinux 6.04 and GRUB 2.06 (i386-pc).

The disks are built in a temporary directory by tests/bootloaders.py, without root (no loop
mounts), from the Debian packages' own files: syslinux's MBR, its installer and COM32 modules;
GRUB's boot.img and a core.img from grub-mkimage. Each boot ends deterministically, through the
isa-debug-exit port, in code the boot loader read from its own filesystem through int 13h:
exit.bin (a boot sector syslinux loads as its KERNEL) or firmware/build/hello32.elf (a multiboot
kernel started by syslinux's mboot.c32 or by GRUB's `multiboot` command), so the run's status and
the end of its stdout are known exactly. COM1 and the BIOS's teletype mirror both reach emu's
stdout, so a character a loader writes to both consoles can appear twice there: the checks read
single lines from one console or from the screen (--screendump).

The same images run under QEMU (SeaBIOS, with a VGA) when it is installed, and show the same
lines; at syslinux's prompt both machines show the same screen but for SeaBIOS's banner line.

What these tests found on the way (all fixed; the tests below guard them):
  - emu took a disk with GRUB's core.img in sector 1 for a multiboot kernel (core.img carries a
    multiboot header, within the first 8 KiB that emu.loader.detect searched before looking at
    the 55 AA signature): test_grub_disk_boots_through_the_bios.
  - tcg took the end of an instruction-budget slice right after an instruction whose last byte is
    F4h for `hlt`, and with IF=0 ended the run: GRUB's LZMA decompressor (`mov edx,[ebp-0Ch]` =
    8B 55 F4), and a budget running out at the first instruction of a block entered after
    `jmp $-10` (EB F4). emu now decodes from the last block's start (emu/tcg/last_block.c):
    test_grub_boots_a_multiboot_kernel[tcg], test_grub_bios_calls, and
    tests/tcg/test_preemption.py for both shapes.
  - BIOS gap: no VBE (int 10h AX=4F00h), so GRUB's multiboot loader printed "error: Can't get
    controller info..": the BIOS now answers 4F00h (no modes) and 4F03h (mode 3),
    test_grub_boot_shows_no_error.
Host limitation (not emu's): this project's kvm_pvm hosts cannot emulate syslinux's 32-bit
`iret` (KVM_INTERNAL_ERROR_EMULATION; qemu -accel kvm stops at the same instruction).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import bootloaders as bl
import pytest
from guestenv import ACCELS, KVM_OK

ROOT = Path(__file__).resolve().parents[1]
QEMU = shutil.which("qemu-system-x86_64")
HOST_IS_KVM_PVM = Path("/sys/module/kvm_pvm").exists()
SYSLINUX_MISSING = bl.missing_syslinux_tools()
GRUB_MISSING = bl.missing_grub_tools()
requires_syslinux = pytest.mark.skipif(SYSLINUX_MISSING is not None, reason=f"syslinux: {SYSLINUX_MISSING}")
requires_grub = pytest.mark.skipif(GRUB_MISSING is not None, reason=f"GRUB: {GRUB_MISSING}")

HELLO32 = bl.HELLO32_EXPECTED.read_bytes()  # hello32's whole COM1 transcript, command line included
HELLO32_STATUS = int(bl.HELLO32_STATUS.read_text())
SYSLINUX_BOOT_BANNER = b"SYSLINUX 6.04 EDD 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al\r\n"  # int 10h
SYSLINUX_BANNER = b"SYSLINUX 6.04 20210613 Copyright (C) 1994-2015 H. Peter Anvin et al\r\nboot: "  # COM1
PVM_IRET = "kvm_pvm's instruction emulator fails on syslinux's 32-bit iret (KVM_INTERNAL_ERROR_EMULATION), as qemu -accel kvm does"

# BIOS calls the loaders make that emu's BIOS answers "unsupported" (CF=1), with what they do then;
# a call not listed here fails test_syslinux_bios_calls / test_grub_bios_calls.
TOLERATED_GAPS = {
    "int 15h AH=53h": "APM installation check (mboot.c32, GRUB): without APM the multiboot info has no APM table",
    "int 13h AH=4Bh": "El Torito status (GRUB's biosdisk asks whether drive 80h is an emulated CD): CF=1 is right",
    "int 10h AH=4Fh": "VBE 4F0Ah, the protected-mode interface (GRUB's fill_vbe_info, after 4F00h and 4F03h, "
    "which the BIOS answers): AX=014Fh, and the multiboot info has no VBE interface fields",
}

def emu(image: Path, accel: str, *options: str, stdin: bytes = b"", timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "emu", "--accel", accel, *options, str(image)], input=stdin,
                          check=False, capture_output=True, timeout=timeout, cwd=ROOT)  # fmt: skip


def qemu(image: Path, *options: str, timeout: float = 60) -> subprocess.CompletedProcess:
    assert QEMU is not None
    return subprocess.run(
        [QEMU, "-accel", "tcg", "-nodefaults", "-device", "VGA", "-display", "none", "-no-reboot", "-m", "128M",
         "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
         "-drive", f"file={image},format=raw,if=ide", *options],
        check=False, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def skip_on_kvm_pvm(accel: str, why: str) -> None:
    if accel == "kvm" and HOST_IS_KVM_PVM:
        pytest.skip(f"host KVM is kvm_pvm: {why}")


def in_order(haystack: bytes, *needles: bytes) -> bool:
    position = 0
    for needle in needles:
        position = haystack.find(needle, position)
        if position < 0:
            return False
        position += len(needle)
    return True


def screen_rows(text: str) -> list[str]:
    rows = [row.rstrip() for row in text.splitlines()]
    while rows and not rows[-1]:
        rows.pop()
    return rows


# syslinux ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def syslinux_disks(tmp_path_factory) -> dict[str, Path]:
    """Three disks: booting exit.bin after 0.1 s, hello32 via mboot.c32 after 0.1 s, and one
    whose prompt waits for ever (its default is exit.bin)."""
    if SYSLINUX_MISSING is not None:
        pytest.skip(f"syslinux: {SYSLINUX_MISSING}")
    workdir = tmp_path_factory.mktemp("syslinux")
    return {
        "exit": bl.build_syslinux_disk(workdir, default="exit", timeout=1, name="exit.img"),
        "hello": bl.build_syslinux_disk(workdir, default="hello", timeout=1, name="hello.img"),
        "prompt": bl.build_syslinux_disk(workdir, default="exit", timeout=0, name="prompt.img"),
    }


@requires_syslinux
@pytest.mark.parametrize("accel", ACCELS)
def test_syslinux_boots_a_boot_sector(accel: str, syslinux_disks, tmp_path: Path) -> None:
    """mbr.bin -> syslinux's boot record -> ldlinux.sys -> syslinux.cfg -> `boot:` -> exit.bin."""
    skip_on_kvm_pvm(accel, PVM_IRET)
    screen = tmp_path / "screen.txt"
    result = emu(syslinux_disks["exit"], accel, "--screendump", str(screen))
    assert result.returncode == bl.EXIT_STATUS, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    assert in_order(result.stdout, b"Booting from Hard Disk...\r\n", SYSLINUX_BOOT_BANNER, SYSLINUX_BANNER)
    assert result.stdout.endswith(b"\r\n" + bl.EXIT_LINE + b"\r\n")  # DL=80: the boot disk handed on
    rows = screen_rows(screen.read_text())
    assert rows == ["Booting from Hard Disk...", "", SYSLINUX_BOOT_BANNER.decode().strip(), bl.SAY_LINE, "boot:"]


@requires_syslinux
@pytest.mark.parametrize("accel", ACCELS)
def test_syslinux_boots_a_multiboot_kernel(accel: str, syslinux_disks, tmp_path: Path) -> None:
    """`KERNEL mboot.c32` + `APPEND hello32.elf ...`: two COM32 modules and the ELF read from FAT,
    hello32 started in protected mode with syslinux's multiboot information."""
    skip_on_kvm_pvm(accel, PVM_IRET)
    screen = tmp_path / "screen.txt"
    result = emu(syslinux_disks["hello"], accel, "--screendump", str(screen))
    assert result.returncode == HELLO32_STATUS, result.stderr.decode(errors="replace")
    assert result.stderr == b""
    assert in_order(result.stdout, SYSLINUX_BOOT_BANNER, SYSLINUX_BANNER, b"\n" + HELLO32)
    assert result.stdout.endswith(HELLO32)
    assert screen_rows(screen.read_text())[-1] == "Loading hello32.elf... ok"


@requires_syslinux
def test_syslinux_prompt_takes_a_typed_label(syslinux_disks) -> None:
    """At `boot:` (no timeout) the keys come from COM1: "hello" and Enter boot hello32 instead of
    the default. Typed only once the prompt shows: syslinux's SERIAL setup empties the UART."""
    console = bl.Console([sys.executable, "-m", "emu", "--accel", "tcg", str(syslinux_disks["prompt"])])
    assert console.wait_for(SYSLINUX_BANNER, 60), bytes(console.output)
    console.type(b"hello\r")
    status, stdout, stderr = console.finish(60)
    assert status == HELLO32_STATUS, stderr.decode(errors="replace")
    assert in_order(stdout, SYSLINUX_BANNER + b"hello", b"\n" + HELLO32) and stdout.endswith(HELLO32)
    assert bl.EXIT_LINE not in stdout


@requires_syslinux
def test_syslinux_bios_calls(syslinux_disks, tmp_path: Path) -> None:
    """What syslinux asks of the BIOS through hello32's boot is supported, or a known tolerable gap."""
    stats = tmp_path / "stats.json"
    result = emu(syslinux_disks["hello"], "tcg", "--stats-json", str(stats))
    assert result.returncode == HELLO32_STATUS, result.stderr.decode(errors="replace")
    firmware = json.loads(stats.read_text())["firmware"]
    assert set(firmware["unsupported_calls"]) <= set(TOLERATED_GAPS), firmware["unsupported_calls"]
    assert firmware["disk"]["sectors_written"] == 0 and firmware["disk"]["sectors_read"] > 300


@pytest.mark.kvm
@pytest.mark.skipif(not KVM_OK or not HOST_IS_KVM_PVM, reason="records what a kvm_pvm host does with syslinux")
@requires_syslinux
def test_syslinux_on_kvm_pvm_stops_at_its_first_32bit_iret(syslinux_disks, tmp_path: Path) -> None:
    """Real mode runs (the boot record prints its banner through int 10h); the first 32-bit iret in
    ldlinux.sys is an emulation failure of the host's KVM, reported in one line; qemu -accel kvm
    stops at the same instruction."""
    result = emu(syslinux_disks["exit"], "kvm")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 4 and SYSLINUX_BOOT_BANNER in result.stdout
    assert len(lines) == 1 and lines[0].startswith("emu: kvm: KVM_EXIT_INTERNAL_ERROR"), lines
    assert "protected32 mode): instruction bytes cf" in lines[0]
    if QEMU is not None:  # QEMU stops the VM there and waits: read its report, then end it
        log = tmp_path / "qemu.err"
        with log.open("wb") as err:
            theirs = subprocess.Popen([QEMU, "-accel", "kvm", "-nodefaults", "-display", "none", "-no-reboot",
                                       "-m", "128M", "-serial", "stdio",
                                       "-drive", f"file={syslinux_disks['exit']},format=raw,if=ide"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
            deadline = time.monotonic() + 60
            while b"EFL=" not in log.read_bytes() and theirs.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            theirs.kill()
            theirs.wait()
        report = log.read_bytes()
        assert b"emulation failure" in report and b"EIP=00008ffc" in report, report
        assert lines[0].split("RIP=")[1].startswith("0x8ffc ")


@pytest.mark.parametrize("disk", ["exit", "hello"])
@requires_syslinux
@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
def test_syslinux_same_on_qemu(disk: str, syslinux_disks) -> None:
    """QEMU (SeaBIOS) boots the same disks to the same end; its COM1 shows the same lines."""
    result = qemu(syslinux_disks[disk])
    tail = bl.EXIT_LINE + b"\r\n" if disk == "exit" else HELLO32
    assert result.returncode == (bl.EXIT_STATUS if disk == "exit" else HELLO32_STATUS), result.stderr
    assert in_order(result.stdout, SYSLINUX_BANNER, tail) and result.stdout.endswith(tail)


@requires_syslinux
@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
def test_syslinux_prompt_screen_same_as_qemu(syslinux_disks, tmp_path: Path) -> None:
    """At syslinux's `boot:` prompt emu's screen (--screendump, written when SIGTERM ends the run)
    is QEMU's (read through its monitor), from "Booting from Hard Disk..." down: above it SeaBIOS
    prints its own banner."""
    screen = tmp_path / "screen.txt"
    ours = bl.Console([sys.executable, "-m", "emu", "--accel", "tcg", "--screendump", str(screen),
                       str(syslinux_disks["prompt"])])  # fmt: skip
    assert ours.wait_for(SYSLINUX_BANNER, 60), bytes(ours.output)
    time.sleep(0.5)
    ours.process.send_signal(signal.SIGTERM)
    status, _, stderr = ours.finish(30)
    assert status == 143, stderr
    monitor = tmp_path / "monitor.sock"
    assert QEMU is not None
    theirs = bl.Console([QEMU, "-accel", "tcg", "-nodefaults", "-device", "VGA", "-display", "none", "-no-reboot",
                         "-m", "128M", "-serial", "stdio", "-monitor", f"unix:{monitor},server,nowait",
                         "-drive", f"file={syslinux_disks['prompt']},format=raw,if=ide"])  # fmt: skip
    try:
        assert theirs.wait_for(SYSLINUX_BANNER, 60), bytes(theirs.output)
        time.sleep(0.5)
        qemu_rows = screen_rows("\n".join(bl.qemu_screen(monitor)))
    finally:
        theirs.process.kill()
        theirs.finish(10)
    emu_rows = screen_rows(screen.read_text())
    assert qemu_rows[0].startswith("SeaBIOS (version")
    assert emu_rows == qemu_rows[1:]


# GRUB ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grub_disk(tmp_path_factory) -> Path:
    """core.img from sector 1, where grub-install puts it."""
    if GRUB_MISSING is not None:
        pytest.skip(f"GRUB: {GRUB_MISSING}")
    return bl.build_grub_disk(tmp_path_factory.mktemp("grub"), core_sector=1)


_grub_runs: dict[str, subprocess.CompletedProcess] = {}


def grub_run(accel: str, disk: Path) -> subprocess.CompletedProcess:
    """One boot per accelerator, shared by the tests that read it (kvm takes about a minute)."""
    if accel not in _grub_runs:
        _grub_runs[accel] = emu(disk, accel, timeout=300)
    return _grub_runs[accel]


@requires_grub
@pytest.mark.parametrize("accel", ACCELS)
def test_grub_boots_a_multiboot_kernel(accel: str, grub_disk) -> None:
    """boot.img -> diskboot.img -> core.img (LZMA, protected mode, embedded config) -> normal mode
    reads grub.cfg from ext2 -> `multiboot /boot/hello32.elf` -> `boot`."""
    result = grub_run(accel, grub_disk)
    assert in_order(result.stdout, b"Booting from Hard Disk...\r\nGRUB loading.", bl.GRUB_CORE_LINE.encode(),
                    bl.GRUB_CFG_LINE.encode(), HELLO32), result.stderr.decode(errors="replace")  # fmt: skip
    assert result.stdout.endswith(HELLO32)
    assert result.returncode == HELLO32_STATUS and result.stderr == b""


@requires_grub
@pytest.mark.parametrize("accel", ACCELS)
def test_grub_boot_shows_no_error(accel: str, grub_disk) -> None:
    """As on QEMU, GRUB has nothing to complain about on the way to the kernel."""
    result = grub_run(accel, grub_disk)
    assert result.stdout.endswith(HELLO32)
    assert b"error:" not in result.stdout


@requires_grub
def test_grub_bios_calls(grub_disk, tmp_path: Path) -> None:
    """What GRUB asks of the BIOS on its way to hello32 is supported, or a known gap."""
    stats = tmp_path / "stats.json"
    result = emu(grub_disk, "tcg", "--stats-json", str(stats))
    assert result.returncode == HELLO32_STATUS, result.stderr.decode(errors="replace")
    firmware = json.loads(stats.read_text())["firmware"]
    assert set(firmware["unsupported_calls"]) <= set(TOLERATED_GAPS), firmware["unsupported_calls"]
    assert firmware["disk"]["sectors_written"] == 0 and firmware["disk"]["sectors_read"] > 600


@requires_grub
def test_grub_disk_boots_through_the_bios(grub_disk) -> None:
    """The disk as grub-install lays it out starts in the BIOS like any disk, although core.img in
    sector 1 carries a multiboot header within the disk's first 8 KiB (emu once ran such a disk as
    a multiboot kernel). Ends at "GRUB loading."."""
    console = bl.Console([sys.executable, "-m", "emu", "--accel", "tcg", str(grub_disk)])
    try:
        assert console.wait_for(b"Booting from Hard Disk...\r\nGRUB loading.", 30), bytes(console.output)
    finally:
        console.process.kill()
        console.finish(10)


@requires_grub
@pytest.mark.qemu
@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed")
def test_grub_same_on_qemu(grub_disk) -> None:
    """QEMU (SeaBIOS) boots the same disk to hello32 with the same lines on COM1, and no error."""
    result = qemu(grub_disk)
    assert result.returncode == HELLO32_STATUS, result.stderr
    assert in_order(result.stdout, bl.GRUB_CORE_LINE.encode(), bl.GRUB_CFG_LINE.encode(), HELLO32)
    assert result.stdout.endswith(HELLO32) and b"error:" not in result.stdout
