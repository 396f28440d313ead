"""`info NAME`: the machine's inside, in the layout of QEMU's HMP where QEMU has the command.

Each command reads one layer of the machine, and together they follow an interrupt or an
access from the device to the guest and back:

  info registers   the vCPU (QEMU's x86_cpu_dump_state: 64-bit layout in long mode, else 32-bit)
  info cpus        the vCPUs and their host threads (QEMU: "* CPU #0: thread_id=...")
  info mem         what the guest's page tables map, merged into ranges with their rights
  info tlb         every page the guest's page tables map, leaf entry bits as QEMU prints them;
                   on tcg also the shadow table: the translations emu cached (emu.mmu.shadow)
  info pic         the 8259 pair and the I/O APIC's redirection table
  info lapic       the local APIC's registers (QEMU's hmp_info_local_apic)
  info irq         interrupts delivered per input, by chip (the host's view of /proc/interrupts)
  info pci         each PCI function: IDs, class, IRQ, BARs (QEMU's `info pci`, `lspci -v`'s facts)
  info virtio      each virtio device, its status and each queue's rings and indexes
  info mtree       the guest-physical and port address spaces: RAM, ROM, MMIO, ports
  info stats       the --stats table at this moment (`info stats json`: the counters as JSON)

They run on the vCPU thread between two runs, with the device lock (emu.monitor.hmp), so what
they show is one consistent moment. They read and never change: no A/D bit set by a walk, no
device register read that has side effects.

Sources: QEMU 7.2 target/i386/cpu-dump.c (x86_cpu_dump_state, x86_cpu_dump_local_apic_state),
target/i386/monitor.c (tlb_info_64, mem_info_64), hw/intc/i8259_common.c and
hw/intc/ioapic_common.c (pic_print_info, ioapic_print_redtbl), hw/pci/pci-hmp-cmds.c
(hmp_info_pci), softmmu/memory.c (mtree_info); Intel SDM vol. 3A §4 (paging), §10 (APIC).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

from ..accel import EFER_LMA, CpuState, Segment
from ..devices.pci.config import BarKind
from ..devices.virtio.device import VirtioDevice
from ..mmu.dump import merged_ranges, page_mappings
from ..mmu.walk import PTE_A, PTE_D, PTE_G, PTE_PS, PTE_RW, PTE_US, PTE_XD
from .hmp import Command, MonitorError, UsageError

if TYPE_CHECKING:
    from ..machine import Machine
    from .hmp import Monitor

PCD, PWT = 1 << 4, 1 << 3


# --- the CPU ---------------------------------------------------------------------------------------
def _flags(rflags: int) -> str:
    bits = ((10, "D"), (11, "O"), (7, "S"), (6, "Z"), (4, "A"), (2, "P"), (0, "C"))
    return "[" + "".join(c if rflags >> b & 1 else "-" for b, c in bits) + "]"


def _segment_kind(seg: Segment, long_mode: bool) -> str:
    """QEMU's description of a descriptor: DPL, kind and rights."""
    if not seg.present:
        return ""
    text = f"DPL={seg.dpl} "
    if seg.s:
        if seg.type & 8:
            text += ("CS64" if seg.l and long_mode else "CS32" if seg.db else "CS16") + " ["
            text += ("C" if seg.type & 4 else "-") + ("R" if seg.type & 2 else "-")
        else:
            text += ("DS  " if seg.db else "DS16") + " ["
            text += ("E" if seg.type & 4 else "-") + ("W" if seg.type & 2 else "-")
        return text + ("A" if seg.type & 1 else "-") + "]"
    names = {2: "LDT", 9: "TSS64-avl" if long_mode else "TSS32-avl", 11: "TSS64-busy" if long_mode else "TSS32-busy",
             0xC: "CallGate64" if long_mode else "CallGate32", 0xE: "IntGate64" if long_mode else "IntGate32",
             0xF: "TrapGate64" if long_mode else "TrapGate32", 1: "TSS16-avl", 3: "TSS16-busy"}  # fmt: skip
    return text + names.get(seg.type, f"type {seg.type:#x}")


