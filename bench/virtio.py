"""virtio performance: the guest's disk and doorbell against the host and QEMU, in one run.

The guest is firmware/build/virtio64.elf in its benchmark mode (firmware/virtio.c): a loop of
virtio requests, each one a descriptor chain made available, a notification (a store to the
queue's doorbell in the device's BAR), the device model serving it on its own thread, the used
ring updated, an INTx interrupt, and the guest woken from `hlt` (VIRTIO 1.2 §2.7, §4.1.5).
The guest prints "bench: go" before the loop and "bench: end" after it; this script timestamps
the two lines as they arrive on COM1, so start-up (emu's Python, QEMU's SeaBIOS) is not in the
figures and the guest needs no clock of its own.

What is compared with what, each pair measured in this run:
  blk-seq   the 64 MiB disk read in order, 128 KiB per request, 2 in flight (MB/s), against
            `dd if=IMG of=/dev/null bs=1M` of the same file. The file was just written and is
            read once more before timing: both sides read the host's page cache (caches are not
            dropped), so the ratio is the cost of the virtio path, not of the disk.
  blk-4k    4 KiB reads one at a time (requests/s), against `dd bs=4k` (one read(2) of 4 KiB
            per block, the same kernel path as pread) of the same file.
  rng-1     1-byte virtio-rng requests one at a time: the notify-to-interrupt round trip (us),
            on kvm with each pair of the options below, and with the exits per request taken
            from --stats-json (a run with count=0 gives the exits outside the loop).
  QEMU      the same guest, disk and devices under qemu-system-x86_64 with the same accelerator
            where it is installed: ratios emu/QEMU.

Why ioeventfd and irqfd save exits (Documentation/virt/kvm/api.rst §4.59 KVM_IOEVENTFD,
§4.75 KVM_IRQFD; emu/devices/virtio/iothread.py): without an ioeventfd the guest's doorbell
store is a KVM_EXIT_MMIO that returns from KVM_RUN to emu's Python, which writes the queue's
eventfd and enters KVM_RUN again; with one, KVM matches the address in its exit handler, signals
the eventfd itself and resumes the guest, and emu's device thread wakes without the vCPU thread
ever seeing the exit. On the way back, with emu's PIC (--irqchip user) the device thread raises
the line in Python, kicks the vCPU out of KVM_RUN (or wakes it from an emulated hlt) and injects
the vector with KVM_INTERRUPT, and every EOI and mask the guest writes to the 8259 is a port exit;
with KVM's irqchip (--irqchip kernel) the thread writes an irqfd, KVM sets the line in its own
PIC and wakes the vCPU halted inside KVM, and the EOIs never leave the kernel (a resamplefd
tells emu when a level-triggered line was acknowledged). The ratios on/off and kernel/user are
the round trip with the mechanism over the round trip without it: under 1 means it helps.

On this project's hosts /dev/kvm is a nested kvm_pvm that emulates all CPL0 guest code
(notes/host-kvm.md), so the guest's own driver code is slow on kvm and weighs in every figure.

    python bench/virtio.py [--disk-mib N] [--count-4k N] [--count-rng N] [--runs R] [--qemu-runs R]
                           [--accel tcg|kvm|both] [--no-qemu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import kvm_available, qemu_binary, tempdir

GUEST = Path(__file__).resolve().parents[1] / "firmware" / "build" / "virtio64.elf"
SUMMARY = re.compile(rb"bench (\S+): (\d+) requests of (\d+) bytes, (\d+) bytes, (\d+) interrupts, (\d+) errors")
IRQCHIP_COUNTERS = ("irqfd_writes", "resamples")  # kernel irqchip, per loop


@dataclass
class Loop:
    """One guest run: the loop's wall time between its two markers, and what it did."""

    seconds: float
    requests: int
    bytes: int
    interrupts: int
    stats: dict = field(default_factory=dict)  # emu --stats-json, when asked for

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6


@dataclass
class Bench:
    disk: Path
    work: Path
    runs: int  # of each emu loop, the fastest kept
    qemu_runs: int  # of each QEMU loop (each QEMU run boots SeaBIOS: seconds on kvm here)
    qemu: str | None
    kvm: bool

    def emu(self, accel: str, append: str, devices: list[str], options: tuple[str, ...] = (),
            stats: bool = False, runs: int | None = None) -> Loop:  # fmt: skip
        """Best of `runs` emu runs; with `stats`, the --stats-json of the last one (the counts of
        a loop are the same each time)."""
        argv = [sys.executable, "-m", "emu", "--accel", accel, *options, *devices, "--append", append, str(GUEST)]
        if stats:
            argv[3:3] = ["--stats-json", str(self.work / "stats.json")]
        best = min((guest_loop(argv) for _ in range(runs or self.runs)), key=lambda loop: loop.seconds)
        if stats:
            best.stats = json.loads((self.work / "stats.json").read_text())
        return best

    def qemu_loop(self, accel: str, append: str, devices: list[str], runs: int | None = None) -> Loop | None:
        if self.qemu is None:
            return None
        argv = [self.qemu, "-accel", accel, "-nodefaults", "-display", "none", "-no-reboot", "-m", "128M",
                "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", *devices,
                "-kernel", str(GUEST), "-append", append]  # fmt: skip
        return min((guest_loop(argv) for _ in range(runs or self.qemu_runs)), key=lambda loop: loop.seconds)

    @property
    def drive(self) -> list[str]:
        return ["-drive", f"file={self.disk},format=raw,if=virtio"]


