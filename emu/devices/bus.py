"""Port IO and MMIO dispatch: how a guest access finds its device.

An x86 CPU reaches devices through two address spaces. Port IO is a separate 64 KiB space
that only IN/OUT/INS/OUTS address (Intel SDM vol. 1, ch. 19 "Input/Output"); on a PC the ISA
bus decodes it, and an access no device claims leaves the data lines floating high, so it
reads as all ones and a write goes nowhere. Memory-mapped IO shares the physical address space
with RAM: the chipset routes addresses that are not RAM to device windows (IOAPIC, HPET, PCI
BARs). An unclaimed memory read returns all ones on most PC chipsets (a PCI master abort), but
emu follows QEMU here, where unassigned memory reads as zero (`unassigned_mem_read`): that is
also what KVM's own page walker finds in a page table outside every memory slot, so a guest
sees the same thing on both accelerators and under QEMU.

A device answers `io_read(offset, size)` / `io_write(offset, size, value)` with `offset`
relative to the base it was registered at, so one model can sit at COM1 or COM2.

Bus width. Most legacy PC devices are 8-bit ISA parts: a 16-bit IN from an 8-bit device is
turned by the ISA bus controller into two byte cycles, at `port` and `port + 1`. A device
states the widest access it serves natively with a `max_access_size` attribute (the name of
QEMU's `MemoryRegionOps.impl.max_access_size`; 4 if absent, 8 on MMIO); a wider access, or one
that runs past the end of the device's range, is split into the widest pieces that fit, each
dispatched on its own (an unclaimed byte reads 0xFF), and the pieces assemble little-endian.

Every guest IN/OUT reaches `PortIoBus.read/write` from a VM exit, so a port lookup is one
list index; MMIO windows are few and found by bisection over their sorted bases.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import ClassVar

from .interfaces import IoDevice

PORT_SPACE = 0x10000
SIZE_MASKS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}


@dataclass(frozen=True, slots=True)
class Mapping:
    """One device window: [base, end) on a bus, served by `device`."""

    base: int
    end: int  # exclusive
    device: IoDevice
    name: str
    max_access_size: int

    def __str__(self) -> str:
        return f"{self.base:#x}-{self.end - 1:#x} {self.name}"


def _piece(remaining: int, mapping: Mapping, address: int) -> int:
    """The widest naturally sized piece (1, 2, 4 or 8 bytes) that `mapping` can take at `address`."""
    n = min(remaining, mapping.max_access_size, mapping.end - address)
    return 8 if n >= 8 else 4 if n >= 4 else 2 if n >= 2 else 1


@dataclass
class _Bus:
    """What both buses share: registration checks, unmapped accounting, access splitting."""

    mappings: list[Mapping] = field(default_factory=list)  # sorted by base
    unmapped_reads: dict[int, int] = field(default_factory=dict)  # address -> count
    unmapped_writes: dict[int, int] = field(default_factory=dict)

    limit: ClassVar[int] = 1 << 64  # size of the address space
    default_width: ClassVar[int] = 4  # max_access_size of a device that does not say

    def _lookup(self, address: int) -> Mapping | None:
        raise NotImplementedError

    def _new_mapping(self, base: int, length: int, device: IoDevice, name: str, width: int | None) -> Mapping:
        if length <= 0 or base < 0 or base + length > self.limit:
            raise ValueError(f"{name}: bad range base={base:#x} length={length:#x}")
        width = width if width is not None else getattr(device, "max_access_size", self.default_width)
        if width not in SIZE_MASKS:
            raise ValueError(f"{name}: max_access_size must be 1, 2, 4 or 8, not {width}")
        new = Mapping(base, base + length, device, name, width)
        for m in self.mappings:
            if new.base < m.end and m.base < new.end:
                raise ValueError(f"{name} at {base:#x}-{new.end - 1:#x} overlaps {m}")
        return new

    def _insert(self, mapping: Mapping) -> None:
        self.mappings.append(mapping)
        self.mappings.sort(key=lambda m: m.base)

    def unregister(self, mapping: Mapping) -> None:
        """Give a window back (a PCI BAR that software moved or turned off)."""
        self.mappings.remove(mapping)

    def _all_unmapped(self, address: int, size: int) -> bool:
        return all(self._lookup(address + i) is None for i in range(size))

    def _split_read(self, address: int, size: int) -> int:
        """A read that no single device serves whole: unmapped, too wide, or straddling."""
        if self._all_unmapped(address, size):
            self.unmapped_reads[address] = self.unmapped_reads.get(address, 0) + 1
            return SIZE_MASKS[size] if self.unassigned_byte else 0
        value = 0
        done = 0
        while done < size:
            a = address + done
            m = self._lookup(a)
            if m is None:
                self.unmapped_reads[a] = self.unmapped_reads.get(a, 0) + 1
                n, part = 1, self.unassigned_byte
            else:
                n = _piece(size - done, m, a)
                part = m.device.io_read(a - m.base, n) & SIZE_MASKS[n]
            value |= part << (8 * done)
            done += n
        return value

    def _split_write(self, address: int, size: int, value: int) -> None:
        if self._all_unmapped(address, size):
            self.unmapped_writes[address] = self.unmapped_writes.get(address, 0) + 1
            return
        done = 0
        while done < size:
            a = address + done
            m = self._lookup(a)
            if m is None:
                self.unmapped_writes[a] = self.unmapped_writes.get(a, 0) + 1
                n = 1
            else:
                n = _piece(size - done, m, a)
                m.device.io_write(a - m.base, n, (value >> (8 * done)) & SIZE_MASKS[n])
            done += n


@dataclass
class PortIoBus(_Bus):
    """The 64 KiB port space, one slot per port for O(1) dispatch."""

    limit: ClassVar[int] = PORT_SPACE
    unassigned_byte: ClassVar[int] = 0xFF  # the ISA data lines float high
    _by_port: list[Mapping | None] = field(default_factory=lambda: [None] * PORT_SPACE, repr=False)

    def register(self, base: int, length: int, device: IoDevice, name: str, max_access_size: int | None = None) -> Mapping:
        """Claim ports [base, base + length) for `device`; ValueError if any is taken."""
        m = self._new_mapping(base, length, device, name, max_access_size)
        self._insert(m)
        for port in range(m.base, m.end):
            self._by_port[port] = m
        return m

    def unregister(self, mapping: Mapping) -> None:
        super().unregister(mapping)
        for port in range(mapping.base, mapping.end):
            self._by_port[port] = None

    def _lookup(self, address: int) -> Mapping | None:
        return self._by_port[address] if address < PORT_SPACE else None

    def read(self, port: int, size: int) -> int:
        m = self._by_port[port]
        if m is not None:
            if port + size <= m.end and size <= m.max_access_size:
                return m.device.io_read(port - m.base, size)
        elif size == 1:
            self.unmapped_reads[port] = self.unmapped_reads.get(port, 0) + 1
            return 0xFF
        return self._split_read(port, size)

    def write(self, port: int, size: int, value: int) -> None:
        m = self._by_port[port]
        if m is not None:
            if port + size <= m.end and size <= m.max_access_size:
                m.device.io_write(port - m.base, size, value & SIZE_MASKS[size])
                return
        elif size == 1:
            self.unmapped_writes[port] = self.unmapped_writes.get(port, 0) + 1
            return
        self._split_write(port, size, value)


@dataclass
class MmioBus(_Bus):
    """Device windows in guest-physical space, found by bisection over their bases."""

    default_width: ClassVar[int] = 8
    unassigned_byte: ClassVar[int] = 0x00  # as QEMU's unassigned memory (see the module doc)
    _bases: list[int] = field(default_factory=list, repr=False)

    def register(self, base: int, length: int, device: IoDevice, name: str, max_access_size: int | None = None) -> Mapping:
        """Claim guest-physical [base, base + length) for `device`; ValueError if it overlaps."""
        m = self._new_mapping(base, length, device, name, max_access_size)
        self._insert(m)
        self._bases = [m.base for m in self.mappings]
        return m

    def unregister(self, mapping: Mapping) -> None:
        super().unregister(mapping)
        self._bases = [m.base for m in self.mappings]

    def _lookup(self, address: int) -> Mapping | None:
        i = bisect_right(self._bases, address) - 1
        if i >= 0:
            m = self.mappings[i]
            if address < m.end:
                return m
        return None

    def read(self, address: int, size: int) -> int:
        m = self._lookup(address)
        if m is not None and address + size <= m.end and size <= m.max_access_size:
            return m.device.io_read(address - m.base, size)
        return self._split_read(address, size)

    def write(self, address: int, size: int, value: int) -> None:
        m = self._lookup(address)
        if m is not None and address + size <= m.end and size <= m.max_access_size:
            m.device.io_write(address - m.base, size, value & SIZE_MASKS[size])
        else:
            self._split_write(address, size, value)


@dataclass
class Buses:
    """The machine's `IoHandler` (emu.accel): one port bus and one MMIO bus.

    The four methods are re-bound per instance to the buses' own, saving a call per exit.
    """

    ports: PortIoBus = field(default_factory=PortIoBus)
    mmio: MmioBus = field(default_factory=MmioBus)

    def __post_init__(self) -> None:
        self.port_read = self.ports.read  # type: ignore[method-assign]
        self.port_write = self.ports.write  # type: ignore[method-assign]
        self.mmio_read = self.mmio.read  # type: ignore[method-assign]
        self.mmio_write = self.mmio.write  # type: ignore[method-assign]

    def port_read(self, port: int, size: int) -> int:
        return self.ports.read(port, size)

    def port_write(self, port: int, size: int, value: int) -> None:
        self.ports.write(port, size, value)

    def mmio_read(self, address: int, size: int) -> int:
        return self.mmio.read(address, size)

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.mmio.write(address, size, value)
