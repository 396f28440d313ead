"""The PC: guest RAM, the buses and legacy devices, one vCPU, and the loop that runs them.

This is the VMM's main loop, the same on both accelerators:

    fire due timers (PIT, RTC, local APIC timer) -> hand terminal input to the UART -> if the
    local APIC requests an interrupt (its own IRR above the priority, or the PIC's INTR through
    LINT0) and the vCPU can take it, acknowledge (INTA) and inject; else ask for an interrupt
    window -> run the vCPU until it returns -> halt: sleep until the next timer or input; kick: loop.

Legacy device callbacks run on this thread. Each virtio device has its own thread, woken by
eventfds (emu.devices.virtio.iothread); device models are guarded by one lock, `Machine.lock`,
which this thread holds while it services devices and takes for each port/MMIO access, and
drops while guest code runs. On kvm other threads *kick* the vCPU: the `Kicker` at
the next timer deadline, the terminal reader when input arrives, a signal handler on Ctrl-C.
On tcg a run ends itself at the deadline (VCpu.set_deadline) and input waits for it, for the
guest's next read of COM1, or wakes a halted guest; only ending the run kicks from outside, and
the Kicker when the guest arms a timer earlier than the run's deadline while it runs (a one-shot
PIT count: Linux's tick once it has a clocksource such as ACPI's PM timer).
Port IO is served inside `VCpu.run()` through `self.buses` (the IoHandler); when a device
raises INTR during such an access, the APIC's output callback stops run() from inside the hook.

Interrupt controllers (emu.devices.lapic, ioapic, pic): CPU 0's local APIC at 0xFEE00000 decides
what the CPU takes; the 8259 pair sits behind its LINT0 (ExtINT, "virtual wire"), and each ISA
IRQ line also reaches the I/O APIC at 0xFEC00000 (IRQ 0 on pin 2). A guest uses either: a
PIC-only guest never notices the APICs. With --irqchip kernel all three are KVM's instead.

Memory map: the PC's (emu.memory): RAM at 0-640 KiB, from 1 MiB up to min(-m, 3 GiB), and the
rest of -m from 4 GiB, one accelerator region (KVM memory slot) per range; the I/O APIC page at
0xFEC00000 and the local APIC page at 0xFEE00000 are MMIO; the legacy hole 0xA0000-0xFFFFF and
everything else that is not RAM is unassigned and reads as zeros (as in QEMU).
Port map: PIC 0x20/0xA0, PIT 0x40-0x43, port B 0x61, RTC 0x70-0x71, POST 0x80, port A 0x92,
ELCR 0x4d0-0x4d1, isa-debug-exit 0xf4-0xf7, COM1 0x3f8-0x3ff (IRQ 4), PCI configuration and the
reset control register 0xcf8-0xcff, ACPI PM registers 0x600-0x60b (SCI: IRQ 9).

Reset: port 0xcf9 (the ACPI reset register) or port 0x92 asks for a system reset; the loop then
resets every device in place, clears RAM and loads the guest again (`reset`), or with
-no-reboot ends the run with status 0. A triple fault is not a reset here: it ends the run as a
dead guest (status 4, with the fault chain), where QEMU would reset (or exit, with -no-reboot).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .accel import DebugExit as StepExit
from .accel import IoEventFd
from .accel import (Accelerator, CpuState, HaltExit, InternalErrorExit, InterruptWindowExit, KickExit,
                    ShutdownExit, VCpu, VcpuExit)  # fmt: skip
from .clock import Clock, InstructionClock
from .devices.acpi_pm import BLOCK_SIZE as ACPI_PM_PORTS
from .devices.acpi_pm import AcpiPm
from .devices.bus import Buses
from .devices.debug_exit import DebugExit
from .devices.pci import I440fxHostBridge, PciHost, Piix3IsaBridge
from .devices.virtio.pci import BAR_INDEX as VIRTIO_PCI_BAR
from .devices.virtio.pci import NOTIFY as VIRTIO_PCI_NOTIFY
from .devices.virtio.pci import NOTIFY_MULTIPLIER, VirtioPci
from .devices.virtio.balloon import VirtioBalloon
from .devices.virtio.blk import VirtioBlk
from .devices.virtio.console import VirtioConsole
from .devices.virtio.device import VirtioDevice
from .devices.chardev import UnixSocketChardev, parse_chardev
from .devices.virtio.iothread import DeviceThread
from .monitor import BANNER, Monitor, MonitorServer
from .monitor.server import STDIO
from .runstate import RunControl, RunState
from .liveview.sampler import Sampler
from .devices.virtio.legacy import QUEUE_NOTIFY as LEGACY_QUEUE_NOTIFY
from .devices.virtio.net import DEFAULT_MAC, VirtioNet, parse_mac
from .net import NetBackend, parse_netdev
from .devices.virtio.mmio import WINDOW as MMIO_WINDOW
from .devices.virtio.mmio import VirtioMmio
from .devices.virtio.rng import VirtioRng
from .devices.pic import Pic8259Pair
from .devices.ioapic import IOAPIC_BASE_ADDRESS, IOAPIC_WINDOW, FanOutLine, IoApic, ioapic_pin_of_isa_irq
from .devices.lapic import APIC_BASE_ADDRESS, APIC_WINDOW, LocalApic
from .devices.pit import Pit8254
from .devices.port61 import SystemControlPortB
from .devices.rtc import CmosRtc
from .devices.serial import Uart16550
from .devices.system_ports import PostCodePort, SystemControlPortA
from .errors import EmuError, GuestError
from .devices.ata import AtaController
from .devices.disk import DiskImage
from .devices.debugcon import FirmwareConsole
from .devices.serial import FdSink
from .devices.vga import VgaText
from .display import TerminalScreen, terminal_fits
from .loader import acpi, linux, multiboot, pvh
from .loader.pc_tables import bios_tables_rom
from .loader.detect import ImageKind, detect_image
from .loader.firmware import PcFirmware, load_bios
from .memory import GuestMemory
from .terminal import CTRL_A, TerminalSession

COM1_BASE, COM1_IRQ = 0x3F8, 4
DETERMINISTIC_EPOCH_NS = 946_684_800 * 1_000_000_000  # 2000-01-01 00:00:00 UTC, the RTC's start
WINDOW_POLL_NS = 200_000  # tcg: how often to look for IF=1 while an interrupt waits
HALT_CHECK_NS = 500_000_000  # kvm --irqchip kernel: how often to look for a guest halted with IF=0
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # end the run cleanly (Machine._on_signal)


@dataclass
class MachineConfig:
    kernel: Path
    accel: str = "tcg"
    memory_mib: int = 128
    append: str = ""
    count_instructions: bool = False
    display_name: str | None = None
    modules: list[Path] = field(default_factory=list)
    mmu: str = "shadow"  # tcg: "shadow" (emu's MMU), "shadow-python" (no C front) or "unicorn" (its walker)
    mem_backing: str = "4k"  # host pages behind guest RAM: "4k", "thp" or "hugetlb" (emu.memory)
    dirty_log: bool = False  # log the pages the guest writes (kvm: KVM_GET_DIRTY_LOG)
    bios: Path | None = None  # a raw disk boots through this ROM (default: emu's, firmware/bios)
    screendump: Path | None = None  # write the final VGA text screen here
    nographic: bool = False  # never draw the VGA screen on the terminal (its text goes to stdout)
    escape_char: int = CTRL_A  # on a terminal, the key before emu's own (Ctrl-A x quits; emu.terminal)
    deterministic: bool = False  # stepping runs: time from the instruction count (emu.clock.InstructionClock)
    icount_shift: int = 3  # deterministic: 2**shift ns of guest time per instruction
    devices: list[str] = field(default_factory=list)  # -device DRIVER[,...]: PCI devices from slot 2 up
    virtio_drives: list[tuple[Path, bool]] = field(default_factory=list)  # -drive if=virtio: (image, read-only)
    ioeventfd: bool = True  # kvm: queue notifications signal the device thread's eventfd in the kernel
    irqchip: str = "user"  # kvm: "user" (emu's PIC, KVM_INTERRUPT) or "kernel" (KVM_CREATE_IRQCHIP, irqfds)
    netdevs: list[str] = field(default_factory=list)  # -netdev TYPE,id=ID,...: host backends for NICs
    chardevs: list[str] = field(default_factory=list)  # -chardev socket,id=ID,path=PATH,...: for virtio-console
    monitor: str | None = None  # -monitor unix:PATH,server=on,wait=off: the socket's path, or "stdio" (emu.monitor)
    start_paused: bool = False  # -S: the vCPU waits for the monitor's `cont` (or gdb's) before its first instruction
    sample_interval: float | None = None  # snapshots of the counters every so many s (emu.liveview)
    no_reboot: bool = False  # -no-reboot: a guest's reset ends the run (status 0) instead of restarting it


MMIO_BASE = 0xFEB0_0000  # virtio-mmio windows, 4 KiB apart, below the IOAPIC's page
MMIO_IRQS = (5, 9, 10, 15)  # ISA IRQs no legacy device of this PC uses


class Kicker(threading.Thread):
    """Kicks the running vCPU at a deadline (the next device timer), and again until it notices.

    The machine schedules a deadline only while the vCPU runs guest code; while the guest is
    halted the main thread sleeps until the deadline itself, and the kicker sleeps too.
    """

    def __init__(self, vcpu: VCpu) -> None:
        super().__init__(name="emu-kicker", daemon=True)
        self.vcpu = vcpu
        self._cond = threading.Condition()
        self._deadline: int | None = None
        self._sleeping_until: int | None = None  # what the thread's current wait is bounded by
        self._stopped = False

    def schedule(self, deadline_ns: int | None) -> None:
        """Set the next kick. Wakes the thread only if it would otherwise sleep past it: a later
        deadline or none is noticed when the current wait ends, which saves a thread wake-up
        per guest timer tick."""
        with self._cond:
            self._deadline = deadline_ns
            if deadline_ns is not None and (self._sleeping_until is None or deadline_ns < self._sleeping_until):
                self._cond.notify()

    def schedule_earlier(self, deadline_ns: int) -> None:
        """A device armed a timer while the vCPU ran (in an exit served inside run()): kick by
        then if that is sooner than planned. With the in-kernel irqchip the guest's `hlt` stays
        in KVM, so no halt exit would bring the loop back to look at the timers otherwise."""
        with self._cond:
            if self._deadline is None or deadline_ns < self._deadline:
                self._deadline = deadline_ns
                if self._sleeping_until is None or deadline_ns < self._sleeping_until:
                    self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def run(self) -> None:
        with self._cond:
            while not self._stopped:
                if self._deadline is None:
                    self._sleeping_until = None
                    self._cond.wait()
                    continue
                delay = self._deadline - time.monotonic_ns()
                if delay > 0:
                    self._sleeping_until = self._deadline
                    self._cond.wait(delay / 1e9)
                    continue
                # Due: kick, and repeat every millisecond until the machine reschedules, in case
                # the kick landed in the gap between two emu_start calls (Unicorn drops a stop
                # requested while idle).
                self.vcpu.kick()
                self._deadline = time.monotonic_ns() + 1_000_000


@dataclass
class Machine:
    config: MachineConfig
    memory: GuestMemory = field(init=False)
    accel: Accelerator = field(init=False)
    vcpu: VCpu = field(init=False)
    exit_status: int | None = None
    resets: int = 0  # system resets the guest asked for and got (a reboot)
    _fatal: GuestError | None = None
    idle_ns: int = 0
    wall_ns: int = 0
    # For views from other threads (emu.liveview): the vCPU thread's kernel id (/proc/self/task),
    # when run() began (monotonic ns), and while halted (idle_ns before this halt, its start)
    vcpu_tid: int | None = None
    started_ns: int | None = None
    halted: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        self.kind = detect_image(cfg.kernel)
        if self.kind in (ImageKind.LINUX, ImageKind.PVH) and len(cfg.modules) > 1:
            raise EmuError("-initrd: a Linux kernel takes one initrd file")
        self.firmware = PcFirmware(load_bios(cfg.bios)) if self.kind is ImageKind.RAW_DISK else None
        self.clock = InstructionClock(shift=cfg.icount_shift) if cfg.deterministic else Clock()
        self.memory = GuestMemory.pc(cfg.memory_mib << 20, backing=cfg.mem_backing)
        self.accel = _create_accelerator(cfg, self.memory)
        # A Linux kernel booted directly still looks in F0000-FFFFF for the BIOS's tables ($PIR, MP, ACPI)
        linux_kinds = (ImageKind.LINUX, ImageKind.PVH)
        self.bios_tables = bios_tables_rom(self.memory.layout) if self.kind in linux_kinds else None
        tables = [self.bios_tables.region()] if self.bios_tables else []
        for region in self.memory.regions() + (self.firmware.regions() if self.firmware else []) + tables:
            self.accel.add_memory_region(region)
        if cfg.dirty_log:
            self.accel.enable_dirty_log()
        self.buses = Buses()
        self.lock = threading.RLock()  # the device lock (see the module doc)
        self._build_devices()
        self.device_threads = [DeviceThread(t.device, self.lock) for t in [*self.virtio, *self.virtio_mmio]]
        self._transports = list(zip([*self.virtio, *self.virtio_mmio], self.device_threads))
        self._ioeventfds: dict[int, set[IoEventFd]] = {}  # id(transport) -> registered
        self.ioeventfd_transports: set[int] = set()  # id() of those that ever had ioeventfds
        self._threads_running = False
        for transport in self.virtio:
            transport.on_bars_changed = self._bars_changed
        for thread in self.device_threads:
            if isinstance(thread.device, VirtioNet):
                thread.device.attach_backend(thread)
            elif isinstance(thread.device, VirtioConsole) and isinstance(thread.device.sink, UnixSocketChardev):
                thread.device.sink.attach(thread, thread.device.receive)
        for netdev in self.netdevs.keys() - self._netdevs_used:
            print(f"emu: warning: -netdev {netdev} has no NIC (add -device virtio-net-pci,netdev={netdev})",
                  file=sys.stderr)  # fmt: skip
        io = _LockedIo(self.buses, self.lock) if self.device_threads else self.buses
        self.vcpu = self.accel.create_vcpu(0, io)
        if (self.virtio or self.virtio_mmio or self.lapic) and hasattr(self.vcpu, "install_block_hook"):
            # tcg: MMIO devices (the local APIC's EOI and TPR among them) interrupt through a safe
            # stop (see TcgVCpu.kick), and interrupt windows open at the exact instruction
            self.vcpu.install_block_hook()
        if self.lapic is not None:
            self.pic.master.on_output = self.lapic.pic_output_changed
            self.lapic.on_output = self._intr_changed
            self.vcpu.attach_apic(self.lapic)
            if self.firmware is None:  # a kernel booted directly finds what a BIOS leaves
                self.lapic.firmware_setup()
        else:
            self.pic.master.on_output = self._intr_changed
            if self.irqchip is not None and self.firmware is None:  # KVM's APIC, as a BIOS leaves it
                self.irqchip.firmware_lapic_setup(self.vcpu.fd)
        self._in_guest = False
        self._wake = threading.Event()
        self._pending_input = b""
        self._reset_requested = False
        self._poll_window = self.accel.name == "tcg"
        self.vcpu.set_state(self._load_guest())
        # Other threads (the monitor, the gdb stub) reach the vCPU through this (emu.runstate)
        self.control = RunControl(kick=self.vcpu.kick, wake=self._wake.set, lock=self.lock)
        if cfg.start_paused:
            self.control.state, self.control.reason = RunState.PRELAUNCH, "prelaunch"
        self.paused_ns = 0
        self.hmp = Monitor(self)  # on the socket (-monitor unix:), the terminal (-monitor stdio, Ctrl-A c)
        self.monitor = MonitorServer(self.hmp, cfg.monitor) if cfg.monitor and cfg.monitor != STDIO else None
        # --stats live, --plot, -monitor (its snapshots): the counters' history (emu.liveview)
        self.sampler = Sampler(self, cfg.sample_interval) if cfg.sample_interval else None
        self._debug_halt = False  # a debugger's step ended in `hlt` (debug_step)

    def _load_guest(self) -> CpuState:
        """Put the guest in RAM and return the vCPU's first state: at power-on and at every reset."""
        cfg = self.config
        if self.firmware is not None:  # from the reset vector, through the BIOS
            return self.firmware.reset_state()
        append = " ".join([cfg.append, *self.kernel_parameters]).strip()
        if self.kind is ImageKind.LINUX:  # the Linux boot protocol (emu.loader.linux)
            state, self.linux = linux.load(cfg.kernel, self.memory, append, cfg.modules[0] if cfg.modules else None)
            return state
        if self.kind is ImageKind.PVH:  # an ELF kernel at its Xen PVH entry (emu.loader.pvh)
            rsdp = pvh.find_rsdp(self.bios_tables.data, self.bios_tables.guest_address) if self.bios_tables else 0
            state, self.pvh = pvh.load(cfg.kernel, self.memory, append, cfg.modules[0] if cfg.modules else None,
                                       rsdp=rsdp, name=cfg.display_name or str(cfg.kernel))  # fmt: skip
            return state
        return multiboot.boot(cfg.kernel, cfg.display_name or str(cfg.kernel), self.memory, append, cfg.modules)

    # devices ---------------------------------------------------------------------------------
    def _build_devices(self) -> None:
        ports = self.buses.ports
        self.pic = Pic8259Pair()
        self.pic.register(ports)
        # Interrupt wires: into emu's PIC and I/O APIC, or with --irqchip kernel into KVM's (ISA
        # devices by KVM_IRQ_LINE, PCI and virtio-mmio interrupts by irqfds; emu.kvm_accel.irqchip)
        self.irqchip = None
        self.lapic: LocalApic | None = None
        self.ioapic: IoApic | None = None
        if self.config.irqchip == "kernel":
            self.irqchip = self.accel.create_irqchip()
            self._line, self._pci_line = self.irqchip.line, self.irqchip.irqfd_line
        else:
            self._build_apics()
            self._line = self._pci_line = self._isa_line
        # What the CPU's interrupt input asks: the local APIC, which has the PIC behind LINT0
        self.interrupts: LocalApic | Pic8259Pair = self.lapic or self.pic
        self.pit = Pit8254(self.clock, self._line(0))
        ports.register(0x40, 4, self.pit, "pit")
        self.port_b = SystemControlPortB(self.pit)
        ports.register(0x61, 1, self.port_b, "port-b")
        self.rtc = CmosRtc(self.clock, self._line(8))
        if isinstance(self.clock, InstructionClock):  # the date, too, from the instruction count
            clock = self.clock
            self.rtc.wall_ns = lambda: DETERMINISTIC_EPOCH_NS + clock.now_ns()
        self.rtc.set_memory_size(self.memory.size, self.memory.layout.below_4g_size)
        ports.register(0x70, 2, self.rtc, "rtc")
        self.stdout = FdSink(on_closed=lambda: self.request_exit(141))  # 128 + SIGPIPE, as a shell reports it
        self.uart = Uart16550(self._line(COM1_IRQ), sink=self.stdout)
        ports.register(COM1_BASE, 8, _TerminalFeed(self.uart, self), "com1")
        self.vga: VgaText | None = None
        self.display: TerminalScreen | None = None
        self.ata: AtaController | None = None
        if self.firmware is not None:  # the PC a BIOS expects: a VGA, its console, a disk
            self.vga = VgaText(self.firmware.vga)
            ports.register(0x3C0, 0x20, self.vga, "vga")
            if not self.config.nographic and terminal_fits(1):  # the screen on the terminal, as QEMU's window
                self.display = TerminalScreen(self.vga)
            self.console = FirmwareConsole(None if self.display else self.stdout.write, self._firmware_fatal)
            ports.register(0xE9, 4, self.console, "firmware-console")
            self.ata = AtaController(DiskImage(self.config.kernel), self._line(14))
            self.ata.register(ports)
        ports.register(0xF4, 4, DebugExit(self), "isa-debug-exit")
        # The PC chipset of QEMU's `-machine pc`: i440FX host bridge, PIIX3 ISA bridge (PCI IRQ routing)
        self.pci = PciHost(self, self.buses)
        self.pci.register(ports)
        self.pci.attach(0, 0, I440fxHostBridge())
        self.isa_bridge = Piix3IsaBridge(irq_line=self._pci_line)
        self.pci.attach(1, 0, self.isa_bridge)
        if self.kind in (ImageKind.LINUX, ImageKind.PVH):  # no BIOS runs: route PIRQ A-D as one would
            self.isa_bridge.program_firmware_routes()  # ($PIR, the MP table and ACPI's _PRT say so)
        self.virtio: list[VirtioPci] = []
        self.disks: list[DiskImage] = []
        self.chardevs = {c.id: c for c in map(parse_chardev, self.config.chardevs)}
        self.terminal_console: VirtioConsole | None = None  # the console on -chardev stdio
        self.netdevs: dict[str, NetBackend] = {}
        self._netdevs_used: set[str] = set()
        for spec in self.config.netdevs:
            backend = parse_netdev(spec)
            if backend.id in self.netdevs:
                backend.close()
                raise EmuError(f"-netdev {spec}: id {backend.id} is taken")
            self.netdevs[backend.id] = backend
        functions = [self._virtio_disk(path, readonly) for path, readonly in self.config.virtio_drives]
        functions += [self._pci_device(spec) for spec in self.config.devices if not _is_mmio(spec)]
        # virtio-mmio devices: fixed windows and ISA IRQs, announced on the kernel command line
        self.virtio_mmio: list[VirtioMmio] = []
        self.kernel_parameters: list[str] = []
        for spec in filter(_is_mmio, self.config.devices):
            if len(self.virtio_mmio) == len(MMIO_IRQS):
                raise EmuError(f"-device {spec}: at most {len(MMIO_IRQS)} virtio-mmio devices")
            base, irq = MMIO_BASE + 0x1000 * len(self.virtio_mmio), MMIO_IRQS[len(self.virtio_mmio)]
            device = VirtioMmio(self._virtio_device(spec), self._pci_line(irq))
            self.buses.mmio.register(base, MMIO_WINDOW, device, f"virtio-mmio {spec}")
            self.virtio_mmio.append(device)
            self.kernel_parameters.append(f"virtio_mmio.device={MMIO_WINDOW}@{base:#x}:{irq}")
        for slot, function in enumerate(functions, start=2):  # 00:02.0 on, as under `qemu -nodefaults`
            self.pci.attach(slot, 0, function)
            self.isa_bridge.connect(slot, function)
            self.virtio.append(function)
        ports.register(0x80, 1, PostCodePort(), "post")
        self.port_a = SystemControlPortA(self)
        ports.register(0x92, 1, self.port_a, "port-a")
        # ACPI's fixed hardware (PM1 registers, PM timer, the SCI), described by the FADT (emu.loader.acpi)
        self.acpi_pm = AcpiPm(self.clock, self._line(acpi.SCI_IRQ), self, s5_type=acpi.SLP_TYP_S5)
        ports.register(acpi.PM_BASE, ACPI_PM_PORTS, self.acpi_pm, "acpi-pm")

    def _build_apics(self) -> None:
        """CPU 0's local APIC at 0xFEE00000 with the PIC on its LINT0, and the I/O APIC at
        0xFEC00000. Every ISA IRQ line reaches both its 8259 input and an I/O APIC pin (IRQ 0 on
        pin 2); PCI INTx reach ISA lines through the PIIX3's PIRQ routes, so the same fan-out."""
        self.lapic = LocalApic(self.clock, self.pic, on_warning=_warn_lapic)
        self.ioapic = IoApic(lapics=[self.lapic])
        self.lapic.on_eoi = self.ioapic.eoi
        self.buses.mmio.register(APIC_BASE_ADDRESS, APIC_WINDOW, self.lapic, "lapic")
        self.buses.mmio.register(IOAPIC_BASE_ADDRESS, IOAPIC_WINDOW, self.ioapic, "ioapic")
        self._isa_lines = {irq: FanOutLine((self.pic.line(irq), self.ioapic.line(ioapic_pin_of_isa_irq(irq))))
                           for irq in range(16)}  # fmt: skip

    def _isa_line(self, irq: int) -> FanOutLine:
        """The wire of ISA IRQ `irq` (0-15): to the 8259 pair and to the I/O APIC."""
        if irq not in self._isa_lines:
            raise ValueError(f"IRQ {irq} is not 0-15")
        return self._isa_lines[irq]

    def _virtio_disk(self, path: Path, readonly: bool) -> VirtioPci:
        disk = DiskImage(path, readonly=readonly)
        self.disks.append(disk)
        return VirtioPci(device=VirtioBlk(self.memory, disk=disk))

    def _pci_device(self, spec: str) -> VirtioPci:
        """QEMU's disable-legacy=on|off|auto and disable-modern=on|off (emu.devices.virtio.legacy).
        auto keeps VirtioPci's default (on QEMU's `pc`, auto means legacy on), or legacy when modern is off."""
        driver, *items = spec.split(",")
        allowed = {"disable-legacy": ("on", "off", "auto"), "disable-modern": ("on", "off")}
        chosen = {name: value for name, _, value in (item.partition("=") for item in items) if name in allowed}
        for name, value in chosen.items():
            if value not in allowed[name]:
                raise EmuError(f"-device {spec}: {name} takes {'|'.join(allowed[name])}, not {value!r}")
        interfaces = {"modern": chosen.get("disable-modern", "off") == "off"}
        if chosen.get("disable-legacy", "auto") != "auto" or not interfaces["modern"]:
            interfaces["transitional"] = chosen.get("disable-legacy") != "on"
        rest = ",".join([driver, *(item for item in items if item.partition("=")[0] not in allowed)])
        try:
            return VirtioPci(device=self._virtio_device(rest), **interfaces)
        except ValueError as error:
            raise EmuError(f"-device {spec}: {error}") from None

    def _virtio_device(self, spec: str) -> VirtioDevice:
        driver, *items = spec.split(",")
        options = dict(item.partition("=")[::2] for item in items)
        if driver in ("virtio-net-pci", "virtio-net-device"):
            return self._virtio_net(spec, options)
        if driver in ("virtio-console-pci", "virtio-console-device") and "chardev" in options:
            return self._virtio_console(spec, options)
        if options:
            raise EmuError(f"-device {spec}: {driver} takes no options")
        if driver in ("virtio-rng-pci", "virtio-rng-device"):
            return VirtioRng(self.memory)
        if driver in ("virtio-balloon-pci", "virtio-balloon-device"):
            return VirtioBalloon(self.memory)
        if driver in ("virtio-console-pci", "virtio-console-device"):  # one port, on the terminal
            return VirtioConsole(self.memory, sink=self.stdout)
        raise EmuError(f"-device {driver}: emu has no such device (it has: virtio-rng-pci, virtio-rng-device, "
                       "virtio-balloon-pci, virtio-balloon-device, virtio-console-pci, virtio-console-device, "
                       "virtio-net-pci, virtio-net-device)")  # fmt: skip

    def _virtio_console(self, spec: str, options: dict[str, str]) -> VirtioConsole:
        """`-device virtio-console-pci,chardev=ID`: the console on a -chardev: a Unix socket, or
        the terminal both ways (`-chardev stdio`: typed keys go to it instead of COM1)."""
        chardev = self.chardevs.get(options.pop("chardev"))
        if chardev is None or options:
            raise EmuError(f"-device {spec}: chardev= must name a -chardev (and nothing else may follow)")
        if isinstance(chardev, UnixSocketChardev):
            return VirtioConsole(self.memory, sink=chardev)
        if self.terminal_console is not None:
            raise EmuError(f"-device {spec}: the terminal's input already goes to another console")
        self.terminal_console = VirtioConsole(self.memory, sink=self.stdout)
        return self.terminal_console

    def _virtio_net(self, spec: str, options: dict[str, str]) -> VirtioNet:
        """`-device virtio-net-pci,netdev=ID[,mac=52:54:00:12:34:56]`: a NIC on a -netdev backend."""
        netdev = options.pop("netdev", "")
        mac_text = options.pop("mac", "")
        if options:
            raise EmuError(f"-device {spec}: virtio-net takes netdev= and mac=, not {', '.join(sorted(options))}")
        if netdev not in self.netdevs:
            known = ", ".join(sorted(self.netdevs)) or "none was given"
            raise EmuError(f"-device {spec}: netdev={netdev} names no -netdev (ids: {known})")
        if netdev in self._netdevs_used:
            raise EmuError(f"-device {spec}: -netdev {netdev} already has a NIC")
        self._netdevs_used.add(netdev)
        try:
            mac = parse_mac(mac_text) if mac_text else bytes([*DEFAULT_MAC[:5], DEFAULT_MAC[5] + len(self._netdevs_used) - 1])
        except ValueError as error:
            raise EmuError(f"-device {spec}: {error}") from None
        return VirtioNet(self.memory, mac=mac, backend=self.netdevs[netdev])

    # ioeventfds: where each queue's notification register is now ----------------------------
    def _bars_changed(self, function: VirtioPci) -> None:
        self.pci.map_bars(function)
        self._sync_ioeventfds(function)

    def _notify_writes(self, transport: VirtioPci | VirtioMmio, thread: DeviceThread) -> set[IoEventFd]:
        """The guest writes that notify each queue, as QEMU registers them: any write to the
        queue's own address in the modern PCI notify region, the queue's index written to the
        legacy interface's notify port or to QueueNotify on virtio-mmio."""
        if not (self._threads_running and self.config.ioeventfd):
            return set()
        if isinstance(transport, VirtioMmio):
            base = MMIO_BASE + 0x1000 * self.virtio_mmio.index(transport)
            return {IoEventFd(base + 0x50, 4, fd, datamatch=i) for i, fd in enumerate(thread.eventfds)}
        bars, events = dict(transport.decoded_bars()), set()
        modern, legacy = bars.get(VIRTIO_PCI_BAR), bars.get(0) if transport.legacy is not None else None
        if modern is not None and modern.address:
            notify = modern.address + VIRTIO_PCI_NOTIFY
            events |= {IoEventFd(notify + NOTIFY_MULTIPLIER * i, 0, fd) for i, fd in enumerate(thread.eventfds)}
        if legacy is not None and legacy.address:  # the legacy queue-notify port, the index written to it
            port = legacy.address + LEGACY_QUEUE_NOTIFY
            events |= {IoEventFd(port, 2, fd, datamatch=i, pio=True) for i, fd in enumerate(thread.eventfds)}
        return events

    def _sync_ioeventfds(self, transport: VirtioPci | VirtioMmio) -> None:
        thread = next(t for tr, t in self._transports if tr is transport)
        wanted, have = self._notify_writes(transport, thread), self._ioeventfds.get(id(transport), set())
        for event in have - wanted:
            self.accel.remove_ioeventfd(event)
        self._ioeventfds[id(transport)] = now = (have & wanted) | {e for e in wanted - have if self.accel.add_ioeventfd(e)}
        if now:
            self.ioeventfd_transports.add(id(transport))

    def _intr_changed(self, level: bool) -> None:
        """The CPU's interrupt request (the local APIC's output, or the PIC's INTR without one)
        changed, during a port or MMIO access the vCPU is serving, on a device thread or in a
        timer: make run() return so the loop can deliver, or wake a halted guest (between the
        two, the loop looks anyway)."""
        if level:
            if self._in_guest:
                self.vcpu.kick()
            elif not _main_thread():
                self._wake.set()

    # SystemControl: what devices may ask of the machine --------------------------------------
    def request_exit(self, status: int) -> None:
        if self.exit_status is None:
            self.exit_status = status
        self.vcpu.kick()
        self.control.wake_waiters()  # a stopped vCPU (monitor `stop`, gdb) leaves its wait

    def _write_screendump(self) -> None:
        path = self.config.screendump
        if path is None:
            return
        text = self.vga.text() if self.vga is not None else ""
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"emu: --screendump {path}: {error.strerror}", file=sys.stderr)

    def _firmware_fatal(self, message: str) -> None:
        """The BIOS gave up (emu.devices.debugcon): end the run as a dead guest, with its words."""
        self._fatal = GuestError(f"firmware: {message}")
        self.vcpu.kick()

    def request_reset(self) -> None:
        """A device pulled the reset line (port CF9h, port 92h): the loop resets the machine, or
        with -no-reboot ends the run with status 0, as QEMU does."""
        self._reset_requested = True
        self.vcpu.kick()

    def reset(self) -> None:
        """A system reset, as QEMU's qemu_system_reset: every device to its power-on state, RAM
        cleared, the guest loaded again (a -kernel boot is reloaded from its files, as QEMU's
        linuxboot option ROM does at every boot; a raw disk restarts its BIOS at the reset
        vector) and the vCPU in its first state. The devices are reset in place rather than
        built again: the host side they hold (disk images, tap devices, sockets, device threads,
        the accelerator's memory slots) outlives a guest's reboot, as in QEMU."""
        self._reset_requested = False
        self._debug_halt = False  # a CPU after RESET is not halted
        self.resets += 1
        for device in self._resettable_devices():
            device.reset()
        if self.lapic is not None and self.firmware is None:  # the APIC as a BIOS leaves it, again
            self.lapic.firmware_setup()
        if self.kind in (ImageKind.LINUX, ImageKind.PVH):
            self.isa_bridge.program_firmware_routes()
        self.memory.clear()
        self.vcpu.reset(self._load_guest())

    def _resettable_devices(self) -> list:
        """The device models with a reset(): every board device and what sits on PCI."""
        devices = [self.pic, self.pit, self.port_b, self.rtc, self.uart, self.port_a, self.acpi_pm, self.pci,
                   *self.virtio_mmio]  # fmt: skip
        apics = [self.lapic, self.ioapic] if self.lapic is not None else []  # (--irqchip kernel: KVM's)
        return devices + apics + ([self.ata] if self.ata is not None else [])

    def wake(self) -> None:
        """From any thread: input arrived; interrupt a halt, or (kvm) a running vCPU."""
        self._wake.set()
        if not self.vcpu.preempts_itself:  # tcg: an asynchronous stop is not exact (see above)
            self.vcpu.kick()

    # the main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        kicker = Kicker(self.vcpu)
        kicker.start()
        if not self.vcpu.preempts_itself:
            self.clock.on_armed = lambda deadline: kicker.schedule_earlier(deadline) if self._in_guest else None
        elif hasattr(self.vcpu, "deadline_moved_earlier"):  # tcg: a timer armed mid-run shortens the slice
            vcpu = self.vcpu
            self.clock.on_armed = lambda deadline: vcpu.deadline_moved_earlier(deadline) if self._in_guest else None
        previous = {}
        watcher = None
        if _main_thread():  # SIGINT, SIGTERM and SIGHUP end the run cleanly: output flushed, stats written
            previous = {sig: signal.signal(sig, self._on_signal) for sig in ENDING_SIGNALS}
            watcher = _SignalWatcher(self.vcpu)
        start = time.monotonic_ns()
        self.vcpu_tid, self.started_ns = threading.get_native_id(), start
        if self.display is not None:
            self.display.start()
        for thread in self.device_threads:
            thread.start()
        if self.irqchip is not None:
            self.irqchip.start()
        self._threads_running = True
        if self.monitor is not None:
            self.monitor.start()
        if self.sampler is not None:
            self.sampler.start()
        for transport, _ in self._transports:
            self._sync_ioeventfds(transport)
        # stdin for COM1 (or a -chardev stdio console); on a terminal in raw mode, with Ctrl-A x to quit
        terminal = TerminalSession(wake=self.wake, quit=lambda: (self.request_exit(0), self.wake()),
                                   escape=self.config.escape_char, monitor=self.hmp.execute,
                                   monitor_focus=self.config.monitor == STDIO, banner=BANNER,
                                   monitor_done=lambda: self.hmp.quitting)  # fmt: skip
        self._terminal = terminal
        terminal.start()
        if terminal.interactive:  # someone types and watches: each byte of the guest's at once, not by lines
            self.stdout.limit = 1
        try:
            return self._loop(kicker)
        finally:
            terminal.close()  # the terminal as it was, on every way out (emu.terminal)
            if self.monitor is not None:
                self.monitor.stop()
            self._threads_running = False
            for transport, _ in self._transports:
                self._sync_ioeventfds(transport)
            for thread in self.device_threads:
                thread.stop()
            if self.display is not None:
                self.display.stop()
            self.wall_ns = time.monotonic_ns() - start
            if self.sampler is not None:
                self.sampler.stop()  # its last sample: the run's end
            self.accel.sync_dirty_log(final=True)
            kicker.stop()
            self.uart.flush()
            if self.ata is not None and self.ata.disk is not None:
                self.ata.disk.flush()  # the guest's writes reach the image file on every way out
            for disk in self.disks:
                disk.flush()
            self._write_screendump()
            if watcher is not None:
                watcher.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.request_exit(128 + signum)  # the shell's convention: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP
        # A guest halted with no timer sleeps in _wake.wait() with no timeout: wake it. Not by
        # _wake.set() here: the handler may run while this thread holds the Event's own lock.
        threading.Thread(target=self._wake.set, name="emu-signal-wake", daemon=True).start()

    def _checkpoint(self, kicker: Kicker) -> None:
        """Between two runs: serve what the monitor or a debugger asked of the vCPU thread, and
        stay here while the vCPU is stopped (emu.runstate). Stopped time counts as idle."""
        if not self.control.pending():
            return
        kicker.schedule(None)  # no kicks for a vCPU that does not run
        start = time.monotonic_ns()
        self.control.checkpoint(still=lambda: self.exit_status is not None or self._fatal is not None)
        elapsed = time.monotonic_ns() - start
        if elapsed > 1_000_000:
            self.paused_ns += elapsed
            self.idle_ns += elapsed
            self.vcpu.stats.idle_ns = self.idle_ns

    def _loop(self, kicker: Kicker) -> int:
        vcpu, lock = self.vcpu, self.lock
        self.control.start()
        try:
            return self._run_loop(vcpu, lock, kicker)
        finally:
            self.control.end()

    def _run_loop(self, vcpu: VCpu, lock: threading.RLock, kicker: Kicker) -> int:
        while True:
            self._checkpoint(kicker)
            if self._debug_halt and self.exit_status is None and self._fatal is None:
                if not self._halt(kicker):  # the guest waits in the hlt a debugger stepped onto
                    return 0
                continue
            with lock:
                self._service_devices()
                if self._fatal is not None:
                    raise self._fatal
                if self.exit_status is not None:
                    return self.exit_status
                if self._reset_requested:
                    if self.config.no_reboot:
                        self.uart.flush()
                        return 0
                    self.reset()
                window = self._update_interrupts()
                deadline = self.clock.next_deadline()
                if window and self._poll_window:
                    deadline = _earliest(deadline, time.monotonic_ns() + WINDOW_POLL_NS)
                if vcpu.preempts_itself:  # tcg: instruction-count slices end the run at the deadline
                    vcpu.set_deadline(deadline)
                else:
                    if self.irqchip is not None:  # `hlt` stays in KVM: look now and then whether for good
                        deadline = _earliest(deadline, time.monotonic_ns() + HALT_CHECK_NS)
                    kicker.schedule(deadline)
                self._in_guest = True  # still under the lock: a device thread's interrupt kicks from here on
            try:
                event = vcpu.run()
            finally:
                self._in_guest = False
            self.accel.sync_dirty_log()  # a no-op unless --dirty-log; at most every 100 ms
            if isinstance(event, (KickExit, InterruptWindowExit)):
                if self.irqchip is not None and vcpu.halted_for_good():
                    self.uart.flush()
                    print("emu: guest halted with interrupts disabled; nothing can wake it", file=sys.stderr)
                    return 0
                continue
            if isinstance(event, HaltExit):
                kicker.schedule(None)
                if not self._halt(kicker):
                    return 0
                continue
            if isinstance(event, StepExit):  # a breakpoint (emu.gdbstub): the vCPU stops for the debugger
                self.control.enter(RunState.DEBUG, "breakpoint")
                continue
            raise self._guest_died(event)

    def debug_step(self) -> VcpuExit:
        """A debugger's single step (emu.gdb), on the vCPU thread while it is stopped: one
        instruction, with no interrupt injected and no timer run meanwhile (QEMU's default,
        SSTEP_NOIRQ | SSTEP_NOTIMER). A step that executes `hlt` leaves the guest halted: when
        the vCPU goes on, the loop first waits for an interrupt, as after a run that halted. A
        step that kills the guest ends the run as a run would."""
        self.vcpu.request_interrupt_window(False)  # the loop asks again before its next run
        for _ in range(4):  # a kick left over from whoever asked for the step ends a try early
            event = self.vcpu.debug_step()
            if not isinstance(event, (KickExit, InterruptWindowExit)):
                break
        if isinstance(event, HaltExit):
            self._debug_halt = True
        elif not isinstance(event, (StepExit, KickExit, InterruptWindowExit)):
            self._fatal = self._guest_died(event)
        return event

    # one instruction at a time (emu.difftest: the tracer, the lockstep comparison) ---------------
    def start_stepping(self, terminal_input: bytes = b"") -> None:
        """Prepare step(): COM1's input is `terminal_input` (not stdin), given all at once."""
        self._terminal = _FixedInput(terminal_input)

    def step(self, inject: int | None = None, interrupts: bool = True, count: int = 1) -> StepResult:
        """Run one guest instruction with the machine around it: devices serviced first, then a
        pending PIC interrupt injected if the vCPU can take one (or `inject`, a vector recorded
        on another machine, instead of consulting the PIC; `interrupts=False` leaves pending ones
        pending). A halt with interrupts on waits for the next interrupt, as run() does; with
        interrupts off it ends the run. `count` > 1 runs that many instructions where the
        backend can (tcg; kvm single-steps), for catching up with a coarser peer."""
        self._service_devices()
        if self._fatal is not None:
            raise self._fatal
        if self.exit_status is not None:
            return StepResult(executed=False, finished=True)
        injected = None
        if inject is not None:
            self.vcpu.inject_interrupt(inject)
            injected = inject
        elif interrupts and self.interrupts.has_interrupt():
            if self.vcpu.interrupts_allowed():
                injected = self.interrupts.acknowledge()
                self.vcpu.inject_interrupt(injected)
                self.vcpu.request_interrupt_window(False)
            else:  # kvm: KVM_RUN stops (IRQ_WINDOW_OPEN) before the first instruction that can take it
                self.vcpu.request_interrupt_window(True)
        self._in_guest = True
        try:
            event = self.vcpu.step(count)
        finally:
            self._in_guest = False
        if isinstance(event, StepExit):
            if isinstance(self.clock, InstructionClock):
                self.clock.advance(count)
            return StepResult(interrupt=injected, finished=self.exit_status is not None)
        if isinstance(event, (KickExit, InterruptWindowExit)):
            return StepResult(interrupt=injected, executed=False)
        if isinstance(event, HaltExit):
            halted = StepResult(interrupt=injected, halted=True)
            if not self.vcpu.interrupts_allowed():
                halted.finished = True
                self.exit_status = 0 if self.exit_status is None else self.exit_status
            return halted
        raise self._guest_died(event)

    def _guest_died(self, event: object) -> GuestError:
        """The one error line for a vCPU exit that ends the guest (output flushed first)."""
        self.uart.flush()
        if isinstance(event, ShutdownExit):
            return GuestError(f"guest shut down: {event.reason}")
        if isinstance(event, InternalErrorExit):
            return GuestError(f"{self.accel.name}: {event.detail}")
        return GuestError(f"unexpected vCPU event {event!r}")

    def wait_for_interrupt(self) -> None:
        """After a step that halted with interrupts on: sleep until a device interrupts (with
        the deterministic clock: jump to the next timer instead, in no host time)."""
        if isinstance(self.clock, InstructionClock):
            while not self.interrupts.has_interrupt() and self.exit_status is None:
                if not self.clock.skip_to_next_deadline():
                    break
                self._service_devices()
            return
        self._halt()

    def _service_devices(self) -> None:
        self.clock.run_due()
        if self.display is not None:
            self.display.refresh(time.monotonic_ns())
        if self._pending_input or not self._terminal.data.empty():
            self._feed_terminal()

    def _feed_terminal(self) -> None:
        data = self._pending_input
        while not self._terminal.data.empty():
            data += self._terminal.data.get_nowait()
        if self.terminal_console is not None:  # -chardev stdio: typed keys go to the virtio console
            self._pending_input = b""
            self.terminal_console.receive(data)
            return
        room = self.uart.rx_space()
        self.uart.receive(data[:room])
        self._pending_input = data[room:]

    def _update_interrupts(self) -> bool:
        """Inject a pending interrupt (the local APIC's, or the PIC's through it) if the vCPU can
        take one; True if one must wait."""
        interrupts = self.interrupts
        if not interrupts.has_interrupt():
            self.vcpu.request_interrupt_window(False)
            return False
        if self.vcpu.interrupts_allowed():
            self.vcpu.inject_interrupt(interrupts.acknowledge())
            waiting = interrupts.has_interrupt()
            self.vcpu.request_interrupt_window(waiting)
            return waiting
        self.vcpu.request_interrupt_window(True)
        return True

    def _halt(self, kicker: Kicker | None = None) -> bool:
        """The guest executed hlt: sleep until a timer or input brings an interrupt. The monitor
        and a debugger are served meanwhile (the vCPU stays halted).

        Returns False when nothing can ever wake the guest (hlt with IF=0).
        """
        self.uart.flush()
        if not self.vcpu.interrupts_allowed():
            print("emu: guest halted with interrupts disabled; nothing can wake it", file=sys.stderr)
            return False
        start = time.monotonic_ns()
        self.halted = (self.idle_ns, start)
        while self.exit_status is None:
            if kicker is not None and self.control.pending():
                paused, resets = self.paused_ns, self.resets
                self._checkpoint(kicker)
                start += self.paused_ns - paused  # counted once, as paused time
                self.halted = (self.idle_ns, start)
                if self.resets != resets:  # the monitor's system_reset: a CPU after RESET is not halted
                    break
            with self.lock:
                self._service_devices()
                if self.interrupts.has_interrupt():
                    break
            deadline = self.clock.next_deadline()
            timeout = None if deadline is None else max(0, deadline - time.monotonic_ns()) / 1e9
            self._wake.wait(timeout)
            self._wake.clear()
        self._debug_halt = False
        self.idle_ns += time.monotonic_ns() - start
        self.halted = None
        self.vcpu.stats.idle_ns = self.idle_ns
        return True

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()
        for thread in self.device_threads:
            thread.close()
        if self.irqchip is not None:
            self.irqchip.close()
        for backend in [*self.netdevs.values(), *self.chardevs.values()]:
            backend.close()
        self.vcpu.close()
        self.accel.close()
        self.memory.close()
        if self.ata is not None:
            self.ata.close()
        for disk in self.disks:
            disk.close()
        if self.firmware is not None:
            self.firmware.close()
        if self.bios_tables is not None:
            self.bios_tables.close()


