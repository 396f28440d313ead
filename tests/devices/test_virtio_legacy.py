"""The legacy (virtio 0.9.5) interface of a transitional virtio-pci device: IO BAR 0, a queue
placed by page number, no FEATURES_OK, driven as Linux's virtio_pci_legacy drives it through the
machine's own buses and RAM. The IDs and sizes are QEMU 7.2's (`-M pc -device virtio-rng-pci`,
read through qtest): 1af4:1005 rev 0, subsystem 1af4:0004, an IO BAR 0 of 32 bytes, and the modern
capabilities in BAR 4 as well."""

from __future__ import annotations

from pathlib import Path

import pytest

from emu.devices.virtio.device import ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, F_EVENT_IDX, F_INDIRECT_DESC
from emu.devices.virtio.pci import VirtioPci
from emu.devices.virtio.queue import DESC_F_NEXT, DESC_F_WRITE
from emu.devices.virtio.rng import VirtioRng
from emu.errors import EmuError
from emu.machine import Machine, MachineConfig

from .virtio_driver import BAR, BUFFER, DESC, LegacyDriver, TransitionalDriver

ROOT = Path(__file__).resolve().parents[2]
KERNEL = ROOT / "firmware" / "build" / "hello64.elf"
PFN = DESC >> 12
RNG_LEGACY = "virtio-rng-pci,disable-legacy=off"


def machine_with(*devices: str) -> Machine:
    return Machine(MachineConfig(kernel=KERNEL, devices=list(devices)))


@pytest.fixture
def machine():
    m = machine_with(RNG_LEGACY)
    yield m
    m.close()


def route_intx(driver: LegacyDriver | TransitionalDriver) -> None:
    driver.ports.write(0xCF8, 4, 0x8000_0860)  # PIIX3 (00:01.0) PIRQRC: slot 2 INTA# is PIRQB (0x61)
    driver.ports.write(0xCFD, 1, 11)


def test_the_transitional_ids_are_qemus() -> None:
    m = machine_with(RNG_LEGACY)
    try:
        driver = LegacyDriver(m)
        assert driver.cfg(0x08) == 0x00FF_0000  # class 00ff00, revision 0
        assert driver.cfg(0x3D, size=1) == 1  # INTA#
        assert driver.probe() == 32  # 14h of registers, no configuration: pow2ceil(20)
        caps = TransitionalDriver(m).capabilities()  # the modern structures are there too
        assert set(caps) == {1, 2, 3, 4, 5} and caps[1] == (4, 0, 0x3C)
        assert m.pci.describe()[-1] == "00:02.0 00ff: 1af4:1005 (rev 00)"
    finally:
        m.close()


def test_modern_only_and_legacy_only_devices(machine: Machine) -> None:
    memory = machine.memory
    modern = VirtioPci(device=VirtioRng(memory), transitional=False)
    assert (modern.device_id, modern.revision, modern.subsystem_id) == (0x1044, 1, 0x1100)
    assert 0 not in modern.bars and modern.bar_io(0) is None
    legacy = VirtioPci(device=VirtioRng(memory), transitional=True, modern=False)
    assert (legacy.device_id, legacy.revision, legacy.subsystem_id) == (0x1005, 0, 4)
    assert set(legacy.bars) == {0} and legacy.config_read(0x34, 1) == 0 and not legacy.config_read(0x06, 2) & 0x10
    legacy.config_write(0x10, 4, 0xFFFF_FFFF)  # with no capabilities, no window hides BAR 0 or the header
    legacy.config_write(0x08, 4, 0x1234_5678)
    assert legacy.config_read(0x10, 4) == 0xFFFF_FFE1 and legacy.config_read(0x08, 4) == 0x00FF_0000
    with pytest.raises(ValueError, match="neither"):
        VirtioPci(device=VirtioRng(memory), transitional=False, modern=False)


