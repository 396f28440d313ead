"""The kvm accelerator: one KVM virtual machine (a VM fd) with its memory slots and vCPUs.

`KvmAccelerator` performs the VM-level half of the KVM API flow described in `api.py`
(Documentation/virt/kvm/api.rst §4.1-4.7, §4.35, §4.46, §4.48, §4.58):

1. open /dev/kvm, check `KVM_GET_API_VERSION` == 12 and the capabilities emu relies on
   (`KVM_CAP_USER_MEMORY`, `KVM_CAP_EXT_CPUID`, `KVM_CAP_IMMEDIATE_EXIT`);
2. `KVM_CREATE_VM`, then place the pages Intel VMX needs for real mode without unrestricted
   guest: the identity-mapped page table (`KVM_SET_IDENTITY_MAP_ADDR`) and the three-page
   real-mode TSS (`KVM_SET_TSS_ADDR`). emu uses QEMU's addresses (target/i386/kvm/kvm.c):
   0xFEFFC000 and 0xFEFFD000-0xFEFFFFFF, a hole between the local APIC and the BIOS ROM
   that the machine must leave unmapped;
3. one memory slot per `MemoryRegion` (`KVM_SET_USER_MEMORY_REGION`, §4.35): the machine gives
   one per RAM range of the PC map (emu.memory), so the legacy hole and the PCI hole have no
   slot and every access there is a `KVM_EXIT_MMIO`. `KVM_MEM_READONLY` makes a slot ROM
   (KVM_CAP_READONLY_MEM): reads come from the host buffer without an exit, a guest store
   becomes a `KVM_EXIT_MMIO` and leaves the buffer alone;
4. `KVM_GET_SUPPORTED_CPUID` once; every vCPU gets that table (plus the machine's CPU-model
   overrides, and its own APIC ID) through `KVM_SET_CPUID2`. Without it, this host's KVM shows
   the guest an all-zero CPUID (shared/notes/host-kvm.md §1).

Dirty-page logging (`--dirty-log`; §4.8 KVM_GET_DIRTY_LOG): with `KVM_MEM_LOG_DIRTY_PAGES` on a
slot, KVM write-protects its pages in the second stage (EPT/NPT, or here the shadow page
tables) and sets a bit per 4 KiB page on the first guest write; `KVM_GET_DIRTY_LOG` copies the
slot's bitmap out, clears it and write-protects those pages again. The flag can be switched
on for an existing slot (only the flags change), which is how QEMU and Firecracker start a
migration or a diff snapshot. Writes by the VMM itself to the host mapping are not logged.
KVM also offers a per-vCPU dirty ring (KVM_CAP_DIRTY_LOG_RING) and manual re-protection
(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2); emu uses the plain bitmap.

The interrupt controllers stay in userspace (no `KVM_CREATE_IRQCHIP`): the machine's PIC
decides, and the vCPU injects with `KVM_INTERRUPT` (see vcpu.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..accel import Accelerator, DirtyLogStats, IoEventFd, IoHandler, MemoryRegion
from ..errors import EmuError
from . import api
from .api import KvmError, ioctl, ioctl_raw
from .irqchip import KernelIrqChip
from .vcpu import KvmVCpu, install_kick_signal_handler

if TYPE_CHECKING:
    from ..cpuid import CpuModel
    from ..memory import GuestMemory

KVM_DEVICE = "/dev/kvm"
# QEMU's choice (target/i386/kvm/kvm.c, kvm_arch_init): one page for the identity map, then
# three for the TSS, just below 0xFF000000 (below the BIOS flash, above the local APIC).
KVM_IDENTITY_MAP_ADDRESS = 0xFEFFC000
KVM_TSS_ADDRESS = KVM_IDENTITY_MAP_ADDRESS + 0x1000
PAGE_SIZE = 4096
DIRTY_LOG_INTERVAL_NS = 100_000_000  # read the dirty log at most every 100 ms (and at exit)
SYS_MODULE = Path("/sys/module")

# A CPU model as the machine declares it (emu.cpuid.CpuModel.leaves has this shape):
# leaf -> (eax, ebx, ecx, edx) for subleaf 0, or (leaf, subleaf) -> (eax, ebx, ecx, edx), where
# subleaf -1 means every subleaf of that leaf.
CpuidOverrides = Mapping[int | tuple[int, int], tuple[int, int, int, int]]


@dataclass(frozen=True)
class CpuidEntry:
    """One `kvm_cpuid_entry2`: the registers CPUID returns for (function, index)."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int

    @property
    def significant_index(self) -> bool:
        return bool(self.flags & api.KVM_CPUID_FLAG_SIGNIFCANT_INDEX)

    def matches(self, function: int, index: int) -> bool:
        return self.function == function and (self.index == index or not self.significant_index)


