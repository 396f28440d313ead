"""Where the emulator's CPU time goes, split the way `top` and `mpstat` split it.

Linux accounts CPU time per thread, in clock ticks (`sysconf(_SC_CLK_TCK)`, 100 a second), and
shows it in /proc (proc(5)):
- /proc/self/task/TID/stat: one thread. Field 14 `utime` (user mode), 15 `stime` (kernel mode)
  and 43 `guest_time`: "time spent running a virtual CPU for a guest operating system". That is
  KVM's own account of the time a thread spent inside KVM_RUN *in guest mode* (kvm_guest_enter/
  exit hand the time to account_guest_time). The kernel adds it to `utime` too, "so that
  applications that are not aware of the guest time field do not lose that time" (proc(5)).
- /proc/self/stat: the same fields for the whole process, every thread, living or ended.
- /proc/stat, the `cpu` line: the host's CPUs, in columns user nice system idle iowait irq
  softirq steal guest guest_nice. `steal` is "stolen time, which is the time spent in other
  operating systems when running in a virtualized environment": this project's hosts are VMs
  themselves, and the hypervisor below them runs other guests on our CPUs. `top` shows it as
  `st`, mpstat as `%steal`; inside a guest it is the one number that says the host is busy.

What the split shows, per interval, in % of one CPU (as top's %CPU of a process):
- guest: on kvm, the vCPU thread's `guest_time`, the kernel's word; beside it emu's own clock
  around KVM_RUN (which also holds the kernel's entry and exit work, and on a nested host the
  emulation of what the hardware cannot run). On tcg there is no guest mode: Unicorn runs guest
  code as ordinary user code of the emulator, and the kernel counts it in `utime`. The guest
  share on tcg is emu's own measure, the time inside emu_start (ExitStats.guest_ns). The same
  guest work is "guest" to the kernel on kvm and "user" on tcg: top inside the guest sees
  neither, and top on the host sees `python` at 100% user on tcg.
- emulator user: the process's `utime` less the guest part (guest_time on kvm, emu's measure
  on tcg), i.e. emu's Python: exit handlers, devices, the main loop, device threads.
- emulator sys: the process's `stime`: syscalls, the KVM_RUN entry and exit, page faults.
- idle: wall time the vCPU was halted (Machine.idle_ns): the guest executed `hlt` and emu sleeps.
- steal: the host's `steal` over all its CPU time (all CPUs), as top's `st`.

Measured on this project's hosts, whose /dev/kvm is the nested kvm_pvm (shared/notes/host-kvm.md):
a CPL0 `jmp $` on kvm shows 0% guest_time and ~99% emulator *sys*, while emu's clock says it was
in KVM_RUN all along: the host kernel emulates CPL0 code instruction by instruction, in kernel
mode, outside guest mode. A ring-3 loop runs natively, and its second in KVM_RUN is a second of
guest_time (and of utime). On VT-x/AMD-V hardware both would be guest time. With --irqchip
kernel, `hlt` sleeps inside KVM_RUN: emu's clock counts the sleep as guest and sees no idle, the
kernel's guest_time (rightly) counts nothing.

Resolution: /proc counts whole ticks, so each figure is good to 1/CLK_TCK (10 ms) per interval:
+-1% over a second, +-4% over 0.25 s, and noise over the last, short interval of a run.

Sources: proc(5) (man7.org, /proc/pid/stat fields 14, 15, 43; /proc/stat), kernel
Documentation/filesystems/proc.rst §1.8, kernel/sched/cputime.c (account_guest_time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")  # the unit of every time in /proc/*/stat and /proc/stat
NS_PER_TICK = 1_000_000_000 // CLK_TCK
UTIME, STIME, GUEST_TIME = 14, 15, 43  # proc(5) field numbers in /proc/pid/stat (1-based)
HOST_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")


@dataclass(frozen=True)
class TaskTimes:
    """CPU time of a thread or a process, from its /proc stat line, in ns."""

    name: str  # comm, the kernel's name of the task
    user_ns: int  # utime: guest_time included
    system_ns: int  # stime
    guest_ns: int  # guest_time: in guest mode under KVM_RUN

    def as_dict(self) -> dict:
        return {"name": self.name, "user_ns": self.user_ns, "system_ns": self.system_ns, "guest_ns": self.guest_ns}


def parse_stat(line: str) -> TaskTimes:
    """A /proc/PID/stat or /proc/PID/task/TID/stat line. Field 2, comm, is in parentheses and may
    hold spaces and parentheses itself: the fields after it start after the last ')'."""
    head, _, tail = line.rpartition(")")
    name = head.partition("(")[2]
    fields = tail.split()  # fields[0] is field 3 (state)
    tick = lambda number: int(fields[number - 3]) * NS_PER_TICK
    guest = tick(GUEST_TIME) if len(fields) > GUEST_TIME - 3 else 0  # guest_time: Linux 2.6.24 on
    return TaskTimes(name, tick(UTIME), tick(STIME), guest)


def process_times() -> TaskTimes:
    """This process, all its threads (the same numbers os.times() gives, plus guest_time)."""
    return parse_stat(Path("/proc/self/stat").read_text())


def thread_times(tid: int) -> TaskTimes | None:
    """One thread of this process by its kernel id (threading.get_native_id()); None once it ended."""
    try:
        return parse_stat(Path(f"/proc/self/task/{tid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_threads() -> dict[int, TaskTimes]:
    """Every thread of this process now, by kernel id."""
    out = {}
    for entry in os.scandir("/proc/self/task"):
        times = thread_times(int(entry.name))
        if times is not None:
            out[int(entry.name)] = times
    return out


def host_cpu(text: str | None = None) -> dict[str, int]:
    """The host's `cpu` line of /proc/stat (all CPUs together), by column, in ns; missing
    columns (older kernels) are 0."""
    line = (text if text is not None else Path("/proc/stat").read_text()).splitlines()[0]
    label, *values = line.split()
    if label != "cpu":
        raise ValueError(f"/proc/stat starts with {label!r}, not the cpu line")
    ticks = [int(v) for v in values] + [0] * len(HOST_COLUMNS)
    return {name: ticks[i] * NS_PER_TICK for i, name in enumerate(HOST_COLUMNS)}


def cpu_times(vcpu_tid: int | None, thread_names: dict[int, str] | None = None) -> dict:
    """The /proc side of a snapshot (emu.liveview.sampler): process, vCPU thread, every thread
    (named by Python's thread names where known) and the host."""
    names = thread_names or {}
    threads = {tid: times for tid, times in all_threads().items()}
    vcpu = threads.get(vcpu_tid) if vcpu_tid is not None else None
    return {
        "clk_tck": CLK_TCK,
        "process": process_times().as_dict(),
        "vcpu_thread": None if vcpu is None else {"tid": vcpu_tid, **vcpu.as_dict()},
        "threads": {str(tid): {**t.as_dict(), "name": names.get(tid, t.name)} for tid, t in threads.items()},
        "host": {**host_cpu(), "cpus": os.cpu_count() or 1},
    }


def time_split(before: dict, after: dict) -> dict:
    """The interval between two snapshots (their "time" parts), in % of one CPU: guest, emulator
    user, emulator sys, idle (vCPU halted), and the host's steal in % of all its CPU time."""
    wall = after["t_ns"] - before["t_ns"]
    if wall <= 0:
        raise ValueError("snapshots out of order")
    a, b = before["cpu"], after["cpu"]
    pct = lambda ns: round(100.0 * ns / wall, 1)
    user = b["process"]["user_ns"] - a["process"]["user_ns"]
    system = b["process"]["system_ns"] - a["process"]["system_ns"]
    emu_guest = after["guest_ns"] - before["guest_ns"]  # emu's clock: inside emu_start / KVM_RUN
    kernel_guest = None
    if a["vcpu_thread"] and b["vcpu_thread"] and a["vcpu_thread"]["tid"] == b["vcpu_thread"]["tid"]:
        kernel_guest = b["vcpu_thread"]["guest_ns"] - a["vcpu_thread"]["guest_ns"]
    on_kvm = after["accel"] == "kvm"
    guest = kernel_guest if on_kvm and kernel_guest is not None else emu_guest
    in_user = guest if on_kvm or guest <= user else user  # tcg's guest time is user time to the kernel
    host_a, host_b = a["host"], b["host"]
    host_total = sum(host_b[c] - host_a[c] for c in HOST_COLUMNS if c not in ("guest", "guest_nice"))  # in user
    vcpu_cpu = None
    if kernel_guest is not None:
        vcpu_cpu = sum(b["vcpu_thread"][k] - a["vcpu_thread"][k] for k in ("user_ns", "system_ns"))
    return {
        "interval_s": wall / 1e9,
        "guest": pct(guest),
        "guest_emu_clock": pct(emu_guest),  # on kvm: emu's clock around KVM_RUN, beside the kernel's
        "guest_kernel": None if kernel_guest is None else pct(kernel_guest),
        "user": pct(max(0, user - in_user)),
        "sys": pct(system),
        "idle": pct(after["idle_ns"] - before["idle_ns"]),
        "vcpu_thread": None if vcpu_cpu is None else pct(vcpu_cpu),
        "other_threads": None if vcpu_cpu is None else pct(max(0, user + system - vcpu_cpu)),
        "steal": round(100.0 * (host_b["steal"] - host_a["steal"]) / host_total, 1) if host_total > 0 else 0.0,
    }
