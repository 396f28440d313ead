"""Small C helpers of the tcg vCPU, compiled with the host's C compiler at first use.

Some hooks run too often to cross from Unicorn's C into Python each time (a TLB fill, the start
of every translated block). Their C source ships with emu (emu/tcg/*.c); `build(source)` turns
one into a shared object with `cc -O2 -shared`, cached under $XDG_CACHE_HOME/emu and named by
the source's hash, written atomically so that concurrent emu processes agree. Without a
compiler the callers fall back to Python and say so.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "emu"


def build(source: Path) -> Path:
    """Compile `source` (once per version of its text); raises OSError with the reason."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{digest}.so"
    if target.exists():
        return target
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise OSError("no C compiler (cc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".so.partial")
    os.close(fd)
    try:
        result = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", partial, str(source)],
                                capture_output=True, text=True, check=False)  # fmt: skip
        if result.returncode != 0:
            raise OSError(f"{cc} failed: {result.stderr.strip().splitlines()[-1] if result.stderr else '?'}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


_LOADED: dict[Path, ctypes.CDLL | str] = {}  # per process: the library, or why it is missing


def load(source: Path) -> tuple[ctypes.CDLL | None, str]:
    """The built library of `source` and "", or None and the reason it is not available."""
    if source not in _LOADED:
        try:
            _LOADED[source] = ctypes.CDLL(str(build(source)))
        except OSError as error:
            _LOADED[source] = str(error)
    found = _LOADED[source]
    return (found, "") if isinstance(found, ctypes.CDLL) else (None, found)
