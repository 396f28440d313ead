"""Command line: `python -m emu --accel tcg|kvm [-m MiB] [--append CMDLINE] IMAGE`.

Subcommands: `trace`, `diff`, `fuzz` (emu.difftest) and `top` (emu.liveview.top: the live view of
a running emu through its monitor socket).

Exit status, as QEMU's isa-debug-exit defines it: a guest write of V to port 0xf4 ends the run
with (V << 1) | 1 (always odd). emu's own statuses are even: 0 when the guest stops by itself
(hlt with interrupts off, an ACPI power-off, a reset with -no-reboot), 2 for bad input or an
unusable host, 4 when the guest dies (triple fault, emulation failure), 128 + the signal after
SIGINT, SIGTERM or SIGHUP (130, 143, 129). On a terminal, Ctrl-C is the guest's key and Ctrl-A x
ends emu with 0 (emu.terminal). Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import EmuError, GuestError
from .gdb import DEFAULT_PORT, GdbServer, parse_gdb
from .liveview import write_plot
from .liveview.rates import format_lines, rates
from .monitor import parse_monitor
from .stats import report_json, report_table
from .terminal import parse_escape

MIN_MIB = 2
MAX_MIB = 1 << 20  # 1 TiB; the host's own memory (MemTotal) is the bound that matters


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"emu: {message} (see emu --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="emu", description="x86 PC emulator with two accelerators: tcg (Unicorn) and kvm (/dev/kvm).",
                epilog="Other commands: emu trace|diff|fuzz ... (differential testing), emu top unix:PATH (the live "
                       "view of a running emu through its -monitor socket; emu top --help).")  # fmt: skip
    p.add_argument("image", metavar="IMAGE", nargs="?",
                   help="a multiboot v1 kernel (ELF32, as qemu -kernel takes), a Linux bzImage, an ELF kernel with a "
                        "Xen PVH entry note (vmlinux), or a raw disk image to boot through the BIOS, as "
                        "qemu-system-x86_64 IMAGE")  # fmt: skip
    p.add_argument("-kernel", "--kernel", metavar="KERNEL",
                   help="a multiboot kernel, a Linux bzImage or a PVH ELF kernel (vmlinux), as QEMU takes it "
                        "(the same as IMAGE)")  # fmt: skip
    p.add_argument("-drive", "--drive", action="append", default=[], metavar="file=PATH,format=raw,if=ide|virtio",
                   help="a disk, as QEMU takes it: if=ide is the boot disk (one); if=virtio a virtio-blk disk "
                        "(readonly=on for a read-only one)")  # fmt: skip
    p.add_argument("-bios", "--bios", metavar="FILE", help="firmware ROM for raw disks (default: emu's, firmware/bios)")
    p.add_argument("-nographic", "--nographic", action="store_true",
                   help="no screen: the BIOS's int 10h text goes to stdout (also when stdout is not a terminal)")
    p.add_argument("-echr", "--echr", default="1", metavar="CODE",
                   help="on a terminal, the escape key before emu's own (as QEMU's -echr): 1 (Ctrl-A, default) "
                        "to 26 (Ctrl-Z), in decimal, 0x hex or 0 octal; then x quits, h lists the keys")  # fmt: skip
    p.add_argument("--screendump", metavar="FILE", help="write the final VGA text screen to FILE")
    p.add_argument("-device", "--device", action="append", default=[], metavar="DRIVER[,OPTION=VALUE...]",
                   help="add a device, in QEMU's words: virtio-{rng,balloon,console,net}-pci (PCI) or "
                        "-device (virtio-mmio); virtio-net takes netdev=ID[,mac=MAC]")  # fmt: skip
    p.add_argument("-chardev", "--chardev", action="append", default=[], metavar="socket|stdio,id=ID,...",
                   help="for virtio-console (-device virtio-console-pci,chardev=ID): a Unix socket, QEMU's "
                        "socket,id=ID,path=PATH,server=on,wait=off, or stdio,id=ID, the terminal both ways (typed "
                        "keys then go to the console, not COM1); without one the console only writes to the terminal")  # fmt: skip
    p.add_argument("-netdev", "--netdev", action="append", default=[], metavar="TYPE,id=ID,...",
                   help="a host network backend for a NIC: tap,id=ID,ifname=TAP[,script=no] or "
                        "socket,id=ID,udp=HOST:PORT,localaddr=HOST:PORT | listen=[HOST]:PORT | connect=HOST:PORT")  # fmt: skip
    p.add_argument("-monitor", "--monitor", metavar="stdio|unix:PATH,server=on,wait=off",
                   help="QEMU's human monitor (emu.monitor: info registers|tlb|pic|lapic|irq|pci|virtio|mtree|stats [json], "
                        "x, xp, stop, cont, system_reset, quit; `help` lists them) on the terminal or a Unix socket "
                        "(server,nowait is accepted too); on a terminal Ctrl-A c switches to it anyway")  # fmt: skip
    p.add_argument("-S", dest="start_paused", action="store_true",
                   help="do not start the vCPU: wait for the monitor's `cont` (or a debugger's continue), as QEMU's -S")
    p.add_argument("-gdb", "--gdb", metavar="tcp::PORT|tcp:HOST:PORT",
                   help="listen for gdb on a TCP port (gdb: `target remote :PORT`), as QEMU's -gdb (emu.gdb); "
                        "with -S the guest waits for gdb's continue")
    p.add_argument("-s", dest="gdb_default", action="store_true", help="short for -gdb tcp::1234, as QEMU's -s")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg", help="how to run guest code (default tcg)")
    p.add_argument("--irqchip", choices=("user", "kernel"), default="user",
                   help="kvm: emu's PIC with KVM_INTERRUPT (user, default) or KVM's in-kernel irqchip, with "
                        "irqfds for PCI interrupts (kernel)")  # fmt: skip
    p.add_argument("--ioeventfd", choices=("on", "off"), default="on",
                   help="kvm: queue notifications signal the device thread's eventfd inside KVM (KVM_IOEVENTFD, "
                        "default) or reach emu as VM exits (off)")  # fmt: skip
    p.add_argument("-m", dest="memory", default="128", metavar="MiB", help="guest RAM in MiB (default 128)")
    p.add_argument("--append", "-append", default="", metavar="CMDLINE", help="kernel command line")
    p.add_argument("--initrd", "-initrd", default="", metavar="FILE[,FILE...]",
                   help="a Linux kernel's initrd, or a multiboot kernel's modules, comma-separated (as qemu -initrd)")
    p.add_argument("--mmu", choices=("shadow", "shadow-python", "unicorn"), default="shadow",
                   help="tcg only: emu's shadow-paging MMU (default; repeated fills served in C), the same "
                        "MMU with every fill in Python, or Unicorn's own page walker")
    p.add_argument("--mem-backing", choices=("4k", "thp", "hugetlb"), default="4k",
                   help="host pages behind guest RAM: 4 KiB pages (default), transparent huge pages, "
                        "or 2 MiB hugetlb pages from vm.nr_hugepages")
    p.add_argument("--dirty-log", action="store_true",
                   help="kvm: log the pages the guest writes (KVM_GET_DIRTY_LOG); counts in --stats")
    p.add_argument("-no-reboot", "--no-reboot", dest="no_reboot", action="store_true",
                   help="a guest's reset (reboot) ends emu with status 0 instead of restarting the guest, as QEMU's")
    p.add_argument("--stats", nargs="?", const="table", default=None, metavar="live",
                   help="print exits, instructions and time at exit; --stats live also prints, every interval, "
                        "exits/s by reason, instructions/s, TLB fills/s, interrupts/s and the CPU time split "
                        "(guest, emulator user/sys, idle, host steal) to stderr, as kvm_stat and top do")  # fmt: skip
    p.add_argument("--stats-interval", type=float, default=1.0, metavar="SECONDS",
                   help="the interval of --stats live and of --plot's samples (default 1)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write a PNG of exits/s, TLB fills/s and interrupts/s over the run at exit")
    p.add_argument("--stats-json", metavar="PATH", help="write the same statistics as JSON")
    p.add_argument("--version", action="version", version=f"emu {__version__}")
    return p


def parse_memory(text: str) -> int:
    value = text.upper().removesuffix("M").removesuffix("MIB")
    if text.upper().endswith("G"):
        value = str(int(text[:-1]) * 1024) if text[:-1].isdigit() else "x"
    if not value.isdigit():
        raise EmuError(f"-m {text}: expected a size in MiB, like -m 128")
    mib = int(value)
    if mib < MIN_MIB:
        raise EmuError(f"-m {text}: at least {MIN_MIB} MiB of guest RAM are needed")
    if mib > MAX_MIB:
        raise EmuError(f"-m {text}: emu supports at most {MAX_MIB} MiB of guest RAM")
    host = _host_memory_mib()
    if host is not None and mib > host:
        raise EmuError(f"-m {text}: more than this host's {host} MiB of memory")
    return mib


def _host_memory_mib() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def check_image(path: Path) -> None:
    if not path.exists():
        raise EmuError(f"{path}: no such file")
    if path.is_dir():
        raise EmuError(f"{path}: is a directory, not a kernel image")
    if not os.access(path, os.R_OK):
        raise EmuError(f"{path}: permission denied")
    size = path.stat().st_size
    if size == 0:
        raise EmuError(f"{path}: empty file")
    if size < 12:
        raise EmuError(f"{path}: truncated image ({size} bytes)")


def parse_modules(text: str) -> list[Path]:
    modules = [Path(item) for item in text.split(",") if item]
    for module in modules:
        if not module.is_file():
            raise EmuError(f"--initrd {module}: no such file")
    return modules


def parse_drive(spec: str) -> dict[str, str]:
    """QEMU's -drive file=PATH,format=raw,if=ide|virtio[,readonly=on]: its options, checked."""
    options = {}
    for item in spec.split(","):
        key, _, value = item.partition("=")
        options[key] = value
    if not options.get("file"):
        raise EmuError(f"-drive {spec}: needs file=PATH")
    if options.get("format", "raw") != "raw":
        raise EmuError(f"-drive {spec}: emu reads raw images only (format=raw)")
    options.setdefault("if", "ide")
    if options["if"] not in ("ide", "virtio"):
        raise EmuError(f"-drive {spec}: emu has IDE (if=ide, the boot disk) and virtio (if=virtio) disks")
    if options.get("readonly", "off") not in ("on", "off"):
        raise EmuError(f"-drive {spec}: readonly=on or readonly=off")
    unknown = set(options) - {"file", "format", "if", "media", "index", "readonly"}
    if unknown:
        raise EmuError(f"-drive {spec}: emu does not know {', '.join(sorted(unknown))}")
    return options


