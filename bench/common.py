"""Shared pieces of the benchmarks: guest images built from bytes, and timing helpers.

Every benchmark prints a ratio against a reference measured in the same run (raw Unicorn, a
bare ctypes KVM_RUN loop, QEMU when installed); absolute numbers are context only.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from emu.loader.multiboot_image import CODE_OFFSET, build_multiboot_elf

LOAD = 0x100000
ENTRY = LOAD + CODE_OFFSET


def loop_code(iterations: int, body: bytes = b"") -> bytes:
    """32-bit code: `mov ecx, N; 1: <body>; dec ecx; jnz 1b; xor eax, eax; out 0xf4, al`."""
    jump = -(len(body) + 3) & 0xFF
    return (b"\xb9" + struct.pack("<I", iterations) + body + b"\x49\x75" + bytes([jump])
            + b"\x31\xc0\xe6\xf4")  # fmt: skip


def exit_offset(code: bytes) -> int:
    """Guest address of the final `out 0xf4` (where a raw run stops)."""
    return ENTRY + len(code) - 2


def write_image(code: bytes, directory: Path, name: str) -> Path:
    path = directory / name
    path.write_bytes(build_multiboot_elf(code, LOAD))
    return path


def emu_seconds(image: Path, accel: str = "tcg") -> float:
    """Wall time of `Machine.run()` for `image` (built by this module: it exits with status 1)."""
    from emu.machine import Machine, MachineConfig

    machine = Machine(MachineConfig(kernel=image, accel=accel))
    try:
        elapsed = timed(machine.run)
        assert machine.exit_status == 1, machine.exit_status
        return elapsed
    finally:
        machine.close()


def kvm_available() -> bool:
    """Is /dev/kvm there and usable by this user?"""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def best_of(runs: int, fn: Callable[[], float]) -> float:
    """The fastest of `runs` timings (the least disturbed by other load on a 2-core machine)."""
    return min(fn() for _ in range(runs))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def qemu_binary() -> str | None:
    return shutil.which("qemu-system-x86_64")


def qemu_seconds(image: Path, accel: str = "tcg", runs: int = 3) -> float | None:
    """Wall time of QEMU booting `image` to its debug-exit (multiboot through -kernel)."""
    qemu = qemu_binary()
    if qemu is None:
        return None
    cmd = [qemu, "-nodefaults", "-display", "none", "-no-reboot", "-m", "128M", "-accel", accel,
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", str(image)]  # fmt: skip

    def once() -> float:
        start = time.perf_counter()
        subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
        return time.perf_counter() - start

    return best_of(runs, once)


def tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="emu-bench-"))


def median(values: list[float]) -> float:
    return statistics.median(values)
