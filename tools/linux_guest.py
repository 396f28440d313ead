#!/usr/bin/env python3
"""Fetch Debian's stock kernel and build a busybox initramfs for it: a real Linux guest for emu.

    python tools/linux_guest.py            # prints KERNEL and INITRD paths (cached after the first run)
    python -m emu -m 512 -kernel KERNEL -initrd INITRD -append console=ttyS0

Everything comes from the Debian archive through apt (`apt-get download`, no other source):
linux-image-amd64's current kernel package and busybox-static. The kernel is Debian's own
build, unmodified; its virtio drivers are modules, so the initramfs carries them (with their
dependencies, from modules.dep) and its /init loads them, mounts /proc, /sys and /dev, says
"emu-linux: ready" and starts a shell on the console. Both files are cached outside the
repository, in $XDG_CACHE_HOME/emu/linux/VERSION (~/.cache by default).

The initramfs is a "newc" cpio archive (Documentation/driver-api/early-userspace/
buffer-format.rst), written here and gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


def main() -> None:
    kernel, initrd = build(cache_dir())
    print(f"KERNEL={kernel}\nINITRD={initrd}")


if __name__ == "__main__":
    main()