def guest_loop(argv: list[str], timeout: float = 300) -> Loop:
    """Run the guest; time from the arrival of "bench: go" to that of "bench: end"."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    marks, lines = {}, []
    try:
        for line in iter(proc.stdout.readline, b""):
            now = time.perf_counter()
            lines.append(line)
            if line.startswith(b"bench: "):
                marks[line.strip()] = now
        stderr = proc.stderr.read()
        status = proc.wait()
    finally:
        watchdog.cancel()
    summary = next((m for m in map(SUMMARY.match, lines) if m), None)
    if status != 1 or summary is None or b"bench: go" not in marks or b"bench: end" not in marks:
        tail = b"".join(lines[-5:]) + stderr[-500:]
        raise SystemExit(f"{' '.join(argv[:4])} ... exited {status}:\n{tail.decode(errors='replace')}")
    _, requests, _, total, interrupts, errors = summary.groups()
    if int(errors):
        raise SystemExit(f"the guest saw {int(errors)} failed requests: {summary.group(0).decode()}")
    return Loop(marks[b"bench: end"] - marks[b"bench: go"], int(requests), int(total), int(interrupts))


def dd_seconds(disk: Path, block: str, count: int | None, runs: int) -> float:
    """dd's own timing ("copied, S s") of reading `disk` to /dev/null, best of `runs`."""
    argv = ["dd", f"if={disk}", "of=/dev/null", f"bs={block}"] + ([f"count={count}"] if count else [])
    env = dict(os.environ, LC_ALL="C")
    times = []
    for _ in range(runs):
        err = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stderr
        times.append(float(re.search(r"copied, ([0-9.e+-]+) s", err).group(1)))
    return max(min(times), 1e-9)


def make_disk(path: Path, mib: int) -> Path:
    with open(path, "wb") as f:
        f.writelines(os.urandom(1 << 20) for _ in range(mib))
        f.flush()
        os.fsync(f.fileno())
    return path


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:8.3f}" if a is not None and b else f"{'-':>8}"


