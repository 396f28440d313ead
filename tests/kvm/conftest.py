"""Fixtures for the kvm accelerator tests: a tiny VM with guest RAM, a recording IO bus, and
helpers that put the vCPU in real mode, flat 32-bit protected mode or 4-level long mode.

Tests marked `@pytest.mark.kvm` (or with `pytestmark = pytest.mark.kvm`) are skipped with
"no usable /dev/kvm" where /dev/kvm cannot be opened read-write. Guest code is hand-assembled
and tiny: CPL0 code on this project's host is emulated at about 1 M instructions/s.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from emu.accel import CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, CpuState, MemoryRegion, Segment
from emu.memory import GuestMemory


def kvm_usable() -> bool:
    """/dev/kvm opens read-write and answers KVM_GET_API_VERSION with 12."""
    from emu.kvm_accel import api

    return api.kvm_usable()[0]


def host_is_kvm_pvm() -> bool:
    """This project's machines get /dev/kvm from the nested kvm_pvm module (host-kvm.md)."""
    return os.path.exists("/sys/module/kvm_pvm")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kvm: needs a usable /dev/kvm (skipped otherwise)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kvm") and not kvm_usable():
        pytest.skip("no usable /dev/kvm")


@dataclass
class RecordingIo:
    """An IoHandler that records every access and answers reads from tables."""

    events: list[tuple[str, int, int, int]] = field(default_factory=list)
    port_values: dict[int, int] = field(default_factory=dict)
    mmio_values: dict[int, int] = field(default_factory=dict)
    on_access: Callable[[str, int], None] | None = None

    def port_read(self, port: int, size: int) -> int:
        value = self.port_values.get(port, 0xFFFFFFFF)
        self.events.append(("in", port, size, value))
        if self.on_access:
            self.on_access("in", port)
        return value

    def port_write(self, port: int, size: int, value: int) -> None:
        self.events.append(("out", port, size, value))
        if self.on_access:
            self.on_access("out", port)

    def mmio_read(self, address: int, size: int) -> int:
        value = self.mmio_values.get(address, 0)
        self.events.append(("mmio_read", address, size, value))
        return value

    def mmio_write(self, address: int, size: int, value: int) -> None:
        self.events.append(("mmio_write", address, size, value))

    def outs(self, port: int) -> list[int]:
        return [value for kind, p, _, value in self.events if kind == "out" and p == port]


# Long-mode layout used by the helpers: page tables at 0x70000, an alias of RAM page 0 reached
# through PML4[511] at 0xFFFFFF8000000000.
PML4, PDPT, PD, PDPT_HIGH = 0x70000, 0x71000, 0x72000, 0x73000
HIGH_ALIAS = 0xFFFF_FF80_0000_0000
CODE32 = Segment(selector=0x08, base=0, limit=0xFFFFFFFF, type=0xB, db=1, g=1)
DATA32 = Segment(selector=0x10, base=0, limit=0xFFFFFFFF, type=0x3, db=1, g=1)
CODE64 = Segment(selector=0x08, base=0, limit=0xFFFFFFFF, type=0xB, l=1, db=0, g=1)


@dataclass
class GuestVm:
    """One VM with one vCPU. Tests reach the layout constants through it (vm.PML4, ...)."""

    memory: GuestMemory
    accel: object  # KvmAccelerator
    vcpu: object  # KvmVCpu
    io: RecordingIo

    PML4, HIGH_ALIAS, CODE32, DATA32, CODE64 = PML4, HIGH_ALIAS, CODE32, DATA32, CODE64

    def load(self, address: int, code: bytes) -> None:
        self.memory.write(address, code)

    def real_mode(self, code: bytes, at: int = 0x1000, **regs: int) -> CpuState:
        """Load `code` at 0000:`at` and point the vCPU at it, real mode, SS:SP = 0000:7000."""
        self.load(at, code)
        state = CpuState(
            rip=at, rsp=0x7000, rflags=0x2,
            cs=Segment.real_mode(0, code=True), ds=Segment.real_mode(0), es=Segment.real_mode(0),
            ss=Segment.real_mode(0), fs=Segment.real_mode(0), gs=Segment.real_mode(0),
            **regs,
        )  # fmt: skip
        self.vcpu.set_state(state)
        return state

    def protected32(self, code: bytes, at: int = 0x1000, **regs: int) -> CpuState:
        """Flat 4 GiB segments, CR0.PE, no paging (what a multiboot loader hands over)."""
        self.load(at, code)
        state = CpuState(
            rip=at, rsp=0x7000, rflags=0x2, cr0=CR0_PE | CR0_ET,
            cs=CODE32, ds=DATA32, es=DATA32, ss=DATA32, fs=DATA32, gs=DATA32, **regs,
        )  # fmt: skip
        self.vcpu.set_state(state)
        return state

    def build_page_tables(self) -> None:
        """Identity-map the first 1 GiB with 2 MiB pages; alias RAM 0-2 MiB at HIGH_ALIAS."""
        present_rw, page_size = 0x3, 0x80
        self.memory.write_u64(PML4, PDPT | present_rw)
        self.memory.write_u64(PML4 + 511 * 8, PDPT_HIGH | present_rw)
        self.memory.write_u64(PDPT, PD | present_rw)
        self.memory.write_u64(PDPT_HIGH, PD | present_rw)
        self.memory.write(PD, b"".join(struct.pack("<Q", (i << 21) | present_rw | page_size) for i in range(512)))

    def long_mode(self, code: bytes, at: int = 0x1000, **regs: int) -> CpuState:
        """4-level paging set up by the VMM: CR0.PG|PE, CR4.PAE, EFER.LME|LMA, CS.L=1."""
        self.build_page_tables()
        self.load(at, code)
        state = CpuState(
            rip=at, rsp=0x7000, rflags=0x2,
            cr0=CR0_PG | CR0_ET | CR0_PE, cr3=PML4, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA,
            cs=CODE64, ds=DATA32, es=DATA32, ss=DATA32, fs=DATA32, gs=DATA32,
            **regs,
        )  # fmt: skip
        self.vcpu.set_state(state)
        return state


@pytest.fixture
def make_vm() -> Iterator[Callable[..., GuestVm]]:
    """make_vm(ram_size=1 MiB) -> GuestVm with one vCPU; everything is closed afterwards."""
    from emu.kvm_accel import KvmAccelerator

    created: list[tuple[KvmAccelerator, GuestMemory]] = []

    def make(ram_size: int = 0x100000, **accel_args: object) -> GuestVm:
        memory = GuestMemory(ram_size)
        accel = KvmAccelerator(**accel_args)
        created.append((accel, memory))
        accel.add_memory_region(MemoryRegion(0, memory.size, memory.host_address, name="ram"))
        io = RecordingIo()
        return GuestVm(memory, accel, accel.create_vcpu(0, io), io)

    yield make
    for accel, memory in created:
        accel.close()
        memory.close()


@pytest.fixture
def vm(make_vm: Callable[..., GuestVm]) -> GuestVm:
    return make_vm()


@pytest.fixture
def kvm_pvm() -> bool:
    """True on this project's hosts, whose /dev/kvm is the nested kvm_pvm (host-kvm.md)."""
    return host_is_kvm_pvm()
