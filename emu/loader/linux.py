"""Loading a Linux bzImage by the x86 boot protocol (Documentation/arch/x86/boot.rst).

A bzImage is two programs in one file: the real-mode setup code (`setup_sects` + 1 sectors of
512 bytes, with the *setup header* at offset 01F1h, magic "HdrS" at 0202h) and the protected-
mode kernel after it, a compressed vmlinux behind a small decompressor. A boot loader reads the
header, fills in its own fields and hands the kernel a *zero page* (struct boot_params,
arch/x86/include/uapi/asm/bootparam.h): the header copied at 01F1h, the command line's address,
the initrd's place and size, and the E820 memory map (the BIOS's INT 15h E820h answer).

emu uses the 32-bit boot protocol (boot.rst, "32-bit Boot Protocol"), as QEMU's and most
firmware's direct kernel boots end up doing, without running the real-mode setup code: the
protected-mode kernel is loaded at its preferred place (1 MiB, or `pref_address` if the kernel
is relocatable) and entered at that address with
  - 32-bit protected mode, paging off, interrupts off;
  - a GDT with flat 4 GiB segments at __BOOT_CS (10h, code) and __BOOT_DS (18h, data), CS, DS,
    ES and SS loaded with them;
  - %esi = the zero page's address, %ebp = %edi = %ebx = 0.
The decompressor then goes to long mode, unpacks vmlinux and starts it. Protocol 2.06 (Linux
2.6.26) or later is required: it brought the `cmdline_size` field, and every kernel a user has
today is newer. The initrd goes as high as `initrd_addr_max` and the RAM below 4 GiB allow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..accel import CpuState, DescriptorTable, Segment
from ..errors import EmuError
from ..memory import GuestMemory
from .multiboot import FIRMWARE_RESERVED, e820_map

HEADER_MAGIC = b"HdrS"
MIN_PROTOCOL = 0x0206
GDT_ADDRESS, ZERO_PAGE, CMDLINE_ADDRESS = 0x6000, 0x7000, 0x20000
KERNEL_DEFAULT = 0x100000
LOADER_TYPE_UNDEFINED = 0xFF  # boot.rst: "0xFF: undefined", for a loader with no assigned ID
LOADED_HIGH, CAN_USE_HEAP, KEEP_SEGMENTS = 0x01, 0x80, 0x40
E820_MAX_ENTRIES_ZEROPAGE = 128
# boot_params offsets (bootparam.h)
BP_EXT_RAMDISK_IMAGE, BP_EXT_RAMDISK_SIZE, BP_EXT_CMD_LINE_PTR = 0x0C0, 0x0C4, 0x0C8
BP_E820_ENTRIES, BP_HDR, BP_E820_TABLE = 0x1E8, 0x1F1, 0x2D0


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the setup header emu reads (boot.rst, "The Real-Mode Kernel Header")."""

    setup_sects: int
    version: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int
    pref_address: int
    init_size: int
    header_end: int  # 0202h + the byte at 0201h: where the header stops

    @classmethod
    def parse(cls, image: bytes, name: str) -> SetupHeader:
        if len(image) < 0x268 or image[0x202:0x206] != HEADER_MAGIC:
            raise EmuError(f"{name}: not a Linux bzImage (no \"HdrS\" setup header at 0202h)")
        version = struct.unpack_from("<H", image, 0x206)[0]
        if version < MIN_PROTOCOL:
            raise EmuError(f"{name}: a Linux bzImage of boot protocol {version >> 8}.{version & 0xFF:02d}, too old "
                           f"(emu needs 2.06 or later: Linux 2.6.26 and newer)")  # fmt: skip
        setup_sects = image[0x1F1] or 4  # "if this field is 0, the real value is 4"
        loadflags = image[0x211]
        if not loadflags & LOADED_HIGH:
            raise EmuError(f"{name}: a zImage (loaded at 0x10000); emu boots bzImages only")
        return cls(
            setup_sects=setup_sects, version=version, loadflags=loadflags,
            code32_start=struct.unpack_from("<I", image, 0x214)[0],
            initrd_addr_max=struct.unpack_from("<I", image, 0x22C)[0],
            kernel_alignment=struct.unpack_from("<I", image, 0x230)[0], relocatable=bool(image[0x234]),
            cmdline_size=struct.unpack_from("<I", image, 0x238)[0],
            pref_address=struct.unpack_from("<Q", image, 0x258)[0],
            init_size=struct.unpack_from("<I", image, 0x260)[0], header_end=0x202 + image[0x201],
        )  # fmt: skip


