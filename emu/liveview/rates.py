"""Rates from two snapshots, and the text that shows them: kvm_stat's table, top's CPU line.

`kvm_stat` (linux/tools/kvm/kvm_stat) reads KVM's exit counters from debugfs or tracepoints
every few seconds and shows, per event, the total and the current rate ("Total", "CurAvg/s"),
sorted by rate; `top` shows where CPU time went in the last interval. emu shows both for its own
exits: the same numbers for either accelerator, since ExitStats counts the exits of both
(on kvm, KVM's own exits that never reach emu, like its shadow page faults, stay KVM's).

rates() is the arithmetic (counts: difference / interval; times: emu.liveview.cputime.time_split);
format_table() is the block `emu top` redraws, format_lines() the compact one `--stats live`
prints to stderr every interval (stdout is the guest's serial console).
"""

from __future__ import annotations

from .cputime import time_split


def _per_second(before: int | None, after: int | None, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    return max(0, after - before) / seconds


def rates(before: dict, after: dict) -> dict:
    """What happened between two snapshots (emu.liveview.sampler.snapshot), per second."""
    seconds = (after["t_ns"] - before["t_ns"]) / 1e9
    if seconds <= 0:
        raise ValueError("two snapshots of the same instant, or out of order")
    reasons = set(before["exits"]) | set(after["exits"])
    exits = {r: _per_second(before["exits"].get(r, 0), after["exits"].get(r, 0), seconds) for r in reasons}
    tlb = None
    if before.get("tlb") and after.get("tlb"):
        b, a = before["tlb"], after["tlb"]
        fills = _per_second(b["fills"], a["fills"], seconds)
        in_c = _per_second(b["fills_c"], a["fills_c"], seconds)
        tlb = {"fills": fills, "in_c_percent": round(100 * in_c / fills, 1) if fills else None,
               "page_faults": _per_second(b["page_faults"], a["page_faults"], seconds)}  # fmt: skip
    started = after.get("started_ns")
    return {
        "accel": after["accel"],
        "pid": after.get("pid"),
        "t_ns": after["t_ns"],
        "uptime_s": (after["t_ns"] - started) / 1e9 if started else None,
        "interval_s": seconds,
        "exits": dict(sorted(((r, v) for r, v in exits.items() if v), key=lambda kv: (-kv[1], kv[0]))),
        "exit_totals": dict(after["exits"]),
        "exits_total": sum(exits.values()),
        "instructions": _per_second(before.get("instructions"), after.get("instructions"), seconds),
        "instructions_total": after.get("instructions"),
        "tlb": tlb,
        "interrupts": _per_second(before["interrupts"], after["interrupts"], seconds),
        "interrupts_total": after["interrupts"],
        "interrupts_kind": after.get("interrupts_kind", "injected"),
        "time": time_split(before, after),
    }


def human(value: float | None) -> str:
    """1234567 -> '1.23M': rates in few characters, as kvm_stat and top keep their columns."""
    if value is None:
        return "-"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def cpu_line(split: dict) -> str:
    """top's CPU summary for the emulator process, in % of one CPU, and the host's steal."""
    guest = f"guest {split['guest']:.1f}"
    if split.get("guest_kernel") is not None and split["guest"] == split["guest_kernel"]:
        guest += f" (emu's clock in KVM_RUN {split['guest_emu_clock']:.1f})"
    parts = [guest, f"emu user {split['user']:.1f}", f"emu sys {split['sys']:.1f}", f"idle {split['idle']:.1f}"]
    text = "cpu %: " + "  ".join(parts) + f"  | host steal {split['steal']:.1f}"
    if split.get("vcpu_thread") is not None:
        text += f"  | vcpu thread {split['vcpu_thread']:.1f}, other threads {split['other_threads']:.1f}"
    return text


def counters_line(r: dict) -> str:
    parts = []
    if r["instructions"] is not None:
        parts.append(f"instructions {human(r['instructions'])}/s")
    if r["tlb"] is not None:
        tlb = r["tlb"]
        share = f" ({tlb['in_c_percent']:.0f}% in C)" if tlb["in_c_percent"] is not None else ""
        parts.append(f"tlb fills {human(tlb['fills'])}/s{share}, #PF {human(tlb['page_faults'])}/s")
    kind = "" if r["interrupts_kind"] == "injected" else f" ({r['interrupts_kind']})"
    parts.append(f"interrupts {human(r['interrupts'])}/s{kind}")
    return "  ".join(parts)


def format_lines(r: dict) -> str:
    """--stats live: three lines per interval, each starting with the run's time."""
    exits = "  ".join(f"{reason} {human(v)}" for reason, v in r["exits"].items()) or "none"
    stamp = f"live {r['uptime_s']:7.1f}s" if r["uptime_s"] is not None else "live"
    stamp += f" ({r['interval_s']:.2f}s)"  # the run's last interval is usually shorter: noisier
    pad = " " * len(stamp)
    return (f"{stamp}  exits/s: {exits}  (total {human(r['exits_total'])})\n"
            f"{pad}  {counters_line(r)}\n"
            f"{pad}  {cpu_line(r['time'])}")  # fmt: skip


def format_table(r: dict) -> str:
    """emu top's screen: a header, kvm_stat's table of exits, then counters and CPU time."""
    uptime = f", up {r['uptime_s']:.1f} s" if r["uptime_s"] is not None else ""
    lines = [f"emu top - {r['accel']}, pid {r['pid']}{uptime}, interval {r['interval_s']:.2f} s",
             f" {'exit reason':<16}{'total':>12}{'%total':>8}{'/s':>10}"]  # fmt: skip
    totals = r["exit_totals"]
    grand = sum(totals.values()) or 1
    order = list(r["exits"]) + sorted(set(totals) - set(r["exits"]), key=lambda k: -totals[k])
    for reason in order:
        lines.append(f" {reason:<16}{totals.get(reason, 0):>12}{100 * totals.get(reason, 0) / grand:>8.1f}"
                     f"{human(r['exits'].get(reason, 0.0)):>10}")  # fmt: skip
    lines.append(f" {'total':<16}{sum(totals.values()):>12}{'':>8}{human(r['exits_total']):>10}")
    lines.append(" " + counters_line(r))
    lines.append(" " + cpu_line(r["time"]))
    return "\n".join(lines)
