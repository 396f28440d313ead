"""Assemble small x86 snippets for tests with GNU as (the toolchain firmware/ uses too)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

HAVE_AS = shutil.which("as") is not None and shutil.which("objcopy") is not None
requires_as = pytest.mark.skipif(not HAVE_AS, reason="GNU as/objcopy not installed (apt-get install binutils)")


def assemble(source: str, origin: int, bits: int = 64) -> bytes:
    """Assemble `source` (AT&T syntax) placed at address `origin`; return the raw bytes."""
    directive = {16: ".code16", 32: ".code32", 64: ".code64"}[bits]
    with tempfile.TemporaryDirectory() as tmp:
        src, obj, out = Path(tmp, "a.s"), Path(tmp, "a.o"), Path(tmp, "a.bin")
        src.write_text(f"{directive}\n.org 0\n{source}\n")
        subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_x86_64", "-Ttext", hex(origin), "--oformat", "binary",
                        "-e", "0", "-o", str(out), str(obj)], check=True, capture_output=True)  # fmt: skip
        return out.read_bytes()
