"""Bad input gets one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emu.loader.multiboot_image import build_multiboot_elf

HALT = bytes.fromhex("b000 e6f4")  # mov al, 0; out 0xf4, al


def run_emu(*args: str, timeout: float = 30, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "emu", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("emu: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run_emu(str(tmp_path / "nope.elf")), "no such file")


def test_directory(tmp_path: Path) -> None:
    assert_one_line_error(run_emu(str(tmp_path)), "is a directory")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.elf").write_bytes(b"")
    assert_one_line_error(run_emu(str(tmp_path / "empty.elf")), "empty file")


def test_truncated_elf(tmp_path: Path) -> None:
    image = build_multiboot_elf(HALT + bytes(4096))
    (tmp_path / "cut.elf").write_bytes(image[:200])
    assert_one_line_error(run_emu(str(tmp_path / "cut.elf")), "truncated")


def test_elf_without_multiboot_header(tmp_path: Path) -> None:
    image = bytearray(build_multiboot_elf(HALT))
    image[84:88] = b"\0\0\0\0"  # break the magic
    (tmp_path / "plain.elf").write_bytes(bytes(image))
    assert_one_line_error(run_emu(str(tmp_path / "plain.elf")), "without a multiboot header")


def test_host_executable_is_not_a_kernel() -> None:
    assert_one_line_error(run_emu(shutil.which("true") or "/bin/true"), "multiboot")


def test_segment_outside_guest_ram(tmp_path: Path) -> None:
    (tmp_path / "high.elf").write_bytes(build_multiboot_elf(HALT, load_address=0x4000000))
    assert_one_line_error(run_emu("-m", "16", str(tmp_path / "high.elf")), "outside guest RAM")


@pytest.mark.parametrize("size,needle", [("1", "at least"), ("2000000", "at most"), ("lots", "expected a size")])
def test_bad_memory_size(tmp_path: Path, size: str, needle: str) -> None:
    (tmp_path / "ok.elf").write_bytes(build_multiboot_elf(HALT))
    assert_one_line_error(run_emu("-m", size, str(tmp_path / "ok.elf")), needle)


def test_unknown_option_is_one_line() -> None:
    assert_one_line_error(run_emu("--frobnicate", "x"), "unrecognized arguments")


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare(1) to hide /dev/kvm in a mount namespace")
@pytest.mark.parametrize("hide", ["tmpfs over /dev", "/dev/null over /dev/kvm"])
def test_kvm_without_usable_dev_kvm(tmp_path: Path, hide: str) -> None:
    (tmp_path / "ok.elf").write_bytes(build_multiboot_elf(HALT))
    if hide == "tmpfs over /dev":
        mount = "mount -t tmpfs none /dev"
    else:
        mount = "mount --bind /dev/null /dev/kvm 2>/dev/null || mount -t tmpfs none /dev"
    script = f'{mount} && exec "$@"'
    result = run_emu("--accel", "kvm", str(tmp_path / "ok.elf"), prefix=("unshare", "-m", "sh", "-c", script, "sh"))
    assert_one_line_error(result, "/dev/kvm")


def test_good_image_exits_through_debug_port(tmp_path: Path) -> None:
    (tmp_path / "ok.elf").write_bytes(build_multiboot_elf(bytes.fromhex("b021 e6f4")))  # out 0x21 -> 0x43
    result = run_emu(str(tmp_path / "ok.elf"))
    assert result.returncode == (0x21 << 1) | 1, result.stderr
    assert result.stderr == ""


def test_missing_module(tmp_path: Path) -> None:
    (tmp_path / "ok.elf").write_bytes(build_multiboot_elf(HALT))
    assert_one_line_error(run_emu("--initrd", str(tmp_path / "nope"), str(tmp_path / "ok.elf")), "--initrd")
