"""What a run cost, by exit reason and by kind of time: the numbers a `kvm_stat` user expects.

Time is split three ways, as `top` splits a VM's CPU: *guest* (inside emu_start or KVM_RUN,
running guest code), *emulator* (emu's Python: exit handlers, the main loop, devices) and *idle*
(asleep while the guest is halted). Exits are counted by reason (emu.accel.ExitReason) with the
host time their handlers took; on tcg the instruction count comes from a block hook.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .machine import Machine


def collect(machine: "Machine") -> dict:
    stats = machine.vcpu.stats
    wall = machine.wall_ns / 1e9
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
    }


def report_table(machine: "Machine") -> str:
    data = collect(machine)
    lines = [f"emu statistics ({data['accel']})", f"{'exit reason':<16}{'count':>10}{'total ms':>12}{'avg us':>10}"]
    for reason, count in sorted(data["exits"].items(), key=lambda kv: -kv[1]):
        seconds = data["exit_seconds"][reason]
        lines.append(f"{reason:<16}{count:>10}{seconds * 1e3:>12.3f}{seconds / count * 1e6:>10.2f}")
    if data["instructions"] is not None:
        lines.append(f"instructions    {data['instructions']:>10}")
    lines.append(f"time: guest {data['guest_seconds']:.3f} s, emulator {data['host_seconds']:.3f} s, "
                 f"idle {data['idle_seconds']:.3f} s, wall {data['wall_seconds']:.3f} s")  # fmt: skip
    for kind in ("reads", "writes"):
        ports = data[f"unmapped_port_{kind}"]
        if ports:
            lines.append(f"unmapped port {kind}: " + ", ".join(f"{p}x{n}" for p, n in ports.items()))
    return "\n".join(lines)


def report_json(machine: "Machine", path: Path) -> None:
    path.write_text(json.dumps(collect(machine), indent=2) + "\n")