def format_registers(state: CpuState, halted: bool = False) -> str:
    long_mode = bool(state.efer & EFER_LMA)
    s = state
    lines = []
    if long_mode:
        regs = [("RAX", s.rax), ("RBX", s.rbx), ("RCX", s.rcx), ("RDX", s.rdx), ("RSI", s.rsi), ("RDI", s.rdi),
                ("RBP", s.rbp), ("RSP", s.rsp), ("R8", s.r8), ("R9", s.r9), ("R10", s.r10), ("R11", s.r11),
                ("R12", s.r12), ("R13", s.r13), ("R14", s.r14), ("R15", s.r15)]  # fmt: skip
        for i in range(0, 16, 4):
            lines.append(" ".join(f"{name:<3}={value:016x}" for name, value in regs[i : i + 4]))
        lines.append(f"RIP={s.rip:016x} RFL={s.rflags:08x} {_flags(s.rflags)} CPL={s.cpl} II=0 A20=1 SMM=0 "
                     f"HLT={int(halted)}")  # fmt: skip
        width = 16
    else:
        regs = [("EAX", s.rax), ("EBX", s.rbx), ("ECX", s.rcx), ("EDX", s.rdx), ("ESI", s.rsi), ("EDI", s.rdi),
                ("EBP", s.rbp), ("ESP", s.rsp)]  # fmt: skip
        for i in range(0, 8, 4):
            lines.append(" ".join(f"{name}={value & 0xFFFFFFFF:08x}" for name, value in regs[i : i + 4]))
        lines.append(f"EIP={s.rip & 0xFFFFFFFF:08x} EFL={s.rflags:08x} {_flags(s.rflags)} CPL={s.cpl} II=0 A20=1 "
                     f"SMM=0 HLT={int(halted)}")  # fmt: skip
        width = 8
    for name in ("es", "cs", "ss", "ds", "fs", "gs", "ldt", "tr"):
        seg: Segment = getattr(s, name)
        label = name.upper() if name != "ldt" else "LDT"
        base = seg.base if long_mode else seg.base & 0xFFFFFFFF
        lines.append(f"{label:<3}={seg.selector:04x} {base:0{width}x} {seg.limit & 0xFFFFFFFF:08x} "
                     f"{seg.attributes:08x} {_segment_kind(seg, long_mode)}".rstrip())  # fmt: skip
    for name in ("gdt", "idt"):
        table = getattr(s, name)
        lines.append(f"{name.upper()}=     {table.base:0{width}x} {table.limit:08x}")
    lines.append(f"CR0={s.cr0:08x} CR2={s.cr2:0{width}x} CR3={s.cr3:0{width}x} CR4={s.cr4:08x}")
    lines.append(f"EFER={s.efer:016x}")
    return "\n".join(lines) + "\n"


def _info_registers(mon: Monitor, args: list[str]) -> str:
    vcpu = mon.machine.vcpu
    return format_registers(vcpu.get_state(msrs=False))


def _info_cpus(mon: Monitor, args: list[str]) -> str:
    machine = mon.machine
    state = machine.vcpu.get_state(msrs=False)
    thread = machine.vcpu_tid or threading.get_native_id()
    status = machine.control.state.value if machine.control.stopped else ("halted" if machine.halted else "running")
    return f"* CPU #0: pc=0x{state.rip:016x} ({status}) thread_id={thread}\n"


# --- paging ------------------------------------------------------------------------------------------
def _mappings(machine: Machine):
    s = machine.vcpu.get_state(msrs=False)
    return page_mappings(machine.memory.page_walker_view(), s.cr0, s.cr3, s.cr4, s.efer), s


def _info_mem(mon: Monitor, args: list[str]) -> str:
    mappings, state = _mappings(mon.machine)
    ranges = merged_ranges(mappings)
    if not state.cr0 & 0x8000_0000:
        return "PG disabled\n"
    return "".join(f"{r.start:016x}-{r.end:016x} {r.end - r.start:016x} {'u' if r.user else '-'}r"
                   f"{'w' if r.writable else '-'}\n" for r in ranges)  # fmt: skip


