"""Booting a raw disk the way a PC does: from the reset vector, through firmware in ROM.

At RESET an x86 CPU starts in real mode at CS:IP = F000:FFF0 with the hidden CS base set to
FFFF0000, so its first fetch is at FFFFFFF0, 16 bytes below 4 GiB (SDM vol. 3A §9.1.4): the
chipset decodes the top of the 4 GiB space to the BIOS ROM, and also aliases the ROM's last
64 KiB at F0000-FFFFF, where real-mode code finds it after the first far jump (which reloads CS
with a base of F0000). The firmware then initialises the machine (POST), loads sector 0 of the
boot disk to 0000:7C00, and jumps there with DL = the drive number (BIOS Boot Specification
1.01, §6.5.1).

emu maps its BIOS (firmware/bios, built from source) or the one given with `--bios` at both
places, read-only (below 1 MiB, at most the last 128 KiB, from E0000 up, as QEMU's
"isa-bios"), and the VGA memory window A0000-BFFFF as RAM that the screen is read from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..accel import CpuState, MemoryRegion
from ..errors import EmuError
from ..memory import GuestMemory, Rom

ROM_SIZE = 64 * 1024
ISA_BIOS_MAX = 128 * 1024  # at most the ROM's last 128 KiB appear below 1 MiB (E0000-FFFFF), as in QEMU
VGA_WINDOW, VGA_WINDOW_SIZE = 0xA0000, 0x20000
DEFAULT_BIOS = Path(__file__).resolve().parents[2] / "firmware" / "build" / "bios.bin"


def load_bios(path: Path | None) -> bytes:
    """The ROM image: `path`, or emu's own BIOS (64 KiB); a multiple of 64 KiB, like SeaBIOS's
    128 KiB and 256 KiB images."""
    source = path or DEFAULT_BIOS
    try:
        data = source.read_bytes()
    except OSError as error:
        hint = "" if path else " (build it with make -C firmware, or give one with --bios)"
        raise EmuError(f"BIOS ROM {source}: cannot read it ({error.strerror}){hint}") from None
    if len(data) < ROM_SIZE or len(data) % ROM_SIZE:
        raise EmuError(f"BIOS ROM {source}: {len(data)} bytes; a BIOS image is a multiple of 64 KiB")
    return data


@dataclass
class PcFirmware:
    """The ROM (its last 64-128 KiB ending at 1 MiB, all of it ending at 4 GiB) and the VGA
    window (at A0000), as memory regions."""

    image: bytes
    low: Rom = field(init=False)
    high: Rom = field(init=False)
    vga: GuestMemory = field(init=False)

    def __post_init__(self) -> None:
        low = self.image[-ISA_BIOS_MAX:]
        self.low = Rom(0x100000 - len(low), low, name="isa-bios")
        self.high = Rom(0x1_0000_0000 - len(self.image), self.image, name="bios-high")
        self.vga = GuestMemory(VGA_WINDOW_SIZE)

    def regions(self) -> list[MemoryRegion]:
        vga = MemoryRegion(VGA_WINDOW, VGA_WINDOW_SIZE, self.vga.host_address, name="vga")
        return [self.low.region(), vga, self.high.region()]

    @staticmethod
    def reset_state() -> CpuState:
        return CpuState.reset()

    def close(self) -> None:
        for part in (self.low, self.high):
            part.close()
        self.vga.close()