def get_supported_cpuid(kvm_fd: int) -> list[CpuidEntry]:
    """KVM_GET_SUPPORTED_CPUID (api.rst §4.46): grow the buffer while the kernel says E2BIG."""
    count = 64
    while True:
        buffer = api.cpuid_list(count)()
        buffer.nent = count
        result = ioctl_raw(kvm_fd, api.KVM_GET_SUPPORTED_CPUID, ctypes.byref(buffer))
        if result == -errno.E2BIG and count < 4096:
            count *= 2
            continue
        if result < 0:
            raise KvmError("KVM_GET_SUPPORTED_CPUID", -result)
        return [
            CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in buffer.entries[: buffer.nent]
        ]


def apply_cpuid_overrides(entries: list[CpuidEntry], overrides: CpuidOverrides) -> list[CpuidEntry]:
    """The table with the CPU model's leaves replaced, or added where KVM did not list them.

    (leaf, -1) keys are applied first, so an exact (leaf, subleaf) key wins over them.
    """
    result = list(entries)
    # int key: subleaf 0, added as a leaf without subleaves; (leaf, n): that subleaf exactly.
    keyed = [
        (key if isinstance(key, tuple) else (key, 0), isinstance(key, tuple), regs) for key, regs in overrides.items()
    ]
    for (function, index), exact, (eax, ebx, ecx, edx) in sorted(keyed, key=lambda item: item[0][1] != -1):
        if index == -1:
            matches = [i for i, e in enumerate(result) if e.function == function]
            for i in matches:
                e = result[i]
                result[i] = CpuidEntry(function, e.index, e.flags, eax, ebx, ecx, edx)
            if not matches:
                result.append(CpuidEntry(function, 0, 0, eax, ebx, ecx, edx))
            continue
        for i, e in enumerate(result):
            if e.matches(function, index):
                result[i] = CpuidEntry(function, e.index, e.flags, eax, ebx, ecx, edx)
                break
        else:
            flags = api.KVM_CPUID_FLAG_SIGNIFCANT_INDEX if exact else 0
            result.append(CpuidEntry(function, index, flags, eax, ebx, ecx, edx))
    return result


def with_apic_id(entries: list[CpuidEntry], apic_id: int) -> list[CpuidEntry]:
    """Give one vCPU its initial APIC ID: CPUID.1:EBX[31:24] and CPUID.0BH/1FH:EDX (x2APIC ID)."""
    out: list[CpuidEntry] = []
    for e in entries:
        if e.function == 1:
            e = CpuidEntry(
                e.function, e.index, e.flags, e.eax, (e.ebx & 0x00FFFFFF) | (apic_id & 0xFF) << 24, e.ecx, e.edx
            )
        elif e.function in (0xB, 0x1F):
            e = CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, apic_id)
        out.append(e)
    return out


