"""Preempting a running tcg guest must not re-execute instructions.

Unicorn 2.1.4 does not synchronize the guest PC when an asynchronous `uc_emu_stop` (from
another thread) lands on a chained translation block (cpu_tb_exec skips synchronize_from_tb
while stop_request is set; upstream issue #1355), so a run stopped that way can resume at a
stale EIP and repeat stores it already made. The first test shows that upstream behaviour
(xfail, strict: it fails loudly if a Unicorn release fixes it). emu therefore preempts a
running guest for its timers with instruction-count slices (emu.tcg.vcpu), which stop exactly;
the second test checks that on both MMUs with a deadline every 50 us. `kick()` from another
thread is left for ending the run (Ctrl-C, SIGTERM), where a repeated store no longer matters.
"""

from __future__ import annotations

import threading
import time

import pytest
from asm import assemble, requires_as
from guestenv import RecordingIo, protected32_state

from emu.accel import HaltExit, KickExit, MemoryRegion
from emu.memory import GuestMemory
from emu.tcg.accel import TcgAccelerator

pytestmark = requires_as
ITERATIONS = 200_000
COUNTER = 0x200000


def counting_guest(mmu: str):
    memory = GuestMemory(8 << 20)
    accel = TcgAccelerator(memory, mmu=mmu)
    accel.add_memory_region(MemoryRegion(0, memory.size, memory.host_address))
    vcpu = accel.create_vcpu(0, RecordingIo())
    memory.write(0x100000, assemble(f"mov ${ITERATIONS}, %ecx; 1: incl {COUNTER:#x}; dec %ecx; jnz 1b; hlt",
                                    0x100000, 32))  # fmt: skip
    vcpu.set_state(protected32_state(memory, rip=0x100000))
    return memory, accel, vcpu


@pytest.mark.parametrize("mmu", ["shadow", "unicorn"])
def test_deadline_preemption_is_exact(mmu: str) -> None:
    memory, accel, vcpu = counting_guest(mmu)
    preemptions = 0
    try:
        while True:
            vcpu.set_deadline(time.monotonic_ns() + 50_000)
            if not isinstance(vcpu.run(), KickExit):
                break
            preemptions += 1
    finally:
        accel.close()
    assert preemptions > 10  # the loop really was preempted, many times
    assert memory.read_u32(COUNTER) == ITERATIONS


def _run_while_stopped_from_another_thread(mmu: str, stop) -> None:  # noqa: ANN001 - stop(vcpu)
    memory, accel, vcpu = counting_guest(mmu)
    done = threading.Event()

    def stopper() -> None:
        while not done.is_set():
            stop(vcpu)
            time.sleep(50e-6)

    thread = threading.Thread(target=stopper)
    thread.start()
    try:
        kicks = 0
        while isinstance(vcpu.run(), KickExit):
            kicks += 1
    finally:
        done.set()
        thread.join()
        accel.close()
    assert kicks > 10  # the loop really was preempted
    assert memory.read_u32(COUNTER) == ITERATIONS


@pytest.mark.xfail(strict=True, reason="Unicorn #1355: an async emu_stop can resume at a stale EIP")
@pytest.mark.parametrize("mmu", ["shadow", "unicorn"])
def test_unicorn_async_stop_repeats_stores(mmu: str) -> None:
    """Unicorn's own asynchronous stop, as emu's kick() made it before the C block hook."""

    def raw_stop(vcpu) -> None:  # noqa: ANN001
        vcpu._kick.set()
        vcpu.uc.emu_stop()

    _run_while_stopped_from_another_thread(mmu, raw_stop)


@pytest.mark.parametrize("mmu", ["shadow", "unicorn"])
def test_kick_from_another_thread_is_exact(mmu: str) -> None:
    """kick() from another thread raises the block hook's stop flag: the run ends before a block."""
    _run_while_stopped_from_another_thread(mmu, lambda vcpu: vcpu.kick())


F4_LOOPS = {
    # mov edx, [ebp-0Ch] = 8B 55 F4, in the middle of a block (GRUB's LZMA decompressor)
    "mov": "1: mov -0xc(%ebp), %edx; dec %ecx; jnz 1b",
    # jmp $-10 = EB F4, the last instruction of a block: the budget can run out as the next
    # block starts, before its first instruction (GRUB's int 13h loop)
    "jmp": "1: nop; nop; nop; nop; nop; nop; nop; dec %ecx; jz 2f; jmp 1b; 2:",
}


@pytest.mark.parametrize("how", ["deadline", "step"])
@pytest.mark.parametrize("loop", sorted(F4_LOOPS))
@pytest.mark.parametrize("mmu", ["shadow", "unicorn"])
def test_run_ending_after_a_byte_f4_is_not_hlt(mmu: str, loop: str, how: str) -> None:
    """A run that ends right after an instruction ending in F4 leaves F4 before RIP, as `hlt`
    does. With interrupts off, taking it for `hlt` would end the guest (GRUB hit both cases
    below, when emu preempted by instruction budgets). Runs preempted at a deadline now end at
    block boundaries (last_block.c); single steps (`step(count)`) still end by budget, at any
    instruction. Either way the vCPU must tell the two apart and run on."""
    from emu.tcg import native
    from emu.tcg.vcpu import LAST_BLOCK_SOURCE

    if native.load(LAST_BLOCK_SOURCE)[0] is None:
        pytest.skip("no C compiler: emu takes F4 before RIP for hlt (see TcgVCpu._stopped_after_hlt)")
    iterations = ITERATIONS * 5 if how == "deadline" else 2_000
    memory = GuestMemory(8 << 20)
    accel = TcgAccelerator(memory, mmu=mmu)
    accel.add_memory_region(MemoryRegion(0, memory.size, memory.host_address))
    vcpu = accel.create_vcpu(0, RecordingIo())
    code = f"cli; mov $0x300000, %ebp; mov ${iterations}, %ecx; {F4_LOOPS[loop]}; hlt"
    memory.write(0x100000, assemble(code, 0x100000, 32))
    assert (b"\x8b\x55\xf4" if loop == "mov" else b"\xeb\xf4") in memory.read(0x100000, 32)
    vcpu.set_state(protected32_state(memory, rip=0x100000))
    preemptions = 0
    try:
        while True:
            if how == "deadline":
                vcpu.set_deadline(time.monotonic_ns() + 20_000)
                if not isinstance(vcpu.run(), KickExit):
                    break
            elif isinstance(vcpu.step(7), HaltExit):
                break
            preemptions += 1
        state = vcpu.get_state()
    finally:
        accel.close()
    assert preemptions > 30
    assert state.rcx == 0  # it ran to the end: the only hlt is the last instruction
