"""The monitor: commands that the user gives to the VMM about its guest, in QEMU's words.

A virtual machine monitor has two sides. The guest sees devices and a CPU, and the user runs
the guest on them. The VMM itself also needs a control channel that the guest cannot see, to
look at the machine from outside (its registers, page tables, interrupt controllers, PCI
functions, virtqueues), and to act on it: stop it, let it go on, reset it, end it, or ask a
paravirtual device for something. A balloon is the standard example: only the host knows that
it is short of memory, so only the host can ask the guest's balloon driver to give pages back
(VIRTIO 1.2 §5.5, emu.devices.virtio.balloon).

  hmp.py      the interpreter and the commands that act (stop, cont, system_reset, x, xp, quit)
  info.py     the `info` commands that look
  memdump.py  x and xp: memory by linear address (through the guest's page tables) or physical
  server.py   where it listens: a Unix socket, or the terminal (-monitor stdio, Ctrl-A c)
"""

from .hmp import BANNER, PROMPT, Command, Monitor, MonitorError, UsageError
from .server import MonitorServer, parse_monitor

__all__ = ["BANNER", "PROMPT", "Command", "Monitor", "MonitorError", "MonitorServer", "UsageError", "parse_monitor"]