@dataclass
class MemorySlot:
    """One KVM memory slot: its number, the region it maps, its flags, and (while dirty logging)
    a bitmap (bit n = page n of the slot) of every page the guest wrote since logging began."""

    slot: int
    region: MemoryRegion
    flags: int
    written: int = 0
    _bitmap: ctypes.Array | None = field(default=None, repr=False)

    @property
    def pages(self) -> int:
        return self.region.size // PAGE_SIZE

    def bitmap_buffer(self) -> ctypes.Array:
        """The buffer KVM_GET_DIRTY_LOG fills: a bit per page, in 64-bit words (api.rst §4.8)."""
        if self._bitmap is None:
            self._bitmap = (ctypes.c_uint64 * ((self.pages + 63) // 64))()
        return self._bitmap


def second_stage_translation(sys_module: Path = SYS_MODULE) -> dict[str, object]:
    """How this host's KVM maps guest-physical to host-physical memory, from module parameters.

    With EPT (Intel, kvm_intel.ept) or NPT (AMD, kvm_amd.npt) the CPU walks the guest's page
    tables and then KVM's second-stage tables in hardware; `kvm.tdp_mmu` says whether KVM builds
    those with its newer TDP MMU. Without either, KVM builds shadow page tables: it write-protects
    the guest's page tables, walks them itself on faults and loads guest-virtual -> host-physical
    tables into the real CR3. Nested kvm_pvm hosts (shared/notes/host-kvm.md) work that way.
    Either way emu never sees a page-table walk or a TLB miss, so it has no MMU counters on kvm.
    """

    def param(module: str, name: str) -> str | None:
        try:
            return (sys_module / module / "parameters" / name).read_text().strip()
        except OSError:
            return None

    tdp_mmu = param("kvm", "tdp_mmu")
    if param("kvm_intel", "ept") in ("Y", "1"):
        second_stage, module = "ept", "kvm_intel"
    elif param("kvm_amd", "npt") in ("Y", "1"):
        second_stage, module = "npt", "kvm_amd"
    else:
        second_stage = "shadow"
        module = next((m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if (sys_module / m).exists()), "kvm")
    return {
        "translation": "kvm",
        "second_stage": second_stage,
        "module": module,
        "tdp_mmu": None if tdp_mmu is None else tdp_mmu in ("Y", "1"),
    }


class KvmAccelerator(Accelerator):
    """A KVM VM: memory slots, CPUID, vCPUs. Raises EmuError (one line) if KVM is unusable."""

    name = "kvm"

    def __init__(
        self,
        memory: GuestMemory | None = None,
        cpu_model: CpuModel | None = None,
        *,
        device: str = KVM_DEVICE,
        cpuid_overrides: CpuidOverrides | None = None,
        identity_map_address: int = KVM_IDENTITY_MAP_ADDRESS,
        tss_address: int = KVM_TSS_ADDRESS,
    ) -> None:
        """`memory` is accepted so both accelerators are built alike; KVM reaches guest RAM
        through the memory slots alone. `cpu_model` (its `leaves`) and `cpuid_overrides` are laid
        over KVM_GET_SUPPORTED_CPUID; with neither, the guest sees KVM's table as it is (like
        QEMU's `-cpu host`)."""
        self.memory = memory
        self.kvm_fd = -1
        self.vm_fd = -1
        self.regions: list[MemoryRegion] = []
        self.slots: list[MemorySlot] = []
        self.vcpus: list[KvmVCpu] = []
        self.ioeventfds: set[IoEventFd] = set()
        self.irqchip: KernelIrqChip | None = None
        self.dirty_logging = False
        self.dirty = DirtyLogStats()
        self._dirty_started_ns = self._dirty_synced_ns = 0
        try:
            self.kvm_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            raise EmuError(f"--accel kvm: {device} is not available ({err.strerror}); use --accel tcg") from None
        try:
            self._init_vm(device, identity_map_address, tss_address)
            self.supported_cpuid = get_supported_cpuid(self.kvm_fd)
        except KvmError as err:  # e.g. /dev/kvm is not a KVM device at all: ENOTTY
            self.close()
            raise EmuError(f"--accel kvm: {device} is not usable ({err}); use --accel tcg") from None
        except BaseException:
            self.close()
            raise
        overrides: dict[int | tuple[int, int], tuple[int, int, int, int]] = {}
        if cpu_model is not None:
            overrides.update(cpu_model.leaves)
        overrides.update(cpuid_overrides or {})
        self.cpuid = apply_cpuid_overrides(self.supported_cpuid, overrides)
        # The signal that kicks a vCPU out of KVM_RUN needs a handler; only the main thread may
        # install one, and this constructor normally runs there.
        self.kick_signal = install_kick_signal_handler()

    def _init_vm(self, device: str, identity_map_address: int, tss_address: int) -> None:
        version = ioctl(self.kvm_fd, api.KVM_GET_API_VERSION)
        if version != api.KVM_API_VERSION:
            raise EmuError(f"--accel kvm: {device} speaks KVM API {version}, emu needs {api.KVM_API_VERSION}")
        for cap, cap_name in (
            (api.KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
            (api.KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
            (api.KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
        ):
            if not self.check_extension(cap):
                raise EmuError(f"--accel kvm: this host's KVM lacks {cap_name}; use --accel tcg")
        self.vcpu_mmap_size = ioctl(self.kvm_fd, api.KVM_GET_VCPU_MMAP_SIZE)
        self.readonly_memory = bool(self.check_extension(api.KVM_CAP_READONLY_MEM))
        self.vm_fd = ioctl(self.kvm_fd, api.KVM_CREATE_VM, 0)
        os.set_inheritable(self.vm_fd, False)
        if self.check_extension(api.KVM_CAP_SET_IDENTITY_MAP_ADDR):
            address = ctypes.c_uint64(identity_map_address)
            ioctl(self.vm_fd, api.KVM_SET_IDENTITY_MAP_ADDR, ctypes.byref(address))
        if self.check_extension(api.KVM_CAP_SET_TSS_ADDR):
            ioctl(self.vm_fd, api.KVM_SET_TSS_ADDR, tss_address)

    def check_extension(self, capability: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd once it exists (per-VM answers), else on /dev/kvm."""
        fd = self.vm_fd if self.vm_fd >= 0 else self.kvm_fd
        return max(ioctl_raw(fd, api.KVM_CHECK_EXTENSION, capability), 0)

    # --- memory ---------------------------------------------------------------------------

    def add_memory_region(self, region: MemoryRegion) -> None:
        """A new memory slot for `region`: RAM, or ROM if `region.readonly` (KVM_MEM_READONLY)."""
        layout = {"guest address": region.guest_address, "size": region.size, "host address": region.host_address}
        for what, value in layout.items():
            if value % PAGE_SIZE or value < 0 or (what == "size" and value == 0):
                raise EmuError(f"memory region {region.name!r}: {what} {value:#x} is not a positive multiple of 4 KiB")
        if region.readonly and not self.readonly_memory:
            raise EmuError(f"memory region {region.name!r}: this host's KVM lacks KVM_CAP_READONLY_MEM")
        if region.readonly:
            flags = api.KVM_MEM_READONLY
        else:
            flags = api.KVM_MEM_LOG_DIRTY_PAGES if self.dirty_logging else 0
        slot = MemorySlot(len(self.slots), region, flags)
        self._set_slot(slot)
        self.slots.append(slot)
        self.regions.append(region)

    def _set_slot(self, slot: MemorySlot) -> None:
        region = slot.region
        arg = api.kvm_userspace_memory_region(
            slot=slot.slot,
            flags=slot.flags,
            guest_phys_addr=region.guest_address,
            memory_size=region.size,
            userspace_addr=region.host_address,
        )
        context = f"slot {slot.slot} {region.name!r} at {region.guest_address:#x}+{region.size:#x}"
        ioctl(self.vm_fd, api.KVM_SET_USER_MEMORY_REGION, ctypes.byref(arg), context)

    # --- dirty-page logging ---------------------------------------------------------------

    def enable_dirty_log(self) -> None:
        """Set KVM_MEM_LOG_DIRTY_PAGES on every writable slot, now and for slots added later."""
        if self.dirty_logging:
            return
        self.dirty_logging = True
        for slot in self.slots:
            if not slot.region.readonly:
                slot.flags |= api.KVM_MEM_LOG_DIRTY_PAGES
                self._set_slot(slot)
        self._dirty_started_ns = self._dirty_synced_ns = time.monotonic_ns()

    def get_dirty_log(self, slot: MemorySlot) -> int:
        """KVM_GET_DIRTY_LOG for one slot: the pages written since the last call, as an int
        whose bit n is page n of the slot. KVM clears its bitmap with the call."""
        bitmap = slot.bitmap_buffer()
        arg = api.kvm_dirty_log(slot=slot.slot, dirty_bitmap=ctypes.addressof(bitmap))
        ioctl(self.vm_fd, api.KVM_GET_DIRTY_LOG, ctypes.byref(arg), f"slot {slot.slot} {slot.region.name!r}")
        return int.from_bytes(bytes(bitmap), "little")

    def sync_dirty_log(self, final: bool = False) -> None:
        """One round over all logged slots, at most every DIRTY_LOG_INTERVAL_NS unless `final`."""
        if not self.dirty_logging:
            return
        now = time.monotonic_ns()
        if not final and now - self._dirty_synced_ns < DIRTY_LOG_INTERVAL_NS:
            return
        for slot in self.slots:
            if slot.flags & api.KVM_MEM_LOG_DIRTY_PAGES:
                bits = self.get_dirty_log(slot)
                if bits:
                    self.dirty.reported_pages += bits.bit_count()
                    slot.written |= bits
        self._dirty_synced_ns = now
        self.dirty.reads += 1
        self.dirty.pages = sum(slot.written.bit_count() for slot in self.slots)
        self.dirty.seconds = (now - self._dirty_started_ns) / 1e9

    def dirty_log_stats(self) -> DirtyLogStats | None:
        return self.dirty if self.dirty_logging else None

    def dirty_pages(self) -> list[int]:
        """Guest-physical addresses of the pages written since logging began (as of the last sync)."""
        out = []
        for slot in self.slots:
            for i, byte in enumerate(slot.written.to_bytes((slot.pages + 7) // 8, "little")):
                if byte:
                    base = slot.region.guest_address + i * 8 * PAGE_SIZE
                    out.extend(base + bit * PAGE_SIZE for bit in range(8) if byte >> bit & 1)
        return out

    def mmu_report(self) -> dict[str, object]:
        return second_stage_translation()

    def read_guest_physical(self, address: int, length: int) -> bytes:
        """Up to `length` bytes of guest RAM/ROM at `address`; shorter where the RAM ends."""
        out = b""
        while length > 0:
            for region in self.regions:
                offset = address - region.guest_address
                if 0 <= offset < region.size:
                    n = min(length, region.size - offset)
                    out += ctypes.string_at(region.host_address + offset, n)
                    address, length = address + n, length - n
                    break
            else:
                break
        return out

    # --- vCPUs ----------------------------------------------------------------------------

    def create_vcpu(self, index: int, io: IoHandler) -> KvmVCpu:
        fd = ioctl(self.vm_fd, api.KVM_CREATE_VCPU, index, f"vCPU {index}")
        os.set_inheritable(fd, False)
        try:
            vcpu = KvmVCpu(self, index, fd, io)
        except BaseException:
            os.close(fd)
            raise
        try:
            vcpu.set_cpuid(with_apic_id(self.cpuid, index))
        except BaseException:
            vcpu.close()
            raise
        self.vcpus.append(vcpu)
        return vcpu

    # --- the in-kernel irqchip and ioeventfd -------------------------------------------------

    def create_irqchip(self) -> KernelIrqChip:
        """KVM_CREATE_IRQCHIP (before any vCPU): KVM's PIC, IOAPIC and local APICs."""
        if self.vcpus:
            raise EmuError("the in-kernel irqchip must exist before the vCPUs")
        if not (self.check_extension(api.KVM_CAP_IRQCHIP) and self.check_extension(api.KVM_CAP_IRQFD_RESAMPLE)):
            raise EmuError("--irqchip kernel: this host's KVM lacks KVM_CAP_IRQCHIP or KVM_CAP_IRQFD_RESAMPLE")
        try:
            self.irqchip = KernelIrqChip(self.vm_fd)
        except KvmError as error:
            raise EmuError(f"--irqchip kernel: {error}") from None
        return self.irqchip


    def add_ioeventfd(self, event: IoEventFd) -> bool:
        """KVM_IOEVENTFD: KVM signals the eventfd inside its own exit handler and resumes the
        guest; the write never reaches emu. False if this KVM refuses (then it does)."""
        if not self.check_extension(api.KVM_CAP_IOEVENTFD):
            return False
        try:
            ioctl(self.vm_fd, api.KVM_IOEVENTFD, ctypes.byref(_ioeventfd(event, deassign=False)))
        except KvmError:
            return False
        self.ioeventfds.add(event)
        return True

    def remove_ioeventfd(self, event: IoEventFd) -> None:
        if event in self.ioeventfds:
            self.ioeventfds.discard(event)
            try:
                ioctl(self.vm_fd, api.KVM_IOEVENTFD, ctypes.byref(_ioeventfd(event, deassign=True)))
            except KvmError:
                pass

    def close(self) -> None:
        for event in list(self.ioeventfds):
            self.remove_ioeventfd(event)
        for vcpu in self.vcpus:
            vcpu.close()
        self.vcpus.clear()
        for name in ("vm_fd", "kvm_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def _ioeventfd(event: IoEventFd, deassign: bool) -> api.kvm_ioeventfd:
    flags = (api.KVM_IOEVENTFD_FLAG_DATAMATCH if event.datamatch is not None else 0) | \
        (api.KVM_IOEVENTFD_FLAG_PIO if event.pio else 0) | (api.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0)
    return api.kvm_ioeventfd(datamatch=event.datamatch or 0, addr=event.address, len=event.length, fd=event.fd,
                             flags=flags)  # fmt: skip