def _pte_flags(entry: int) -> str:
    bits = ((PTE_XD, "X"), (PTE_G, "G"), (PTE_PS, "P"), (PTE_D, "D"), (PTE_A, "A"), (PCD, "C"), (PWT, "T"),
            (PTE_US, "U"), (PTE_RW, "W"))  # fmt: skip
    return "".join(c if entry & b else "-" for b, c in bits)


def _info_tlb(mon: Monitor, args: list[str]) -> str:
    """QEMU's `info tlb` (the guest's page tables, one line per page); `info tlb shadow`: emu's
    shadow table on tcg, each cached translation checked against the guest's tables now."""
    machine = mon.machine
    if args and args[0] == "shadow":
        return _shadow_view(machine)
    if args:
        raise UsageError("info tlb: [shadow]")
    mappings, state = _mappings(machine)
    if not state.cr0 & 0x8000_0000:
        return "PG disabled\n"
    return "".join(f"{m.linear:016x}: {m.physical:016x} {_pte_flags(m.entry)}\n" for m in mappings)


def _shadow_view(machine: Machine) -> str:
    softmmu = getattr(machine.vcpu, "softmmu", None)
    if softmmu is None:
        if machine.accel.name == "kvm":  # the second stage is KVM's: say which it is
            from ..stats import _kvm_mmu_line

            report = machine.accel.mmu_report() or {}
            line = _kvm_mmu_line(report) if "second_stage" in report else "mmu: KVM's (EPT/NPT or its shadow tables)"
            return (f"{line}\nemu keeps no shadow table on kvm: guest-physical to host translations are KVM's "
                    f"EPT/NPT tables (or KVM's own shadow pages); info tlb shows the guest's own tables\n")  # fmt: skip
        raise MonitorError("--mmu unicorn: Unicorn's walker fills its TLB; emu keeps no shadow table")
    softmmu._absorb()  # the C front's walks, into the table
    state = machine.vcpu.get_state(msrs=False)
    cr3 = state.cr3 & ~0xFFF if state.efer & EFER_LMA else state.cr3
    entries = softmmu.shadow.entries
    here = sorted((page, user, e) for (c3, page, user), e in entries.items() if (c3 & ~0xFFF) == (cr3 & ~0xFFF))
    guest = {m.linear: m for m in _mappings(machine)[0]}
    lines = [(f"shadow table: {len(entries)} translations cached, {len(here)} for CR3={state.cr3:#x} "
              "(linear -> physical, rights granted to Unicorn's TLB, privilege, guest page tables now)")]
    for page, user, entry in here:
        now = _guest_translation(guest, page)
        check = "ok" if now == entry.physical_page else "stale" if now is not None else "unmapped now"
        lines.append(f"{page:016x}: {entry.physical_page:016x} {'W' if entry.writable else '-'}"
                     f"{'X' if entry.executable else '-'} {'user' if user else 'sup '} {check}")  # fmt: skip
    return "\n".join(lines) + "\n"


def _guest_translation(guest: dict, page: int) -> int | None:
    for size in (4096, 2 << 20, 4 << 20, 1 << 30):
        m = guest.get(page & ~(size - 1))
        if m is not None and m.size == size:
            return m.physical + (page & (size - 1))
    return None


