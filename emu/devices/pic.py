"""The PC/AT interrupt controllers: two Intel 8259A PICs in cascade, plus the ELCR.

Intel 8259A datasheet (order no. 231468), "Functional description" and "Programming the
8259A". Each chip has eight interrupt request inputs IR0-7 and three 8-bit registers:
IRR (requests latched), ISR (requests being serviced) and IMR (masked inputs). The priority
resolver picks the highest-priority unmasked request in IRR; if it beats everything in ISR
the chip raises INT. The CPU answers with an INTA cycle: the chip moves the request from IRR
to ISR and puts `vector base + IR` on the bus. Software ends service with an EOI command,
clearing the ISR bit (or the chip does it itself in Automatic EOI mode).

On the PC/AT the master sits at ports 0x20/0x21 and feeds the CPU's INTR pin; the slave at
0xA0/0xA1 drives the master's IR2, so IRQ 8-15 take IRQ 2's slot in the master's priority
order (fixed priority, IRQ 0 highest: 0, 1, 8..15, 3..7). Firmware programs each chip with the
initialization sequence ICW1-ICW4 (vector base in ICW2), then uses OCW1 (the IMR, odd port),
OCW2 (EOI and rotation commands) and OCW3 (IRR/ISR read select, poll, special mask).

Trigger mode. An edge-triggered input latches a rising edge into IRR and keeps it until INTA,
so a device may pulse its line; a level-triggered input's IRR bit follows the wire. ISA
interrupts are edge-triggered; PCI interrupts are level-triggered and shareable, so PCI-era
chipsets add the Edge/Level Control Registers at 0x4D0/0x4D1 (Intel PIIX4 datasheet §4.1.19;
one bit per IRQ, 1 = level). IRQ 0, 1, 2, 8 and 13 are wired internally and always edge.
ICW1's LTIM bit still selects level mode for a whole chip.

Spurious interrupts (datasheet, "Interrupt sequence"): if the request is gone by the time of
INTA (a level line dropped, or software masked it), the chip answers IR7 without setting ISR
bit 7, so a handler must check ISR before sending EOI. A spurious request on the slave still
reaches the CPU through the master's IR2, so the master's ISR bit 2 is set and the vector is
the slave's IR7 (IRQ 15): the OS must EOI the master only.

Deviations: only 8086 mode (ICW4 uPM=1) is modelled; the cascade is fixed on IR2 whatever
ICW3 says; buffered mode (ICW4 BUF/M-S) only affects pins and is ignored. After each INTA the
cascade input is sampled again, so a slave that still requests (AEOI or nested) is seen anew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from .bus import PortIoBus

MASTER_BASE = 0x20
SLAVE_BASE = 0xA0
ELCR_BASE = 0x4D0
CASCADE_IR = 2

ICW1_IC4 = 0x01  # ICW4 will follow
ICW1_SNGL = 0x02  # single chip, no ICW3
ICW1_LTIM = 0x08  # level-triggered mode for every input
ICW1_INIT = 0x10  # marks ICW1 on the even port
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10  # special fully nested mode
OCW3_SELECT = 0x08  # marks OCW3 on the even port (OCW2 otherwise)
OCW3_RIS = 0x01  # read ISR (else IRR) when RR=1
OCW3_RR = 0x02
OCW3_POLL = 0x04
OCW3_SMM = 0x20  # special mask mode, when ESMM=1
OCW3_ESMM = 0x40


@dataclass
class I8259:
    """One 8259A, answering its two ports (offset 0 = A0 low, offset 1 = A0 high)."""

    is_master: bool
    elcr_mask: int  # ELCR bits this chip honours (the others are wired edge)
    on_output: Callable[[bool], None] | None = None  # called when INT changes

    irr: int = field(init=False)
    isr: int = field(init=False)
    imr: int = field(init=False)
    elcr: int = field(init=False)
    levels: int = field(init=False)  # what the IR wires carry now
    vector_base: int = field(init=False)  # ICW2 & 0xF8
    highest: int = field(init=False)  # IR with the highest priority (rotation moves it)
    init_step: int = field(init=False)  # 0 = operational; 2, 3, 4 = expecting that ICW
    needs_icw4: bool = field(init=False)
    single: bool = field(init=False)
    ltim: bool = field(init=False)
    auto_eoi: bool = field(init=False)
    rotate_on_aeoi: bool = field(init=False)
    special_fully_nested: bool = field(init=False)
    special_mask: bool = field(init=False)
    read_isr: bool = field(init=False)
    poll: bool = field(init=False)
    icw3: int = field(init=False)
    output: bool = field(init=False)  # the INT pin

    max_access_size: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.levels = 0
        self.output = False
        self.reset()

    def reset(self) -> None:
        """Power-on state (the chip is undefined until ICW1; this is what QEMU's reset leaves)."""
        self.irr = self.isr = self.imr = self.elcr = 0
        self.vector_base = self.highest = self.init_step = self.icw3 = 0
        self.needs_icw4 = self.single = self.ltim = False
        self.auto_eoi = self.rotate_on_aeoi = self.special_fully_nested = False
        self.special_mask = self.read_isr = self.poll = False
        self._update()

    # -- the wires ------------------------------------------------------------------------

    @property
    def level_mode(self) -> int:
        """Bit set per IR that is level-triggered."""
        return 0xFF if self.ltim else self.elcr

    def set_input(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        if level:
            if self.levels & bit:
                return
            self.levels |= bit
            self.irr |= bit  # a rising edge, or a level now high
        else:
            if not self.levels & bit:
                return
            self.levels &= ~bit
            if self.level_mode & bit:
                self.irr &= ~bit
        self._update()

    def _priority(self, mask: int) -> int:
        """0 (highest) to 7 of the best IR in `mask` under the current rotation; 8 if none."""
        h = self.highest
        rotated = ((mask >> h) | (mask << (8 - h))) & 0xFF  # bit p = IR (p + highest) & 7
        return (rotated & -rotated).bit_length() - 1 if rotated else 8

    def pending(self) -> int:
        """The IR the chip would signal now, or -1 (the priority resolver)."""
        requests = self.irr & ~self.imr
        if not requests:
            return -1
        p = self._priority(requests)
        in_service = self.isr
        if self.special_mask:
            in_service &= ~self.imr
        if self.special_fully_nested and self.is_master:
            in_service &= ~(1 << CASCADE_IR)
        if p < self._priority(in_service):
            return (p + self.highest) & 7
        return -1

    def _update(self) -> None:
        out = self.pending() >= 0
        if out != self.output:
            self.output = out
            if self.on_output is not None:
                self.on_output(out)

    def intack(self, ir: int) -> None:
        """The INTA cycle for `ir`: IRR -> ISR (or nothing in ISR, with AEOI)."""
        bit = 1 << ir
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.highest = (ir + 1) & 7
        else:
            self.isr |= bit
        if not self.level_mode & bit:
            self.irr &= ~bit  # an edge is consumed; a level stays requested while high
        self._update()

    # -- the ports ------------------------------------------------------------------------

    def io_read(self, offset: int, size: int) -> int:
        if self.poll:
            self.poll = False
            return self._poll_read()
        if offset == 0:
            return self.isr if self.read_isr else self.irr
        return self.imr

    def _poll_read(self) -> int:
        """OCW3 poll: the read acts as INTA; bit 7 = request present, bits 0-2 = its IR."""
        ir = self.pending()
        if ir < 0:
            return 0
        self.intack(ir)
        return 0x80 | ir

    def io_write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            if value & ICW1_INIT:
                self._icw1(value)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
        elif self.init_step == 2:  # ICW2
            self.vector_base = value & 0xF8
            self.init_step = 3 if not self.single else 4 if self.needs_icw4 else 0
        elif self.init_step == 3:  # ICW3: slave bitmap (master) or slave id (slave)
            self.icw3 = value
            self.init_step = 4 if self.needs_icw4 else 0
        elif self.init_step == 4:  # ICW4
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.special_fully_nested = bool(value & ICW4_SFNM)
            self.init_step = 0
        else:  # OCW1
            self.imr = value
        self._update()

    def _icw1(self, value: int) -> None:
        """Start initialization: IMR, ISR, rotation and special modes cleared; edge sense reset."""
        self.needs_icw4 = bool(value & ICW1_IC4)
        self.single = bool(value & ICW1_SNGL)
        self.ltim = bool(value & ICW1_LTIM)
        self.imr = self.isr = self.highest = 0
        # A high edge-triggered input must go low and high again to request.
        self.irr = self.levels & self.level_mode
        self.auto_eoi = self.rotate_on_aeoi = self.special_fully_nested = False
        self.special_mask = self.read_isr = self.poll = False
        self.init_step = 2

    def _ocw2(self, value: int) -> None:
        command, level = value >> 5, value & 7
        if command in (0b001, 0b101):  # non-specific EOI, without or with rotation
            p = self._priority(self.isr)
            if p < 8:
                ir = (p + self.highest) & 7
                self.isr &= ~(1 << ir)
                if command == 0b101:
                    self.highest = (ir + 1) & 7
        elif command in (0b011, 0b111):  # specific EOI, without or with rotation
            self.isr &= ~(1 << level)
            if command == 0b111:
                self.highest = (level + 1) & 7
        elif command == 0b110:  # set priority: `level` becomes the lowest
            self.highest = (level + 1) & 7
        elif command in (0b100, 0b000):  # set / clear rotate in automatic EOI mode
            self.rotate_on_aeoi = command == 0b100
        # 0b010: no operation

    def _ocw3(self, value: int) -> None:
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)
        if value & OCW3_POLL:
            self.poll = True

    def set_elcr(self, value: int) -> None:
        self.elcr = value & self.elcr_mask
        # A level-triggered input's request follows its wire from now on.
        self.irr = (self.irr & ~self.level_mode) | (self.levels & self.level_mode)
        self._update()


@dataclass
class PicLine:
    """The IrqLine for one IRQ (0-15) of the pair."""

    pic: Pic8259Pair
    irq: int

    def set_level(self, level: bool) -> None:
        if self.irq < 8:
            self.pic.master.set_input(self.irq, level)
        else:
            self.pic.slave.set_input(self.irq - 8, level)


@dataclass
class Elcr:
    """Edge/Level Control Registers at 0x4D0 (IRQ 0-7) and 0x4D1 (IRQ 8-15)."""

    pic: Pic8259Pair
    max_access_size: ClassVar[int] = 1

    def io_read(self, offset: int, size: int) -> int:
        return (self.pic.master if offset == 0 else self.pic.slave).elcr

    def io_write(self, offset: int, size: int, value: int) -> None:
        (self.pic.master if offset == 0 else self.pic.slave).set_elcr(value)


@dataclass
class Pic8259Pair:
    """The cascaded master/slave pair as the machine sees it: 16 IRQ lines and the INTR pin."""

    master: I8259 = field(init=False)
    slave: I8259 = field(init=False)
    elcr: Elcr = field(init=False)
    delivered: list[int] = field(default_factory=lambda: [0] * 16)  # per IRQ, at INTA
    spurious: int = 0  # INTA cycles answered with IR7 for want of a request
    _lines: list[PicLine] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.master = I8259(is_master=True, elcr_mask=0xF8)  # IRQ 0, 1, 2 always edge
        self.slave = I8259(is_master=False, elcr_mask=0xDE, on_output=self._cascade)  # IRQ 8, 13
        self.elcr = Elcr(self)
        self._lines = [PicLine(self, irq) for irq in range(16)]

    def register(self, bus: PortIoBus) -> None:
        """Claim the PC/AT ports: master 0x20-0x21, slave 0xA0-0xA1, ELCR 0x4D0-0x4D1."""
        bus.register(MASTER_BASE, 2, self.master, "pic1")
        bus.register(SLAVE_BASE, 2, self.slave, "pic2")
        bus.register(ELCR_BASE, 2, self.elcr, "elcr")

    def _cascade(self, level: bool) -> None:
        if not self.master.single:
            self.master.set_input(CASCADE_IR, level)

    def line(self, irq: int) -> PicLine:
        """The wire of IRQ `irq` (0-15), to hand to a device as its IrqLine."""
        if not 0 <= irq < 16:
            raise ValueError(f"IRQ {irq} is not 0-15")
        return self._lines[irq]

    def has_interrupt(self) -> bool:
        """The master's INT output, wired to the CPU's INTR pin."""
        return self.master.output

    def acknowledge(self) -> int:
        """The CPU's INTA cycle: the vector to deliver, with IRR -> ISR on the chips involved."""
        master, slave = self.master, self.slave
        ir = master.pending()
        if ir < 0:
            self.spurious += 1
            return master.vector_base + 7
        if ir == CASCADE_IR and not master.single:
            ir2 = slave.pending()
            if ir2 >= 0:
                slave.intack(ir2)
                self.delivered[8 + ir2] += 1
                vector = slave.vector_base + ir2
            else:
                self.spurious += 1
                vector = slave.vector_base + 7
            master.intack(ir)
            # Sample the cascade input again: the slave may still (or again) request.
            master.set_input(CASCADE_IR, False)
            master.set_input(CASCADE_IR, slave.output)
            return vector
        master.intack(ir)
        self.delivered[ir] += 1
        return master.vector_base + ir

    def reset(self) -> None:
        """System reset: both chips and the ELCR to their power-on state (wires keep their level)."""
        self.slave.reset()
        self.master.reset()
