"""The 8254 driven as firmware and Linux drive it, against a clock the test controls."""

from __future__ import annotations

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.pic import Pic8259Pair
from emu.devices.pit import PIT_BASE, Pit8254, ns_at, tick_at
from emu.devices.port61 import PORT61, SystemControlPortB

LATCH_1KHZ = 1193  # Linux: (PIT_TICK_RATE + HZ/2) / HZ with HZ=1000


@pytest.fixture
def bus() -> PortIoBus:
    return PortIoBus()


@pytest.fixture
def pit(clock, wire, bus: PortIoBus) -> Pit8254:
    pit = Pit8254(clock, wire)
    bus.register(PIT_BASE, 4, pit, "pit")
    bus.register(PORT61, 1, SystemControlPortB(pit), "port61")
    return pit


def outb(bus: PortIoBus, value: int, port: int) -> None:
    bus.write(port, 1, value)


def inb(bus: PortIoBus, port: int) -> int:
    return bus.read(port, 1)


def program(bus: PortIoBus, control: int, count: int) -> None:
    channel = control >> 6
    outb(bus, control, 0x43)
    outb(bus, count & 0xFF, 0x40 + channel)
    outb(bus, count >> 8, 0x40 + channel)


def read_word(bus: PortIoBus, channel: int) -> int:
    lsb = inb(bus, 0x40 + channel)
    return lsb | inb(bus, 0x40 + channel) << 8


def rise_times(wire) -> list[int]:
    return [t for t, level in wire.history if level]


