"""PCI configuration mechanism #1 (PCI Local Bus Specification 3.0, §3.2.2.3.2) and bus 0.

CONFIG_ADDRESS, port 0xCF8, is a dword register: bit 31 enables the cycle, bits 23:16 pick
the bus, 15:11 the device, 10:8 the function and 7:2 the dword register. CONFIG_DATA, ports
0xCFC-0xCFF, then reads or writes that register: a byte at 0xCFE is the register's byte 2.
Only a dword access to 0xCF8 loads the address (QEMU's pci_host_config_write does the same);
a read of a function that does not exist ends in a master abort and returns all ones, which is
how software enumerates the bus (a vendor ID of 0xFFFF means "nobody here").

Port 0xCF9, inside that range, is the PIIX3's Reset Control Register (PIIX3 datasheet §2.2.1,
as in QEMU's piix3 model): writing bit 2 (RST_CPU) resets the machine, which Linux uses for
`reboot=pci`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..bus import PORT_SPACE
from ..interfaces import SystemControl
from .config import BarKind, PciFunction

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
PORT_BASE, PORT_COUNT = 0xCF8, 8
ENABLE = 1 << 31
RESET_CONTROL = 0xCF9
RCR_SYS_RST, RCR_RST_CPU = 0x2, 0x4


@dataclass
class PciHost:
    """Bus 0 of a PC and the ports that reach its configuration spaces."""

    system: SystemControl | None = None
    buses: object | None = None  # emu.devices.bus.Buses: where decoded BAR windows are mapped
    address: int = 0  # CONFIG_ADDRESS
    reset_control: int = 0
    functions: dict[tuple[int, int], PciFunction] = field(default_factory=dict)  # (device, function)
    config_reads: int = 0
    config_writes: int = 0
    windows: dict[int, list] = field(default_factory=dict)  # id(function) -> its bus Mappings
    window_conflicts: int = 0  # BARs placed over another window (left unmapped)

    max_access_size: ClassVar[int] = 4

    def attach(self, device: int, function: int, pci: PciFunction) -> None:
        if not (0 <= device < 32 and 0 <= function < 8) or (device, function) in self.functions:
            raise ValueError(f"PCI slot {device:02x}.{function} is not free")
        self.functions[device, function] = pci
        if pci.bars and pci.on_bars_changed is None:
            pci.on_bars_changed = self.map_bars

    def map_bars(self, pci: PciFunction) -> None:
        """Put `pci`'s decoded BAR windows on the buses, where software placed them: called when
        the command register or a BAR changes (unmapping what was there before)."""
        if self.buses is None:
            return
        for mapping in self.windows.pop(id(pci), []):
            (self.buses.ports if mapping in self.buses.ports.mappings else self.buses.mmio).unregister(mapping)
        placed = []
        for index, bar in pci.decoded_bars():
            device = pci.bar_io(index)
            io = bar.kind is BarKind.IO
            if device is None or bar.address == 0 or (io and bar.address + bar.size > PORT_SPACE):
                continue
            name = f"pci {pci.vendor_id:04x}:{pci.device_id:04x} bar{index}"
            try:
                bus = self.buses.ports if io else self.buses.mmio
                placed.append(bus.register(bar.address, bar.size, device, name))
            except ValueError:
                self.window_conflicts += 1
        self.windows[id(pci)] = placed

    def reset(self) -> None:
        """System reset: CONFIG_ADDRESS and the reset control register cleared, every function
        reset (its windows leave the buses)."""
        self.address = self.reset_control = 0
        for pci in self.functions.values():
            pci.reset()

    def register(self, ports) -> None:  # a PortIoBus
        ports.register(PORT_BASE, PORT_COUNT, self, "pci-config")

    def _selected(self) -> tuple[PciFunction | None, int]:
        a = self.address
        if not a & ENABLE or (a >> 16) & 0xFF:  # disabled, or a bus other than 0
            return None, 0
        return self.functions.get(((a >> 11) & 0x1F, (a >> 8) & 7)), a & 0xFC

    # --- the ports --------------------------------------------------------------------------
    def io_read(self, offset: int, size: int) -> int:
        if offset == 0 and size == 4:
            return self.address
        if offset == 1 and size == 1:
            return self.reset_control
        if offset < 4:
            return (1 << (8 * size)) - 1
        pci, register = self._selected()
        self.config_reads += 1
        if pci is None:
            return (1 << (8 * size)) - 1
        return pci.config_read(register + offset - 4, size)

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0 and size == 4:
            self.address = value & 0x80FFFFFC
        elif offset == 1 and size == 1:
            self.reset_control = value & RCR_SYS_RST
            if value & RCR_RST_CPU and self.system is not None:
                self.system.request_reset()
        elif offset >= 4:
            pci, register = self._selected()
            self.config_writes += 1
            if pci is not None:
                pci.config_write(register + offset - 4, size, value)

    # --- a view for `info pci` and tests ------------------------------------------------------
    def describe(self) -> list[str]:
        lines = []
        for (device, function), pci in sorted(self.functions.items()):
            cls = pci.config_read(0x09, 3)
            lines.append(f"00:{device:02x}.{function} {cls >> 8:04x}: {pci.vendor_id:04x}:{pci.device_id:04x}"
                         f" (rev {pci.revision:02x})")  # fmt: skip
        return lines
