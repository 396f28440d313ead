"""The committed guest images in firmware/build are reproducible from firmware/ sources.

Rebuilds every guest with `make -C firmware BUILD=<tmp>` and requires byte-identical
ELF files. The bytes depend on the compiler and binutils versions, recorded by the build
in firmware/build/toolchain.txt; on a machine with other versions the test is skipped
rather than failed.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
COMMITTED = FIRMWARE / "build"
TOOLS = ("make", "gcc", "as", "ld", "objcopy")


def _toolchain() -> str:
    out = []
    for tool in ("gcc", "ld"):
        version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
        out.append(version.stdout.splitlines()[0])
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"build tools missing: {', '.join(missing)} (gcc/as/ld needed)")
    recorded = (COMMITTED / "toolchain.txt").read_text()
    if _toolchain() != recorded:
        pytest.skip(f"toolchain differs from the one that built firmware/build:\n{recorded}")
    out = tmp_path_factory.mktemp("firmware-build")
    proc = subprocess.run(
        ["make", "-C", str(FIRMWARE), f"BUILD={out}", "-j2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"make failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def built(directory: Path) -> list[str]:
    """The kept build products: guest ELFs, boot-sector disk images, the BIOS ROM."""
    return sorted(p.name for pattern in ("*.elf", "*.img", "*.bin") for p in directory.glob(pattern))


def test_same_set_of_images(rebuilt: Path):
    committed = built(COMMITTED)
    assert committed, "no guest images committed in firmware/build"
    assert built(rebuilt) == committed


@pytest.mark.parametrize("image", built(COMMITTED))
def test_image_is_byte_identical(rebuilt: Path, image: str):
    fresh = (rebuilt / image).read_bytes()
    committed = (COMMITTED / image).read_bytes()
    assert fresh == committed, (
        f"{image}: rebuilt {len(fresh)} bytes differ from the committed {len(committed)} bytes;"
        " run `make -C firmware` and commit firmware/build (and re-run"
        " firmware/capture-expected.sh if the code changed)"
    )