# --- interrupt controllers ---------------------------------------------------------------------------
def _info_pic(mon: Monitor, args: list[str]) -> str:
    machine = mon.machine
    if machine.irqchip is not None:
        raise MonitorError("--irqchip kernel: the PIC and I/O APIC are KVM's (emu cannot show them)")
    lines = []
    for name, chip in (("pic0", machine.pic.master), ("pic1", machine.pic.slave)):
        lines.append(f"{name}: irr={chip.irr:02x} imr={chip.imr:02x} isr={chip.isr:02x} hprio={chip.highest} "
                     f"irq_base={chip.vector_base:02x} rr_sel={int(chip.read_isr)} elcr={chip.elcr:02x} "
                     f"fnm={int(chip.special_fully_nested)}")  # fmt: skip
    io = machine.ioapic
    if io is not None:
        lines.append(f"ioapic0: ver=0x20 id=0x{io.id:02x} sel=0x{io.ioregsel:02x} (redir[{(io.ioregsel - 0x10) // 2}])"
                     if io.ioregsel >= 0x10 else f"ioapic0: ver=0x20 id=0x{io.id:02x} sel=0x{io.ioregsel:02x}")  # fmt: skip
        for pin, entry in enumerate(io.entries):
            lines.append(f"  pin {pin:<2} 0x{entry:016x} dest={entry >> 56} vec={entry & 0xFF:<3} "
                         f"{'active-lo' if entry >> 13 & 1 else 'active-hi'} {'level' if entry >> 15 & 1 else 'edge '} "
                         f"{'masked' if entry >> 16 & 1 else '      '} {_delivery(entry >> 8 & 7)} "
                         f"{'logical' if entry >> 11 & 1 else 'physical'}"
                         f"{' (IRR)' if entry >> 14 & 1 else ''}")  # fmt: skip
        lines.append(f"  IRR {_bits(io.levels)}")
    return "\n".join(lines) + "\n"


def _delivery(mode: int) -> str:
    return ("fixed", "lowest-pri", "SMI", "...", "NMI", "INIT", "...", "ExtINT")[mode]


def _bits(mask: int) -> str:
    return " ".join(str(i) for i in range(mask.bit_length()) if mask >> i & 1) or "(none)"


def _info_lapic(mon: Monitor, args: list[str]) -> str:
    machine = mon.machine
    apic = machine.lapic
    if apic is None:
        raise MonitorError("--irqchip kernel: the local APIC is KVM's (emu cannot show it)")
    from ..devices.lapic import LVT_NAMES, LVT_OFFSETS

    labels = {"timer": "LVTT", "thermal": "LVTTHMR", "perf": "LVTPC", "LINT0": "LVT0", "LINT1": "LVT1",
              "error": "LVTERR"}  # fmt: skip
    lines = ["dumping local APIC state for CPU 0", ""]
    for offset, name in zip(LVT_OFFSETS, LVT_NAMES):
        value = apic.lvt[offset]
        mode = ("Fixed", "LowPri", "SMI", "...", "NMI", "INIT", "...", "ExtINT")[value >> 8 & 7] if name != "timer" else "Fixed"
        extra = ("periodic" if value >> 17 & 1 else "one-shot") if name == "timer" else ""
        lines.append(f"{labels[name]}\t 0x{value:08x} {'active-lo' if value >> 13 & 1 else 'active-hi'} "
                     f"{'level' if value >> 15 & 1 else 'edge '} {'masked' if value >> 16 & 1 else '      '} "
                     f"{extra:<12} {mode} (vec {value & 0xFF})")  # fmt: skip
    divide = apic.divide
    shift = ((divide & 3) | ((divide >> 1) & 4)) + 1 & 7  # SDM §10.5.4: 0b111 divides by 1
    lines.append(f"Timer\t DCR=0x{divide:x} (divide by {1 << shift}) initial_count = {apic.initial_count} "
                 f"current_count = {apic.current_count()}")  # fmt: skip
    lines.append(f"SPIV\t 0x{apic.svr:08x} APIC {'enabled' if apic.svr & 0x100 else 'disabled'}, "
                 f"focus={'off' if apic.svr & 0x200 else 'on'}, spurious vec {apic.svr & 0xFF}")  # fmt: skip
    lines.append(f"ICR\t 0x{apic.icr_low:08x}")
    lines.append(f"ICR2\t 0x{apic.icr_high:08x} cpu {apic.icr_high >> 24}")
    lines.append(f"ESR\t 0x{apic.esr:08x}")
    lines.append(f"ISR\t {_bits(apic.isr)}")
    lines.append(f"IRR\t {_bits(apic.irr)}")
    lines.append("")
    lines.append(f"APR 0x{apic.apr:02x} TPR 0x{apic.tpr:02x} DFR 0x{apic.dfr >> 28:02x} LDR 0x{apic.ldr >> 24:02x} "
                 f"PPR 0x{apic.ppr:02x}")  # fmt: skip
    return "\n".join(lines) + "\n"


