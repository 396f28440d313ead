"""Linux boot: wall time from process start to the shell prompt, emu-tcg against QEMU-TCG.

The guest is Debian's stock kernel with the busybox initramfs of tools/linux_guest.py (cached
in ~/.cache/emu/linux): its /init loads the virtio modules, prints "emu-linux: ready" and starts
a shell, whose prompt "/ # " on the serial console ends the timing. Each VM is then ended with
SIGTERM. The same kernel, initramfs and command line boot four ways:

  emu  bzImage   python -m emu --accel tcg -m 512 -kernel vmlinuz ...  (Linux boot protocol,
                 the kernel's own decompressor unpacks it in the guest)
  emu  PVH       python -m emu --accel tcg -m 512 -kernel vmlinux ...  (Xen PVH entry, no
                 decompressor: emu/loader/pvh.py)
  qemu bzImage   qemu-system-x86_64 -accel tcg -machine pc -m 512 -nographic -no-reboot
                 -kernel vmlinuz ...  (through SeaBIOS and QEMU's linuxboot option ROM)
  qemu PVH       the same with -kernel vmlinux (SeaBIOS and QEMU's pvh option ROM)

QEMU rows are skipped where qemu-system-x86_64 is not installed. The runs take turns, round
by round, so that load from elsewhere on the machine falls on all of them alike; the best of
each is shown (the least disturbed), with the slowest beside it as a measure of the noise, and
the host's load average before and after. The goal (the project's issue) is emu at most 3x
QEMU-TCG.

Guest instructions per second: emu's tcg counts instructions only with --stats/--stats-json, and
then by a Python block hook that slows the run. So the count comes from one more boot of each emu
row with --stats-json, ended the same way at the prompt, and the rate shown is that count over
the best uncounted time (the slowdown the hook caused is printed too). The count is that of
another run: timer interrupts and spin-waits on the clock make it differ by a little from run to
run. QEMU reports no instruction count without -icount, which changes what is measured.

    python bench/linux_boot.py [--mmu shadow|shadow-python|unicorn] [--append CMDLINE] [--runs N]
                               [--no-qemu] [--no-count] [--timeout S] [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPEND = "console=ttyS0 nolapic noapic acpi=off"
READY, PROMPT = b"emu-linux: ready", b"/ # "
MEMORY_MIB = 512
GOAL = 3.0  # emu / QEMU-TCG, at most


@dataclass
class Row:
    """One way to boot: who runs it, which image, and what its runs measured."""

    emulator: str  # "emu" or "qemu"
    image: str  # "bzImage" or "PVH"
    argv: list[str]
    times: list[float] = field(default_factory=list)  # to the prompt, seconds
    ready: list[float] = field(default_factory=list)  # to "emu-linux: ready"
    instructions: int | None = None
    counted_seconds: float | None = None  # the --stats-json run's own time to the prompt

    @property
    def label(self) -> str:
        return f"{self.emulator:<4} {self.image}"


def linux_guest():
    spec = importlib.util.spec_from_file_location("linux_guest", ROOT / "tools" / "linux_guest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def guest_files(dry_run: bool) -> tuple[str, str, str]:
    """(bzImage, initrd, vmlinux): built or taken from the cache; placeholders on a dry run."""
    if dry_run:
        return "$KERNEL", "$INITRD", "$VMLINUX"
    tools = linux_guest()
    kernel, initrd = tools.build(tools.cache_dir())
    return str(kernel), str(initrd), str(tools.vmlinux(kernel))


def rows(args: argparse.Namespace, qemu: str | None) -> list[Row]:
    kernel, initrd, vmlinux = guest_files(args.dry_run)
    mmu = ["--mmu", args.mmu] if args.mmu else []
    out: list[Row] = []
    for image, path in (("bzImage", kernel), ("PVH", vmlinux)):
        out.append(Row("emu", image, [sys.executable, "-m", "emu", "--accel", "tcg", *mmu, "-m", str(MEMORY_MIB),
                                      "-kernel", path, "-initrd", initrd, "-append", args.append]))  # fmt: skip
    if qemu:
        for image, path in (("bzImage", kernel), ("PVH", vmlinux)):
            out.append(Row("qemu", image, [qemu, "-accel", "tcg", "-machine", "pc", "-m", str(MEMORY_MIB),
                                           "-nographic", "-no-reboot", "-kernel", path, "-initrd", initrd,
                                           "-append", args.append]))  # fmt: skip
    return out


def boot(argv: list[str], timeout: float) -> tuple[float, float]:
    """Start the VM, wait for the prompt after "emu-linux: ready", end it with SIGTERM. Returns
    (seconds to the prompt, seconds to ready), both from just before the process started."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        text, ready_at, prompt_at = b"", None, None
        try:
            while prompt_at is None:
                left = start + timeout - time.perf_counter()
                if left <= 0:
                    raise SystemExit(f"no shell prompt within {timeout:.0f} s: {' '.join(argv)}\n"
                                     f"{text[-1500:].decode(errors='replace')}")  # fmt: skip
                readable, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if not readable:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                now = time.perf_counter()
                if not chunk:
                    proc.wait()
                    err.seek(0)
                    raise SystemExit(f"exited {proc.returncode} before the shell prompt: {' '.join(argv)}\n"
                                     f"{text[-1500:].decode(errors='replace')}{err.read()[-500:].decode(errors='replace')}")  # fmt: skip
                text += chunk
                if ready_at is None and READY in text:
                    ready_at = now
                if ready_at is not None and PROMPT in text[text.index(READY) :]:
                    prompt_at = now
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # emu writes its --stats-json on SIGTERM, QEMU just quits
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return prompt_at - start, ready_at - start


