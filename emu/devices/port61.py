"""System control port B (0x61): PIT channel 2's GATE and OUT, the speaker, refresh status.

IBM PC/AT Technical Reference, "System board I/O ports", port 61h (on later chipsets:
"NMI Status and Control Register", Intel PIIX4 datasheet §4.1.13). On write:
  bit 0  TIM2GATESPK  gate of 8254 channel 2
  bit 1  SPKRDATA     speaker data enable (channel 2's OUT reaches the speaker when set)
  bit 2  PCIERR/parity check enable, bit 3 IOCHK enable (kept, no NMI source exists here)
On read, bits 0-3 as written plus:
  bit 4  REFRESH      toggles on each DRAM refresh request, every 15.085 us (channel 1 at
                      count 18); firmware delay loops count its toggles
  bit 5  TMR2OUTSTS   channel 2's OUT, which firmware polls to time short delays
  bits 6-7 (IOCHK/SERR NMI sources) read 0.
There is no audio: the speaker state is kept (`speaker_on`) but makes no sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .pit import Pit8254, tick_at

PORT61 = 0x61
GATE2 = 0x01
SPEAKER_DATA = 0x02
REFRESH = 0x10
OUT2 = 0x20
REFRESH_TICKS = 18  # PIT clocks between refresh requests


@dataclass
class SystemControlPortB:
    pit: Pit8254
    value: int = 0  # bits 0-3 as last written

    max_access_size: ClassVar[int] = 1

    def io_read(self, offset: int, size: int) -> int:
        refresh = REFRESH if (tick_at(self.pit.clock.now_ns()) // REFRESH_TICKS) & 1 else 0
        return self.value | refresh | (OUT2 if self.pit.out(2) else 0)

    def io_write(self, offset: int, size: int, value: int) -> None:
        self.value = value & 0x0F
        self.pit.set_gate(2, bool(value & GATE2))

    @property
    def speaker_on(self) -> bool:
        return self.value & (GATE2 | SPEAKER_DATA) == GATE2 | SPEAKER_DATA

    def reset(self) -> None:
        """System reset: the port reads 0, so channel 2's gate is low."""
        self.io_write(0, 1, 0)
