"""The narrow interfaces between devices and the machine around them.

A device model sees three things of the machine, and nothing of the CPU or the accelerator:
- an `IrqLine` per interrupt it raises (the wire into the interrupt controller; level on the
  wire, edges are the controller's business, as on an ISA bus: 8259A datasheet, "ELCR");
- the `Clock` (emu.clock) to arm timers against host monotonic time;
- `SystemControl`, for the few devices that end or reset the machine (isa-debug-exit, port
  0x92's fast reset).
A device itself answers `io_read(offset, size)` / `io_write(offset, size, value)` on the bus
(emu.devices.bus), where `offset` is relative to the base it was registered at.
"""

from __future__ import annotations

from typing import Protocol


class IrqLine(Protocol):
    def set_level(self, level: bool) -> None:
        """Drive the wire high (True) or low (False)."""


class SystemControl(Protocol):
    def request_exit(self, status: int) -> None:
        """End the run with this process exit status (isa-debug-exit)."""

    def request_reset(self) -> None:
        """Reset the machine (port 0x92 bit 0, keyboard controller 0xFE)."""


class IoDevice(Protocol):
    def io_read(self, offset: int, size: int) -> int: ...
    def io_write(self, offset: int, size: int, value: int) -> None: ...
