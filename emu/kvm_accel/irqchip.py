"""The in-kernel irqchip (`--irqchip kernel`): KVM's own PIC, IOAPIC and local APIC.

By default emu's interrupt controller is its own 8259 pair in userspace (emu.devices.pic):
the main loop asks it for a vector and injects it with KVM_INTERRUPT, opening an
interrupt window first when the guest has IF=0. With KVM_CREATE_IRQCHIP (api.rst §4.24)
KVM emulates the controllers itself: the guest's PIC and ELCR port accesses and its `hlt`
never leave the kernel, and devices raise lines instead of injecting vectors:

  KVM_IRQ_LINE (§4.25)  an ioctl per level change; used for the legacy ISA devices (PIT,
                        UART, RTC), whose lines change on the main thread.
  irqfd (KVM_IRQFD, §4.75)
                        an eventfd bound to a GSI: a write from any thread raises the line,
                        with no ioctl and no wake-up of the vCPU thread by emu. A PCI INTx
                        line is a level, which an eventfd write cannot lower; with
                        KVM_IRQFD_FLAG_RESAMPLE KVM lowers it itself when the guest
                        acknowledges the interrupt (EOI) and signals a second eventfd, the
                        resamplefd, so the device can raise it again if it is still
                        pending. This is how QEMU gives VFIO INTx to a guest.

GSI routing (KVM_SET_GSI_ROUTING, api.rst §4.52). KVM's default table sends GSI n to PIC input
n and IOAPIC pin n. A PC wires the PIT's IRQ 0 to IOAPIC pin 2 instead (the interrupt source
override of the MP table and the MADT), so emu installs QEMU's table for its in-kernel irqchip
(kvm_pc_setup_irq_routing): GSI 0 to PIC 0 and IOAPIC pin 2, GSI 2 (the cascade) nowhere,
GSIs 1 and 3-15 to their PIC input and IOAPIC pin, 16-23 to IOAPIC pins only. The ISA IRQ number
the PIIX3 routes a PCI interrupt to is still the GSI its irqfd signals. KVM's IOAPIC (at
0xFEC00000, 24 pins, version 0x11) gets the ID emu's MP table gives it, 1 (KVM_SET_IRQCHIP);
its local APIC, for a kernel booted directly, the state SeaBIOS leaves (KVM_SET_LAPIC).
"""

from __future__ import annotations

import ctypes
import os
import selectors
import struct
import threading
from dataclasses import dataclass, field

from ..devices.ioapic import IOAPIC_ID, ioapic_pin_of_isa_irq
from ..devices.lapic import DM_EXTINT, DM_NMI, LVT_LEVEL, LVT_LINT0, LVT_LINT1, SVR, SVR_ENABLE
from . import api
from .api import ioctl


@dataclass
class IrqLineCounters:
    irq_line_ioctls: int = 0  # KVM_IRQ_LINE calls
    irqfd_writes: int = 0  # eventfd writes that raised a line
    resamples: int = 0  # EOIs KVM reported through a resamplefd
    reasserts: int = 0  # ... after which the line was still high, so raised again


@dataclass
class KvmIrqLine:
    """An IrqLine (emu.devices.interfaces) into the in-kernel irqchip through KVM_IRQ_LINE."""

    vm_fd: int
    gsi: int
    counters: IrqLineCounters

    def set_level(self, level: bool) -> None:
        self.counters.irq_line_ioctls += 1
        ioctl(self.vm_fd, api.KVM_IRQ_LINE, ctypes.byref(api.kvm_irq_level(self.gsi, int(level))))


