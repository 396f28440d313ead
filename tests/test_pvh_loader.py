"""The PVH loader (emu/loader/pvh.py) on synthetic ELF kernels: where the segments, initrd,
command line and start info go, the entry state the PVH ABI asks for, detection in QEMU's order,
and one clear line (exit 2, no traceback) for truncated or malformed ELFs and notes. A tiny
PVH guest then reads its start info on tcg (and on QEMU, where installed, with the same output)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from asm import assemble, requires_as
from pvh_image import CODE_OFFSET, XEN_ELFNOTE_PHYS32_ENTRY, build_pvh_elf, note
from test_cli_errors import assert_one_line_error, run_emu

from emu.errors import EmuError
from emu.loader import pvh
from emu.loader.detect import ImageKind, detect_image
from emu.loader.multiboot import e820_map
from emu.loader.multiboot_image import build_multiboot_elf
from emu.memory import GuestMemory

CODE = b"\xf4" * 16


@pytest.fixture
def memory():
    mem = GuestMemory.pc(128 << 20)
    yield mem
    mem.close()


def write(tmp_path: Path, data: bytes, name: str = "vmlinux") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("bits", [64, 32])
def test_segments_start_info_and_entry_state(tmp_path: Path, memory: GuestMemory, bits: int) -> None:
    kernel = write(tmp_path, build_pvh_elf(CODE, load_address=0x1000000, bits=bits, bss=0x3000))
    initrd = write(tmp_path, b"070701" + bytes(5000), "initrd")
    memory.write(0x1000000 + CODE_OFFSET + len(CODE), b"\xaa" * 0x3000)  # the bss must come out zeroed
    state, loaded = pvh.load(kernel, memory, "console=ttyS0", initrd, rsdp=0xF0120)
    entry = 0x1000000 + CODE_OFFSET
    assert loaded.entry == entry and memory.read(entry, len(CODE)) == CODE  # at p_paddr, not p_vaddr
    assert memory.read(entry + len(CODE), 0x3000) == bytes(0x3000)
    assert memory.read(0x1000000, 4) == b"\x7fELF"

    # struct hvm_start_info, version 1 (xen/include/public/arch-x86/hvm/start_info.h)
    assert state.rbx == pvh.START_INFO
    info = struct.unpack("<IIIIQQQQII", memory.read(state.rbx, 56))
    magic, version, flags, nr_modules, modlist, cmdline, rsdp, memmap, entries, reserved = info
    assert (magic, version, flags, nr_modules, rsdp, reserved) == (0x336EC578, 1, 0, 1, 0xF0120, 0)
    assert memory.read(cmdline, 14) == b"console=ttyS0\0"
    paddr, size, mod_cmdline, _ = struct.unpack("<QQQQ", memory.read(modlist, 32))
    assert size == 5006 and memory.read(paddr, 6) == b"070701" and paddr % 4096 == 0 and mod_cmdline == 0
    assert paddr + size <= memory.layout.below_4g_size - 0x20000  # below the firmware's reserved top
    table = [struct.unpack_from("<QQII", memory.read(memmap, 24 * entries), 24 * i) for i in range(entries)]
    assert [(a, s, t) for a, s, t, _ in table] == e820_map(memory.layout) and all(r == 0 for *_, r in table)

    # the PVH entry (Xen docs/misc/pvh.pandoc): 32-bit protected mode, paging off, flat segments
    assert state.rip == entry and state.cr0 & 0x80000001 == 1 and state.cr4 == 0 and not state.rflags & 0x200
    assert state.cs.base == 0 and state.cs.limit == 0xFFFFFFFF and state.cs.db and state.cs.type & 0x8
    for seg in (state.ds, state.es, state.ss):
        assert seg.base == 0 and seg.limit == 0xFFFFFFFF and seg.db and not seg.type & 0x8
    assert state.tr.base == 0 and state.tr.limit == 0x67 and state.tr.type == 0xB
    gdt = memory.read(state.gdt.base, state.gdt.limit + 1)
    assert struct.unpack_from("<Q", gdt, state.cs.selector)[0] == 0x00CF9A000000FFFF
    assert struct.unpack_from("<Q", gdt, state.ds.selector)[0] == 0x00CF92000000FFFF


def test_without_initrd_there_are_no_modules(tmp_path: Path, memory: GuestMemory) -> None:
    state, loaded = pvh.load(write(tmp_path, build_pvh_elf(CODE)), memory, "")
    _, _, _, nr_modules, modlist, cmdline, rsdp = struct.unpack("<IIIIQQQ", memory.read(state.rbx, 40))
    assert (nr_modules, modlist, rsdp) == (0, 0, 0) and memory.read(cmdline, 1) == b"\0"
    assert loaded.initrd_size == 0


def test_rsdp_is_found_as_qemus_option_rom_finds_it() -> None:
    rom = bytearray(0x10000)
    rsdp = bytearray(b"RSD PTR " + bytes(12))
    rsdp[8] = -sum(rsdp) & 0xFF  # the checksum of the first 20 bytes
    rom[0x130 : 0x130 + 20] = rsdp
    assert pvh.find_rsdp(bytes(rom), 0xF0000) == 0xF0130
    rom[0x138] ^= 1  # a bad checksum: not an RSDP
    assert pvh.find_rsdp(bytes(rom), 0xF0000) == 0
    assert pvh.find_rsdp(bytes(0x10000), 0xF0000) == 0


@pytest.mark.parametrize("content, kind", [
    (build_pvh_elf(CODE), ImageKind.PVH),
    (build_pvh_elf(CODE, bits=32), ImageKind.PVH),
    (build_multiboot_elf(CODE), ImageKind.MULTIBOOT),
], ids=["elf64-pvh", "elf32-pvh", "multiboot"])  # fmt: skip
def test_detection(tmp_path: Path, content: bytes, kind: ImageKind) -> None:
    assert detect_image(write(tmp_path, content)) is kind


def test_multiboot_header_wins_over_the_pvh_note(tmp_path: Path) -> None:
    """QEMU's -kernel tries multiboot before the PVH note (hw/i386/x86.c, x86_load_linux)."""
    image = bytearray(build_pvh_elf(bytes(64)))
    magic, flags = 0x1BADB002, 0x3
    image[CODE_OFFSET : CODE_OFFSET + 12] = struct.pack("<III", magic, flags, -(magic + flags) & 0xFFFFFFFF)
    assert detect_image(write(tmp_path, bytes(image))) is ImageKind.MULTIBOOT


