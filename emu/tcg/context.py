"""The hidden CPU state of a Unicorn vCPU, reached through its saved-context bytes.

x86 keeps more state than the registers an instruction names: each segment register has a
hidden descriptor cache (base, limit, attributes) loaded when the selector is (SDM vol. 3A
§3.4.3), and the CPL is SS.DPL of that cache. Unicorn (QEMU 5 inside) mirrors this in
`CPUX86State::segs[]` and in `hflags`, a word of derived mode bits (CPL, CS32/SS32, PE, LMA, CS64,
OSFXSR, ...) that the translator keys its code on. Unicorn's API only writes selectors, so a
mode switch made by the host (reset state, privilege change while delivering an interrupt)
patches the saved context and restores it, recomputing `hflags` the way QEMU's
`cpu_x86_load_seg_cache` does.

The layout below is tied to the unicorn wheel (2.1.x); `check_layout` verifies it at start-up
against values written through the public API, so a different build fails loudly, not subtly.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import UC_X86_REG_CR3, UC_X86_REG_RBX, UC_X86_REG_RIP

from ..accel import CR0_PE, CR4_OSFXSR, DescriptorTable, EFER_LMA, RFLAGS_VM, Segment
from ..errors import EmuError

# Offsets inside the context: a 40-byte uc_context header, then CPUX86State.
HEADER = 40
OFF_REGS = 0
OFF_EIP = 128
OFF_EFLAGS = 136
OFF_HFLAGS = 176
OFF_SEGS = 184  # ES, CS, SS, DS, FS, GS, then LDT, TR, GDT, IDT; 24 bytes each
SEG_SIZE = 24
OFF_CR = 424  # cr[0..4], 8 bytes each
OFF_EFER = 592
OFF_ERROR_CODE = 5384
OFF_EXCEPTION_IS_INT = 5388
OFF_EXCEPTION_NEXT_EIP = 5392
OFF_OLD_EXCEPTION = 5496  # "exception in flight": QEMU escalates the next fault to #DF/shutdown by it
CONTEXT_SIZE = 5608

SEG_INDEX = {"es": 0, "cs": 1, "ss": 2, "ds": 3, "fs": 4, "gs": 5, "ldt": 6, "tr": 7}
IDX_GDT, IDX_IDT = 8, 9

# hflags bits (QEMU target/i386/cpu.h)
HF_CPL_MASK = 3
HF_INHIBIT_IRQ = 1 << 3
HF_CS32 = 1 << 4
HF_SS32 = 1 << 5
HF_ADDSEG = 1 << 6
HF_PE = 1 << 7
HF_MP_SHIFT = 9  # MP, EM, TS at 9, 10, 11 (CR0 bits 1, 2, 3)
HF_LMA = 1 << 14
HF_CS64 = 1 << 15
HF_OSFXSR = 1 << 22
HF_SMAP = 1 << 23
HF_DERIVED = (HF_CPL_MASK | HF_CS32 | HF_SS32 | HF_ADDSEG | HF_PE | (7 << HF_MP_SHIFT)
              | HF_LMA | HF_CS64 | HF_OSFXSR | HF_SMAP)  # fmt: skip
DESC_B = 1 << 22  # the D/B bit in QEMU's segment flags (descriptor layout)
DESC_L = 1 << 21
CR4_SMAP = 1 << 21

_SEG = struct.Struct("<I4xQII")
_SEGMENTS: dict[tuple[int, int, int, int], Segment] = {}  # raw (selector, base, limit, flags) -> Segment


@dataclass
class SavedContext:
    """A reusable raw Unicorn context for one `Uc`, read and patched in place."""

    uc: Uc

    def __post_init__(self) -> None:
        self._handle = self.uc._uch
        self._ctx = ctypes.c_void_p()
        status = uclib.uc_context_alloc(self._handle, ctypes.byref(self._ctx))
        if status != 0:
            raise EmuError(f"unicorn: cannot allocate a CPU context (error {status})")
        size = uclib.uc_context_size(self._handle)
        if size != CONTEXT_SIZE:
            raise EmuError(f"unicorn context is {size} bytes, emu knows the layout of {CONTEXT_SIZE}: "
                           "install unicorn 2.1.4")  # fmt: skip
        ptr = ctypes.cast(self._ctx, ctypes.POINTER(ctypes.c_char * CONTEXT_SIZE)).contents
        self.raw = memoryview(ptr).cast("B")  # header + CPUX86State

    def truncate(self, size: int) -> None:
        """Make `save` copy only the first `size` bytes of CPUX86State, for a reader that needs
        no more (the C fill front reads hflags, segments, CR0-4 and EFER, all in the first 600
        bytes, ten times cheaper than the whole state). uc_context_save copies
        `context_size` bytes, a field at the start of the uc_context header (Unicorn's
        uc_priv.h); emu checks it holds the full size before changing it. Such a context must
        never be restored."""
        full = CONTEXT_SIZE - HEADER
        if struct.unpack_from("<Q", self.raw, 0)[0] != full or not 0 < size <= full:
            raise EmuError("unicorn context header is not the one emu knows: install unicorn 2.1.4")
        struct.pack_into("<Q", self.raw, 0, size)
        self.restore = self._no_restore  # type: ignore[method-assign]

    def _no_restore(self) -> None:
        raise EmuError("internal: a truncated Unicorn context cannot be restored")

    @property
    def address(self) -> int:
        """The uc_context's address (for C code that saves into it)."""
        return self._ctx.value

    def save(self) -> None:
        uclib.uc_context_save(self._handle, self._ctx)

    def restore(self) -> None:
        uclib.uc_context_restore(self._handle, self._ctx)

    def free(self) -> None:
        if self._ctx:
            uclib.uc_context_free(self._ctx)
            self._ctx = ctypes.c_void_p()

    # plain fields ------------------------------------------------------------------------
    def u32(self, off: int) -> int:
        return struct.unpack_from("<I", self.raw, HEADER + off)[0]

    def i32(self, off: int) -> int:
        return struct.unpack_from("<i", self.raw, HEADER + off)[0]

    def u64(self, off: int) -> int:
        return struct.unpack_from("<Q", self.raw, HEADER + off)[0]

    def set_u32(self, off: int, value: int) -> None:
        struct.pack_into("<I", self.raw, HEADER + off, value & 0xFFFFFFFF)

    def set_u64(self, off: int, value: int) -> None:
        struct.pack_into("<Q", self.raw, HEADER + off, value & 0xFFFFFFFFFFFFFFFF)

    def gpr(self, index: int) -> int:
        return self.u64(OFF_REGS + 8 * index)

    def set_gpr(self, index: int, value: int) -> None:
        self.set_u64(OFF_REGS + 8 * index, value)

    @property
    def rip(self) -> int:
        return self.u64(OFF_EIP)

    @rip.setter
    def rip(self, value: int) -> None:
        self.set_u64(OFF_EIP, value)

    @property
    def hflags(self) -> int:
        return self.u32(OFF_HFLAGS)

    @hflags.setter
    def hflags(self, value: int) -> None:
        self.set_u32(OFF_HFLAGS, value)

    def cr(self, n: int) -> int:
        return self.u64(OFF_CR + 8 * n)

    def set_cr(self, n: int, value: int) -> None:
        self.set_u64(OFF_CR + 8 * n, value)

    @property
    def efer(self) -> int:
        return self.u64(OFF_EFER)

    @efer.setter
    def efer(self, value: int) -> None:
        self.set_u64(OFF_EFER, value)

    @property
    def cpl(self) -> int:
        return self.hflags & HF_CPL_MASK

    # segment caches ----------------------------------------------------------------------
    def segment(self, name: str) -> Segment:
        raw = _SEG.unpack_from(self.raw, HEADER + OFF_SEGS + SEG_SIZE * SEG_INDEX[name])
        seg = _SEGMENTS.get(raw)  # Segment is immutable: the few distinct ones are built once
        if seg is None:
            if len(_SEGMENTS) > 4096:
                _SEGMENTS.clear()
            seg = _SEGMENTS[raw] = Segment.from_attributes(*raw)
        return seg

    def raw_segment(self, index: int) -> tuple[int, int, int, int]:
        return _SEG.unpack_from(self.raw, HEADER + OFF_SEGS + SEG_SIZE * index)

    def set_raw_segment(self, index: int, selector: int, base: int, limit: int, flags: int) -> None:
        _SEG.pack_into(self.raw, HEADER + OFF_SEGS + SEG_SIZE * index, selector & 0xFFFF,
                       base & 0xFFFFFFFFFFFFFFFF, limit & 0xFFFFFFFF, flags & 0xFFFFFFFF)  # fmt: skip

    def set_segment(self, name: str, seg: Segment) -> None:
        flags = seg.attributes if (seg.present or not seg.unusable) else 0
        self.set_raw_segment(SEG_INDEX[name], seg.selector, seg.base, seg.limit, flags)

    def table(self, index: int) -> DescriptorTable:
        _, base, limit, _ = self.raw_segment(index)
        return DescriptorTable(base=base, limit=limit)

    def set_table(self, index: int, table: DescriptorTable) -> None:
        self.set_raw_segment(index, 0, table.base, table.limit, 0)

    # derived mode bits -------------------------------------------------------------------
    def recompute_hflags(self, rflags: int) -> None:
        """Recompute hflags from CR0/CR4/EFER and the CS/SS/DS/ES caches (QEMU's rules)."""
        cr0, cr4, efer = self.cr(0), self.cr(4), self.efer
        cs_flags = self.raw_segment(1)[3]
        _, ss_base, _, ss_flags = self.raw_segment(2)
        _, ds_base, _, _ = self.raw_segment(3)
        _, es_base, _, _ = self.raw_segment(0)
        hf = self.hflags & ~HF_DERIVED
        hf |= (cr0 << (HF_MP_SHIFT - 1)) & (7 << HF_MP_SHIFT)
        if cr4 & CR4_OSFXSR:
            hf |= HF_OSFXSR
        if cr4 & CR4_SMAP:
            hf |= HF_SMAP
        protected = bool(cr0 & CR0_PE)
        if protected:
            hf |= HF_PE
            hf |= 3 if rflags & RFLAGS_VM else (ss_flags >> 13) & 3
        long_cs = bool(efer & EFER_LMA) and bool(cs_flags & DESC_L)
        if efer & EFER_LMA:
            hf |= HF_LMA
        if long_cs:
            hf |= HF_CS32 | HF_SS32 | HF_CS64
        else:
            if cs_flags & DESC_B:
                hf |= HF_CS32
            if ss_flags & DESC_B:
                hf |= HF_SS32
        if not long_cs:
            if not protected or rflags & RFLAGS_VM or not hf & HF_CS32:
                hf |= HF_ADDSEG
            elif ds_base | es_base | ss_base:
                hf |= HF_ADDSEG
        self.hflags = hf

    def end_of_delivery(self) -> None:
        """Forget the exception in flight, as QEMU's do_interrupt_all does after delivering.

        Unicorn never calls do_interrupt, so without this the next fault would be escalated by
        QEMU's own check_exception to #DF, or to a shutdown that looks like `hlt`. The
        software-interrupt flag goes too: Unicorn moves RIP to the stale exception_next_eip
        for any later exception while it is set, and a #VMEXIT (emu.tcg.intercepts) does not
        reset it as a real exception does.
        """
        self.set_u32(OFF_OLD_EXCEPTION, 0xFFFFFFFF)
        self.set_u32(OFF_EXCEPTION_IS_INT, 0)

    @property
    def interrupt_shadow(self) -> bool:
        """True for one instruction after `sti` or `mov ss` (SDM vol. 3A §6.8.3)."""
        return bool(self.hflags & HF_INHIBIT_IRQ)


def check_layout(uc: Uc, ctx: SavedContext) -> None:
    """Verify the offsets above against values written through Unicorn's public API."""
    rbx, rip, cr3 = uc.reg_read(UC_X86_REG_RBX), uc.reg_read(UC_X86_REG_RIP), uc.reg_read(UC_X86_REG_CR3)
    uc.reg_write(UC_X86_REG_RBX, 0x1122334455667788)
    uc.reg_write(UC_X86_REG_RIP, 0x7C00)
    ctx.save()
    ok = ctx.gpr(3) == 0x1122334455667788 and ctx.rip == 0x7C00 and ctx.cr(3) == cr3
    uc.reg_write(UC_X86_REG_RBX, rbx)
    uc.reg_write(UC_X86_REG_RIP, rip)
    if not ok:
        raise EmuError("this unicorn build's CPU context layout is not the one emu was written for "
                       "(emu/tcg/context.py): install unicorn 2.1.4")  # fmt: skip
