"""A device's DMA into guest RAM and Unicorn's translated code (emu/tcg/vcpu.py _invalidate_code).

Unicorn does not see the host's writes into guest RAM, so translated blocks from a page a
device overwrote must be dropped by emu, before the guest runs them again. With paging on,
Unicorn can only drop by virtual address, so emu flushes all translated code, unless its MMU
knows no code came from the written frames (execute rights only on a fetch, frame recorded:
SoftMmu.holds_code). Device threads write from outside the vCPU thread: the drop waits for
the vCPU's next run boundary."""

from __future__ import annotations

import threading

import pytest
from asm import assemble, requires_as
from memguest import CODE, RESULTS, make_guest

from emu.memory import GuestMemory

FUNCTION, DATA = 0x300000, 0x400000
LOOP = f"""
start:
    mov $0x{FUNCTION:x}, %rax
    call *%rax
    mov %rax, 0x{RESULTS:x}
    hlt
    jmp start
"""


def dma(memory: GuestMemory, address: int, data: bytes) -> None:
    """A write by another thread, as a device thread's completion makes it."""
    writer = threading.Thread(target=memory.write, args=(address, data))
    writer.start()
    writer.join()


@requires_as
@pytest.mark.parametrize("mmu", ["shadow", "shadow-python"])
def test_code_overwritten_by_dma_runs_new(mmu: str) -> None:
    memory = GuestMemory.pc(64 << 20)
    guest = make_guest("tcg", memory)
    try:
        if mmu == "shadow-python":
            guest.vcpu.softmmu.front = None
        guest.start(assemble(LOOP, CODE))
        memory.write(FUNCTION, assemble("mov $1, %eax\nret", FUNCTION))
        guest.run_to_halt()
        assert memory.read_u64(RESULTS) == 1
        mmu_state = guest.vcpu.softmmu
        dma(memory, DATA + 0x1000, b"\x90")  # the first write after paging came on flushes all (untracked_code)
        guest.run_to_halt()
        avoided = mmu_state.code_flushes_avoided
        dma(memory, DATA, b"\x90" * 4096)  # a data page, never executed: no flush needed
        guest.run_to_halt()
        assert mmu_state.code_flushes_avoided == avoided + 1 and DATA not in mmu_state.code_frames
        dma(memory, FUNCTION, assemble("mov $2, %eax\nret", FUNCTION))  # the function's page: flushed
        guest.run_to_halt()
        assert memory.read_u64(RESULTS) == 2 and FUNCTION in mmu_state.code_frames
    finally:
        guest.close()
