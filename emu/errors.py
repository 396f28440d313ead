"""Errors that end a run with one clear line instead of a traceback.

`EmuError` is for bad input or an unusable host (exit status 2, like a usage error);
`GuestError` is for a guest that stopped in a way a real PC would not survive (triple fault,
a KVM internal error, an access the emulator cannot serve).
"""


class EmuError(Exception):
    """Bad input or an unusable host: printed as one line, exit status 2."""

    exit_status = 2


class GuestError(Exception):
    """The guest stopped abnormally (triple fault, emulation failure): one line, exit status 4.

    4 is even, so it can never be mistaken for an isa-debug-exit status, (value << 1) | 1.
    """

    exit_status = 4
