"""The 16550A driven through its ports as Linux's 8250 driver and firmware drive it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from emu.devices.bus import PortIoBus
from emu.devices.serial import COM1_BASE, FdSink, Uart16550

# Register offsets and bits with the names of include/uapi/linux/serial_reg.h
UART_RX = UART_TX = 0
UART_IER, UART_IIR, UART_FCR, UART_EFR, UART_LCR, UART_MCR, UART_LSR, UART_MSR, UART_SCR = 1, 2, 2, 2, 3, 4, 5, 6, 7
UART_IER_RDI, UART_IER_THRI, UART_IER_RLSI, UART_IER_MSI = 0x01, 0x02, 0x04, 0x08
UART_IIR_NO_INT, UART_IIR_ID = 0x01, 0x0E
UART_FCR_ENABLE_FIFO, UART_FCR_CLEAR_RCVR, UART_FCR_CLEAR_XMIT, UART_FCR7_64BYTE = 0x01, 0x02, 0x04, 0x20
UART_LCR_CONF_MODE_A, UART_LCR_CONF_MODE_B, UART_LCR_WLEN8 = 0x80, 0xBF, 0x03
UART_MCR_DTR, UART_MCR_RTS, UART_MCR_OUT2, UART_MCR_LOOP = 0x01, 0x02, 0x08, 0x10
UART_LSR_DR, UART_LSR_OE, UART_LSR_THRE, UART_LSR_TEMT = 0x01, 0x02, 0x20, 0x40
UART_MSR_CTS, UART_MSR_DCD = 0x10, 0x80


@dataclass
class Capture:
    data: bytearray = field(default_factory=bytearray)
    flushes: int = 0

    def write(self, data: bytes) -> None:
        self.data += data

    def flush(self) -> None:
        self.flushes += 1


@dataclass
class Port:
    """serial_in/serial_out on COM1 through the bus."""

    bus: PortIoBus

    def inp(self, offset: int) -> int:
        return self.bus.read(COM1_BASE + offset, 1)

    def out(self, offset: int, value: int) -> None:
        self.bus.write(COM1_BASE + offset, 1, value)


@pytest.fixture
def sink() -> Capture:
    return Capture()


@pytest.fixture
def uart(wire, sink) -> Uart16550:
    return Uart16550(wire, sink)


@pytest.fixture
def port(uart) -> Port:
    bus = PortIoBus()
    bus.register(COM1_BASE, 8, uart, "com1")
    return Port(bus)


def linux_autoconfig(p: Port) -> str:
    """drivers/tty/serial/8250/8250_port.c autoconfig() and autoconfig_16550a(), in order."""
    scratch = p.inp(UART_IER)  # IER test
    p.out(UART_IER, 0)
    scratch2 = p.inp(UART_IER) & 0x0F
    p.out(UART_IER, 0x0F)
    scratch3 = p.inp(UART_IER) & 0x0F
    p.out(UART_IER, scratch)
    if scratch2 != 0 or scratch3 != 0x0F:
        return "none: IER test"
    save_mcr, save_lcr = p.inp(UART_MCR), p.inp(UART_LCR)
    p.out(UART_MCR, UART_MCR_LOOP | 0x0A)  # loopback test
    status1 = p.inp(UART_MSR) & 0xF0
    p.out(UART_MCR, save_mcr)
    if status1 != (UART_MSR_DCD | UART_MSR_CTS):
        return f"none: LOOP test ({status1:#x})"
    p.out(UART_LCR, UART_LCR_CONF_MODE_B)
    p.out(UART_EFR, 0)
    p.out(UART_LCR, 0)
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    kind = p.inp(UART_IIR) >> 6
    if kind != 3:
        return {0: "8250/16450", 1: "unknown", 2: "16550"}[kind]
    # autoconfig_16550a()
    p.out(UART_LCR, UART_LCR_CONF_MODE_A)
    if p.inp(UART_EFR) == 0:
        return "16650 (EFRv1)"
    p.out(UART_LCR, UART_LCR_CONF_MODE_B)
    if p.inp(UART_EFR) == 0:
        return "16650V2 (EFRv2)"
    p.out(UART_LCR, 0)  # National SuperIO test: MCR LOOP mirrored in EXCR1?
    status1 = p.inp(UART_MCR)
    p.out(UART_LCR, 0xE0)
    status2 = p.inp(0x02)
    if not ((status2 ^ status1) & UART_MCR_LOOP):
        p.out(UART_LCR, 0)
        p.out(UART_MCR, status1 ^ UART_MCR_LOOP)
        p.out(UART_LCR, 0xE0)
        status2 = p.inp(0x02)
        p.out(UART_LCR, 0)
        p.out(UART_MCR, status1)
        if (status2 ^ status1) & UART_MCR_LOOP:
            return "NS16550A SuperIO"
    p.out(UART_LCR, 0)  # TI16750: IIR bit 5 with the 64-byte FIFO bit, under DLAB
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE)
    status1 = p.inp(UART_IIR) & 0xE0
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    p.out(UART_LCR, UART_LCR_CONF_MODE_A)
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR7_64BYTE)
    status2 = p.inp(UART_IIR) & 0xE0
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    p.out(UART_LCR, 0)
    if status1 == 0xC0 and status2 == 0xE0:
        return "16750"
    iersave = p.inp(UART_IER)  # XScale: IER bit 6 (UUE) writable
    p.out(UART_IER, iersave & ~0x40)
    if not p.inp(UART_IER) & 0x40:
        p.out(UART_IER, iersave | 0x40)
        if p.inp(UART_IER) & 0x40:
            return "XScale"
    p.out(UART_IER, iersave)
    if size_fifo(p) == 64:
        return "U6_16550A"
    p.out(UART_LCR, save_lcr)
    return "16550A"


def size_fifo(p: Port) -> int:
    """size_fifo(): fill the RX FIFO through loopback at 115200 8N1 and count what stuck."""
    old_lcr = p.inp(UART_LCR)
    p.out(UART_LCR, 0)
    old_fcr = p.inp(UART_FCR)
    old_mcr = p.inp(UART_MCR)
    p.out(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT)
    p.out(UART_MCR, UART_MCR_LOOP)
    p.out(UART_LCR, UART_LCR_CONF_MODE_A)
    old_dl = p.inp(0) | p.inp(1) << 8
    p.out(0, 1)
    p.out(1, 0)
    p.out(UART_LCR, UART_LCR_WLEN8)
    for count in range(256):
        p.out(UART_TX, count)
    count = 0
    while p.inp(UART_LSR) & UART_LSR_DR and count < 256:
        p.inp(UART_RX)
        count += 1
    p.out(UART_FCR, old_fcr)
    p.out(UART_MCR, old_mcr)
    p.out(UART_LCR, UART_LCR_CONF_MODE_A)
    p.out(0, old_dl & 0xFF)
    p.out(1, old_dl >> 8)
    p.out(UART_LCR, old_lcr)
    return count


def test_linux_autoconfig_detects_a_16550a(port, sink) -> None:
    assert linux_autoconfig(port) == "16550A"
    assert sink.data == b""  # everything sent in loopback stayed inside the chip


def test_size_fifo_counts_16_bytes(port, uart) -> None:
    assert size_fifo(port) == 16
    assert uart.overruns == 256 - 16


def test_scratch_register(port) -> None:
    for value in (0x55, 0xAA, 0x00):
        port.out(UART_SCR, value)
        assert port.inp(UART_SCR) == value


def test_fifo_bits_in_iir_follow_fcr(port) -> None:
    assert port.inp(UART_IIR) == UART_IIR_NO_INT  # 16450 mode after reset
    port.out(UART_FCR, 0xC7)
    assert port.inp(UART_IIR) == 0xC1
    port.out(UART_FCR, 0)
    assert port.inp(UART_IIR) == 0x01


def test_divisor_latch_is_behind_dlab(port) -> None:
    port.out(UART_IER, 0x05)
    port.out(UART_LCR, 0x80 | UART_LCR_WLEN8)
    port.out(0, 0x01)  # 115200 baud
    port.out(1, 0x00)
    assert (port.inp(0), port.inp(1)) == (0x01, 0x00)
    port.out(UART_LCR, UART_LCR_WLEN8)
    assert port.inp(UART_IER) == 0x05
    assert port.inp(UART_LCR) == UART_LCR_WLEN8


def test_transmit_goes_to_the_sink(port, sink, uart) -> None:
    port.out(UART_LCR, UART_LCR_WLEN8)
    for b in b"Linux version 6.1\n":
        assert port.inp(UART_LSR) & UART_LSR_THRE  # the driver's wait_for_xmitr
        port.out(UART_TX, b)
    assert bytes(sink.data) == b"Linux version 6.1\n"
    uart.flush()
    assert sink.flushes == 1


def test_loopback_returns_tx_to_rx_and_mirrors_mcr_in_msr(port, sink) -> None:
    port.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    port.out(UART_MCR, UART_MCR_LOOP)
    port.out(UART_TX, 0x41)
    port.out(UART_TX, 0x42)
    assert port.inp(UART_LSR) & UART_LSR_DR
    assert (port.inp(UART_RX), port.inp(UART_RX)) == (0x41, 0x42)
    assert not port.inp(UART_LSR) & UART_LSR_DR
    assert sink.data == b""
    port.inp(UART_MSR)  # clear deltas
    port.out(UART_MCR, UART_MCR_LOOP | UART_MCR_DTR | 0x04)  # DTR -> DSR, OUT1 -> RI
    assert port.inp(UART_MSR) == 0x20 | 0x40 | 0x02  # DSR, RI, and DDSR
    port.out(UART_MCR, UART_MCR_LOOP)
    assert port.inp(UART_MSR) == 0x02 | 0x04  # DDSR and TERI (RI went away)


def test_modem_lines_are_asserted_outside_loopback(port) -> None:
    assert port.inp(UART_MSR) & 0xF0 == 0xB0  # DCD, DSR, CTS: a terminal is attached


def test_rx_fifo_overrun_and_rx_space(port, uart) -> None:
    port.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    assert uart.rx_space() == 16
    assert uart.receive(bytes(range(20))) == 16
    assert uart.rx_space() == 0
    assert port.inp(UART_LSR) & (UART_LSR_DR | UART_LSR_OE) == UART_LSR_DR | UART_LSR_OE
    assert not port.inp(UART_LSR) & UART_LSR_OE  # cleared by reading LSR
    assert [port.inp(UART_RX) for _ in range(16)] == list(range(16))


def test_without_fifos_the_receiver_holds_one_byte(port, uart) -> None:
    assert uart.receive(b"xy") == 1
    assert port.inp(UART_LSR) & UART_LSR_OE
    assert port.inp(UART_RX) == ord("x")


def test_fcr_clears_the_rx_fifo(port, uart) -> None:
    port.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    uart.receive(b"abc")
    port.out(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_CLEAR_RCVR)
    assert not port.inp(UART_LSR) & UART_LSR_DR


def test_rx_trigger_level_and_timeout_ids(port, uart, wire) -> None:
    port.out(UART_MCR, UART_MCR_OUT2)
    port.out(UART_FCR, 0x81)  # FIFO on, trigger at 8
    port.out(UART_IER, UART_IER_RDI)
    uart.receive(b"abc")
    assert port.inp(UART_IIR) == 0xCC  # below the trigger: character timeout
    assert wire.level
    uart.receive(b"defgh")
    assert port.inp(UART_IIR) == 0xC4  # at the trigger level: RX data available
    while port.inp(UART_LSR) & UART_LSR_DR:
        port.inp(UART_RX)
    assert port.inp(UART_IIR) == 0xC1
    assert not wire.level


def test_iir_reports_sources_in_priority_order(port, uart, wire) -> None:
    port.out(UART_MCR, UART_MCR_OUT2)
    port.out(UART_FCR, UART_FCR_ENABLE_FIFO)
    uart.receive(bytes(17))  # data, and an overrun
    port.out(UART_MCR, UART_MCR_OUT2 | UART_MCR_LOOP)  # modem inputs change: delta bits
    port.out(UART_MCR, UART_MCR_OUT2)
    port.out(UART_IER, 0x0F)
    ids = []
    while (iir := port.inp(UART_IIR)) & UART_IIR_NO_INT == 0:
        ident = iir & UART_IIR_ID
        ids.append(ident)
        if ident == 0x06:
            port.inp(UART_LSR)
        elif ident in (0x04, 0x0C):
            while port.inp(UART_LSR) & UART_LSR_DR:
                port.inp(UART_RX)
        elif ident == 0x00:
            port.inp(UART_MSR)
        assert len(ids) < 10
    assert ids == [0x06, 0x04, 0x02, 0x00]  # line status, RX data, THR empty (the IIR read clears it), modem
    assert not wire.level


def test_thre_interrupt_on_enable_and_after_each_write(port, wire) -> None:
    port.out(UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2)  # MCR = 0x0B
    port.out(UART_IER, UART_IER_THRI)
    assert wire.level  # THR is empty: interrupt at once
    assert port.inp(UART_IIR) & 0x0F == 0x02
    assert not wire.level  # reading IIR cleared it
    port.out(UART_TX, ord("A"))
    assert wire.level and wire.rises == 2  # the byte left: THR empty again
    port.out(UART_IER, UART_IER_THRI)  # no 0 -> 1 transition: nothing new
    assert port.inp(UART_IIR) & 0x0F == 0x02
    port.out(UART_IER, UART_IER_THRI)
    assert port.inp(UART_IIR) == UART_IIR_NO_INT


def test_linux_startup_thre_probes(port) -> None:
    """serial8250_do_startup(): the UART_BUG_TXEN and UART_BUG_THRE tests must both pass."""
    port.out(UART_LCR, UART_LCR_WLEN8)
    port.out(UART_MCR, UART_MCR_OUT2 | UART_MCR_RTS | UART_MCR_DTR)
    port.out(UART_IER, UART_IER_THRI)
    lsr, iir = port.inp(UART_LSR), port.inp(UART_IIR)
    port.out(UART_IER, 0)
    assert not (lsr & UART_LSR_TEMT and iir & UART_IIR_NO_INT)  # else UART_BUG_TXEN
    port.out(UART_IER, UART_IER_THRI)
    iir1 = port.inp(UART_IIR)
    port.out(UART_IER, 0)
    port.out(UART_IER, UART_IER_THRI)
    iir = port.inp(UART_IIR)
    port.out(UART_IER, 0)
    assert not (not iir1 & UART_IIR_NO_INT and iir & UART_IIR_NO_INT)  # else UART_BUG_THRE


def test_out2_gates_the_irq_line(port, uart, wire) -> None:
    port.out(UART_IER, UART_IER_RDI)
    uart.receive(b"x")
    assert port.inp(UART_IIR) & UART_IIR_NO_INT == 0
    assert not wire.level  # OUT2 low: the PC's IRQ buffer is off
    port.out(UART_MCR, UART_MCR_OUT2)
    assert wire.level
    port.out(UART_MCR, UART_MCR_OUT2 | UART_MCR_LOOP)
    assert not wire.level  # loopback forces the OUT2 pin inactive
    assert uart.rx_space() == 0 and uart.receive(b"y") == 0  # and cuts the line off


def test_reset_returns_registers_to_datasheet_values(port, uart) -> None:
    port.out(UART_IER, 0x0F)
    port.out(UART_LCR, 0x1B)
    port.out(UART_MCR, 0x1F)
    port.out(UART_FCR, 0xC7)
    uart.reset()
    assert [port.inp(r) for r in (UART_IER, UART_IIR, UART_LCR, UART_MCR, UART_LSR)] == [0, 0x01, 0, 0, 0x60]


def test_fd_sink_flushes_at_newline() -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        sink = FdSink(w)
        sink.write(b"abc")
        with pytest.raises(BlockingIOError):
            os.read(r, 100)
        sink.write(b"d\n")
        assert os.read(r, 100) == b"abcd\n"
        sink.write(b"tail")
        sink.flush()
        assert os.read(r, 100) == b"tail"
    finally:
        os.close(r)
        os.close(w)
