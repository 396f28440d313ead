"""A fuzz finding as a guest: a multiboot image that `python -m emu diff` (or QEMU) can run.

The image enters like any multiboot kernel (32-bit protected mode, paging off), builds
identity page tables with 2 MiB pages for the first GiB and a GDT in low memory, switches to
long mode (SDM vol. 3A §9.8.5), loads the finding's registers and flags, executes the
instruction sequence, and exits through isa-debug-exit (port 0xf4). Assembled with GNU as (the
toolchain the firmware uses); without it the finding keeps only its JSON.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..loader.multiboot_image import CODE_OFFSET, build_multiboot_elf

REGISTERS = ["rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11"]

_STUB = """
.code32
    cli
    mov $0x70000, %edi          # PML4, PDPT, PD at 0x70000-0x72fff, GDT at 0x73000
    xor %eax, %eax
    mov $0x1000, %ecx
    rep stosl
    movl $0x71003, 0x70000
    movl $0x72003, 0x71000
    mov $0x72000, %edi
    mov $0x83, %eax             # present, writable, 2 MiB
    mov $512, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    movl $0x0000ffff, 0x73008   # 0x08: 64-bit code
    movl $0x00af9a00, 0x7300c
    movl $0x0000ffff, 0x73010   # 0x10: data
    movl $0x00cf9200, 0x73014
    movw $23, 0x73100
    movl $0x73000, 0x73102
    lgdt 0x73100
    mov %cr4, %eax
    or $0x20, %eax              # PAE
    mov %eax, %cr4
    mov $0x70000, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx       # EFER.LME
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax        # PG: long mode is active
    mov %eax, %cr0
    ljmp $0x08, $long64
.code64
long64:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov ${rsp}, %rsp
    pushq ${rflags}
    popfq
{loads}
sequence:
    .byte {code}
    xor %eax, %eax
    out %al, $0xf4
    hlt
"""


def build(code: bytes, state: dict[str, int], path: Path) -> bool:
    """Write the reproducer to `path`; False when GNU as/ld are not installed."""
    if not shutil.which("as") or not shutil.which("ld"):
        return False
    loads = "\n".join(f"    movabs ${state[r]:#x}, %{r}" for r in REGISTERS)
    source = _STUB.format(rsp=state.get("rsp", 0x80000), rflags=state["rflags"] & 0xFFF & ~0x100, loads=loads,
                          code=", ".join(f"{b:#04x}" for b in code))  # fmt: skip
    entry = 0x100000 + CODE_OFFSET  # where build_multiboot_elf puts the code
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = Path(tmp, "r.s"), Path(tmp, "r.o"), Path(tmp, "r.bin")
        src.write_text(source)
        subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-Ttext", hex(entry), "--oformat", "binary", "-e", "0",
                        "-o", str(out), str(obj)], check=True, capture_output=True)  # fmt: skip
        body = out.read_bytes()
    path.write_bytes(build_multiboot_elf(body))
    return True
