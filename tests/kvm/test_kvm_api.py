"""The ctypes mirror of <linux/kvm.h>: struct sizes, field offsets, ioctl numbers, errors."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from ctypes import sizeof
from pathlib import Path

import pytest

from emu.errors import EmuError
from emu.kvm_accel import api
from emu.kvm_accel.vm import CpuidEntry, apply_cpuid_overrides, with_apic_id

KVM_H = Path("/usr/include/linux/kvm.h")


def test_struct_sizes() -> None:
    assert sizeof(api.kvm_regs) == 144
    assert sizeof(api.kvm_segment) == 24
    assert sizeof(api.kvm_dtable) == 16
    assert sizeof(api.kvm_sregs) == 312
    assert sizeof(api.kvm_fpu) == 416
    assert sizeof(api.kvm_userspace_memory_region) == 32
    assert sizeof(api.kvm_dirty_log) == 16
    assert sizeof(api.kvm_translation) == 24
    assert sizeof(api.kvm_interrupt) == 4
    assert sizeof(api.kvm_msr_entry) == 16
    assert sizeof(api.kvm_msrs) == 8
    assert sizeof(api.msr_list(3)) == 8 + 3 * 16
    assert sizeof(api.kvm_cpuid_entry2) == 40
    assert sizeof(api.kvm_cpuid2) == 8
    assert sizeof(api.cpuid_list(2)) == 8 + 2 * 40
    assert sizeof(api.kvm_guest_debug) == 72
    assert sizeof(api.kvm_enable_cap) == 104
    assert sizeof(api.kvm_run_exit) == 256
    assert sizeof(api.kvm_run) == 2352
    assert sizeof(api.kvm_irq_routing_entry) == 48
    assert sizeof(api.kvm_irq_routing) == 8
    assert sizeof(api.routing_list(2)) == 8 + 2 * 48
    assert sizeof(api.kvm_irqchip) == 520
    assert sizeof(api.kvm_lapic_state) == 1024


def _offset(struct_type: type, *path: str) -> int:
    total = 0
    for name in path:
        descriptor = getattr(struct_type, name)
        total += descriptor.offset
        struct_type = {n: t for n, t, *_ in struct_type._fields_}[name]
    return total


def test_kvm_run_offsets() -> None:
    run = api.kvm_run
    assert run.immediate_exit.offset == 1
    assert run.exit_reason.offset == 8
    assert run.ready_for_interrupt_injection.offset == 12
    assert run.if_flag.offset == 13
    assert run.cr8.offset == 16
    assert run.exit.offset == 32
    assert [_offset(run, "exit", "io", f) for f in ("direction", "size", "port", "count", "data_offset")] == [
        32,
        33,
        34,
        36,
        40,
    ]
    assert [_offset(run, "exit", "mmio", f) for f in ("phys_addr", "data", "len", "is_write")] == [32, 40, 48, 52]
    assert [_offset(run, "exit", "internal", f) for f in ("suberror", "ndata", "data")] == [32, 36, 40]
    ef = [_offset(run, "exit", "emulation_failure", f) for f in ("flags", "insn_size", "insn_bytes")]
    assert ef == [40, 48, 49]
    assert _offset(run, "exit", "fail_entry", "cpu") == 40
    assert _offset(run, "exit", "debug", "arch", "pc") == 40
    assert run.kvm_valid_regs.offset == 288
    assert run.s.offset == 304


def test_ioctl_numbers() -> None:
    # The values <linux/kvm.h> expands to on x86-64 (printed by a C program with gcc).
    expected = {
        "KVM_GET_API_VERSION": 0xAE00, "KVM_CREATE_VM": 0xAE01, "KVM_CHECK_EXTENSION": 0xAE03,
        "KVM_GET_VCPU_MMAP_SIZE": 0xAE04, "KVM_GET_SUPPORTED_CPUID": 0xC008AE05,
        "KVM_CREATE_VCPU": 0xAE41, "KVM_GET_DIRTY_LOG": 0x4010AE42, "KVM_SET_USER_MEMORY_REGION": 0x4020AE46,
        "KVM_SET_TSS_ADDR": 0xAE47, "KVM_SET_IDENTITY_MAP_ADDR": 0x4008AE48,
        "KVM_CREATE_IRQCHIP": 0xAE60, "KVM_IRQ_LINE": 0x4008AE61, "KVM_IRQFD": 0x4020AE76,
        "KVM_GET_IRQCHIP": 0xC208AE62, "KVM_SET_IRQCHIP": 0x8208AE63, "KVM_SET_GSI_ROUTING": 0x4008AE6A,
        "KVM_GET_LAPIC": 0x8400AE8E, "KVM_SET_LAPIC": 0x4400AE8F,
        "KVM_IOEVENTFD": 0x4040AE79,
        "KVM_ENABLE_CAP": 0x4068AEA3, "KVM_RUN": 0xAE80, "KVM_GET_REGS": 0x8090AE81,
        "KVM_SET_REGS": 0x4090AE82, "KVM_GET_SREGS": 0x8138AE83, "KVM_SET_SREGS": 0x4138AE84,
        "KVM_TRANSLATE": 0xC018AE85, "KVM_INTERRUPT": 0x4004AE86, "KVM_GET_MSRS": 0xC008AE88,
        "KVM_SET_MSRS": 0x4008AE89, "KVM_GET_FPU": 0x81A0AE8C, "KVM_SET_FPU": 0x41A0AE8D,
        "KVM_SET_CPUID2": 0x4008AE90, "KVM_GET_CPUID2": 0xC008AE91, "KVM_GET_MP_STATE": 0x8004AE98, "KVM_SET_GUEST_DEBUG": 0x4048AE9B,
        "KVM_GET_VCPU_EVENTS": 0x8040AE9F, "KVM_SET_VCPU_EVENTS": 0x4040AEA0, "KVM_GET_DEBUGREGS": 0x8080AEA1,
        "KVM_SET_DEBUGREGS": 0x4080AEA2,
    }  # fmt: skip
    assert {name: getattr(api, name) for name in expected} == expected
    assert set(api.IOCTL_NAMES.values()) == set(expected)


@pytest.mark.skipif(not KVM_H.exists() or not shutil.which("gcc"), reason="needs gcc and <linux/kvm.h>")
def test_against_kernel_header(tmp_path: Path) -> None:
    """Every ioctl number and kvm_run offset here equals what the C header gives."""
    names = sorted(api.IOCTL_NAMES.values())
    checks = [f'P("{n}", {n})' for n in names] + [
        f'P("{label}", {expr})'
        for label, expr in {
            "sizeof kvm_run": "sizeof(struct kvm_run)",
            "sizeof kvm_sregs": "sizeof(struct kvm_sregs)",
            "io": "offsetof(struct kvm_run, io)",
            "mmio.data": "offsetof(struct kvm_run, mmio.data)",
            "mmio.len": "offsetof(struct kvm_run, mmio.len)",
            "mmio.is_write": "offsetof(struct kvm_run, mmio.is_write)",
            "emulation_failure.insn_size": "offsetof(struct kvm_run, emulation_failure.insn_size)",
            "kvm_valid_regs": "offsetof(struct kvm_run, kvm_valid_regs)",
        }.items()
    ]
    source = tmp_path / "probe.c"
    source.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\n"
        '#define P(name, value) printf("%s=%lu\\n", name, (unsigned long)(value));\n'
        "int main(void) {\n" + "\n".join(checks) + "\nreturn 0;\n}\n"
    )
    subprocess.run(["gcc", "-o", str(tmp_path / "probe"), str(source)], check=True, capture_output=True)
    out = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True, text=True).stdout
    from_c = {k: int(v) for k, v in (line.split("=") for line in out.splitlines())}
    ours = {name: getattr(api, name) for name in names} | {
        "sizeof kvm_run": sizeof(api.kvm_run),
        "sizeof kvm_sregs": sizeof(api.kvm_sregs),
        "io": 32,
        "mmio.data": 40,
        "mmio.len": 48,
        "mmio.is_write": 52,
        "emulation_failure.insn_size": _offset(api.kvm_run, "exit", "emulation_failure", "insn_size"),
        "kvm_valid_regs": api.kvm_run.kvm_valid_regs.offset,
    }
    assert ours == from_c


@pytest.mark.skipif(not KVM_H.exists(), reason="needs <linux/kvm.h>")
def test_exit_reasons_match_header() -> None:
    header = KVM_H.read_text()
    defined = {m[0]: int(m[1]) for m in re.findall(r"#define\s+(KVM_EXIT_\w+)\s+(\d+)\b", header)}
    defined |= {m[0]: int(m[1]) for m in re.findall(r"#define\s+(KVM_INTERNAL_ERROR_\w+)\s+(\d+)\b", header)}
    for name in [n for n in dir(api) if n.startswith(("KVM_EXIT_", "KVM_INTERNAL_ERROR_")) and n in defined]:
        assert getattr(api, name) == defined[name], name
    assert api.EXIT_REASON_NAMES[api.KVM_EXIT_SHUTDOWN] == "KVM_EXIT_SHUTDOWN"


def test_missing_device_is_one_clear_line() -> None:
    from emu.kvm_accel import KvmAccelerator

    with pytest.raises(EmuError) as info:
        KvmAccelerator(device="/nonexistent/kvm")
    assert str(info.value) == (
        "--accel kvm: /nonexistent/kvm is not available (No such file or directory); use --accel tcg"
    )


def test_device_that_is_not_kvm_is_one_clear_line() -> None:
    from emu.kvm_accel import KvmAccelerator

    with pytest.raises(EmuError) as info:
        KvmAccelerator(device="/dev/null")
    assert str(info.value) == (
        "--accel kvm: /dev/null is not usable (KVM_GET_API_VERSION failed: Inappropriate ioctl for device "
        "(errno 25)); use --accel tcg"
    )


def test_failed_ioctl_names_itself() -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(api.KvmError) as info:
            api.ioctl(fd, api.KVM_GET_API_VERSION)
    finally:
        os.close(fd)
    assert str(info.value) == "KVM_GET_API_VERSION failed: Inappropriate ioctl for device (errno 25)"
    assert isinstance(info.value, EmuError)
    assert api.ioctl_raw(-1, api.KVM_RUN) == -9  # -EBADF, no exception


def test_cpuid_overrides() -> None:
    table = [
        CpuidEntry(0, 0, 0, 0xD, 0x68747541, 0x444D4163, 0x69746E65),
        CpuidEntry(1, 0, 0, 0x800F12, 0x00020800, 0, 0),
        CpuidEntry(7, 0, api.KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 1, 2, 3),
        CpuidEntry(7, 1, api.KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0, 0, 0, 0),
    ]
    significant = api.KVM_CPUID_FLAG_SIGNIFCANT_INDEX
    out = apply_cpuid_overrides(
        table, {0: (1, 2, 3, 4), (7, 1): (5, 6, 7, 8), 0x40000010: (9, 9, 9, 9), (0xD, 1): (1, 1, 1, 1)}
    )
    assert out[0] == CpuidEntry(0, 0, 0, 1, 2, 3, 4)
    assert out[2] == table[2]
    assert out[3] == CpuidEntry(7, 1, significant, 5, 6, 7, 8)
    assert out[4:] == [CpuidEntry(0x40000010, 0, 0, 9, 9, 9, 9), CpuidEntry(0xD, 1, significant, 1, 1, 1, 1)]
    assert table[0].eax == 0xD  # the input is not modified
    # emu.cpuid.CpuModel's (leaf, -1) means every subleaf; an exact key still wins over it.
    out = apply_cpuid_overrides(table, {(7, 1): (5, 5, 5, 5), (7, -1): (4, 4, 4, 4)})
    assert [(e.index, e.eax) for e in out if e.function == 7] == [(0, 4), (1, 5)]
    assert with_apic_id(table, 3)[1].ebx == 0x03020800


@pytest.mark.kvm
def test_host_facts() -> None:
    """API version, and the kvm_run mapping the vCPUs use has the kernel's size."""
    from emu.kvm_accel import KvmAccelerator

    fd = os.open("/dev/kvm", os.O_RDWR)
    try:
        assert api.ioctl(fd, api.KVM_GET_API_VERSION) == 12
        mmap_size = api.ioctl(fd, api.KVM_GET_VCPU_MMAP_SIZE)
    finally:
        os.close(fd)
    assert mmap_size >= sizeof(api.kvm_run)

    class NoIo:
        pass

    accel = KvmAccelerator()
    try:
        vcpu = accel.create_vcpu(0, NoIo())  # type: ignore[arg-type]
        assert accel.vcpu_mmap_size == mmap_size
        assert len(vcpu._run_mmap) == mmap_size
        functions = {e.function for e in accel.supported_cpuid}
        assert {0, 1, 0x40000000, 0x80000000} <= functions
        hypervisor = next(e for e in accel.supported_cpuid if e.function == 0x40000000)
        assert (
            b"".join(x.to_bytes(4, "little") for x in (hypervisor.ebx, hypervisor.ecx, hypervisor.edx))
            == b"KVMKVMKVM\0\0\0"
        )
    finally:
        accel.close()
    assert accel.vm_fd == -1 and accel.kvm_fd == -1


