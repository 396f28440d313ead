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
the host's load average before, during and after. Beside the wall time, the CPU time the VM
process used (user + system, all its threads, from wait4) to its end: on a shared machine it
moves much less with other load than wall time does, but it does not see the time a guest
spends idle (waiting on timers). The goal (the project's issue) is emu at most 3x QEMU-TCG.

Guest instructions per second: emu's tcg counts instructions only with --stats or
--stats-json, by a block hook (emu/tcg/block_count.c: a C lookup per block run, Python only to
decode a new block), which costs a boot some time itself. So the count comes from one more boot
of each emu row with --stats-json, ended the same way at the prompt, and the rate shown is that
count over the best uncounted time (wall, and CPU); how much longer the counted boot took is
printed too. The count is that of another run: spin-waits on the clock (PIT calibration,
udelay) run more or fewer instructions as emu is faster or slower, and a run preempted inside a
block counts an instruction or two twice, so take it to a few percent. QEMU reports no
instruction count without -icount, which changes what is measured. --no-count skips that boot.

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPEND = "console=ttyS0"  # the (and QEMU's) line: APIC, ACPI and all
READY, PROMPT, PANIC = b"emu-linux: ready", b"/ # ", b"Kernel panic"
MEMORY_MIB = 512
GOAL = 3.0  # emu / QEMU-TCG, at most


@dataclass
class Row:
    """One way to boot: who runs it, which image, and what its runs measured."""

    emulator: str  # "emu" or "qemu"
    image: str  # "bzImage" or "PVH"
    argv: list[str]
    boots: list[Boot] = field(default_factory=list)
    failed: str | None = None  # why a boot of this row did not reach the prompt
    instructions: int | None = None
    counted_seconds: float | None = None  # the --stats-json run's own time to the prompt

    @property
    def best(self) -> Boot:
        return min(self.boots, key=lambda b: b.prompt)

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


class BootFailed(Exception):
    """The VM exited, panicked or timed out before its prompt: the row is reported as failed."""


@dataclass
class Boot:
    prompt: float  # seconds from just before the process started to the shell prompt
    ready: float  # ... to "emu-linux: ready"
    cpu: float  # CPU seconds (user + system, all threads) the process used, to its end


def boot(argv: list[str], timeout: float) -> Boot:
    """Start the VM, wait for the prompt after "emu-linux: ready", end it with SIGTERM."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        text, ready_at, prompt_at = b"", None, None
        try:
            while prompt_at is None:
                left = start + timeout - time.perf_counter()
                if left <= 0:
                    raise BootFailed(f"no shell prompt within {timeout:.0f} s", text)
                readable, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
                if not readable:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                now = time.perf_counter()
                if not chunk:
                    proc.wait()
                    err.seek(0)
                    raise BootFailed(f"exited {proc.returncode} before the shell prompt", text + err.read())
                text += chunk
                if PANIC in text:  # it will not get further: end it now, with the rest of the message
                    more = select.select([proc.stdout], [], [], 1.0)[0]
                    raise BootFailed("kernel panic", text + (os.read(proc.stdout.fileno(), 65536) if more else b""))
                if ready_at is None and READY in text:
                    ready_at = now
                if ready_at is not None and PROMPT in text[text.index(READY) :]:
                    prompt_at = now
        finally:
            cpu = end(proc)
    return Boot(prompt_at - start, ready_at - start, cpu)


def end(proc: subprocess.Popen) -> float:
    """SIGTERM (emu writes its --stats-json then; QEMU just quits), SIGKILL after 30 s; reaped
    with wait4 for its resource usage: the CPU seconds it used, user and system, all threads."""
    if proc.returncode is not None:
        return 0.0
    proc.send_signal(signal.SIGTERM)
    killer = threading.Timer(30, proc.kill)
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def count_instructions(row: Row, timeout: float, work: Path) -> None:
    """One more boot with --stats-json: the instructions emu ran to the prompt."""
    stats = work / f"stats-{row.image}.json"
    argv = row.argv[:3] + ["--stats-json", str(stats)] + row.argv[3:]  # after "python -m emu"
    try:
        row.counted_seconds = boot(argv, timeout * 2).prompt
    except BootFailed as error:
        print(f"  {row.label}: the counting boot failed: {error.args[0]}")
        return
    row.instructions = json.loads(stats.read_text())["instructions"]


def fmt(value: float | None, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}}"


def report(table: list[Row]) -> None:
    qemu = {r.image: r.best for r in table if r.emulator == "qemu" and r.boots}
    for r in table:
        if not r.boots:
            print(f"  {r.label:<12} failed: {r.failed}")
    table = [r for r in table if r.boots]
    print(f"\n  {'':<12} {'prompt s':>9} {'slowest':>8} {'ready s':>8} {'CPU s':>7}   {'emu/QEMU':>8} "
          f"{'(CPU)':>6}   {'guest MIPS':>10} {'(CPU)':>6} {'instructions':>15}")  # fmt: skip
    for r in table:
        best, q = r.best, qemu.get(r.image) if r.emulator == "emu" else None
        wall = f"{best.prompt / q.prompt:7.2f}x" if q else f"{'-':>8}"
        cpu = f"{best.cpu / q.cpu:5.2f}x" if q else f"{'-':>6}"
        mips = fmt(r.instructions / best.prompt / 1e6 if r.instructions else None, ".1f", 10)
        mips_cpu = fmt(r.instructions / best.cpu / 1e6 if r.instructions else None, ".1f", 6)
        print(f"  {r.label:<12} {best.prompt:9.2f} {max(b.prompt for b in r.boots):8.2f} {best.ready:8.2f} "
              f"{best.cpu:7.2f}   {wall} {cpu}   {mips} {mips_cpu} {fmt(r.instructions, ',', 15)}")  # fmt: skip
    for emulator in ("emu", "qemu"):
        by_image = {r.image: r.best.prompt for r in table if r.emulator == emulator and r.boots}
        if len(by_image) == 2:
            print(f"  {emulator}: PVH / bzImage {by_image['PVH'] / by_image['bzImage']:.2f}")
    ratios = [r.best.prompt / qemu[r.image].prompt for r in table if r.emulator == "emu" and r.image in qemu]
    if ratios:
        worst = max(ratios)
        print(f"  goal: emu at most {GOAL:.0f}x QEMU-TCG: {'met' if worst <= GOAL else 'not met'} (worst {worst:.2f}x)")
    if not any(r.instructions for r in table):
        print("  guest MIPS: no instruction count (--no-count, or the counting boot failed)")
    for r in table:
        if r.instructions and r.counted_seconds:
            print(f"  {r.label}: {r.instructions:,} instructions to the prompt, counted in a --stats-json boot "
                  f"that took {r.counted_seconds:.1f} s, {r.counted_seconds / r.best.prompt:.2f}x the best uncounted one")  # fmt: skip
    print("  (CPU s: user + system time of the VM process, all threads, to its end: it moves less than wall time\n"
          "   with other load on the machine, though it still moves (timer interrupts, shared caches), and it\n"
          "   does not see time the guest spends idle)")  # fmt: skip


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
            if r.failed:
                continue
            try:
                b = boot(r.argv, args.timeout)
            except BootFailed as error:
                r.failed = error.args[0]
                tail = error.args[1].decode(errors="replace").strip().splitlines()[-12:]
                print(f"  run {round_ + 1}: {r.label:<12} FAILED: {r.failed}: {shlex.join(r.argv)}")
                print("\n".join("      | " + line for line in tail), flush=True)
                continue
            r.boots.append(b)
            print(f"  run {round_ + 1}: {r.label:<12} {b.prompt:7.2f} s to the prompt, {b.cpu:7.2f} CPU s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    if args.count:
        with tempfile.TemporaryDirectory() as work:
            for r in table:
                if r.emulator == "emu" and r.boots:
                    count_instructions(r, args.timeout, Path(work))
    report(table)
    print(f"host load average after: {os.getloadavg()[0]:.2f}; bench ran {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
