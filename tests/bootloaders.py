"""Disk images that boot through real boot loaders nobody here wrote: syslinux 6 and GRUB 2 (i386-pc).

Everything is built as an ordinary user, without loop mounts, into a directory the caller gives:

  syslinux  a 32 MiB disk: syslinux's MBR (mbr.bin) in sector 0 with an MBR partition table, one
            bootable FAT16 partition at sector 2048 (mkfs.fat --offset) holding syslinux.cfg, the
            COM32 modules it needs, exit.bin and hello32.elf (mcopy), and ldlinux.sys/ldlinux.c32
            with syslinux's volume boot record installed by the mtools-based installer
            (`syslinux --install --offset`).
  GRUB      a 32 MiB disk: boot.img in sector 0 (the partition table kept), core.img (grub-mkimage
            with an embedded config) in the gap between sector 0 and the partition, one ext2
            partition at sector 2048 (mkfs.ext2 -d, no mount) holding /boot/grub/grub.cfg and
            /boot/hello32.elf. boot.img and core.img are patched as grub-bios-setup patches them
            (util/setup.c): boot.img's kernel sector (offset 5Ch) and drive check (66h), and the
            first blocklist entry at the end of core.img's first sector (diskboot.img).

What runs at the end is deterministic, so a run ends by itself: exit.bin (a boot sector that
prints one line on COM1 and writes to the isa-debug-exit port 0xf4) or firmware/build/hello32.elf
(the multiboot guest, which prints its transcript on COM1 and exits through port 0xf4), loaded by
syslinux's mboot.c32 or by GRUB's `multiboot` command from the boot loader's own filesystem.

The tools come from Debian packages: syslinux, syslinux-common, mtools, dosfstools (syslinux);
grub-pc-bin, e2fsprogs (GRUB). `missing_syslinux_tools()` / `missing_grub_tools()` say what is
absent, for a skip reason.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELLO32 = ROOT / "firmware" / "build" / "hello32.elf"
HELLO32_EXPECTED = ROOT / "firmware" / "expected" / "hello32.txt"
HELLO32_STATUS = ROOT / "firmware" / "expected" / "hello32.status"
HELLO32_ARGS = "answer=42 greeting=hello"  # firmware/expected/hello32.txt's command line

SECTOR = 512
DISK_SECTORS = 32 * 2048  # 32 MiB
PARTITION_START = 2048  # 1 MiB: the MBR gap GRUB's core.img lives in, as fdisk and grub-install lay it out
PARTITION_SECTORS = DISK_SECTORS - PARTITION_START

SYSLINUX_MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
SYSLINUX_COM32 = ("ldlinux.c32", "libcom32.c32", "mboot.c32")  # mboot.c32 needs libcom32.c32
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
# biosdisk/part_msdos/ext2 find the files, serial/terminal put GRUB's console on COM1 too, normal
# runs grub.cfg, multiboot+boot start hello32; grub-mkimage adds their dependencies.
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "echo", "serial", "terminal", "multiboot", "boot")
GRUB_PREFIX = "(hd0,msdos1)/boot/grub"

# exit.bin: what syslinux loads as a boot sector ("KERNEL exit.bin": *.bin files are boot sectors).
EXIT_LINE = b"exit.bin: boot sector loaded by the boot loader, DL=80"
EXIT_VALUE = 0x10
EXIT_STATUS = (EXIT_VALUE << 1) | 1  # isa-debug-exit: 33
EXIT_BIN_SOURCE = rf"""
.intel_syntax noprefix
start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7c00
    mov bp, dx              /* DL: the drive the loader passed on */
    mov si, offset msg
    call puts
    mov ax, bp
    shr al, 4
    call hexdigit
    mov ax, bp
    call hexdigit
    mov si, offset crlf
    call puts
    mov al, {EXIT_VALUE}
    out 0xf4, al            /* isa-debug-exit: the run ends with ({EXIT_VALUE} << 1) | 1 */
