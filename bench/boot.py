"""Firmware boot: from process start to a raw disk's boot sector, emu's BIOS against SeaBIOS.

The disk's boot sector starts with `xor ax, ax; out 0xf4, al`, so the wall time of the whole
process is start-up, POST (IVT, BDA, PICs, PIT, E820, screen, ATA IDENTIFY), reading sector 0
through the ATA disk, and tear-down. The reference in the same run is QEMU booting the same
image with its default SeaBIOS (`qemu-system-x86_64 disk.img`, with a VGA as SeaBIOS expects),
on the same accelerator, where QEMU is installed; `python -c pass` is printed as the floor of
any Python program. In-process, emu's time from `Machine(...)` to the exit is given too, and
the number of exits the BIOS needed, by reason.

    python bench/boot.py [--runs R]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import best_of, kvm_available, qemu_binary, tempdir

from emu.machine import Machine, MachineConfig

BOOT_SECTOR = b"\x31\xc0\xe6\xf4"  # xor ax, ax; out 0xf4, al


def disk_image(directory) -> object:
    sector = bytearray(512)
    sector[: len(BOOT_SECTOR)] = BOOT_SECTOR
    sector[510:] = b"\x55\xaa"
    path = directory / "boot.img"
    path.write_bytes(bytes(sector) + bytes(1024 * 1024 - 512))
    return path


def process_seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 1:
        raise SystemExit(f"{argv[0]} exited {result.returncode}: {result.stderr.decode(errors='replace')[-300:]}")
    return elapsed


def in_process(image, accel: str) -> tuple[float, dict]:
    start = time.perf_counter()
    machine = Machine(MachineConfig(kernel=image, accel=accel))
    machine.run()
    elapsed = time.perf_counter() - start
    exits = {reason.value: n for reason, n in machine.vcpu.stats.counts.items() if n}
    machine.close()
    return elapsed, exits



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    image = disk_image(tempdir())
    qemu = qemu_binary()
    bare = best_of(args.runs, lambda: process_seconds([sys.executable, "-c", "import sys; sys.exit(1)"]))
    print(f"process start to the boot sector's first instruction (1 MiB raw disk), best of {args.runs}")
    print(f"  python -c pass (floor)                  {bare:6.3f} s")
    for accel in ["tcg"] + (["kvm"] if kvm_available() else []):
        emu = best_of(args.runs, lambda a=accel: process_seconds([sys.executable, "-m", "emu", "--accel", a, str(image)]))
        inside, exits = min((in_process(image, accel) for _ in range(args.runs)), key=lambda r: r[0])
        line = f"  emu --accel {accel:<4} (emu's BIOS)          {emu:6.3f} s"
        if qemu:
            argv = [qemu, "-accel", accel, "-nodefaults", "-device", "VGA", "-display", "none", "-no-reboot",
                    "-m", "128M", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                    "-drive", f"file={image},format=raw,if=ide"]  # fmt: skip
            reference = best_of(args.runs, lambda argv=argv: process_seconds(argv))
            line += f"   qemu -accel {accel} (SeaBIOS) {reference:6.3f} s   emu/qemu {emu / reference:5.2f}"
        print(line)
        print(f"    in-process Machine() to the exit: {inside:6.3f} s; exits {exits}")


if __name__ == "__main__":
    main()