def test_mode2_at_1khz_gives_one_edge_per_period_on_time(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1  # a count reaches the counter at the next CLK
    program(bus, 0x34, LATCH_1KHZ)  # channel 0, LSB then MSB, mode 2, binary
    assert wire.level  # OUT is high in mode 2 between pulses
    before = wire.rises
    clock.run_until(clock.t + 1_000_000_000)
    assert wire.rises - before == 1000  # 1193182 / 1193 = 1000.15 periods in a second
    assert rise_times(wire)[1:4] == [ns_at(load + k * LATCH_1KHZ) for k in (1, 2, 3)]
    assert pit.lost_ticks == 0


def test_mode2_drives_the_pic_at_1khz(clock, bus) -> None:
    pic = Pic8259Pair()
    pit = Pit8254(clock, pic.line(0))
    bus.register(PIT_BASE, 4, pit, "pit")
    bus.register(0x20, 2, pic.master, "pic1")
    for value, port in ((0x11, 0x20), (0x20, 0x21), (0x04, 0x21), (0x01, 0x21), (0xFE, 0x21)):
        outb(bus, value, port)
    program(bus, 0x34, LATCH_1KHZ)
    start = clock.t
    pic.delivered[0] = 0
    for step in range(1, 10_001):  # a loop that looks every 100 us
        clock.run_until(start + step * 100_000)
        if pic.has_interrupt():
            assert pic.acknowledge() == 0x20
            outb(bus, 0x20, 0x20)
    assert pic.delivered[0] in (1000, 1001)  # plus the edge of programming mode 2


def test_late_loop_fires_once_and_counts_lost_ticks(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x34, LATCH_1KHZ)
    first = ns_at(load + LATCH_1KHZ)
    clock.run_until(first)
    rises = wire.rises
    clock.set(first + 50_000_000)  # the loop was 50 ms late
    assert wire.rises == rises + 1
    assert pit.lost_ticks == 49  # 50 periods passed, one was delivered
    # the next edge stays on the programmed grid, after now
    deadline = clock.next_deadline()
    assert deadline is not None and deadline > clock.t
    assert (tick_at(deadline) - load) % LATCH_1KHZ == 0


def test_counter_latch_freezes_the_count_until_read(clock, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x34, 1000)
    clock.set(ns_at(load + 250))
    outb(bus, 0x00, 0x43)  # latch channel 0
    clock.set(ns_at(load + 600))
    outb(bus, 0x00, 0x43)  # a second latch before reading is ignored
    assert read_word(bus, 0) == 750
    assert read_word(bus, 0) == 400  # live again
    clock.set(ns_at(load + 1000 + 10))  # mode 2 reloads: 1000, 999, ... 1
    assert read_word(bus, 0) == 990


def test_read_back_status_and_null_count(clock, bus, pit) -> None:
    outb(bus, 0xB4, 0x43)  # channel 2, LSB then MSB, mode 2
    outb(bus, 0xE8, 0x43)  # read-back: status only, counter 2
    assert inb(bus, 0x42) == 0x80 | 0x40 | 0x30 | 0x04  # OUT high, NULL COUNT, RW=3, mode 2
    outb(bus, 0x00, 0x42)
    outb(bus, 0x10, 0x42)
    outb(bus, 0xE8, 0x43)
    assert inb(bus, 0x42) & 0x40  # written but not yet loaded: still NULL COUNT
    load = tick_at(clock.t) + 1
    clock.set(ns_at(load + 0x10))
    outb(bus, 0xC8, 0x43)  # read-back: count and status, counter 2
    assert inb(bus, 0x42) == 0x80 | 0x30 | 0x04  # status first, NULL COUNT clear now
    assert read_word(bus, 2) == 0x1000 - 0x10


def test_read_back_latches_several_counters_at_once(clock, bus, pit) -> None:
    program(bus, 0x34, 3000)
    program(bus, 0xB4, 2000)
    load = tick_at(clock.t) + 1
    clock.set(ns_at(load + 100))
    outb(bus, 0xDA, 0x43)  # read-back: latch count (not status) of counters 0 and 2
    clock.set(ns_at(load + 900))
    assert read_word(bus, 0) == 3000 - 100
    assert read_word(bus, 2) == 2000 - 100


def test_channel2_mode0_delay_as_firmware_calibrates(clock, bus, pit) -> None:
    """SeaBIOS/Linux: gate on, speaker off, channel 2 mode 0, poll port 0x61 bit 5."""
    outb(bus, (inb(bus, 0x61) & ~0x02) | 0x01, 0x61)
    latch = 11932  # 10 ms
    load = tick_at(clock.t) + 1
    program(bus, 0xB0, latch)
    assert inb(bus, 0x61) & 0x20 == 0
    clock.set(ns_at(load + latch) - 1)
    assert inb(bus, 0x61) & 0x20 == 0
    clock.set(ns_at(load + latch))
    assert inb(bus, 0x61) & 0x21 == 0x21
    assert abs(clock.t - ns_at(load) - 10_000_000) < 2_000  # it took 10 ms of host time


def test_gate_low_holds_a_mode0_count(clock, bus, pit) -> None:
    outb(bus, 0x01, 0x61)
    load = tick_at(clock.t) + 1
    program(bus, 0xB0, 5000)
    clock.set(ns_at(load + 1000))
    outb(bus, 0x00, 0x61)  # gate low: counting stops
    clock.set(ns_at(load + 4000))
    assert read_word(bus, 2) == 4000
    outb(bus, 0x01, 0x61)
    clock.set(ns_at(load + 4000 + 500))
    assert read_word(bus, 2) == 3500


def test_mode0_on_channel0_is_one_shot(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x30, 1000)
    assert not wire.level  # mode 0: OUT low until terminal count
    clock.run_until(clock.t + 100_000_000)
    assert wire.rises == 1 and rise_times(wire) == [ns_at(load + 1000)]
    assert wire.level and clock.next_deadline() is None
    assert read_word(bus, 0) == (1000 - (tick_at(clock.t) - load)) & 0xFFFF  # it wraps and goes on


def test_mode4_strobe_as_linux_oneshot_clockevent(clock, wire, bus, pit) -> None:
    program(bus, 0x38, 0)  # mode 4, as Linux's pit_set_oneshot; count 0 = 65536
    rises = wire.rises
    load = tick_at(clock.t) + 1
    outb(bus, 500 & 0xFF, 0x40)  # pit_next_event: the delta, LSB then MSB
    outb(bus, 500 >> 8, 0x40)
    clock.run_until(clock.t + 10_000_000)
    assert wire.rises == rises + 1
    assert rise_times(wire)[-1] == ns_at(load + 500 + 1)  # OUT back high one clock after 0
    assert wire.level


def test_mode3_square_wave_follows_out(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x36, 100)  # channel 0, mode 3 (SeaBIOS programs this, with count 0)
    clock.run_until(ns_at(load + 300))
    changes = [(t, level) for t, level in wire.history]
    assert changes[-6:] == [
        (ns_at(load + 50), False), (ns_at(load + 100), True),
        (ns_at(load + 150), False), (ns_at(load + 200), True),
        (ns_at(load + 250), False), (ns_at(load + 300), True),
    ]  # fmt: skip


def test_mode3_on_channel2_is_visible_at_port61(clock, bus, pit) -> None:
    outb(bus, 0x01, 0x61)
    load = tick_at(clock.t) + 1
    program(bus, 0xB6, 1000)
    seen = []
    for tick in (10, 499, 500, 999, 1000, 1500):
        clock.set(ns_at(load + tick))
        seen.append(bool(inb(bus, 0x61) & 0x20))
    assert seen == [True, True, False, False, True, False]


def test_new_mode2_count_takes_effect_at_the_end_of_the_cycle(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x34, 1000)
    clock.run_until(ns_at(load + 300))
    outb(bus, 500 & 0xFF, 0x40)
    outb(bus, 500 >> 8, 0x40)
    clock.run_until(ns_at(load + 2100))
    assert rise_times(wire)[-3:] == [ns_at(load + t) for t in (1000, 1500, 2000)]


def test_bcd_counting(clock, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0xB5, 0x1000)  # channel 2, mode 2, BCD: 1000 decimal
    clock.set(ns_at(load + 1))
    assert read_word(bus, 2) == 0x0999
    clock.set(ns_at(load + 1000 + 2))
    assert read_word(bus, 2) == 0x0998
    outb(bus, 0xE8, 0x43)
    assert inb(bus, 0x42) & 0x01  # the status reports BCD


def test_lsb_only_and_msb_only_access(clock, bus, pit) -> None:
    outb(bus, 0x01, 0x61)
    load = tick_at(clock.t) + 1
    outb(bus, 0x90, 0x43)  # channel 2, LSB only, mode 0
    outb(bus, 0x40, 0x42)
    clock.set(ns_at(load + 0x10))
    assert inb(bus, 0x42) == 0x30
    assert inb(bus, 0x42) == 0x30  # no flip-flop: every read is the LSB
    load = tick_at(clock.t) + 1
    outb(bus, 0xA0, 0x43)  # MSB only
    outb(bus, 0x02, 0x42)  # count 0x200
    clock.set(ns_at(load + 0x100))
    assert inb(bus, 0x42) == 0x01


def test_mode0_first_byte_stops_the_count(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x30, 1000)
    clock.set(ns_at(load + 100))
    outb(bus, 0x00, 0x40)  # first byte of a new count
    clock.run_until(ns_at(load + 5000))
    assert wire.rises == 0  # counting stopped, no terminal count
    outb(bus, 0x10, 0x40)  # second byte: count 0x1000 starts
    clock.run_until(clock.t + ns_at(0x1001) + 1000)
    assert wire.rises == 1


def test_refresh_bit_toggles_with_time(clock, bus, pit) -> None:
    base = tick_at(clock.t) // 36 * 36 + 36
    clock.set(ns_at(base))
    a = inb(bus, 0x61) & 0x10
    clock.set(ns_at(base + 18))
    b = inb(bus, 0x61) & 0x10
    assert a != b


def test_control_port_reads_float(bus, pit) -> None:
    assert inb(bus, 0x43) == 0xFF


def test_mode2_out_is_low_for_the_last_clock_of_each_period(clock, bus, pit) -> None:
    outb(bus, 0x01, 0x61)
    load = tick_at(clock.t) + 1
    program(bus, 0xB4, 100)
    seen = []
    for tick in (98, 99, 100, 199, 200):
        clock.set(ns_at(load + tick))
        seen.append(bool(inb(bus, 0x61) & 0x20))
    assert seen == [True, False, True, False, True]


def test_new_mode3_count_takes_effect_at_the_end_of_the_half_cycle(clock, wire, bus, pit) -> None:
    load = tick_at(clock.t) + 1
    program(bus, 0x36, 100)
    clock.run_until(ns_at(load + 20))  # in the high half
    outb(bus, 60, 0x40)
    outb(bus, 0, 0x40)
    clock.run_until(ns_at(load + 140))
    assert wire.history[-4:] == [
        (ns_at(load + 50), False),  # the old high half ends as programmed
        (ns_at(load + 80), True),  # then the new count's low half: 30 clocks
        (ns_at(load + 110), False),
        (ns_at(load + 140), True),
    ]


def test_reset_stops_the_counters(clock, wire, bus, pit) -> None:
    program(bus, 0x34, LATCH_1KHZ)
    assert clock.next_deadline() is not None
    pit.reset()
    assert clock.next_deadline() is None and not wire.level  # mode 0, no count: OUT low
    outb(bus, 0xE2, 0x43)  # read-back status of counter 0
    assert inb(bus, 0x40) == 0x40 | 0x30  # NULL COUNT, RW=3, mode 0
