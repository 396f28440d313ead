"""The gdb stub: gdb debugs the guest through emu, as it does through QEMU's `-gdb`/`-s`.

A debugger cannot reach into a virtual CPU the way ptrace reaches into a process, so a VMM
carries a small server that speaks gdb's remote protocol and does the reading, writing,
stopping and stepping itself, on the vCPU's thread (emu.runstate).

  packets.py    the wire: $payload#checksum, acknowledgements, escapes, Ctrl-C
  registers.py  the registers gdb sees (target.xml) and how `g`/`p` lay them out
  memory.py     memory by linear address, through the guest's page tables
  stub.py       what each packet does to the machine: one session
  server.py     the TCP listener (-gdb tcp::PORT, -s), one client at a time

Source: GDB manual, Appendix E "GDB Remote Serial Protocol" and Appendix G "Target
Descriptions"; QEMU 7.2 gdbstub.c and target/i386/gdbstub.c.
"""

from .server import DEFAULT_PORT, GdbServer, parse_gdb
from .stub import Session

__all__ = ["DEFAULT_PORT", "GdbServer", "Session", "parse_gdb"]
