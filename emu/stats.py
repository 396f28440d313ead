"""What a run cost, by exit reason and by kind of time: the numbers a `kvm_stat` user expects.

Time is split three ways, as `top` splits a VM's CPU: *guest* (inside emu_start or KVM_RUN,
running guest code), *emulator* (emu's Python: exit handlers, the main loop, devices) and *idle*
(asleep while the guest is halted). Exits are counted by reason (emu.accel.ExitReason) with the
host time their handlers took; on tcg the instruction count comes from a block hook.

`memory` says how guest RAM was laid out and backed, measured after the run from the mapping's
/proc/self/smaps entries (emu.memory.BackingUsage: resident, THP and hugetlb KiB), plus the
dirty log when --dirty-log asked for one (distinct pages the guest wrote, and the dirty rate).
On kvm, `mmu` names who translates guest addresses (KVM: EPT/NPT, or its shadow page tables),
which emu cannot see, instead of MMU counters that would stay zero.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .accel import ExitReason

if TYPE_CHECKING:
    from .machine import Machine


def collect(machine: Machine) -> dict:
    stats = machine.vcpu.stats
    running = not machine.wall_ns and machine.started_ns  # asked while it runs (the monitor's `info stats`)
    wall = (time.monotonic_ns() - machine.started_ns if running else machine.wall_ns) / 1e9
    guest = stats.guest_ns / 1e9
    idle = machine.idle_ns / 1e9
    return {
        "accel": machine.accel.name,
        "exits": {r.value: n for r, n in stats.counts.items() if n},
        "exit_seconds": {r.value: stats.times_ns[r] / 1e9 for r, n in stats.counts.items() if n},
        "instructions": stats.instructions,
        "guest_seconds": guest,
        "host_seconds": max(0.0, wall - guest - idle),
        "idle_seconds": idle,
        "wall_seconds": wall,
        "unmapped_port_reads": {f"{p:#x}": n for p, n in sorted(machine.buses.ports.unmapped_reads.items())},
        "unmapped_port_writes": {f"{p:#x}": n for p, n in sorted(machine.buses.ports.unmapped_writes.items())},
        "exit_status": machine.exit_status,
        "mmu": mmu_stats(machine),
        "memory": memory_report(machine),
        "firmware": firmware_report(machine),
        "devices": devices_report(machine),
        "irqchip": irqchip_report(machine),
    }


def irqchip_report(machine: Machine) -> dict:
    """Where interrupts were decided and how they reached the guest: emu's PIC and
    KVM_INTERRUPT (or Unicorn, on tcg), or KVM's irqchip through KVM_IRQ_LINE and irqfds."""
    if machine.irqchip is None:
        report: dict = {"kind": "user", "injected": machine.vcpu.stats.counts.get(ExitReason.INTERRUPT, 0)}
        if machine.lapic is not None:
            report["lapic"] = vars(machine.lapic.counters)
        if machine.ioapic is not None:
            counters = machine.ioapic.counters
            report["ioapic"] = {"messages": {str(pin): n for pin, n in enumerate(counters.messages) if n},
                                "eois": counters.eois, "redelivered": counters.redelivered,
                                "unsupported": counters.unsupported}  # fmt: skip
        report["pic_delivered"] = {str(irq): n for irq, n in enumerate(machine.pic.delivered) if n}
        return report
    return {"kind": "kernel", **vars(machine.irqchip.counters)}


def devices_report(machine: Machine) -> list[dict]:
    """Per virtio device and queue: notifications (and the exits to emu they cost), requests,
    bytes and interrupts raised; how notifications arrived; the device thread's wake-ups."""
    out = []
    for (transport, thread), name in zip(machine._transports, _transport_names(machine)):
        device = transport.device
        queues = [{"index": i, **vars(c)} for i, c in enumerate(device.counters)]
        ioeventfds = id(transport) in machine.ioeventfd_transports
        entry = {"name": device.name, "transport": name, "status": device.status, "resets": device.resets,
                 "errors": len(device.errors), "queues": queues, "thread_wakeups": thread.wakeups,
                 "notify_path": "ioeventfd" if ioeventfds else "exit" if machine.accel.name == "kvm" else "io hook"}  # fmt: skip
        net = getattr(device, "net", None)
        if net is not None:
            entry["net"] = vars(net) | {"backend": device.backend.id if device.backend else None}
        out.append(entry)
    return out


def _transport_names(machine: Machine) -> list[str]:
    pci = [f"pci 00:{slot:02x}.0" for slot in range(2, 2 + len(machine.virtio))]
    return pci + [f"mmio {0xFEB0_0000 + 0x1000 * i:#x}" for i in range(len(machine.virtio_mmio))]