@dataclass
class IrqFdLine:
    """An IrqLine through an irqfd with a resamplefd: a level that KVM lowers at EOI."""

    gsi: int
    counters: IrqLineCounters
    fd: int = field(default_factory=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    resamplefd: int = field(default_factory=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    level: bool = False

    def set_level(self, level: bool) -> None:
        rising = level and not self.level
        self.level = level
        if rising:
            self.counters.irqfd_writes += 1
            os.eventfd_write(self.fd, 1)

    def resampled(self) -> None:
        """KVM lowered the line at the guest's EOI: raise it again if the source still asserts it."""
        try:
            eois = os.eventfd_read(self.resamplefd)  # KVM adds 1 per EOI: several may have come since
        except BlockingIOError:
            return
        self.counters.resamples += eois
        if self.level:
            self.counters.reasserts += 1
            self.counters.irqfd_writes += 1
            os.eventfd_write(self.fd, 1)


@dataclass
class KernelIrqChip:
    """KVM_CREATE_IRQCHIP on a VM, its lines, and the thread that serves the resamplefds."""

    vm_fd: int
    counters: IrqLineCounters = field(default_factory=IrqLineCounters)
    _lines: dict[int, KvmIrqLine] = field(default_factory=dict)
    _irqfds: dict[int, IrqFdLine] = field(default_factory=dict)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector, repr=False)
    _stop_fd: int = field(default_factory=lambda: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        ioctl(self.vm_fd, api.KVM_CREATE_IRQCHIP, None)
        self._selector.register(self._stop_fd, selectors.EVENT_READ, None)
        self._route_like_a_pc()
        self._set_ioapic_id(IOAPIC_ID)

    def _route_like_a_pc(self) -> None:
        """QEMU's GSI table (see the module doc): ISA IRQ 0 on IOAPIC pin 2."""
        routes: list[tuple[int, int, int]] = []  # (gsi, chip, pin)
        for gsi in range(16):
            if gsi != 2:
                routes.append((gsi, api.KVM_IRQCHIP_PIC_MASTER if gsi < 8 else api.KVM_IRQCHIP_PIC_SLAVE, gsi & 7))
        for gsi in range(24):
            if gsi != 2:
                routes.append((gsi, api.KVM_IRQCHIP_IOAPIC, ioapic_pin_of_isa_irq(gsi) if gsi < 16 else gsi))
        table = api.routing_list(len(routes))()
        table.nr = len(routes)
        for entry, (gsi, chip, pin) in zip(table.entries, routes):
            entry.gsi, entry.type = gsi, api.KVM_IRQ_ROUTING_IRQCHIP
            entry.u.irqchip, entry.u.pin = chip, pin
        ioctl(self.vm_fd, api.KVM_SET_GSI_ROUTING, ctypes.byref(table), f"{len(routes)} routes")

    def _set_ioapic_id(self, ioapic_id: int) -> None:
        chip = api.kvm_irqchip(chip_id=api.KVM_IRQCHIP_IOAPIC)
        ioctl(self.vm_fd, api.KVM_GET_IRQCHIP, ctypes.byref(chip))
        struct.pack_into("<I", chip.chip, api.KVM_IOAPIC_STATE_ID_OFFSET, ioapic_id)
        ioctl(self.vm_fd, api.KVM_SET_IRQCHIP, ctypes.byref(chip), f"IOAPIC ID {ioapic_id}")

    def ioapic_id(self) -> int:
        chip = api.kvm_irqchip(chip_id=api.KVM_IRQCHIP_IOAPIC)
        ioctl(self.vm_fd, api.KVM_GET_IRQCHIP, ctypes.byref(chip))
        return struct.unpack_from("<I", chip.chip, api.KVM_IOAPIC_STATE_ID_OFFSET)[0]

    @staticmethod
    def firmware_lapic_setup(vcpu_fd: int) -> None:
        """The in-kernel local APIC as SeaBIOS leaves it (emu.devices.lapic.LocalApic.firmware_setup):
        software-enabled, LINT0 = ExtINT and LINT1 = NMI, level-triggered."""
        state = api.kvm_lapic_state()
        ioctl(vcpu_fd, api.KVM_GET_LAPIC, ctypes.byref(state))
        regs = memoryview(state).cast("B")
        svr = struct.unpack_from("<I", regs, SVR)[0]
        struct.pack_into("<I", regs, SVR, svr | SVR_ENABLE)
        struct.pack_into("<I", regs, LVT_LINT0, LVT_LEVEL | DM_EXTINT << 8)
        struct.pack_into("<I", regs, LVT_LINT1, LVT_LEVEL | DM_NMI << 8)
        del regs
        ioctl(vcpu_fd, api.KVM_SET_LAPIC, ctypes.byref(state), "firmware state")

    def line(self, gsi: int) -> KvmIrqLine:
        """A legacy device's wire (KVM_IRQ_LINE)."""
        if gsi not in self._lines:
            self._lines[gsi] = KvmIrqLine(self.vm_fd, gsi, self.counters)
        return self._lines[gsi]

    def irqfd_line(self, gsi: int) -> IrqFdLine:
        """A PCI interrupt's wire (an irqfd with a resamplefd), made on first use."""
        if gsi not in self._irqfds:
            irqfd = IrqFdLine(gsi, self.counters)
            request = api.kvm_irqfd(fd=irqfd.fd, gsi=gsi, flags=api.KVM_IRQFD_FLAG_RESAMPLE,
                                    resamplefd=irqfd.resamplefd)  # fmt: skip
            ioctl(self.vm_fd, api.KVM_IRQFD, ctypes.byref(request))
            self._selector.register(irqfd.resamplefd, selectors.EVENT_READ, irqfd)
            self._irqfds[gsi] = irqfd
        return self._irqfds[gsi]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="emu-irqfd-resample", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    return
                key.data.resampled()

    def close(self) -> None:
        if self._thread is not None:
            os.eventfd_write(self._stop_fd, 1)
            self._thread.join(timeout=5)
            self._thread = None
        self._selector.close()
        for irqfd in self._irqfds.values():
            os.close(irqfd.fd)
            os.close(irqfd.resamplefd)
        os.close(self._stop_fd)
        self._irqfds.clear()