class _SignalWatcher:
    """Python runs a signal's handler on the main thread between two bytecodes, and the main
    thread is the vCPU's: inside emu_start (Unicorn's C loop) it runs none, so a guest that spins
    with no timer armed would never see SIGTERM. CPython's own C handler also writes the signal's
    number to a wakeup fd (signal.set_wakeup_fd); this thread waits on that fd and kicks the vCPU,
    which stops at the next block boundary, and the handler then runs (and ends the run)."""

    def __init__(self, vcpu: VCpu) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._vcpu = vcpu
        threading.Thread(target=self._watch, name="emu-signals", daemon=True).start()

    def _watch(self) -> None:
        while True:
            try:
                data = os.read(self._read, 64)
            except OSError:
                return
            if not data:
                os.close(self._read)
                return
            if any(byte in ENDING_SIGNALS for byte in data):  # not kvm's own kick signal: that would loop
                self._vcpu.kick()

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous)
        os.close(self._write)  # the thread reads EOF, closes its end and ends


@dataclass
class _LockedIo:
    """The IoHandler the vCPU sees when device threads exist: each access under the device lock."""

    buses: Buses
    lock: threading.RLock

    def port_read(self, port: int, size: int) -> int:
        with self.lock:
            return self.buses.ports.read(port, size)

    def port_write(self, port: int, size: int, value: int) -> None:
        with self.lock:
            self.buses.ports.write(port, size, value)

    def mmio_read(self, address: int, size: int) -> int:
        with self.lock:
            return self.buses.mmio.read(address, size)

    def mmio_write(self, address: int, size: int, value: int) -> None:
        with self.lock:
            self.buses.mmio.write(address, size, value)