def loop_exits(loop: Loop, baseline: Loop) -> dict[str, float]:
    """Exits (and irqchip events) per request inside the loop: this run minus the count=0 run."""
    def counts(stats: dict) -> dict[str, int]:
        out = {k: v for k, v in stats["exits"].items() if k != "interrupt"}
        out["notify exits"] = sum(q["exits"] for d in stats["devices"] for q in d["queues"])
        out["KVM_INTERRUPT"] = stats["exits"].get("interrupt", 0)
        out |= {k: v for k, v in stats["irqchip"].items() if k in IRQCHIP_COUNTERS}
        return out

    now, before = counts(loop.stats), counts(baseline.stats)
    return {k: (v - before.get(k, 0)) / loop.requests for k, v in now.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk-mib", type=int, default=64, help="size of the disk of random bytes (MiB)")
    parser.add_argument("--count-4k", type=int, default=2000, help="4 KiB reads per blk-4k run")
    parser.add_argument("--count-rng", type=int, default=1000, help="1-byte requests per rng-1 run")
    parser.add_argument("--runs", type=int, default=3, help="runs of each emu loop (the fastest is kept)")
    parser.add_argument("--qemu-runs", type=int, default=1, help="runs of each QEMU loop")
    parser.add_argument("--accel", choices=("tcg", "kvm", "both"), default="both", help="which accelerators")
    parser.add_argument("--qemu", action=argparse.BooleanOptionalAction, default=True,
                        help="compare with qemu-system-x86_64 when installed")  # fmt: skip
    args = parser.parse_args()
    work = tempdir()
    bench = Bench(make_disk(work / "disk.img", args.disk_mib), work, args.runs, args.qemu_runs,
                  qemu_binary() if args.qemu else None, kvm_available())  # fmt: skip
    bench.kvm = bench.kvm and args.accel != "tcg"
    accels = [a for a in ("tcg", "kvm") if args.accel in (a, "both") and (a == "tcg" or bench.kvm)]
    start = time.perf_counter()
    print(f"virtio benchmarks: {GUEST.name}, a {args.disk_mib} MiB disk of random bytes; best of {args.runs} emu "
          f"and {args.qemu_runs} QEMU runs; loops timed between the guest's go/end lines on COM1")  # fmt: skip
    if not bench.kvm:
        print("kvm: skipped (" + ("--accel tcg" if args.accel == "tcg" else "/dev/kvm missing or not usable") + ")")
    if bench.qemu is None:
        print("qemu: " + ("not installed" if args.qemu else "--no-qemu") + ": no emu/QEMU ratios")

    dd_seconds(bench.disk, "1M", None, 1)  # warm: the file is in the page cache from here on
    host_mb = args.disk_mib * (1 << 20) / dd_seconds(bench.disk, "1M", None, 3) / 1e6
    host_4k = args.count_4k / dd_seconds(bench.disk, "4k", args.count_4k, 3)
    print(f"host, page cache warm (not dropped): dd bs=1M {host_mb:9.1f} MB/s; "
          f"dd bs=4k count={args.count_4k} {host_4k:11.0f} reads/s ({1e6 / host_4k:.2f} us)")  # fmt: skip

    print(f"\nvirtio-blk sequential read, 128 KiB requests, 2 in flight ({args.disk_mib} MiB)")
    blk_table(bench, accels, "bench=blk-seq", "MB/s", lambda loop: loop.mb_per_s, host_mb)
    print(f"\nvirtio-blk 4 KiB reads, one at a time ({args.count_4k} per run)")
    blk_table(bench, accels, f"bench=blk-4k count={args.count_4k}", "reads/s", lambda loop: loop.rate, host_4k)

    if not bench.kvm:
        print("\nkvm: ioeventfd and irqfd comparisons skipped")
    else:
        rng_grid(bench, args.count_rng)
    print(f"\n(bench ran {time.perf_counter() - start:.0f} s)")


def blk_table(bench: Bench, accels: list[str], append: str, unit: str, figure, host: float) -> None:
    """One row per accelerator: emu, its ratio to the host's dd, QEMU, its ratio, emu/QEMU."""
    print(f"  accel {'emu ' + unit:>12} {'emu/host-dd':>12} {'qemu ' + unit:>13} {'qemu/host-dd':>13} {'emu/qemu':>9}")
    for accel in accels:
        emu = figure(bench.emu(accel, append, bench.drive))
        qemu_loop = bench.qemu_loop(accel, append, bench.drive)
        qemu = figure(qemu_loop) if qemu_loop else None
        shown = f"{qemu:13.1f} {ratio(qemu, host):>13}" if qemu else f"{'-':>13} {'-':>13}"
        print(f"  {accel:<5} {emu:12.1f} {ratio(emu, host):>12} {shown} {ratio(emu, qemu):>9}")


def rng_grid(bench: Bench, count: int) -> None:
    """kvm: the rng-1 round trip for ioeventfd off/on x irqchip user/kernel, emu and QEMU. The
    four emu settings take turns, `runs` rounds, so that load from elsewhere hits them alike."""
    print(f"\nkvm: virtio-rng 1-byte round trips, notify -> device thread -> used ring -> interrupt -> guest "
          f"({count} per run)")  # fmt: skip
    grid = [(ioeventfd, irqchip) for irqchip in ("user", "kernel") for ioeventfd in ("off", "on")]
    rng, append = ["-device", "virtio-rng-pci"], f"bench=rng-1 count={count}"

    def options(cell: tuple[str, str]) -> tuple[str, ...]:
        return ("--ioeventfd", cell[0], "--irqchip", cell[1])

    rounds = [{cell: bench.emu("kvm", append, rng, options(cell), stats=True, runs=1) for cell in grid}
              for _ in range(bench.runs)]  # fmt: skip
    print("  ioeventfd irqchip   emu us  qemu us  emu/qemu   emu exits per request in the loop (--stats-json)")
    latency: dict[tuple[str, str], float] = {}
    for cell in grid:
        loop = min((r[cell] for r in rounds), key=lambda loop: loop.seconds)
        baseline = bench.emu("kvm", "bench=rng-1 count=0", rng, options(cell), stats=True, runs=1)
        accel = "kvm" if cell[1] == "kernel" else "kvm,kernel-irqchip=off"
        qemu = bench.qemu_loop(accel, append, ["-device", f"virtio-rng-pci,ioeventfd={cell[0]}"])
        latency[cell] = us = loop.seconds / loop.requests * 1e6
        qus = qemu.seconds / qemu.requests * 1e6 if qemu else None
        exits = loop_exits(loop, baseline)
        shown = " ".join(f"{k} {v:.2f}" for k, v in sorted(exits.items(), key=lambda kv: -kv[1]) if v >= 0.005)
        q = f"{qus:8.1f}" if qus else "       -"
        print(f"  {cell[0]:<9} {cell[1]:<7}{us:8.1f} {q} {ratio(us, qus)}   {shown}")
    print("  ratios of emu's round trips, with / without (< 1: faster with it)")
    for irqchip in ("user", "kernel"):
        label = f"ioeventfd on/off, irqchip {irqchip}"
        print(f"    {label:<62}{ratio(latency['on', irqchip], latency['off', irqchip])}")
    for ioeventfd in ("off", "on"):
        label = f"irqchip kernel (irqfd) / user (KVM_INTERRUPT), ioeventfd {ioeventfd}"
        print(f"    {label:<62}{ratio(latency[ioeventfd, 'kernel'], latency[ioeventfd, 'user'])}")


if __name__ == "__main__":
    main()