@pytest.mark.parametrize(
    ("spec", "ids", "bars"),
    [("virtio-rng-pci", 0x1005, {0, 4}), ("virtio-rng-pci,disable-legacy=off", 0x1005, {0, 4}),
     ("virtio-rng-pci,disable-legacy=on", 0x1044, {4}), ("virtio-rng-pci,disable-modern=on", 0x1005, {0}),
     ("virtio-rng-pci,disable-modern=off,disable-legacy=auto", 0x1005, {0, 4}),
     ("virtio-balloon-pci,disable-legacy=off", 0x1002, {0, 4}), ("virtio-console-pci,disable-legacy=off", 0x1003, {0, 4})],
)  # fmt: skip
def test_the_command_line_options(spec: str, ids: int, bars: set[int]) -> None:
    m = machine_with(spec)
    try:
        function = m.virtio[0]
        assert (function.device_id, set(function.bars)) == (ids, bars)
        if 0 in bars:  # QEMU with vectors=0 (no MSI-X) sizes these the same: 20 + 8 bytes of configuration
            assert function.bars[0].size == 32
    finally:
        m.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [("virtio-rng-pci,disable-legacy=on,disable-modern=on", "neither the modern nor the legacy"),
     ("virtio-rng-pci,disable-legacy=maybe", "disable-legacy takes on|off|auto"),
     ("virtio-rng-pci,disable-modern=auto", "disable-modern takes on|off"),
     ("virtio-rng-pci,vectors=0", "takes no options"),
     ("virtio-rng-device,disable-legacy=on", "virtio-rng-device takes no options")],
)  # fmt: skip
def test_bad_options_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(EmuError, match=message):
        machine_with(spec)


def test_random_bytes_over_the_io_bar_with_an_interrupt(machine: Machine) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    route_intx(driver)
    num = driver.initialize()
    assert num == 256 and driver.read(0x08, 4) == PFN and driver.read(0x12, 1) == ACKNOWLEDGE | DRIVER | DRIVER_OK
    rng = machine.virtio[0].device
    assert rng.queues[0].queue is not None  # DRIVER_OK without FEATURES_OK started the device
    driver.offer([(BUFFER, 16, DESC_F_WRITE), (BUFFER + 64, 48, DESC_F_WRITE)], num)
    assert driver.used(num) == (1, 0, 64)
    data = machine.memory.read(BUFFER, 16) + machine.memory.read(BUFFER + 64, 48)
    assert len(set(data)) > 16
    assert machine.isa_bridge.driven == {11}  # INTx asserted, routed to IRQ 11
    assert driver.read(0x13, 1) == 1  # ISR: a used buffer; reading clears it and deasserts INTx
    assert machine.isa_bridge.driven == set() and driver.read(0x13, 1) == 0
    counters = rng.counters[0]  # the kick went through VirtioDevice.notify, as a modern one does: one exit
    assert (counters.notifications, counters.exits, counters.requests, counters.bytes_written) == (1, 1, 1, 64)


def test_features_are_32_bits_without_version_1(machine: Machine) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    rng = machine.virtio[0].device
    offered = F_INDIRECT_DESC | F_EVENT_IDX
    assert driver.read(0x00, 4) == offered  # VERSION_1 is bit 32: not in 32 bits
    rng.driver_features = 1 << 32  # as if a modern driver had accepted VERSION_1 first
    driver.write(0x12, 1, ACKNOWLEDGE | DRIVER)
    driver.write(0x04, 4, 0xFFFF_FFFF)  # bits the device does not offer are dropped, as QEMU does
    assert driver.read(0x04, 4) == offered and rng.driver_features == offered
    driver.write(0x04, 4, 0)
    num = driver.setup_queue(0, PFN)  # placed while no feature is accepted...
    driver.write(0x04, 4, F_EVENT_IDX)  # ...the queue follows the features written after it
    driver.write(0x12, 1, ACKNOWLEDGE | DRIVER | DRIVER_OK)
    driver.write(0x04, 4, 0)  # too late: the device is running
    assert rng.driver_features == F_EVENT_IDX and not rng.status & 8  # and FEATURES_OK was never set
    _, avail, _ = driver.layout(PFN, num)
    machine.memory.write_u16(avail + 4 + 2 * num, 1)  # used_event: interrupt when used idx passes 1
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)
    assert driver.used(num)[0] == 1 and driver.read(0x13, 1) == 0  # EVENT_IDX in force: no interrupt yet
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)
    assert driver.used(num)[0] == 2 and driver.read(0x13, 1) == 1


def test_registers_answer_at_their_offsets_only(machine: Machine) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    assert driver.read(0x0C, 4) == 256  # queue num, zero-extended (QEMU: 0x100)
    assert [driver.read(i, 1) for i in range(4)] == [0, 0xFF, 0xFF, 0xFF]  # QEMU's reads of 0..3, byte by byte
    assert driver.read(0x10, 2) == 0xFFFF  # queue notify is write-only
    assert driver.read(0x14, 4) == 0xFFFF_FFFF  # virtio-rng has no configuration: all ones, as QEMU
    driver.write(0x0E, 2, 1)
    assert driver.read(0x0C, 2) == 0 and driver.read(0x0E, 2) == 1  # no queue 1
    driver.write(0x08, 4, PFN)  # ignored: no such queue
    assert driver.read(0x08, 4) == 0 and machine.virtio[0].device.status == 0


