"""The NS16550A UART: the PC's serial port (COM1 at 0x3F8, IRQ 4).

National Semiconductor PC16550D datasheet, "Registers" (table II) and "FIFO interrupt mode".
Eight registers, selected by the port offset and, for offsets 0-1, by LCR bit 7 (DLAB):

  0  RBR (read) / THR (write), or DLL with DLAB=1   receive buffer / transmit holding
  1  IER, or DLM with DLAB=1   interrupt enable: RX data (0), THR empty (1), line status (2),
                               modem status (3)
  2  IIR (read) / FCR (write)  pending interrupt, highest priority first: line status (0x6),
                               RX data (0x4) or character timeout (0xC), THR empty (0x2),
                               modem status (0x0); bit 0 = 1 when none; bits 7-6 = 11 when
                               FIFOs are on, which is how drivers tell a 16550A. FCR: FIFO
                               enable, clear RX/TX, RX trigger level (1, 4, 8, 14)
  3  LCR    word length, stop bits, parity, break, DLAB
  4  MCR    DTR, RTS, OUT1, OUT2, LOOP
  5  LSR    DR, OE, PE, FE, BI, THRE, TEMT, RX FIFO error
  6  MSR    DCTS, DDSR, TERI, DDCD (deltas, cleared on read), CTS, DSR, RI, DCD
  7  SCR    scratch

Loopback (MCR bit 4): the transmitter feeds the receiver instead of the line, and the modem
status inputs follow MCR (CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2) with their delta bits,
which is how Linux's 8250 driver proves a UART is there. On the PC, the chip's OUT2 pin
enables the tri-state buffer between INTR and the ISA IRQ line, so software must set MCR
bit 3 to get interrupts; in loopback the modem-control pins are forced inactive, so the IRQ
line is cut off then too.

Emulation: there is no line and no baud rate. A byte written to THR is on its way at once
(THRE and TEMT stay set): it goes to the output `sink`, and the THRE interrupt is raised
again right away, as a real chip does when its shift register takes the byte. A THRE
interrupt is also raised when IER bit 1 goes from 0 to 1 while THR is empty (the PC16550D does
this; Linux's UART_BUG_THRE probe checks it). `receive()` puts host input into the 16-byte RX
FIFO (1 byte when FIFOs are off); what does not fit sets OE, as an overrun does. Data below
the trigger level is reported at once as a character timeout (0xC) rather than after four
character times. Parity, framing and break errors never happen. The word length in LCR is
kept but bytes pass whole (as in QEMU), so a guest that never programs LCR (reset value: 5-bit
words) still prints.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from .interfaces import IrqLine

COM1_BASE, COM1_IRQ = 0x3F8, 4
COM2_BASE, COM2_IRQ = 0x2F8, 3
FIFO_SIZE = 16

# Register offsets
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR, MCR, LSR, MSR, SCR = 3, 4, 5, 6, 7

IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI, IIR_TIMEOUT = 0x01, 0x00, 0x02, 0x04, 0x06, 0x0C
IIR_FIFO_ENABLED = 0xC0
FCR_ENABLE_FIFO, FCR_CLEAR_RCVR, FCR_CLEAR_XMIT = 0x01, 0x02, 0x04
FCR_TRIGGER_LEVELS = (1, 4, 8, 14)
LCR_WLEN8, LCR_DLAB = 0x03, 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
LSR_DR, LSR_OE, LSR_PE, LSR_FE, LSR_BI, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 0x01, 0x02, 0x04, 0x08
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
MSR_DELTAS = 0x0F


class OutputSink(Protocol):
    """Where transmitted bytes go."""

    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...


@dataclass
class FdSink:
    """Buffered output to a file descriptor (stdout by default), flushed at each newline."""

    fd: int = 1
    limit: int = 4096  # flush a line this long even without a newline
    on_closed: Callable[[], None] | None = None  # the reader went away (EPIPE): the machine ends the run
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    closed: bool = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._buffer += data
        if b"\n" in data or len(self._buffer) >= self.limit:
            self.flush()

    def flush(self) -> None:
        while self._buffer and not self.closed:
            try:
                n = os.write(self.fd, self._buffer)
            except BlockingIOError:
                return  # keep the rest for the next flush
            except BrokenPipeError:  # `emu ... | head`: nobody reads the console any more
                self.closed = True
                self._buffer.clear()
                if self.on_closed is not None:
                    self.on_closed()
                return
            del self._buffer[:n]


@dataclass
class Uart16550:
    """A 16550A with its 8 registers at offsets 0-7; register it on the bus with length 8."""

    irq: IrqLine | None = None
    sink: OutputSink = field(default_factory=FdSink)

    rx: deque[int] = field(init=False)
    ier: int = field(init=False)
    lcr: int = field(init=False)
    mcr: int = field(init=False)
    lsr: int = field(init=False)  # DR, THRE and TEMT are derived; this holds the error bits
    msr: int = field(init=False)  # delta bits; the status bits are derived from MCR
    scr: int = field(init=False)
    divisor: int = field(init=False)
    fifo_enabled: bool = field(init=False)
    trigger: int = field(init=False)
    thr_interrupt: bool = field(init=False)  # THRE interrupt pending (until IIR read / THR write)
    transmitted: int = field(init=False)
    overruns: int = field(init=False)
    _irq_level: bool = field(init=False)

    max_access_size: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self._irq_level = False
        self.transmitted = self.overruns = 0
        self.reset()

    def reset(self) -> None:
        """The MR pin: registers to their datasheet reset values (table IV)."""
        self.rx = deque()
        self.ier = self.lcr = self.mcr = self.lsr = self.scr = self.divisor = 0
        self.fifo_enabled = False
        self.trigger = 1
        self.thr_interrupt = False
        self.msr = 0
        self._update_irq()

    # -- the host side ----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return FIFO_SIZE if self.fifo_enabled else 1

    def rx_space(self) -> int:
        """Bytes `receive()` can take without overrun (0 in loopback: the line is cut off)."""
        return 0 if self.mcr & MCR_LOOP else self.capacity - len(self.rx)

    def receive(self, data: bytes) -> int:
        """Bytes from the line into the RX FIFO; returns how many fit (the rest overrun)."""
        if self.mcr & MCR_LOOP:
            return 0
        taken = self._push(data)
        self._update_irq()
        return taken

    def flush(self) -> None:
        self.sink.flush()

    def _push(self, data: bytes) -> int:
        taken = min(len(data), self.capacity - len(self.rx))
        self.rx.extend(data[:taken])
        if taken < len(data):
            self.lsr |= LSR_OE
            self.overruns += len(data) - taken
        return taken

    # -- modem status -----------------------------------------------------------------------

    def _modem_inputs(self, mcr: int) -> int:
        """CTS, DSR, RI, DCD as the chip sees them with this MCR."""
        if mcr & MCR_LOOP:
            return (
                (MSR_CTS if mcr & MCR_RTS else 0)
                | (MSR_DSR if mcr & MCR_DTR else 0)
                | (MSR_RI if mcr & MCR_OUT1 else 0)
                | (MSR_DCD if mcr & MCR_OUT2 else 0)
            )
        return MSR_CTS | MSR_DSR | MSR_DCD  # a terminal is attached and ready

    def _write_mcr(self, value: int) -> None:
        old, new = self._modem_inputs(self.mcr), self._modem_inputs(value & 0x1F)
        changed = old ^ new
        self.msr |= (
            (MSR_DCTS if changed & MSR_CTS else 0)
            | (MSR_DDSR if changed & MSR_DSR else 0)
            | (MSR_TERI if old & MSR_RI and not new & MSR_RI else 0)
            | (MSR_DDCD if changed & MSR_DCD else 0)
        )
        self.mcr = value & 0x1F

    # -- interrupts -------------------------------------------------------------------------

    def _interrupt_id(self) -> int:
        """IIR bits 3-0: the highest-priority enabled condition, or IIR_NO_INT."""
        ier = self.ier
        if ier & IER_RLSI and self.lsr & LSR_ERRORS:
            return IIR_RLSI
        if ier & IER_RDI and self.rx:
            if not self.fifo_enabled or len(self.rx) >= self.trigger:
                return IIR_RDI
            return IIR_TIMEOUT
        if ier & IER_THRI and self.thr_interrupt:
            return IIR_THRI
        if ier & IER_MSI and self.msr & MSR_DELTAS:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq(self) -> None:
        gate = self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2
        level = gate and self._interrupt_id() != IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            if self.irq is not None:
                self.irq.set_level(level)

    # -- the registers ----------------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        if offset == RBR:
            if self.lcr & LCR_DLAB:
                return self.divisor & 0xFF
            value = self.rx.popleft() if self.rx else 0
        elif offset == IER:
            return self.divisor >> 8 if self.lcr & LCR_DLAB else self.ier
        elif offset == IIR:
            iid = self._interrupt_id()
            if iid == IIR_THRI:
                self.thr_interrupt = False  # reading IIR with THRE as the source clears it
            value = iid | (IIR_FIFO_ENABLED if self.fifo_enabled else 0)
        elif offset == LCR:
            return self.lcr
        elif offset == MCR:
            return self.mcr
        elif offset == LSR:
            value = self.lsr | LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)
            self.lsr &= ~LSR_ERRORS  # errors are cleared by reading LSR
        elif offset == MSR:
            value = self._modem_inputs(self.mcr) | self.msr
            self.msr = 0
        else:
            return self.scr
        self._update_irq()
        return value

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == THR:
            if self.lcr & LCR_DLAB:
                self.divisor = self.divisor & 0xFF00 | value
                return
            self._transmit(value)
        elif offset == IER:
            if self.lcr & LCR_DLAB:
                self.divisor = self.divisor & 0x00FF | value << 8
                return
            if value & IER_THRI and not self.ier & IER_THRI:
                self.thr_interrupt = True  # THR is always empty
            self.ier = value & 0x0F
        elif offset == FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self.lcr = value
            return
        elif offset == MCR:
            self._write_mcr(value)
        elif offset == SCR:
            self.scr = value
            return
        else:
            return  # LSR and MSR are read-only here (writing them is a factory test)
        self._update_irq()

    def _transmit(self, value: int) -> None:
        self.transmitted += 1
        if self.mcr & MCR_LOOP:
            self._push(bytes((value,)))
        else:
            self.sink.write(bytes((value,)))
        self.thr_interrupt = True  # the shift register took the byte: THR is empty again

    def _write_fcr(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE_FIFO)
        if enable != self.fifo_enabled:
            self.rx.clear()  # changing FCR0 clears both FIFOs
        self.fifo_enabled = enable
        if not enable:
            return  # the other bits are only programmed together with FCR0=1
        if value & FCR_CLEAR_RCVR:
            self.rx.clear()
        self.trigger = FCR_TRIGGER_LEVELS[value >> 6]
