"""isa-debug-exit at 0xf4: a guest-chosen exit status."""

from __future__ import annotations

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.debug_exit import DEBUG_EXIT_BASE, DEBUG_EXIT_SIZE, DebugExit


@pytest.fixture
def bus(system) -> PortIoBus:
    bus = PortIoBus()
    bus.register(DEBUG_EXIT_BASE, DEBUG_EXIT_SIZE, DebugExit(system), "isa-debug-exit")
    return bus


@pytest.mark.parametrize(
    ("port", "size", "value", "status"),
    [
        (0xF4, 1, 0x00, 0x01),
        (0xF4, 1, 0x10, 0x21),  # the common "success" convention: exit status 33
        (0xF4, 2, 0x1234, 0x2469),
        (0xF4, 4, 0x8000_0001, 0x1_0000_0003),  # the value as written, all 32 bits
        (0xF7, 1, 0x05, 0x0B),  # any port of the range
    ],
)
def test_write_requests_exit_with_value_shifted_and_ored(bus, system, port, size, value, status) -> None:
    bus.write(port, size, value)
    assert system.exits == [status]


@pytest.mark.parametrize(("size", "ones"), [(1, 0xFF), (2, 0xFFFF), (4, 0xFFFF_FFFF)])
def test_reads_return_all_ones(bus, system, size, ones) -> None:
    assert bus.read(0xF4, size) == ones
    assert system.exits == []