def test_the_legacy_configuration_is_the_modern_one() -> None:
    m = machine_with("virtio-console-pci,disable-legacy=off")
    try:
        legacy, modern = LegacyDriver(m, device_type=3), TransitionalDriver(m, device_type=3)
        assert legacy.probe() == 32
        config = BAR + modern.probe()[4][1]
        assert legacy.read(0x14, 4) == m.buses.mmio.read(config, 4) != 0  # cols, rows
        assert legacy.read(0x18, 4) == m.buses.mmio.read(config + 4, 4) == 1  # max_nr_ports
        assert legacy.read(0x1C, 4) == 0xFFFF_FFFF  # beyond emu's 8 bytes
    finally:
        m.close()


def test_status_0_resets(machine: Machine) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    route_intx(driver)
    num = driver.initialize()
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)
    assert machine.isa_bridge.driven == {11}
    rng = machine.virtio[0].device
    resets = rng.resets
    driver.write(0x12, 1, 0)
    assert rng.resets == resets + 1 and machine.isa_bridge.driven == set() and driver.read(0x13, 1) == 0
    assert (driver.read(0x12, 1), driver.read(0x04, 4), driver.read(0x08, 4)) == (0, 0, 0)
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)  # the queue is gone: nothing is served
    assert driver.used(num)[0] == 1
    assert driver.initialize() == num  # and the driver can start again
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)
    assert driver.used(num)[0] == 1  # a fresh ring


def test_pfn_0_resets_the_device_as_qemu_does(machine: Machine) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    num = driver.initialize(features=F_EVENT_IDX)
    rng = machine.virtio[0].device
    resets = rng.resets
    driver.write(0x08, 4, 0)
    assert rng.resets == resets + 1 and rng.queues[0].queue is None
    assert (driver.read(0x08, 4), driver.read(0x12, 1), driver.read(0x04, 4)) == (0, 0, 0)  # QEMU 7.2: the same
    driver.offer([(BUFFER, 8, DESC_F_WRITE)], num)
    assert driver.used(num)[0] == 0 and rng.counters[0].requests == 0


def test_a_looping_chain_needs_reset_and_the_host_goes_on(machine: Machine, capfd) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    route_intx(driver)
    num = driver.initialize()
    driver.offer([(BUFFER, 16, DESC_F_WRITE)], num)
    driver.offer([(BUFFER, 16, DESC_F_WRITE | DESC_F_NEXT)], num)  # descriptor 0's next is 0: it loops on itself
    assert driver.read(0x12, 1) & DEVICE_NEEDS_RESET and driver.used(num)[0] == 1
    assert driver.read(0x13, 1) == 0x3  # the first request's interrupt and the configuration change
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "virtio-rng: queue 0: chain at head 0 loops" in err
    driver.offer([(BUFFER, 16, DESC_F_WRITE)], num)  # ignored until the reset
    assert driver.used(num)[0] == 1
    driver.initialize()
    driver.offer([(BUFFER, 16, DESC_F_WRITE)], num)
    assert driver.used(num)[0] == 1 and not driver.read(0x12, 1) & DEVICE_NEEDS_RESET


def test_a_queue_outside_ram_needs_reset(machine: Machine, capfd) -> None:
    driver = LegacyDriver(machine)
    driver.probe()
    driver.write(0x12, 1, ACKNOWLEDGE | DRIVER)
    driver.write(0x08, 4, 0xFFFFF)  # the last page below 4 GiB: no RAM there
    assert driver.read(0x12, 1) & DEVICE_NEEDS_RESET and machine.virtio[0].device.queues[0].queue is None
    assert "the descriptor table at 0xfffff000+0x1000 is not aligned RAM" in capfd.readouterr().err


def test_the_modern_interface_of_a_transitional_device_shares_its_isr(machine: Machine) -> None:
    modern, legacy = TransitionalDriver(machine), LegacyDriver(machine)
    modern.probe()
    legacy.probe()
    route_intx(modern)
    modern.initialize()
    assert modern.submit([(BUFFER, 32, DESC_F_WRITE)]) == (1, 32)
    assert machine.isa_bridge.driven == {11}
    assert legacy.read(0x13, 1) == 1  # one ISR for both interfaces: read and cleared through BAR 0
    assert machine.isa_bridge.driven == set() and machine.buses.mmio.read(modern.isr, 1) == 0
    assert legacy.read(0x12, 1) == 0xF and legacy.read(0x08, 4) == PFN  # the same device, seen from BAR 0