1:  hlt
    jmp 1b
hexdigit:
    and al, 0x0f
    add al, '0'
    cmp al, '9'
    jbe putc
    add al, 'a' - '0' - 10
putc:                       /* COM1, polled: wait for THR empty (LSR bit 5) */
    push ax
    mov dx, 0x3fd
2:  in al, dx
    test al, 0x20
    jz 2b
    pop ax
    mov dx, 0x3f8
    out dx, al
    ret
puts:
    lodsb
    test al, al
    jz 3f
    call putc
    jmp puts
3:  ret
msg: .asciz "{EXIT_LINE.decode()[:-2]}"
crlf: .asciz "\r\n"
.org 510
.byte 0x55, 0xaa
"""


def _missing(tools: dict[str, str], files: dict[Path, str]) -> str | None:
    absent = [f"{tool} ({package})" for tool, package in tools.items() if shutil.which(tool) is None]
    absent += [f"{path} ({package})" for path, package in files.items() if not path.exists()]
    if shutil.which("as") is None or shutil.which("ld") is None:
        absent.append("as/ld (binutils)")
    if not absent:
        return None
    packages = sorted({item.split("(")[1].rstrip(")") for item in absent})
    return f"not installed: {', '.join(absent)}; apt-get install {' '.join(packages)}"


def missing_syslinux_tools() -> str | None:
    """Why a syslinux disk cannot be built here, or None."""
    return _missing({"syslinux": "syslinux", "mkfs.fat": "dosfstools", "mcopy": "mtools"},
                    {SYSLINUX_MBR: "syslinux-common", SYSLINUX_MODULES / "mboot.c32": "syslinux-common"})  # fmt: skip


def missing_grub_tools() -> str | None:
    """Why a GRUB disk cannot be built here, or None."""
    return _missing({"grub-mkimage": "grub-common", "mkfs.ext2": "e2fsprogs"},
                    {GRUB_DIR / "boot.img": "grub-pc-bin", GRUB_DIR / "multiboot.mod": "grub-pc-bin"})  # fmt: skip


def run(*command: str | Path) -> None:
    """Run one build command; its stderr in the exception if it fails."""
    result = subprocess.run([str(c) for c in command], check=False, capture_output=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')}")  # fmt: skip


# MBR partition table -------------------------------------------------------------------------
def chs(lba: int, heads: int = 255, sectors: int = 63) -> bytes:
    """The 3-byte CHS address of `lba` as fdisk writes it (FE FF FF beyond cylinder 1023)."""
    cylinder, rest = divmod(lba, heads * sectors)
    if cylinder > 1023:
        return b"\xfe\xff\xff"
    head, sector = divmod(rest, sectors)
    return bytes([head, ((cylinder >> 2) & 0xC0) | (sector + 1), cylinder & 0xFF])


def partition_entry(start: int, count: int, kind: int, bootable: bool = True) -> bytes:
    return (bytes([0x80 if bootable else 0]) + chs(start) + bytes([kind]) + chs(start + count - 1)
            + struct.pack("<II", start, count))  # fmt: skip


def master_boot_record(code: bytes, kind: int) -> bytes:
    """`code` (at most 440 bytes of boot code), a disk signature, one bootable partition at
    PARTITION_START of type `kind`, and the 55 AA signature."""
    assert len(code) <= 440
    table = partition_entry(PARTITION_START, PARTITION_SECTORS, kind) + bytes(48)
    return code.ljust(440, b"\0") + struct.pack("<IH", 0x454D5521, 0) + table + b"\x55\xaa"


def new_disk(path: Path, sector0: bytes) -> None:
    with path.open("wb") as f:
        f.write(sector0)
        f.truncate(DISK_SECTORS * SECTOR)  # sparse: the filesystems are made in place


# syslinux ------------------------------------------------------------------------------------
def exit_boot_sector() -> bytes:
    from asm import assemble  # tests/asm.py: GNU as

    code = assemble(EXIT_BIN_SOURCE, 0x7C00, 16)
    assert len(code) == SECTOR and code.endswith(b"\x55\xaa")
    return code


SAY_LINE = "emu-test: syslinux.cfg read from the FAT partition"


def syslinux_config(default: str, timeout: int) -> str:
    """SERIAL 0 puts syslinux's console on COM1 as well (and takes keys from it); the `boot:`
    prompt waits `timeout` tenths of a second (0: for ever) before booting `default`."""
    return "\n".join([
        "SERIAL 0 115200",
        f"SAY {SAY_LINE}",
        "PROMPT 1",
        f"TIMEOUT {timeout}",
        f"DEFAULT {default}",
        "LABEL exit",
        "  KERNEL exit.bin",
        "LABEL hello",
        "  KERNEL mboot.c32",
        f"  APPEND hello32.elf {HELLO32_ARGS}",
        "",
    ])  # fmt: skip


def build_syslinux_disk(workdir: Path, default: str = "exit", timeout: int = 1, name: str = "syslinux.img") -> Path:
    """The syslinux disk, booting `default` ("exit" or "hello") after `timeout` tenths of a second."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / name
    offset = PARTITION_START * SECTOR
    new_disk(disk, master_boot_record(SYSLINUX_MBR.read_bytes()[:440], kind=0x06))  # FAT16
    # -h: the hidden sectors in the BPB, where syslinux's boot record finds the partition start
    run("mkfs.fat", "-F", "16", "-n", "EMUSYSLINUX", "-i", "454d5521", "-h", str(PARTITION_START),
        "--offset", str(PARTITION_START), disk, str(PARTITION_SECTORS * SECTOR // 1024))  # fmt: skip
    files = workdir / f"{name}.files"
    files.mkdir(exist_ok=True)
    (files / "syslinux.cfg").write_text(syslinux_config(default, timeout))
    (files / "exit.bin").write_bytes(exit_boot_sector())
    shutil.copyfile(HELLO32, files / "hello32.elf")
    for module in SYSLINUX_COM32[1:]:  # ldlinux.c32 comes with the installer
        shutil.copyfile(SYSLINUX_MODULES / module, files / module)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    subprocess.run(["mcopy", "-i", f"{disk}@@{offset}", *map(str, sorted(files.iterdir())), "::/"],
                   check=True, capture_output=True, env=env)  # fmt: skip
    run("syslinux", "--install", "--offset", str(offset), disk)
    return disk


# GRUB ----------------------------------------------------------------------------------------
GRUB_CORE_LINE = "emu-test: GRUB core.img running"
GRUB_CFG_LINE = "emu-test: grub.cfg read from the ext2 partition, root=hd0,msdos1"
GRUB_EMBEDDED_CONFIG = f"""serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
echo "{GRUB_CORE_LINE}"
set root=(hd0,msdos1)
set prefix={GRUB_PREFIX}
"""
# `multiboot FILE ARGS` gives the kernel ARGS as its command line; hello32 prints it from the
# second word on (the first is the kernel's name, as with qemu -kernel), so the name goes first.
GRUB_CFG = f"""echo "emu-test: grub.cfg read from the ext2 partition, root=$root"
multiboot /boot/hello32.elf hello32.elf {HELLO32_ARGS}
boot
"""
# boot.img fields (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h)
BOOT_KERNEL_SECTOR = 0x5C  # 8 bytes: LBA of core.img's first sector (diskboot.img)
BOOT_DRIVE = 0x64  # 1 byte: FFh = the drive the BIOS passed in DL
BOOT_DRIVE_CHECK = 0x66  # 2 bytes: `jmp` over the DL sanity check; grub-bios-setup NOPs it for a hard disk
BLOCKLIST = SECTOR - 12  # diskboot.img: {u64 start, u16 sectors, u16 segment}, the rest of core.img


def build_grub_disk(workdir: Path, core_sector: int = 1, name: str = "grub.img") -> Path:
    """The GRUB disk with core.img at `core_sector` (1 is where grub-install puts it)."""
    assert 1 <= core_sector < PARTITION_START
    workdir.mkdir(parents=True, exist_ok=True)
    embed = workdir / f"{name}.embed.cfg"
    embed.write_text(GRUB_EMBEDDED_CONFIG)
    core_path = workdir / f"{name}.core.img"
    run("grub-mkimage", "-O", "i386-pc", "-d", GRUB_DIR, "-o", core_path, "-p", GRUB_PREFIX, "-c", embed,
        *GRUB_MODULES)  # fmt: skip
    core = bytearray(core_path.read_bytes())
    sectors = -(-len(core) // SECTOR)
    if core_sector + sectors > PARTITION_START:
        raise RuntimeError(f"core.img has {sectors} sectors: does not fit before the partition")
    start, count, segment = struct.unpack_from("<QHH", core, BLOCKLIST)
    assert count == sectors - 1 and segment == 0x820, (start, count, segment)  # as grub-mkimage leaves it
    struct.pack_into("<Q", core, BLOCKLIST, core_sector + 1)

    boot = bytearray(GRUB_DIR.joinpath("boot.img").read_bytes())
    struct.pack_into("<Q", boot, BOOT_KERNEL_SECTOR, core_sector)
    assert boot[BOOT_DRIVE] == 0xFF and boot[BOOT_DRIVE_CHECK] == 0xEB
    boot[BOOT_DRIVE_CHECK : BOOT_DRIVE_CHECK + 2] = b"\x90\x90"
    disk = workdir / name
    new_disk(disk, master_boot_record(bytes(boot[:440]), kind=0x83))
    with disk.open("r+b") as f:
        f.seek(core_sector * SECTOR)
        f.write(core)

    tree = workdir / f"{name}.root"
    (tree / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    shutil.copyfile(HELLO32, tree / "boot" / "hello32.elf")
    run("mkfs.ext2", "-q", "-F", "-L", "EMUGRUB", "-E", f"offset={PARTITION_START * SECTOR}", "-d", tree, disk,
        f"{PARTITION_SECTORS * SECTOR // 1024}k")  # fmt: skip
    return disk


# running interactively -----------------------------------------------------------------------
class Console:
    """A running emulator process whose stdout is collected by a thread, to wait for text in it."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, cwd=ROOT)  # fmt: skip
        self.output = bytearray()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(4096):
            with self._changed:
                self.output += chunk
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: bytes, timeout: float, start: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while text not in self.output[start:]:
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and text not in self.output[start:]):
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def type(self, text: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text)
        self.process.stdin.flush()

    def finish(self, timeout: float) -> tuple[int, bytes, bytes]:
        """Wait for the process to end (killed after `timeout` s): (status, stdout, stderr)."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        assert self.process.stderr is not None
        return self.process.returncode, bytes(self.output), self.process.stderr.read()


def qemu_screen(monitor: Path) -> list[str]:
    """QEMU's 80x25 text screen (B8000h, characters only) through its monitor socket."""
    row = re.compile(rb"^0*b8([0-9a-f]{3}):((?: 0x[0-9a-f]{2}){8})\r?$", re.MULTILINE)  # 8 bytes a line
    with socket.socket(socket.AF_UNIX) as mon:
        mon.settimeout(10)
        mon.connect(str(monitor))
        mon.sendall(b"xp /4000bx 0xb8000\n")
        data = b""
        while b"b8f98:" not in data or not data.rstrip().endswith(b"(qemu)"):
            chunk = mon.recv(65536)
            if not chunk:
                break
            data += chunk
    cells = [int(v, 16) for match in row.finditer(data) for v in match.group(2).split()]
    assert len(cells) == 4000, f"QEMU monitor gave {len(cells)} bytes of the screen"
    chars = bytes(cells[0::2]).decode("cp437")
    return [chars[row * 80 : row * 80 + 80] for row in range(25)]
