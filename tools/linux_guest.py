#!/usr/bin/env python3
"""Fetch Debian's stock kernel and build a busybox initramfs for it: a real Linux guest for emu.

    python tools/linux_guest.py            # prints KERNEL, INITRD and VMLINUX paths (cached after the first run)
    python -m emu -m 512 -kernel KERNEL -initrd INITRD -append console=ttyS0
    python -m emu -m 512 -kernel VMLINUX -initrd INITRD -append console=ttyS0    # the PVH entry

Everything comes from the Debian archive through apt (`apt-get download`, no other source):
linux-image-amd64's current kernel package and busybox-static. The kernel is Debian's own
build, unmodified; its virtio drivers are modules, so the initramfs carries them (with their
dependencies, from modules.dep) and its /init loads them, mounts /proc, /sys and /dev, says
"emu-linux: ready" and starts a shell on the console. Both files are cached outside the
repository, in $XDG_CACHE_HOME/emu/linux/VERSION (~/.cache by default).

The initramfs is a "newc" cpio archive (Documentation/driver-api/early-userspace/
buffer-format.rst), written here and gzip-compressed.

VMLINUX is the same kernel uncompressed, taken out of the bzImage, for emu's PVH entry (a
vmlinux ELF with Xen's PHYS32_ENTRY note, CONFIG_PVH=y as in Debian's build). The setup header
says where the compressed kernel is (boot.rst: payload_offset at 0248h, from the end of the
setup code, and payload_length at 024Ch; protocol 2.08+), its first bytes say how it is
compressed (Debian 6.1: xz). The build appends the uncompressed size as 4 bytes to every format
but gzip (arch/x86/boot/compressed/Makefile, the *_with_size commands), which checks the result,
and on a relocatable kernel the relocation table follows the ELF (vmlinux.relocs, for the
decompressor's KASLR): the file is cut where the ELF ends, as the vmlinux the build started from.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

MODULES = ["virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng", "virtio_balloon",
           "crc32c_generic", "ext4"]  # fmt: skip  (ext4 asks the crypto API for crc32c at mount time)
INIT = """#!/bin/sh
# emu's initramfs: mount the pseudo file systems, load the virtio drivers, hand the console a shell.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /mnt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules-order); do insmod "$m" 2>/dev/null; done
echo "emu-linux: ready"
exec setsid cttyhack /bin/sh
"""


INITRD_REVISION = 2  # bump when MODULES or INIT change: a new cache directory


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emu" / "linux"


def run(*args: str, cwd: Path | None = None) -> str:
    try:
        return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        sys.exit(f"linux_guest: {args[0]} is missing (this script needs Debian's apt-get and dpkg-deb)")
    except subprocess.CalledProcessError as error:
        sys.exit(f"linux_guest: {' '.join(args)} failed: {error.stderr.strip().splitlines()[-1:]}")


def kernel_package() -> str:
    """linux-image-amd64 is a metapackage; the kernel is the package it depends on."""
    depends = run("apt-cache", "depends", "linux-image-amd64")
    match = re.search(r"Depends: (linux-image-[\w.+-]+-amd64)", depends)
    if not match:
        sys.exit("linux_guest: cannot tell which kernel linux-image-amd64 depends on (apt-get update?)")
    return match.group(1)


def download(package: str, into: Path) -> Path:
    run("apt-get", "download", package, cwd=into)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        sys.exit(f"linux_guest: apt-get download {package} left no .deb")
    return debs[-1]


def module_closure(root: Path, version: str, names: list[str]) -> list[str]:
    """The module files for `names` and every module they depend on, dependencies first. The
    .deb ships no modules.dep (depmod makes it at install time): each module's own `depends=`
    in its .modinfo section says the same."""
    moddir = root / "lib" / "modules" / version
    by_name = {path.name.split(".ko")[0].replace("-", "_"): path for path in moddir.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str) -> None:
        path = by_name.get(name.replace("-", "_"))
        if path is None:  # built into the kernel (=y)
            return
        relative = str(path.relative_to(moddir))
        if relative in order:
            return
        found = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
        for dep in filter(None, (found.group(1).decode().split(",") if found else [])):
            visit(dep)
        order.append(relative)

    for name in names:
        visit(name)
    return order


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data): directories, files and symlinks, owned by root."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(f"{v:08X}".encode() for v in fields) + encoded
        out += bytes(-len(out) % 4)  # header and name, padded to 4 bytes
        out += data
        out += bytes(-len(out) % 4)
    return bytes(out)


def build(cache: Path) -> tuple[Path, Path]:
    package = kernel_package()
    version = package.removeprefix("linux-image-")
    target = cache / f"{version}-{INITRD_REVISION}"
    kernel, initrd = target / "vmlinuz", target / "initrd.img"
    if kernel.exists() and initrd.exists():
        return kernel, initrd
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for deb in (download(package, work), download("busybox-static", work)):
            run("dpkg-deb", "-x", str(deb), str(work / "root"))
        root = work / "root"
        modules = module_closure(root, version, MODULES)
        entries: list[tuple[str, int, bytes]] = [
            (d, 0o040755, b"") for d in ("bin", "etc", "lib", "lib/modules", "dev", "proc", "sys", "tmp", "mnt")
        ]  # fmt: skip
        entries += [("bin/busybox", 0o100755, (root / "bin" / "busybox").read_bytes()),
                    ("bin/sh", 0o120777, b"busybox"), ("init", 0o100755, INIT.encode()),
                    ("etc/modules-order", 0o100644, "".join(f"/lib/modules/{Path(m).name}\n" for m in modules).encode())]
        for m in modules:
            entries.append((f"lib/modules/{Path(m).name}", 0o100644, (root / "lib" / "modules" / version / m).read_bytes()))
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(next((root / "boot").glob("vmlinuz-*")), kernel)
        initrd.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=6, mtime=0))
    return kernel, initrd


# The first bytes of each payload format the kernel can be built with (CONFIG_KERNEL_*)
PAYLOAD_MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"\x5d\x00\x00": "lzma",
                 b"BZh": "bzip2", b"\x02\x21\x4c\x18": "lz4", b"\x89LZO": "lzo"}  # fmt: skip


def payload(bzimage: bytes) -> tuple[str, bytes]:
    """The compressed kernel inside a bzImage, and its format's name."""
    if bzimage[0x202:0x206] != b"HdrS" or struct.unpack_from("<H", bzimage, 0x206)[0] < 0x0208:
        sys.exit("linux_guest: not a bzImage of boot protocol 2.08 or later (no payload_offset field)")
    start = ((bzimage[0x1F1] or 4) + 1) * 512 + struct.unpack_from("<I", bzimage, 0x248)[0]
    data = bzimage[start : start + struct.unpack_from("<I", bzimage, 0x24C)[0]]
    kind = next((name for magic, name in PAYLOAD_MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        sys.exit(f"linux_guest: the bzImage's payload starts {data[:6].hex()}, not a known compression")
    return kind, data


def decompress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return zlib.decompressobj(wbits=31).decompress(data)
    if kind in ("xz", "lzma"):
        return lzma.LZMADecompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE).decompress(data)
    if kind == "bzip2":
        return bz2.BZ2Decompressor().decompress(data)
    if kind == "zstd":  # the zstandard module where installed, else the zstd program
        try:
            import zstandard

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
        except ImportError:
            pass
        if shutil.which("zstd") is None:
            sys.exit("linux_guest: this kernel is zstd-compressed: install zstd (apt-get install zstd)")
        return subprocess.run(["zstd", "-dcq"], input=data[:-4], capture_output=True, check=True).stdout
    sys.exit(f"linux_guest: the kernel is {kind}-compressed; this script unpacks gzip, xz, lzma, bzip2 and zstd")


def elf_end(image: bytes) -> int:
    """Where an ELF64 file ends: past its section headers and its segments' bytes."""
    shoff, _, _, phentsize, phnum, shentsize, shnum, _ = struct.unpack_from("<QIHHHHHH", image, 0x28)
    phoff = struct.unpack_from("<Q", image, 0x20)[0]
    end = shoff + shnum * shentsize
    for i in range(phnum):
        offset, _, _, filesz = struct.unpack_from("<QQQQ", image, phoff + i * phentsize + 8)
        end = max(end, offset + filesz)
    return end


def vmlinux(kernel: Path) -> Path:
    """The uncompressed kernel ELF of the bzImage `kernel`, cached beside it as vmlinux."""
    target = kernel.parent / "vmlinux"
    if target.exists():
        return target
    image = kernel.read_bytes()
    kind, data = payload(image)
    elf = decompress(kind, data)
    if kind != "gzip" and len(elf) != struct.unpack("<I", data[-4:])[0]:
        sys.exit(f"linux_guest: {kind} gave {len(elf)} bytes, the bzImage says {struct.unpack('<I', data[-4:])[0]}")
    if elf[:5] != b"\x7fELF\x02":
        sys.exit("linux_guest: the bzImage's payload is not an ELF64 kernel")
    partial = target.with_suffix(".partial")
    partial.write_bytes(elf[: elf_end(elf)])
    partial.rename(target)
    return target


def main() -> None:
    kernel, initrd = build(cache_dir())
    print(f"KERNEL={kernel}\nINITRD={initrd}\nVMLINUX={vmlinux(kernel)}")


if __name__ == "__main__":
    main()