@dataclass(frozen=True)
class LoadedLinux:
    kernel_address: int
    kernel_size: int
    initrd_address: int
    initrd_size: int
    cmdline: str


def load(path: Path, memory: GuestMemory, cmdline: str, initrd: Path | None = None) -> tuple[CpuState, LoadedLinux]:
    """Put the kernel, the initrd, the command line and the zero page in RAM; the entry state."""
    name = str(path)
    image = path.read_bytes()
    header = SetupHeader.parse(image, name)
    setup_size = (header.setup_sects + 1) * 512
    kernel = image[setup_size:]
    if not kernel or len(image) < setup_size:
        raise EmuError(f"{name}: truncated: the setup code claims {setup_size} bytes, the file has {len(image)}")
    below_4g = memory.layout.below_4g_size - FIRMWARE_RESERVED
    address = header.pref_address if header.relocatable and header.pref_address else KERNEL_DEFAULT
    if address + max(header.init_size, len(kernel)) > below_4g:
        address = KERNEL_DEFAULT  # a small guest: anywhere aligned works for a relocatable kernel
    if address + max(header.init_size, len(kernel)) > below_4g:
        raise EmuError(f"{name}: the kernel needs {max(header.init_size, len(kernel)) >> 20} MiB from "
                       f"{address:#x}, more than -m {memory.size >> 20} gives")  # fmt: skip
    memory.write(address, kernel)

    cmd = cmdline.encode()
    if len(cmd) > header.cmdline_size:
        raise EmuError(f"-append: {len(cmd)} bytes, more than this kernel's {header.cmdline_size}")
    memory.write(CMDLINE_ADDRESS, cmd + b"\0")

    initrd_address = initrd_size = 0
    if initrd is not None:
        data = initrd.read_bytes()
        top = min(below_4g, header.initrd_addr_max + 1)
        initrd_address = (top - len(data)) & ~0xFFF
        if initrd_address < address + max(header.init_size, len(kernel)):
            raise EmuError(f"{initrd}: {len(data) >> 20} MiB does not fit beside the kernel in -m {memory.size >> 20}")
        memory.write(initrd_address, data)
        initrd_size = len(data)

    zero_page = bytearray(4096)
    zero_page[BP_HDR : header.header_end] = image[BP_HDR : header.header_end]  # the header, as the file has it
    zero_page[0x210] = LOADER_TYPE_UNDEFINED  # type_of_loader
    zero_page[0x211] = (header.loadflags | CAN_USE_HEAP) & ~KEEP_SEGMENTS
    struct.pack_into("<I", zero_page, 0x214, address)  # code32_start: where the kernel is
    struct.pack_into("<II", zero_page, 0x218, initrd_address, initrd_size)  # ramdisk_image, ramdisk_size
    struct.pack_into("<H", zero_page, 0x224, 0xFE00)  # heap_end_ptr (unused without the setup code)
    struct.pack_into("<I", zero_page, 0x228, CMDLINE_ADDRESS)  # cmd_line_ptr
    entries = e820_map(memory.layout)[:E820_MAX_ENTRIES_ZEROPAGE]
    zero_page[BP_E820_ENTRIES] = len(entries)
    for i, (base, length, kind) in enumerate(entries):
        struct.pack_into("<QQI", zero_page, BP_E820_TABLE + 20 * i, base, length, kind)
    memory.write(ZERO_PAGE, bytes(zero_page))

    # The GDT the protocol asks for: null, null, __BOOT_CS, __BOOT_DS
    gdt = struct.pack("<QQQQ", 0, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
    memory.write(GDT_ADDRESS, gdt)
    state = CpuState.reset()
    state.rip = address
    state.rsi = ZERO_PAGE
    state.cr0 = 0x11  # PE, ET
    state.cs = Segment.flat32(0x10, code=True)
    for seg in ("ds", "es", "fs", "gs", "ss"):
        setattr(state, seg, Segment.flat32(0x18, code=False))
    state.tr = Segment(selector=0, base=0, limit=0xFFFF, type=0xB, s=0)
    state.gdt = DescriptorTable(GDT_ADDRESS, len(gdt) - 1)
    state.idt = DescriptorTable(0, 0)
    return state, LoadedLinux(address, len(kernel), initrd_address, initrd_size, cmdline)
