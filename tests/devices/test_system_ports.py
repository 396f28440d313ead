"""Port 0x80 (POST codes) and port 0x92 (System Control Port A)."""

from __future__ import annotations

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.system_ports import PORT92, POST_PORT, PostCodePort, SystemControlPortA


@pytest.fixture
def post() -> PostCodePort:
    return PostCodePort()


@pytest.fixture
def port92(system) -> SystemControlPortA:
    return SystemControlPortA(system)


@pytest.fixture
def bus(post, port92) -> PortIoBus:
    bus = PortIoBus()
    bus.register(POST_PORT, 1, post, "post")
    bus.register(PORT92, 1, port92, "port92")
    return bus


def test_post_codes_are_kept_and_counted(bus, post) -> None:
    for code in (0x01, 0x02, 0x55):
        bus.write(0x80, 1, code)
    assert bus.read(0x80, 1) == 0x55
    assert post.writes == 3 and post.last == 0x55


def test_word_write_to_port80_reaches_it_as_a_byte(bus, post) -> None:
    bus.write(0x80, 2, 0xBEEF)
    assert post.last == 0xEF
    assert bus.unmapped_writes == {0x81: 1}


def test_fast_reset_on_rising_edge_of_bit0(bus, system, port92) -> None:
    bus.write(0x92, 1, bus.read(0x92, 1) | 0x01)
    assert system.resets == 1
    bus.write(0x92, 1, 0x03)  # already set: no edge
    assert system.resets == 1
    port92.reset()  # what the machine does on reset
    assert bus.read(0x92, 1) == 0x02
    bus.write(0x92, 1, 0x03)
    assert system.resets == 2


def test_a20_bit_is_kept(bus, system, port92) -> None:
    assert bus.read(0x92, 1) & 0x02 and port92.a20
    bus.write(0x92, 1, 0x00)
    assert bus.read(0x92, 1) == 0x00 and not port92.a20
    bus.write(0x92, 1, 0x02)  # how firmware enables A20 ("fast A20")
    assert port92.a20
    assert system.resets == 0
