"""Two small motherboard ports: the POST code port (0x80) and System Control Port A (0x92).

Port 0x80: firmware writes a progress ("power-on self test") code here at each step of boot,
shown on a diagnostic card's display; nothing decodes it otherwise, so operating systems
also write to it as a short IO delay (Linux's `outb_p`). emu keeps the last code and counts
the writes; reading returns the last code, as many chipsets do.

Port 0x92, System Control Port A (IBM PS/2 "fast A20 and reset"; Intel PIIX4 datasheet
§4.1.26 "Port 92 Register"):
  bit 0  fast reset: a 0 -> 1 transition resets the CPU (here: the whole machine)
  bit 1  A20 gate: when 0, address line 20 is forced to 0 (8086 wrap-around at 1 MiB)
The A20 state is kept and reads back, but emu's CPUs always run with A20 enabled: real-mode
code that depends on the wrap-around at 1 MiB is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .interfaces import SystemControl

POST_PORT = 0x80
PORT92 = 0x92
PORT92_RESET = 0x01
PORT92_A20 = 0x02


@dataclass
class PostCodePort:
    last: int = 0
    writes: int = 0

    max_access_size: ClassVar[int] = 1

    def io_read(self, offset: int, size: int) -> int:
        return self.last

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.last = value
        self.writes += 1


@dataclass
class SystemControlPortA:
    system: SystemControl
    value: int = PORT92_A20  # reads back A20 on: emu's CPUs never mask it

    max_access_size: ClassVar[int] = 1

    @property
    def a20(self) -> bool:
        return bool(self.value & PORT92_A20)

    def io_read(self, offset: int, size: int) -> int:
        return self.value

    def io_write(self, offset: int, size: int, value: int) -> None:
        old, self.value = self.value, value
        if value & PORT92_RESET and not old & PORT92_RESET:
            self.system.request_reset()

    def reset(self) -> None:
        """After a system reset the reset bit reads 0 again, so the next 0 -> 1 works."""
        self.value &= ~PORT92_RESET
