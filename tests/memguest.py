"""Small long-mode guests over emu's PC memory layout, on either accelerator (memory tests).

A guest here runs at CPL0 in 64-bit mode with every guest-physical address up to 8 GiB
identity-mapped by 2 MiB pages (1 GiB pages do not work on kvm_pvm: shared/notes/host-kvm.md
§1). Every paging-structure entry has its Accessed bit, and every leaf its Dirty bit, set in
advance, so that neither the CPU nor KVM's shadow MMU writes to the page tables while the
guest runs: a dirty log then sees only the guest's own stores.

Layout (guestenv's GDT and TSS at 0x1000/0x3000 are reused):
  0x10000 PML4, 0x11000 PDPT, 0x20000-0x27fff eight page directories (0-8 GiB),
  0x100000 guest code, 0x200000 results the guest stores for the test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from guestenv import long_mode_state

from emu.accel import Accelerator, HaltExit, KickExit, MemoryRegion, VCpu, VcpuExit
from emu.devices.bus import Buses
from emu.memory import GuestMemory

PML4, PDPT, PD_BASE = 0x10000, 0x11000, 0x20000
CODE, RESULTS = 0x100000, 0x200000
MAPPED_GIB = 8
P, RW, A, D, PS = 0x1, 0x2, 0x20, 0x40, 0x80


def identity_map(memory: GuestMemory, gib: int = MAPPED_GIB) -> None:
    """Identity-map guest-physical 0..gib GiB with 2 MiB pages, A and D preset."""
    memory.write_u64(PML4, PDPT | P | RW | A)
    memory.write(PDPT, b"".join(struct.pack("<Q", (PD_BASE + i * 0x1000) | P | RW | A) for i in range(gib)))
    for i in range(gib):
        entries = (((i << 30) | (j << 21)) | P | RW | A | D | PS for j in range(512))
        memory.write(PD_BASE + i * 0x1000, b"".join(struct.pack("<Q", e) for e in entries))


@dataclass
class RecordingBuses:
    """The machine's buses (unassigned MMIO reads all ones), with every MMIO access recorded."""

    buses: Buses = field(default_factory=Buses)
    mmio: list[tuple[str, int, int, int]] = field(default_factory=list)

    def port_read(self, port: int, size: int) -> int:
        return self.buses.port_read(port, size)

    def port_write(self, port: int, size: int, value: int) -> None:
        self.buses.port_write(port, size, value)

    def mmio_read(self, address: int, size: int) -> int:
        value = self.buses.mmio_read(address, size)
        self.mmio.append(("read", address, size, value))
        return value

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.mmio.append(("write", address, size, value))
        self.buses.mmio_write(address, size, value)


@dataclass
class MemoryGuest:
    """One accelerator, one vCPU, guest RAM mapped one region per RAM range."""

    memory: GuestMemory
    accel: Accelerator
    vcpu: VCpu
    io: RecordingBuses

    def start(self, code: bytes) -> None:
        """Load `code` at CODE and point the vCPU at it in long mode."""
        state = long_mode_state(self.memory, rip=CODE)
        identity_map(self.memory)
        self.memory.write(CODE, code)
        self.vcpu.set_state(state)

    def run(self, limit: int = 20) -> VcpuExit:
        for _ in range(limit):
            event = self.vcpu.run()
            if not isinstance(event, KickExit):
                return event
        raise AssertionError("no exit after repeated kicks")

    def run_to_halt(self) -> None:
        event = self.run()
        assert event == HaltExit(), event

    def close(self) -> None:
        self.vcpu.close()
        self.accel.close()
        self.memory.close()


def make_guest(accel: str, memory: GuestMemory, extra_regions: tuple[MemoryRegion, ...] = ()) -> MemoryGuest:
    """A MemoryGuest on `accel` ("tcg" or "kvm") over `memory`, plus `extra_regions` (ROM)."""
    if accel == "tcg":
        from emu.tcg.accel import TcgAccelerator

        acc: Accelerator = TcgAccelerator(memory)
    else:
        from emu.kvm_accel.vm import KvmAccelerator

        acc = KvmAccelerator(memory)
    for region in (*memory.regions(), *extra_regions):
        acc.add_memory_region(region)
    io = RecordingBuses()
    return MemoryGuest(memory, acc, acc.create_vcpu(0, io), io)
