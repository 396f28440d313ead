"""SYSCALL and SYSENTER: the fast system-call instructions, performed by emu.

Unicorn calls a hook for `syscall` and `sysenter` and then does nothing else: no privilege
change, no jump. emu performs the architectural operation from the MSRs (SDM vol. 2B,
"SYSCALL" and "SYSENTER"; vol. 3A §5.8.7-5.8.8):

  SYSCALL (EFER.SCE=1): RCX <- next RIP, R11 <- RFLAGS; CS <- STAR[47:32] (flat code, DPL 0),
  SS <- STAR[47:32]+8; RIP <- LSTAR (64-bit caller) or CSTAR (compatibility mode) and
  RFLAGS &= ~SFMASK; outside long mode EIP <- STAR[31:0] and IF, RF, VM are cleared.
  SYSENTER (SYSENTER_CS != 0): CS <- SYSENTER_CS, SS <- SYSENTER_CS+8, RSP <- SYSENTER_ESP,
  RIP <- SYSENTER_EIP; IF, RF, VM cleared.

The return instructions (`sysret`, `sysexit`) are executed by Unicorn's own QEMU helpers.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..accel import EFER_LMA, EFER_SCE, RFLAGS_IF, RFLAGS_RF, RFLAGS_VM
from .context import DESC_L, SavedContext

# QEMU segment-cache flags for the flat segments these instructions load (descriptor layout).
_CODE_FLAGS = (1 << 23) | (1 << 15) | (1 << 12) | (0xB << 8)  # G, P, S, exec/read accessed
_DATA_FLAGS = (1 << 23) | (1 << 22) | (1 << 15) | (1 << 12) | (0x3 << 8)  # G, B, P, S, rw accessed
DESC_B = 1 << 22


class InvalidOpcode(Exception):
    """The instruction raises #UD (SYSCALL with EFER.SCE=0)."""


class GeneralProtection(Exception):
    """The instruction raises #GP(0) (SYSENTER with SYSENTER_CS=0)."""


@dataclass
class FastSyscall:
    ctx: SavedContext

    def syscall(self, next_rip: int, rflags: int, star: int, lstar: int, cstar: int, sfmask: int) -> int:
        """Perform SYSCALL on the saved context; returns the new RFLAGS."""
        ctx = self.ctx
        if not ctx.efer & EFER_SCE:
            raise InvalidOpcode
        selector = (star >> 32) & 0xFFFC
        _, _, _, cs_flags = ctx.raw_segment(1)
        if ctx.efer & EFER_LMA:
            ctx.set_gpr(1, next_rip)  # RCX
            ctx.set_gpr(11, rflags & ~RFLAGS_RF)  # R11
            ctx.set_raw_segment(1, selector, 0, 0xFFFFFFFF, _CODE_FLAGS | DESC_L)
            ctx.rip = lstar if cs_flags & DESC_L else cstar
            new_flags = rflags & ~sfmask & ~RFLAGS_RF
        else:
            ctx.set_gpr(1, next_rip & 0xFFFFFFFF)
            ctx.set_raw_segment(1, selector, 0, 0xFFFFFFFF, _CODE_FLAGS | DESC_B)
            ctx.rip = star & 0xFFFFFFFF
            new_flags = rflags & ~(RFLAGS_IF | RFLAGS_RF | RFLAGS_VM)
        ctx.set_raw_segment(2, (selector + 8) & 0xFFFC, 0, 0xFFFFFFFF, _DATA_FLAGS)
        ctx.recompute_hflags(new_flags)
        return new_flags

    def sysenter(self, rflags: int, sysenter_cs: int, sysenter_esp: int, sysenter_eip: int) -> int:
        ctx = self.ctx
        if sysenter_cs & 0xFFFC == 0:
            raise GeneralProtection
        selector = sysenter_cs & 0xFFFC
        long_mode = bool(ctx.efer & EFER_LMA)
        code = _CODE_FLAGS | (DESC_L if long_mode else DESC_B)
        ctx.set_raw_segment(1, selector, 0, 0xFFFFFFFF, code)
        ctx.set_raw_segment(2, selector + 8, 0, 0xFFFFFFFF, _DATA_FLAGS)
        ctx.set_gpr(4, sysenter_esp if long_mode else sysenter_esp & 0xFFFFFFFF)
        ctx.rip = sysenter_eip if long_mode else sysenter_eip & 0xFFFFFFFF
        new_flags = rflags & ~(RFLAGS_IF | RFLAGS_RF | RFLAGS_VM)
        ctx.recompute_hflags(new_flags)
        return new_flags
