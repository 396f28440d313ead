"""A fuzz finding as a guest: a multiboot image that `python -m emu diff` (or QEMU) can run.

The image enters like any multiboot kernel (32-bit protected mode, paging off), builds
identity page tables with 2 MiB user-accessible pages for the first GiB, a GDT with the fuzzer's
selectors (0x08/0x10 kernel, 0x23/0x2b user, 0x30 TSS), a TSS whose RSP0 is 0x70000 and an IDT
whose 32 exception stubs each exit with 0x20 + the vector, and switches to long mode (SDM vol.
3A §9.8.5). It copies the finding's data page to 0x200000 (RBP), loads the registers and flags
and executes the instruction sequence: at CPL0, followed by an exit with 0 through
isa-debug-exit (port 0xf4); at CPL3 (entered with iretq), followed by a `hlt`, which is
privileged there and raises #GP(0), so the image exits with 0x2d from the #GP stub, as the
fuzzer's run ends in that stub. Assembled with GNU as (the toolchain the firmware uses); without
it the finding keeps only its JSON.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ..loader.multiboot_image import CODE_OFFSET, build_multiboot_elf

REGISTERS = ["rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11"]
DATA, RSP0, EXIT_BASE = 0x200000, 0x70000, 0x20

_STUB = """
.code32
    cli
    mov $0x70000, %edi          # PML4, PDPT, PD at 0x70000-0x72fff, GDT 0x73000, TSS 0x74000, IDT 0x75000
    xor %eax, %eax
    mov $0x1800, %ecx
    rep stosl
    movl $0x71007, 0x70000      # present, writable, user
    movl $0x72007, 0x71000
    mov $0x72000, %edi
    mov $0x87, %eax             # present, writable, user, 2 MiB
    mov $512, %ecx
1:  mov %eax, (%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 1b
    movl $0x0000ffff, 0x73008   # 0x08: 64-bit code, DPL0
    movl $0x00af9a00, 0x7300c
    movl $0x0000ffff, 0x73010   # 0x10: data, DPL0
    movl $0x00cf9200, 0x73014
    movl $0x0000ffff, 0x73020   # 0x20: 64-bit code, DPL3
    movl $0x00affa00, 0x73024
    movl $0x0000ffff, 0x73028   # 0x28: data, DPL3
    movl $0x00cff200, 0x7302c
    movl $0x40000067, 0x73030   # 0x30: 64-bit TSS at 0x74000, limit 0x67
    movl $0x00008907, 0x73034
    movw $63, 0x73100
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
    movl ${rsp0:#x}, 0x74004     # TSS.RSP0: the stack an exception from CPL3 is delivered on
    mov $0x30, %ax
    ltr %ax
    mov $0x75000, %edi          # 32 interrupt gates, selector 0x08, to the stubs (16 bytes apart)
    lea stubs(%rip), %rax
    mov $32, %ecx
2:  mov %eax, %edx
    and $0xffff, %edx
    or $0x80000, %edx
    mov %edx, (%rdi)
    mov %eax, %edx
    and $0xffff0000, %edx
    or $0x8e00, %edx
    mov %edx, 4(%rdi)
    add $16, %rdi
    add $16, %rax
    loop 2b
    lidt idtr(%rip)
{copy}
{enter}
{loads}
{body}
    .align 16
stubs:
{stubs}
idtr:
    .word 32 * 16 - 1
    .quad 0x75000
data:
{data}
"""

_COPY = """    lea data(%rip), %rsi        # the data page
    mov ${data:#x}, %edi
    mov ${size}, %ecx
    cld
    rep movsb"""

_ENTER0 = """    mov ${rsp:#x}, %rsp
    pushq ${rflags:#x}
    popfq"""

_BODY0 = """sequence:
    .byte {code}
    xor %eax, %eax
    out %al, $0xf4
    hlt"""

_ENTER3 = """    mov $0x80000, %rsp
    mov $0x2b, %ax              # DPL3 data segments, which iretq to CPL3 keeps
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    pushq $0x2b                 # SS, RSP, RFLAGS, CS, RIP for iretq to CPL3
    pushq ${rsp:#x}
    pushq ${rflags:#x}
    pushq $0x23
    lea sequence(%rip), %rax
    push %rax"""

_BODY3 = """    iretq
sequence:
    .byte {code}
    hlt                         # privileged at CPL3: #GP(0), whose stub exits with 0x2d"""

_EXCEPTION = """    .align 16
    mov ${status:#x}, %al
    out %al, $0xf4
    hlt"""


def build(code: bytes, state: dict[str, int], path: Path, ring: int = 0, data: bytes | None = None) -> bool:
    """Write the reproducer to `path`; False when GNU as/ld are not installed. `state` holds the
    registers (rbp too, if given), rflags and rsp; `data`, if given, is copied to the data page."""
    if not shutil.which("as") or not shutil.which("ld"):
        return False
    default_rsp = 0x60000 if ring == 3 else 0x80000
    fields = {"rsp": state.get("rsp", default_rsp), "rflags": state["rflags"] & 0xFFF & ~0x100}
    registers = REGISTERS + (["rbp"] if "rbp" in state else [])
    source = _STUB.format(
        rsp0=RSP0,
        copy=_COPY.format(data=DATA, size=len(data)) if data else "",
        enter=(_ENTER3 if ring == 3 else _ENTER0).format(**fields),
        loads="\n".join(f"    movabs ${state[r]:#x}, %{r}" for r in registers),
        body=(_BODY3 if ring == 3 else _BODY0).format(code=", ".join(f"{b:#04x}" for b in code) or "0x90"),
        stubs="\n".join(_EXCEPTION.format(status=EXIT_BASE + vector) for vector in range(32)),
        data="\n".join("    .byte " + ", ".join(f"{b:#04x}" for b in (data or b"")[i : i + 16])
                       for i in range(0, len(data or b""), 16)),
    )  # fmt: skip
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