def test_ctypes_arguments_by_reference() -> None:
    """ioctl arguments go through c_void_p: byref() and ints both work."""
    value = ctypes.c_uint64(0)
    assert api.ioctl_raw(-1, api.KVM_SET_IDENTITY_MAP_ADDR, ctypes.byref(value)) == -9
    assert api.ioctl_raw(-1, api.KVM_SET_TSS_ADDR, 0xFEFFD000) == -9


@pytest.mark.kvm
def test_in_kernel_irqchip_is_set_up_as_the_mp_table_says() -> None:
    """--irqchip kernel: KVM's IOAPIC gets ID 1 (KVM_SET_IRQCHIP) and the GSI table QEMU uses
    (KVM_SET_GSI_ROUTING accepted); a vCPU's in-kernel local APIC can be put in SeaBIOS's state."""
    import struct

    from emu.kvm_accel import KvmAccelerator
    from emu.kvm_accel.irqchip import KernelIrqChip

    class NoIo:
        pass

    accel = KvmAccelerator()
    try:
        chip = accel.create_irqchip()
        assert chip.ioapic_id() == 1
        vcpu = accel.create_vcpu(0, NoIo())  # type: ignore[arg-type]
        KernelIrqChip.firmware_lapic_setup(vcpu.fd)
        state = api.kvm_lapic_state()
        api.ioctl(vcpu.fd, api.KVM_GET_LAPIC, ctypes.byref(state))
        regs = bytes(state.regs)
        svr, lint0, lint1 = (struct.unpack_from("<I", regs, offset)[0] for offset in (0xF0, 0x350, 0x360))
        assert (svr & 0x1FF, lint0, lint1) == (0x1FF, 0x8700, 0x8400)
        chip.close()
    finally:
        accel.close()
