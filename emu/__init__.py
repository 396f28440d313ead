"""emu: an x86 PC emulator in Python with two interchangeable accelerators.

tcg runs guest instructions in Unicorn and supplies, in Python, the parts of a CPU that a
hypervisor would otherwise provide; kvm runs them on /dev/kvm through ctypes ioctls. Both drive
the same device model (emu.devices) through the narrow interface in emu.accel.
"""

__version__ = "0.1.0"