def _cut_note() -> bytes:
    """A PT_NOTE segment whose last note claims a 64-byte descriptor the segment does not hold."""
    bad = struct.pack("<III", 4, 64, XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + bytes(8)
    return note(b"GNU", 3, bytes(20)) + bad


@pytest.mark.parametrize("content, message", [
    (build_pvh_elf(CODE)[:100], "truncated ELF file"),  # inside the program headers
    (build_pvh_elf(CODE)[:200], "truncated ELF file"),  # inside the note segment
    (build_pvh_elf(CODE, notes=_cut_note()), "malformed ELF note"),
    (build_pvh_elf(CODE, notes=note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, b"\x00\x10")), "2-byte descriptor"),
    (build_pvh_elf(CODE, notes=note(b"Xen", XEN_ELFNOTE_PHYS32_ENTRY, (1 << 32).to_bytes(8, "little"))),
     "not a 32-bit address"),
    (b"\x7fELF\x03\x01" + bytes(100), "malformed ELF header"),
    (build_pvh_elf(CODE, notes=note(b"GNU", 3, bytes(20))), "without a multiboot header or a Xen PVH entry note"),
])  # fmt: skip
def test_bad_elfs_are_one_line_before_any_machine(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(EmuError, match=message):
        detect_image(write(tmp_path, content))


def test_loader_refusals(tmp_path: Path, memory: GuestMemory) -> None:
    with pytest.raises(EmuError, match="outside guest RAM"):
        pvh.load(write(tmp_path, build_pvh_elf(CODE, load_address=0x10000000)), memory, "")
    with pytest.raises(EmuError, match="more than the 4095"):
        pvh.load(write(tmp_path, build_pvh_elf(CODE)), memory, "x" * 4096)
    image = bytearray(build_pvh_elf(CODE))
    image[18:20] = struct.pack("<H", 183)  # e_machine: aarch64
    with pytest.raises(EmuError, match="not x86"):
        pvh.load(write(tmp_path, bytes(image)), memory, "")


def test_cli_truncated_and_malformed_pvh_elfs_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_emu(str(write(tmp_path, build_pvh_elf(CODE)[:200], "cut"))), "truncated ELF file")
    bad = write(tmp_path, build_pvh_elf(CODE, notes=_cut_note()), "bad")
    assert_one_line_error(run_emu(str(bad)), "malformed ELF note")
    # a kernel that does not fit: the loader's line, after detection
    assert_one_line_error(run_emu("-m", "16", str(write(tmp_path, build_pvh_elf(CODE, load_address=0x2000000), "hi"))),
                          "outside guest RAM")  # fmt: skip


# A PVH guest: check the start info's magic, print the command line on COM1, then the number of
# modules and the first 6 bytes of module 0, and exit through isa-debug-exit with 0x20 + nr_modules.
GUEST = """
    cmpl $0x336ec578, (%ebx)
    jne bad
    mov $0x3f8, %dx
    mov 24(%ebx), %esi      # cmdline_paddr
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  mov $'|', %al
    out %al, %dx
    mov 12(%ebx), %eax      # nr_modules
    add $'0', %al
    out %al, %dx
    mov $'|', %al
    out %al, %dx
    mov 16(%ebx), %edi      # modlist_paddr
    mov (%edi), %esi        # module 0's paddr
    mov $6, %ecx
3:  lodsb
    out %al, %dx
    loop 3b
    mov $'\\n', %al
    out %al, %dx
    mov 12(%ebx), %eax
    add $0x20, %al
    out %al, $0xf4
bad:
    mov $0x7f, %al
    out %al, $0xf4
"""


@pytest.fixture
def guest(tmp_path: Path) -> tuple[Path, Path]:
    code = assemble(GUEST, 0x100000 + CODE_OFFSET, bits=32)
    return write(tmp_path, build_pvh_elf(code)), write(tmp_path, b"070701" + bytes(100), "initrd")


@requires_as
def test_a_pvh_guest_reads_its_start_info_on_tcg(guest: tuple[Path, Path]) -> None:
    kernel, initrd = guest
    result = run_emu("--accel", "tcg", "-kernel", str(kernel), "-initrd", str(initrd), "-append", "hello pvh")
    assert (result.returncode, result.stdout, result.stderr) == ((0x21 << 1) | 1, "hello pvh|1|070701\n", "")


@requires_as
@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_the_same_pvh_guest_on_qemu(guest: tuple[Path, Path]) -> None:
    kernel, initrd = guest
    qemu = subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot",
                           "-m", "128M", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                           "-kernel", str(kernel), "-initrd", str(initrd), "-append", "hello pvh"],
                          check=False, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    emu = subprocess.run([sys.executable, "-m", "emu", "-kernel", str(kernel), "-initrd", str(initrd),
                          "-append", "hello pvh"], check=False, capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert qemu.returncode == emu.returncode == (0x21 << 1) | 1, qemu.stderr
    assert qemu.stdout == emu.stdout == b"hello pvh|1|070701\n"