# ISA IRQ users of this PC (emu.machine), named as Linux names them in /proc/interrupts
ISA_USERS = {0: "timer (pit)", 1: "", 4: "ttyS0 (com1)", 8: "rtc0 (cmos)", 9: "acpi (sci)", 14: "ata_piix (ide0)"}


def _info_irq(mon: Monitor, args: list[str]) -> str:
    """Per input, how many interrupts each chip delivered: what the guest's /proc/interrupts
    counts from its side (its count is at most emu's: emu counts a delivery when it sends it)."""
    machine = mon.machine
    if machine.irqchip is not None:
        c = machine.irqchip.counters
        return (f"IRQ statistics are KVM's (--irqchip kernel); emu raised {c.irq_line_ioctls} KVM_IRQ_LINE "
                f"and {c.irqfd_writes} irqfd writes\n")  # fmt: skip
    users = dict(ISA_USERS)
    for slot, function in sorted(machine.pci.functions.items()):
        irq = pci_irq(machine, slot[0], function)
        if irq is not None:
            users[irq] = ", ".join(filter(None, [users.get(irq, ""), f"pci 00:{slot[0]:02x}.{slot[1]}"]))
    for i, transport in enumerate(machine.virtio_mmio):
        users[transport_irq(machine, i)] = ", ".join(filter(None, [users.get(transport_irq(machine, i), ""),
                                                                    f"virtio-mmio {i}"]))  # fmt: skip
    lines = []
    if machine.ioapic is not None:
        lines.append("IRQ statistics for ioapic (pin: taken by the CPU at its vector now, messages sent):")
        from ..devices.ioapic import ioapic_pin_of_isa_irq

        isa_of_pin = {ioapic_pin_of_isa_irq(irq): irq for irq in range(16)}
        for pin, count in enumerate(machine.ioapic.counters.messages):
            if count:
                irq = isa_of_pin.get(pin)
                user = users.get(irq, "") if irq is not None else ""
                entry = machine.ioapic.entries[pin]
                taken = machine.lapic.taken[entry & 0xFF] if machine.lapic is not None else count
                lines.append(f"{pin:>3}: {taken:<10} IO-APIC {pin}-{'fasteoi' if entry >> 15 & 1 else 'edge'}"
                             f"  vector {entry & 0xFF:#04x}, {count} messages{'  ' + user if user else ''}")  # fmt: skip
    lines.append("IRQ statistics for i8259:")
    for irq, count in enumerate(machine.pic.delivered):
        if count:
            lines.append(f"{irq:>3}: {count:<10} XT-PIC{'  ' + users[irq] if users.get(irq) else ''}")
    if machine.lapic is not None:
        a = machine.lapic.counters
        lines.append("IRQ statistics for lapic:")
        lines.append(f"LOC: {a.timer_interrupts:<10} Local timer interrupts")
        lines.append(f"SPU: {a.spurious:<10} Spurious interrupts")
        lines.append(f"IPI: {a.ipis:<10} ICR writes (inter-processor interrupts)")
    return "\n".join(lines) + "\n"


def transport_irq(machine: Machine, index: int) -> int:
    from ..machine import MMIO_IRQS

    return MMIO_IRQS[index]


# --- PCI ----------------------------------------------------------------------------------------------
CLASS_NAMES = {0x0100: "SCSI controller", 0x0101: "IDE controller", 0x0200: "Ethernet controller",
               0x0300: "VGA controller", 0x0500: "RAM controller", 0x0600: "Host bridge", 0x0601: "ISA bridge",
               0x0680: "Bridge", 0x0780: "Communication controller", 0x00FF: "Class 00ff"}  # fmt: skip


