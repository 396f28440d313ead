"""Port-IO round trip: a guest `out` that the VMM must serve, on tcg and on kvm.

tcg: a guest loop of N `out 0x80, al` runs under emu (IN/OUT hook -> port bus -> POST-code
device) and, as the reference in the same run, on bare Unicorn with a do-nothing Python OUT
hook: the ratio shows what emu's dispatch adds to the cheapest possible hook (goal: under
2 us per round trip).

kvm: the same guest under emu (KVM_EXIT_IO -> bus -> device -> KVM_RUN) against a minimal
ctypes loop in this file that creates a VM, maps memory, and answers each KVM_EXIT_IO by
re-entering KVM_RUN, nothing else. On this project's hosts KVM itself emulates CPL0 code, so
most of each round trip is the host's; the ratio isolates what emu adds.

    python bench/port_io.py [--tcg-iterations N] [--kvm-iterations N]
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import mmap
import os
import time

from common import ENTRY, best_of, emu_seconds, exit_offset, loop_code, tempdir, timed, write_image
from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, Uc
from unicorn.x86_const import UC_X86_INS_OUT


OUT_0X80 = b"\xe6\x80"  # out 0x80, al




def raw_unicorn_seconds(code: bytes) -> float:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 2 << 20)
    uc.mem_write(ENTRY, code)
    uc.hook_add(UC_HOOK_INSN, lambda uc, port, size, value, ud: None, None, 1, 0, UC_X86_INS_OUT)
    return timed(lambda: uc.emu_start(ENTRY, exit_offset(code)))


def bare_kvm_seconds(code: bytes) -> float:
    """The least a Python VMM can do per exit: KVM_RUN again (flat 32-bit guest, no devices)."""
    from emu.kvm_accel import api

    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, api.KVM_CREATE_VM, 0)
    ram = mmap.mmap(-1, 2 << 20)
    region = api.kvm_userspace_memory_region(0, 0, 0, len(ram), ctypes.addressof(ctypes.c_char.from_buffer(ram)))
    api.ioctl(vm, api.KVM_SET_USER_MEMORY_REGION, ctypes.byref(region))
    api.ioctl(vm, api.KVM_SET_TSS_ADDR, 0xFEFFD000)
    ram[ENTRY : ENTRY + len(code)] = code
    vcpu = fcntl.ioctl(vm, api.KVM_CREATE_VCPU, 0)
    size = fcntl.ioctl(kvm, api.KVM_GET_VCPU_MMAP_SIZE, 0)
    run_map = mmap.mmap(vcpu, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    exit_reason = ctypes.c_uint32.from_buffer(run_map, 8)
    sregs = api.kvm_sregs()
    api.ioctl(vcpu, api.KVM_GET_SREGS, ctypes.byref(sregs))
    for name in ("cs", "ds", "es", "fs", "gs", "ss"):
        seg = getattr(sregs, name)
        seg.base, seg.limit, seg.g, seg.db, seg.present, seg.s, seg.dpl = 0, 0xFFFFFFFF, 1, 1, 1, 1, 0
        seg.type, seg.selector = (0xB, 0x10) if name == "cs" else (0x3, 0x18)
    sregs.cr0 = 0x11
    api.ioctl(vcpu, api.KVM_SET_SREGS, ctypes.byref(sregs))
    regs = api.kvm_regs()
    regs.rip, regs.rflags = ENTRY, 2
    api.ioctl(vcpu, api.KVM_SET_REGS, ctypes.byref(regs))
    start = time.perf_counter()
    while True:
        fcntl.ioctl(vcpu, api.KVM_RUN, 0)
        if exit_reason.value != api.KVM_EXIT_IO:
            raise RuntimeError(f"unexpected exit {exit_reason.value}")
        if run_map[34] != 0x80:  # kvm_run.io.port (offset 34): the final out to 0xf4
            break
    elapsed = time.perf_counter() - start
    del exit_reason  # release the buffer export so the mapping can close
    try:
        return elapsed
    finally:
        run_map.close()
        for fd in (vcpu, vm, kvm):
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tcg-iterations", type=int, default=200_000)
    parser.add_argument("--kvm-iterations", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = tempdir()

    compare("tcg", args.tcg_iterations, args.runs, work, raw_unicorn_seconds,
            "raw Unicorn, empty Python hook", "  (goal < 2 us)")  # fmt: skip
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as err:
        print(f"port IO round trip on kvm: skipped (/dev/kvm: {err.strerror})")
        return
    compare("kvm", args.kvm_iterations, args.runs, work, bare_kvm_seconds, "bare ctypes KVM_RUN loop", "")


def compare(accel: str, n: int, runs: int, work, reference, label: str, goal: str) -> None:
    """Time n port-IO round trips under emu and under `reference(code)`; print both and the ratio."""
    code = loop_code(n, OUT_0X80)
    image = write_image(code, work, f"io-{accel}.elf")
    ref = best_of(runs, lambda: reference(code)) / n * 1e6
    emu = best_of(runs, lambda: emu_seconds(image, accel)) / n * 1e6
    print(f"port IO round trip on {accel}, {n} outs, best of {runs}")
    print(f"  {label:<32} {ref:7.2f} us")
    print(f"  emu --accel {accel} (bus + device)   {emu:7.2f} us{goal}")
    print(f"  ratio emu/reference              {emu / ref:7.2f}")

if __name__ == "__main__":
    main()
