"""The Intel 440FX PCI and memory controller (PMC), the host bridge at 00:00.0.

Intel 82441FX datasheet: vendor 8086h, device 1237h, revision 02h, class 060000h (host
bridge). QEMU's `-machine pc` presents the same part; emu models only its identity: its PAM
and SMRAM registers (which shadow the BIOS) are not needed by guests that boot as emu boots
them, and read as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import PciFunction

INTEL = 0x8086


@dataclass
class I440fxHostBridge(PciFunction):
    vendor_id: int = INTEL
    device_id: int = 0x1237
    class_code: int = 0x060000
    revision: int = 0x02