def firmware_report(machine: Machine) -> dict | None:
    """A raw-disk boot: BIOS functions the guest called that emu's BIOS lacks, and the disk's work."""
    if machine.firmware is None:
        return None
    ata = machine.ata.stats.as_dict() if machine.ata is not None else None
    return {"unsupported_calls": dict(machine.console.unsupported), "disk": ata}


def memory_report(machine: Machine) -> dict:
    """Layout, measured host backing and (with --dirty-log) dirty pages of guest RAM."""
    memory = machine.memory
    report: dict = {
        "size_mib": memory.size >> 20,
        "ranges": [{"guest_address": r.guest_address, "size": r.size, "host_offset": r.host_offset} for r in memory.ranges],
    }
    report.update(memory.usage().as_dict())
    dirty = machine.accel.dirty_log_stats()
    report["dirty_log"] = dirty is not None
    report["dirty_pages"] = None if dirty is None else dirty.pages
    report["dirty_pages_per_second"] = None if dirty is None else round(dirty.pages_per_second, 1)
    report["dirty_pages_reported"] = None if dirty is None else dirty.reported_pages
    report["dirty_log_reads"] = None if dirty is None else dirty.reads
    return report


def mmu_stats(machine: Machine) -> dict:
    """tcg: emu's shadow-MMU counters, or which walker ran; kvm: see emu.kvm_accel."""
    softmmu = getattr(machine.vcpu, "softmmu", None)
    if softmmu is not None:
        return {"translation": "emu shadow MMU", "fill_path": softmmu.fill_path, **softmmu.counters.as_dict(),
                "code_frames": len(softmmu.code_frames), "code_flushes_avoided": softmmu.code_flushes_avoided}
    if machine.accel.name == "tcg":
        return {"translation": "unicorn walker (UC_TLB_CPU): no counters"}
    return machine.accel.mmu_report() or {"translation": machine.accel.name}


def _kvm_mmu_line(mmu: dict) -> str:
    tdp = {True: "Y", False: "N", None: "?"}[mmu.get("tdp_mmu")]
    if mmu.get("second_stage") == "shadow":
        how = f"KVM's shadow page tables ({mmu.get('module')}, no EPT/NPT; kvm.tdp_mmu={tdp})"
    else:
        how = f"{str(mmu.get('second_stage')).upper()} in hardware ({mmu.get('module')}; kvm.tdp_mmu={tdp})"
    return f"mmu: second-stage translation by {how}; guest page-table walks happen inside KVM, unseen by emu"