def _info_pci(mon: Monitor, args: list[str]) -> str:
    lines = []
    for (device, function), pci in sorted(mon.machine.pci.functions.items()):
        cls = pci.config_read(0x0A, 2)
        lines.append(f"  Bus  0, device {device:>3}, function {function}:")
        lines.append(f"    {CLASS_NAMES.get(cls, f'Class {cls:04x}')}: PCI device {pci.vendor_id:04x}:{pci.device_id:04x}")
        if pci.subsystem_vendor_id or pci.subsystem_id:
            lines.append(f"      PCI subsystem {pci.subsystem_vendor_id:04x}:{pci.subsystem_id:04x}")
        if pci.interrupt_pin:
            lines.append(f"      IRQ {pci_irq(mon.machine, device, pci) or 0}, pin {'ABCD'[pci.interrupt_pin - 1]}")
        for index, bar in sorted(pci.bars.items()):
            if bar.kind is BarKind.IO:
                where = (f"I/O at {bar.address:#x} [{bar.address + bar.size - 1:#x}]" if bar.address
                         else f"I/O at 0xffffffffffffffff [0x{bar.size - 2:x}]")  # unassigned, as QEMU prints it
            else:
                kind = ("64 bit" if bar.kind is BarKind.MEMORY64 else "32 bit") + (" prefetchable" if bar.prefetchable else "")
                where = (f"{kind} memory at {bar.address:#x} [{bar.address + bar.size - 1:#x}]" if bar.address
                         else f"{kind} memory at 0xffffffffffffffff [0x{bar.size - 2:x}]")  # fmt: skip
            lines.append(f"      BAR{index}: {where}.")
        lines.append(f'      id "{_pci_name(mon.machine, pci)}"')
    return "\n".join(lines) + "\n"


def pci_irq(machine: Machine, slot: int, pci) -> int | None:
    """The ISA IRQ of a function's INTx: its Interrupt Line register as software wrote it (a BIOS
    does), else where the PIIX3 steers the PIRQ# its pin is wired to (a kernel booted directly
    routes by the same table, ACPI's _PRT). QEMU prints the register alone; emu has no BIOS on
    that path to write it."""
    from ..devices.pci.piix3 import pirq_of

    if not pci.interrupt_pin:
        return None
    line = pci.space[0x3C]
    if 0 < line < 16:
        return line
    return machine.isa_bridge.route(pirq_of(slot, pci.interrupt_pin))


def _pci_name(machine: Machine, pci) -> str:
    device = getattr(pci, "device", None)
    return device.name if isinstance(device, VirtioDevice) else ""


# --- virtio -------------------------------------------------------------------------------------------
STATUS_BITS = ((1, "ACKNOWLEDGE"), (2, "DRIVER"), (4, "DRIVER_OK"), (8, "FEATURES_OK"), (64, "DEVICE_NEEDS_RESET"),
               (128, "FAILED"))  # fmt: skip


