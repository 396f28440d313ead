#!/usr/bin/env python3
"""Run a command and say how the host kernel accounted its CPU time (docs/labs/03-time.md).

    python tools/cputime.py python -m emu --accel kvm firmware/build/idle64.elf

Prints, after the command's own output and with its exit status:

    cputime: user 0.52 s (guest 0.00 s of it), system 0.21 s; wall 1.05 s
    cputime: this machine's 2 CPUs meanwhile: steal 0.00 s, guest 0.00 s (all processes)
    cputime: page faults: 25768 minor, 0 major

- user and system: the CPU time of the command and everything it waited for (getrusage
  RUSAGE_CHILDREN, what `time` prints), in user mode and in the kernel;
- guest: the part of it the kernel accounted as time a vCPU thread spent running guest code
  in hardware-assisted guest mode (KVM's guest_enter/guest_exit accounting: field 44,
  cguest_time, of /proc/self/stat, see proc_pid_stat(5)). Linux counts guest time in user
  time too;
- steal: this machine's own steal time over the same interval (the `steal` column of the `cpu`
  line of /proc/stat, see proc_stat(5)): time its virtual CPUs were ready to run while the
  hypervisor under *this* machine ran something else. It is not the command's, and it is 0 on
  bare metal; the machine-wide guest column is there for the same comparison;
- page faults: the command's (RUSAGE_CHILDREN again): minor ones were served from memory
  (a page allocated, or found in the page cache), major ones needed a read from disk.

The clock ticks of /proc are USER_HZ (sysconf(_SC_CLK_TCK), 100 per second here), so guest
and steal are multiples of 10 ms.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time


def _proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def _children_guest_ticks() -> int:
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[41])  # field 44 (cguest_time); fields[0] is field 3 (state)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: tools/cputime.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    hz = os.sysconf("SC_CLK_TCK")
    before, start = _proc_stat_cpu(), time.monotonic()
    try:
        status = subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        print(f"cputime: {argv[0]}: command not found", file=sys.stderr)
        return 127
    wall, after = time.monotonic() - start, _proc_stat_cpu()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    guest = _children_guest_ticks() / hz
    steal, machine_guest = (after[7] - before[7]) / hz, (after[8] - before[8]) / hz
    print(f"cputime: user {usage.ru_utime:.2f} s (guest {guest:.2f} s of it), system {usage.ru_stime:.2f} s; "
          f"wall {wall:.2f} s", file=sys.stderr)  # fmt: skip
    print(f"cputime: this machine's {os.cpu_count()} CPUs meanwhile: steal {steal:.2f} s, guest {machine_guest:.2f} s "
          "(all processes)", file=sys.stderr)  # fmt: skip
    print(f"cputime: page faults: {usage.ru_minflt} minor, {usage.ru_majflt} major", file=sys.stderr)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