def report_table(machine: Machine) -> str:
    data = collect(machine)
    lines = [f"emu statistics ({data['accel']})", f"{'exit reason':<16}{'count':>10}{'total ms':>12}{'avg us':>10}"]
    for reason, count in sorted(data["exits"].items(), key=lambda kv: -kv[1]):
        seconds = data["exit_seconds"][reason]
        lines.append(f"{reason:<16}{count:>10}{seconds * 1e3:>12.3f}{seconds / count * 1e6:>10.2f}")
    if data["instructions"] is not None:
        lines.append(f"instructions    {data['instructions']:>10}")
    lines.append(f"time: guest {data['guest_seconds']:.3f} s, emulator {data['host_seconds']:.3f} s, "
                 f"idle {data['idle_seconds']:.3f} s, wall {data['wall_seconds']:.3f} s")  # fmt: skip
    mmu = data["mmu"]
    if "walks" in mmu:
        flushes = ", ".join(f"{cause} {n}" for cause, n in mmu["flushes"].items())
        lines.append(f"mmu (shadow, fills in {mmu['fill_path']}): {mmu['walks']} walks ({mmu.get('native_walks', 0)} in C), "
                     f"{mmu['shadow_hits']} shadow hits ({mmu['native_hits']} served in C), "
                     f"{mmu['uncached_fills']} uncached fills, {mmu['pt_write_traps']} page-table write traps "
                     f"({mmu['dropped_entries']} entries dropped), {mmu['ad_writes']} A/D writes, "
                     f"{mmu['page_faults']} #PF, {mmu['walker_disagreements']} walker disagreements")  # fmt: skip
        lines.append(f"mmu flushes: {flushes or 'none'}; translated code: {mmu['code_frames']} frames executed from, "
                     f"{mmu['code_flushes_avoided']} host writes (DMA) that needed no flush of it")  # fmt: skip
    elif mmu["translation"] == "kvm" and "second_stage" in mmu:
        lines.append(_kvm_mmu_line(mmu))
    else:
        lines.append(f"mmu: {mmu['translation']}")
    for kind in ("reads", "writes"):
        ports = data[f"unmapped_port_{kind}"]
        if ports:
            lines.append(f"unmapped port {kind}: " + ", ".join(f"{p}x{n}" for p, n in ports.items()))
    firmware = data["firmware"]
    if firmware is not None:
        calls = ", ".join(f"{name} x{n}" for name, n in firmware["unsupported_calls"].items()) or "none"
        lines.append(f"bios: unsupported calls: {calls}")
        if firmware["disk"]:
            disk = firmware["disk"]
            commands = ", ".join(f"{name} {n}" for name, n in disk["commands"].items())
            lines.append(f"disk (ata0): {disk['sectors_read']} sectors read, {disk['sectors_written']} written, "
                         f"{disk['flushes']} flushes; commands: {commands}")
    for device in data["devices"]:
        lines.append(f"{device['name']} ({device['transport']}): notifications by {device['notify_path']}, "
                     f"device thread woke {device['thread_wakeups']} times")  # fmt: skip
        for q in device["queues"]:
            lines.append(f"{device['name']} queue {q['index']}: {q['notifications']} notifications "
                         f"({q['exits']} exits to emu), {q['requests']} requests, {q['bytes_written']} bytes "
                         f"written, {q['bytes_read']} read, {q['interrupts']} interrupts")  # fmt: skip
        if "net" in device:
            net = device["net"]
            lines.append(f"{device['name']}: {net['frames_sent']} frames sent, {net['frames_received']} received "
                         f"(backend {net['backend']}), {net['dropped_no_buffer']} too large for their buffer, "
                         f"{net['backend_pauses']} pauses for want of receive buffers")  # fmt: skip
        if device["errors"]:
            lines.append(f"{device['name']}: {device['errors']} protocol errors (DEVICE_NEEDS_RESET), "
                         f"{device['resets']} resets")  # fmt: skip
    chip = data["irqchip"]
    if chip["kind"] == "user":
        how = "KVM_INTERRUPT" if data["accel"] == "kvm" else "delivered by emu through the guest IDT"
        lines.append(f"irqchip: emu's (userspace), {chip['injected']} interrupts injected ({how})")
        if chip.get("pic_delivered"):
            lines.append("  8259 PIC (ExtINT): " + ", ".join(f"IRQ {irq}: {n}" for irq, n in chip["pic_delivered"].items()))
        if "lapic" in chip:
            a = chip["lapic"]
            lines.append(f"  local APIC: {a['delivered']} from its IRR ({a['accepted']} accepted, {a['coalesced']} "
                         f"coalesced, {a['dropped_disabled']} dropped while disabled), {a['extint']} ExtINT, "
                         f"{a['spurious']} spurious; {a['eois']} EOIs ({a['eoi_broadcasts']} to the I/O APIC); "
                         f"timer {a['timer_interrupts']} expiries ({a['timer_lost']} lost); {a['ipis']} IPIs")  # fmt: skip
        if "ioapic" in chip:
            i = chip["ioapic"]
            pins = ", ".join(f"pin {pin}: {n}" for pin, n in i["messages"].items()) or "none"
            lines.append(f"  I/O APIC: messages {pins}; {i['eois']} EOIs cleared Remote IRR, "
                         f"{i['redelivered']} re-sent")  # fmt: skip
    else:
        lines.append(f"irqchip: KVM's (in-kernel): {chip['irq_line_ioctls']} KVM_IRQ_LINE calls, "
                     f"{chip['irqfd_writes']} irqfd writes, {chip['resamples']} resamples at EOI "
                     f"({chip['reasserts']} re-raised)")  # fmt: skip
    mem = data["memory"]
    ranges = ", ".join(f"{r['guest_address']:#x}-{r['guest_address'] + r['size'] - 1:#x}" for r in mem["ranges"])
    lines.append(f"memory: {mem['size_mib']} MiB at {ranges}; backing {mem['backing']} (asked {mem['requested']}): "
                 f"rss {mem['rss_kib']} KiB, AnonHugePages {mem['anon_huge_kib']} KiB, "
                 f"hugetlb {mem['hugetlb_kib']} KiB")  # fmt: skip
    if mem["dirty_log"]:
        lines.append(f"dirty log: {mem['dirty_pages']} pages written, {mem['dirty_pages_per_second']:.1f} pages/s "
                     f"({mem['dirty_pages_reported']} reported in {mem['dirty_log_reads']} reads)")  # fmt: skip
    return "\n".join(lines)


def report_json(machine: Machine, path: Path) -> None:
    path.write_text(json.dumps(collect(machine), indent=2) + "\n")