def _info_virtio(mon: Monitor, args: list[str]) -> str:
    """Each virtio device and queue: where the rings are, the driver's avail index, the device's
    last_avail (the next entry it takes) and used index; the chains the driver offered that the
    device has not taken yet, with their buffers (VIRTIO 1.2 §2.7)."""
    machine = mon.machine
    from ..stats import _transport_names

    lines = []
    transports = [*machine.virtio, *machine.virtio_mmio]
    if not transports:
        return "No VirtIO devices\n"
    for transport, name in zip(transports, _transport_names(machine)):
        device = transport.device
        status = "|".join(n for bit, n in STATUS_BITS if device.status & bit) or "0 (reset)"
        lines.append(f"{device.name} ({name}): status {device.status:#04x} {status}, features {device.driver_features:#x}")
        for index, q in enumerate(device.queues):
            vq = q.queue
            if vq is None:
                lines.append(f"  queue {index}: size {q.size}, not enabled")
                continue
            avail = vq.avail_idx()
            used_guest = machine.memory.read_u16(vq.used_addr + 2)
            waiting = (avail - vq.last_avail) & 0xFFFF
            in_flight = (vq.last_avail - vq.used_idx) & 0xFFFF
            lines.append(f"  queue {index}: size {vq.size}, desc {vq.desc_addr:#x} avail {vq.avail_addr:#x} "
                         f"used {vq.used_addr:#x}; avail.idx {avail}, last_avail {vq.last_avail}, used.idx "
                         f"{used_guest}; {waiting} offered and not taken, {in_flight} in flight "
                         f"(taken, not yet used); {vq.chains} chains so far")  # fmt: skip
            for k in range(min(waiting, 8)):
                slot = (vq.last_avail + k) % vq.size
                head = machine.memory.read_u16(vq.avail_addr + 4 + 2 * slot)
                lines.append(f"    avail[{slot}] head {head}: {_describe_chain(vq, head)}")
    return "\n".join(lines) + "\n"


def _describe_chain(vq, head: int) -> str:
    from ..devices.virtio.queue import ChainError

    try:
        chain = vq._walk(head)  # read-only: validates and reads the descriptors, changes nothing
    except ChainError as error:
        return f"invalid: {error}"
    parts = [f"{b.address:#x}+{b.length} {'w' if b.writable else 'r'}" for b in [*chain.readable, *chain.writable]]
    return ", ".join(parts)


# --- address spaces ------------------------------------------------------------------------------------
def _info_mtree(mon: Monitor, args: list[str]) -> str:
    machine = mon.machine
    items = []
    for r in machine.memory.regions():
        items.append((r.guest_address, r.guest_address + r.size - 1, "ram", r.name))
    for r in [*(machine.firmware.regions() if machine.firmware else []),
              *([machine.bios_tables.region()] if machine.bios_tables else [])]:  # fmt: skip
        items.append((r.guest_address, r.guest_address + r.size - 1, "rom", r.name))
    for m in machine.buses.mmio.mappings:
        items.append((m.base, m.end - 1, "i/o", m.name))
    lines = ["address-space: memory", "  0000000000000000-ffffffffffffffff (prio 0, i/o): system"]
    lines += [f"    {a:016x}-{b:016x} (prio 0, {kind}): {name}" for a, b, kind, name in sorted(items)]
    lines += ["", "address-space: I/O", "  0000000000000000-000000000000ffff (prio 0, i/o): io"]
    lines += [f"    {m.base:016x}-{m.end - 1:016x} (prio 0, i/o): {m.name}" for m in machine.buses.ports.mappings]
    return "\n".join(lines) + "\n"


# --- statistics ----------------------------------------------------------------------------------------
def _info_stats(mon: Monitor, args: list[str]) -> str:
    from .. import stats

    machine = mon.machine
    if args and args[0] == "json":  # one line: the counters `python -m emu top` turns into rates
        from ..liveview import snapshot

        return json.dumps(snapshot(machine)) + "\n"
    if args:
        raise UsageError("info stats: [json]")
    return stats.report_table(machine) + "\n"


INFO_COMMANDS: list[Command] = [
    Command("registers", "", "show the cpu registers", _info_registers),
    Command("cpus", "", "show infos for each CPU", _info_cpus),
    Command("mem", "", "show the active virtual memory mappings", _info_mem),
    Command("tlb", "[shadow]", "show virtual to physical memory mappings (shadow: emu's shadow table, tcg)", _info_tlb),
    Command("pic", "", "show PIC state", _info_pic),
    Command("lapic", "", "show local apic state", _info_lapic),
    Command("irq", "", "show the interrupts statistics", _info_irq),
    Command("pci", "", "show PCI info", _info_pci),
    Command("virtio", "", "list the virtio devices and their queues", _info_virtio),
    Command("mtree", "", "show memory tree", _info_mtree),
    Command("stats", "[json]", "show exits, instructions and time so far (the --stats table)", _info_stats),
]
