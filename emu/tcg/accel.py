"""The tcg accelerator: one Unicorn instance in 64-bit mode holds the whole PC's CPU.

Unicorn is QEMU's TCG binary translator as a library. emu always creates it in `UC_MODE_64`
(the only mode whose registers are all readable) and puts it into the state a guest needs by
patching the saved context (emu.tcg.context). Guest RAM is the shared host mapping from
emu.memory, mapped with `mem_map_ptr`; every guest-physical address that is not RAM, up to the
CPU's physical address width, is an `mmio_map` region routed to the machine's MMIO bus, so an
access to a hole reads as unassigned memory (zeros, as in QEMU) instead of stopping the emulator. The machine maps one region per RAM range of the
PC map (emu.memory): 0-640 KiB, 1 MiB up to 3 GiB at most, and RAM above 4 GiB.
"""

from __future__ import annotations

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, Uc, UcError

from ..accel import Accelerator, IoHandler, MemoryRegion
from ..cpuid import CpuModel, emu64
from ..errors import EmuError
from ..memory import GuestMemory
from ..mmu.walk import MAXPHYADDR
from .context import SavedContext
from .softmmu import SoftMmu
from .vcpu import TcgVCpu

FOUR_GIB = 1 << 32
PHYSICAL_LIMIT = 1 << MAXPHYADDR  # emu's CPU model: 40-bit physical addresses


class TcgAccelerator(Accelerator):
    name = "tcg"

    def __init__(self, memory: GuestMemory, cpu_model: CpuModel | None = None,
                 count_instructions: bool = False, mmu: str = "shadow") -> None:  # fmt: skip
        self.memory = memory
        self.mmu = mmu
        self.cpu_model = cpu_model or emu64()
        self.count_instructions = count_instructions
        try:
            self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        except UcError as err:
            raise EmuError(f"--accel tcg: cannot create a Unicorn CPU: {err}") from None
        # Run "until stopped": with exits enabled and none set, emu_start's `until` is ignored.
        # Otherwise every emu_start probes the `until` page through the guest's page tables,
        # which under 32-bit paging writes a page-fault address into the guest's CR2.
        self.uc.ctl_exits_enabled(True)
        self.uc.ctl_set_exits([])
        self.regions: list[MemoryRegion] = []
        self.vcpus: list[TcgVCpu] = []
        memory.add_write_listener(self.notify_host_write)

    def add_memory_region(self, region: MemoryRegion) -> None:
        perms = UC_PROT_READ | UC_PROT_EXEC if region.readonly else UC_PROT_ALL
        self.uc.mem_map_ptr(region.guest_address, region.size, perms, region.host_address)
        self.regions.append(region)

    def create_vcpu(self, index: int, io: IoHandler) -> TcgVCpu:
        if index != 0 or self.vcpus:
            raise EmuError("--accel tcg runs one vCPU")
        vcpu = TcgVCpu(self.uc, self.memory, io, self.cpu_model, self.count_instructions)
        if self.mmu in ("shadow", "shadow-python"):
            vcpu.softmmu = SoftMmu(self.uc, SavedContext(self.uc), self.memory, native=self.mmu == "shadow")
        elif self.mmu != "unicorn":
            raise EmuError(f"--mmu {self.mmu}: choose shadow, shadow-python or unicorn")
        self._map_holes(vcpu)
        for region in self.regions:
            if region.readonly:
                vcpu.add_rom(region)
        self.vcpus.append(vcpu)
        return vcpu

    def _map_holes(self, vcpu: TcgVCpu) -> None:
        """Route every guest-physical page that is not RAM, up to the CPU's physical address
        width, to the MMIO bus: the legacy and PCI holes below 4 GiB, and anything above RAM,
        read as zeros and dropped on write, as unassigned memory is in QEMU (emu.devices.bus)."""
        cursor = 0
        for region in sorted(self.regions, key=lambda r: r.guest_address):
            if cursor < region.guest_address:
                self._map_mmio(vcpu, cursor, region.guest_address - cursor)
            cursor = max(cursor, region.guest_address + region.size)
        if cursor < PHYSICAL_LIMIT:
            self._map_mmio(vcpu, cursor, PHYSICAL_LIMIT - cursor)

    def _map_mmio(self, vcpu: TcgVCpu, base: int, size: int) -> None:
        self.uc.mmio_map(base, size, vcpu._mmio_read, base, vcpu._mmio_write, base)

    def notify_host_write(self, guest_address: int, size: int) -> None:
        """The host wrote guest RAM: drop translated code for it (Unicorn does not notice such
        writes), and let the shadow MMU see a store to a page table. While Unicorn is running
        (a write from inside a hook) the code invalidation waits until it returns."""
        for vcpu in self.vcpus:
            vcpu.host_wrote(guest_address, size)

    def close(self) -> None:
        for vcpu in self.vcpus:
            vcpu.ctx.free()
            if vcpu.softmmu is not None:
                vcpu.softmmu.close()
        self.vcpus.clear()
