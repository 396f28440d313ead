"""Host network backends for a guest NIC (`-netdev`): where the frames a guest sends go.

A backend moves whole Ethernet frames between a guest's NIC model (emu.devices.virtio.net)
and the host: a tap device (emu.net.tap), or a socket to another emu or QEMU process
(emu.net.socket). `parse_netdev` turns QEMU's `-netdev TYPE,id=ID,...` into one.
"""

from .backend import NetBackend, parse_netdev

__all__ = ["NetBackend", "parse_netdev"]