def count_instructions(row: Row, timeout: float, work: Path) -> None:
    """One more boot with --stats-json: the instructions emu ran to the prompt."""
    stats = work / f"stats-{row.image}.json"
    argv = row.argv[:3] + ["--stats-json", str(stats)] + row.argv[3:]  # after "python -m emu"
    row.counted_seconds, _ = boot(argv, timeout * 3)
    row.instructions = json.loads(stats.read_text())["instructions"]


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def report(table: list[Row]) -> None:
    qemu = {r.image: min(r.times) for r in table if r.emulator == "qemu" and r.times}
    print(f"\n  {'':<12} {'prompt s':>9} {'slowest':>8} {'ready s':>8} {'emu/QEMU':>9} {'guest MIPS':>11} "
          f"{'instructions':>13} {'counted run s':>14}")  # fmt: skip
    for r in table:
        best = min(r.times)
        ratio = best / qemu[r.image] if r.emulator == "emu" and r.image in qemu else None
        mips = r.instructions / best / 1e6 if r.instructions else None
        shown_ratio = f"{ratio:8.2f}x" if ratio is not None else f"{'-':>9}"
        print(f"  {r.label:<12} {best:9.2f} {max(r.times):8.2f} {min(r.ready):8.2f} {shown_ratio} {fmt(mips, '.1f', 11)} "
              f"{fmt(r.instructions, ',', 13)} {fmt(r.counted_seconds, '.1f', 14)}")  # fmt: skip
    for emulator in ("emu", "qemu"):
        by_image = {r.image: min(r.times) for r in table if r.emulator == emulator and r.times}
        if len(by_image) == 2:
            print(f"  {emulator}: PVH / bzImage {by_image['PVH'] / by_image['bzImage']:.2f}")
    if qemu:
        worst = max(min(r.times) / qemu[r.image] for r in table if r.emulator == "emu")
        print(f"  goal: emu at most {GOAL:.0f}x QEMU-TCG: {'met' if worst <= GOAL else 'not met'} (worst {worst:.2f}x)")
    for r in table:
        if r.instructions and r.counted_seconds:
            print(f"  {r.label}: the counting run took {r.counted_seconds / min(r.times):.2f}x the best uncounted one")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmu", choices=("shadow", "shadow-python", "unicorn"), default=None,
                        help="emu's --mmu (default: emu's own default)")  # fmt: skip
    parser.add_argument("--append", default=APPEND, help=f"kernel command line (default: {APPEND!r})")
    parser.add_argument("--runs", type=int, default=1, help="boots of each row, taking turns (the best is shown)")
    parser.add_argument("--qemu", action=argparse.BooleanOptionalAction, default=True,
                        help="compare with qemu-system-x86_64 when installed")  # fmt: skip
    parser.add_argument("--count", action=argparse.BooleanOptionalAction, default=True,
                        help="one more boot of each emu row with --stats-json, for its instruction count")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=600, help="seconds to the prompt before giving up")
    parser.add_argument("--dry-run", action="store_true", help="print the command lines, boot nothing")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    qemu = shutil.which("qemu-system-x86_64") if args.qemu else None
    table = rows(args, qemu)
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0] \
        if qemu else ("not installed" if args.qemu else "--no-qemu")  # fmt: skip
    print(f"Linux boot to the shell prompt: -m {MEMORY_MIB}, -append {args.append!r}, emu --mmu "
          f"{args.mmu or 'default'}; {args.runs} run(s) of each, taking turns; QEMU: {version}")  # fmt: skip
    if args.dry_run:
        for r in table:
            print(f"  {r.label:<12} {shlex.join(r.argv)}")
        if args.count:
            print("  (and one run of each emu row with --stats-json for the instruction count)")
        return
    start = time.perf_counter()
    print(f"host load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs; other work on the machine "
          f"makes these figures noisy)", flush=True)  # fmt: skip
    for round_ in range(args.runs):
        for r in table:
            seconds, ready = boot(r.argv, args.timeout)
            r.times.append(seconds)
            r.ready.append(ready)
            print(f"  run {round_ + 1}: {r.label:<12} {seconds:7.2f} s", flush=True)
    if args.count:
        with tempfile.TemporaryDirectory() as work:
            for r in table:
                if r.emulator == "emu":
                    count_instructions(r, args.timeout, Path(work))
    report(table)
    print(f"host load average after: {os.getloadavg()[0]:.2f}; bench ran {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
