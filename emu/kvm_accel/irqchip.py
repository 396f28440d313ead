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

GSIs 0-15 are the PIC's (and the IOAPIC's first) inputs in KVM's default routing, so the ISA
IRQ number the PIIX3 routes a PCI interrupt to is the GSI its irqfd signals.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import threading
from dataclasses import dataclass, field

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
            os.eventfd_read(self.resamplefd)
        except BlockingIOError:
            return
        self.counters.resamples += 1
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