@dataclass
class StepResult:
    """What Machine.step() did: the interrupt injected before the instruction, whether an
    instruction ran (a kick can end the step first), whether it halted, whether the run is over."""

    interrupt: int | None = None
    executed: bool = True
    halted: bool = False
    finished: bool = False


class _FixedInput:
    """Terminal input given up front (stepping runs do not read stdin)."""

    def __init__(self, data: bytes) -> None:
        self.data: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        if data:
            self.data.put(data)


@dataclass
class _TerminalFeed:
    """COM1 on the bus: terminal input held back while the UART was full is offered again on
    every guest read of the UART (a read of RBR is what makes room), synchronously on the vCPU
    thread, so no timer has to interrupt a guest that polls the line status."""

    uart: Uart16550
    machine: "Machine"

    @property
    def max_access_size(self) -> int:
        return self.uart.max_access_size

    def io_read(self, offset: int, size: int) -> int:
        value = self.uart.io_read(offset, size)
        if self.machine._pending_input or not self.machine._terminal.data.empty():
            self.machine._feed_terminal()
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.uart.io_write(offset, size, value)


def _is_mmio(spec: str) -> bool:
    """`-device virtio-*-device[,...]` is a virtio-mmio device (QEMU's name); `-pci` a PCI one."""
    return spec.split(",", 1)[0].endswith("-device")


def _warn_lapic(message: str) -> None:
    print(f"emu: local APIC: {message}", file=sys.stderr)


def _earliest(deadline: int | None, other: int) -> int:
    return other if deadline is None else min(deadline, other)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _create_accelerator(cfg: MachineConfig, memory: GuestMemory) -> Accelerator:
    if cfg.accel == "tcg":
        from .tcg.accel import TcgAccelerator

        return TcgAccelerator(memory, count_instructions=cfg.count_instructions, mmu=cfg.mmu)
    if cfg.accel == "kvm":
        from .kvm_accel.vm import KvmAccelerator

        from .cpuid import emu64

        return KvmAccelerator(memory, cpu_model=emu64())
    raise EmuError(f"unknown accelerator {cfg.accel!r} (choose tcg or kvm)")
