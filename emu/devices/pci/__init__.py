"""PCI: the bus a PC's chipset and its add-in devices (virtio among them) hang off.

Every PCI function has a 256-byte configuration space (PCI Local Bus Specification 3.0, ch. 6):
vendor and device IDs, a class code, a command register that turns its address decoders on,
up to six Base Address Registers (BARs) through which firmware or the OS places its IO and
memory windows, and an interrupt pin (INTA#-INTD#). Software reaches configuration space on a
PC through "configuration mechanism #1" (§3.2.2.3.2): a dword written to port 0xCF8 selects
bus, device, function and register; port 0xCFC-0xCFF then reads or writes that register.

emu's PC has the chipset QEMU's `-machine pc` has, with the same IDs, so guest drivers and
firmware treat it as they treat QEMU's: an Intel 440FX host bridge at 00:00.0 and a PIIX3
PCI-to-ISA bridge at 00:01.0, whose PIRQ route control registers steer the four PCI interrupt
lines onto PIC IRQs.

  config.py  PciFunction: configuration space, BAR sizing, the command register, INTx
  host.py    PciHost: configuration mechanism #1 at 0xCF8/0xCFC, and the bus's slots
  i440fx.py  the host bridge (8086:1237)
  piix3.py   the ISA bridge (8086:7000) and PCI interrupt routing (PIRQA#-PIRQD# -> IRQs)
"""

from .config import Bar, BarKind, PciFunction
from .host import PciHost
from .i440fx import I440fxHostBridge
from .piix3 import Piix3IsaBridge

__all__ = ["Bar", "BarKind", "I440fxHostBridge", "PciFunction", "PciHost", "Piix3IsaBridge"]