def parse_stats(args: argparse.Namespace) -> bool:
    """`--stats` alone is the table at exit, `--stats live` adds the live view: True then. The
    word after --stats is the image when it is not `live` (`emu --stats IMAGE` as before)."""
    if args.stats not in (None, "table", "live"):
        if args.image is not None:
            raise EmuError(f"--stats {args.stats}: --stats takes 'live' or nothing")
        args.image, args.stats = args.stats, "table"
    if not args.stats_interval > 0:
        raise EmuError(f"--stats-interval {args.stats_interval:g}: the interval must be above 0 s")
    if args.plot is not None and not args.plot:
        raise EmuError("--plot: give a file name (FILE.png)")
    return args.stats == "live"


def _print_live(before: dict, after: dict) -> None:
    """--stats live: one block per interval on stderr (stdout is the guest's COM1)."""
    print(format_lines(rates(before, after)), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("trace", "diff", "fuzz"):  # the differential-testing commands (emu.difftest)
        from .difftest.cli import COMMANDS

        return COMMANDS[argv[0]](argv[1:])
    if argv and argv[0] == "top":  # the live view of another emu, through its monitor (emu.liveview.top)
        from .liveview.top import main as top_main

        return top_main(argv[1:])
    args = build_parser().parse_args(argv)
    machine = gdb = None
    try:
        live = parse_stats(args)
        from .machine import Machine, MachineConfig

        drives = [parse_drive(spec) for spec in args.drive]
        boot = [d["file"] for d in drives if d["if"] == "ide"]
        virtio = [(Path(d["file"]), d.get("readonly") == "on") for d in drives if d["if"] == "virtio"]
        if args.kernel:  # QEMU's -kernel: the same as IMAGE (a multiboot kernel or a Linux bzImage)
            if args.image:
                raise EmuError("give the kernel once: as IMAGE or with -kernel")
            args.image = args.kernel
        if len(boot) > 1 or (boot and args.image):
            raise EmuError("give the boot disk once: as IMAGE or with -drive ...,if=ide")
        image = Path(boot[0] if boot else args.image or "")
        if not args.image and not boot:
            raise EmuError("no image: give a multiboot kernel or a disk image (see emu --help)")
        check_image(image)
        try:
            escape = parse_escape(args.echr)
        except ValueError as error:
            raise EmuError(str(error)) from None
        sample_interval = args.stats_interval if live or args.plot or args.monitor else None  # emu.liveview
        config = MachineConfig(kernel=image, accel=args.accel, memory_mib=parse_memory(args.memory),
                               append=args.append, count_instructions=args.stats or bool(args.stats_json),
                               display_name=args.image, modules=parse_modules(args.initrd),
                               mmu=args.mmu, mem_backing=args.mem_backing, dirty_log=args.dirty_log,
                               bios=Path(args.bios) if args.bios else None,
                               screendump=Path(args.screendump) if args.screendump else None,
                               nographic=args.nographic, devices=args.device, virtio_drives=virtio,
                               netdevs=args.netdev, chardevs=args.chardev, ioeventfd=args.ioeventfd == "on",
                               irqchip=args.irqchip, escape_char=escape, no_reboot=args.no_reboot,
                               start_paused=args.start_paused,
                               monitor=parse_monitor(args.monitor) if args.monitor else None,
                               sample_interval=sample_interval)  # fmt: skip
        gdb_spec = args.gdb or (f"tcp::{DEFAULT_PORT}" if args.gdb_default else None)
        gdb_address = parse_gdb(gdb_spec) if gdb_spec else None
        machine = Machine(config)
        if live:
            machine.sampler.on_sample = _print_live
        if gdb_address is not None:
            gdb = GdbServer(machine, *gdb_address)
            gdb.start()
        status = machine.run()
    except (EmuError, GuestError) as err:
        print(f"emu: {err}", file=sys.stderr)
        status = err.exit_status
    except KeyboardInterrupt:
        status = 130
    if gdb is not None:
        gdb.finish(status)  # a gdb waiting for the target hears that it ended
    if machine is not None:
        if args.stats:
            print(report_table(machine), file=sys.stderr)
        if args.plot and machine.sampler is not None:
            try:
                write_plot(machine.sampler.samples(), args.plot)
            except OSError as error:
                print(f"emu: --plot {args.plot}: {error.strerror or error}", file=sys.stderr)
                status = status or 2
        if args.stats_json:
            report_json(machine, Path(args.stats_json))
        machine.close()
    return status
