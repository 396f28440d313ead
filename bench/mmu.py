"""The shadow MMU's cost on tcg: paging-on workloads under --mmu shadow, --mmu unicorn and raw Unicorn.

Three 32-bit guests with 4 KiB paging, built here (page directory and tables in the image):
  compute   a dec/jnz loop with paging on: translations are filled once, so emu's MMU should
            cost nothing (goal: raw Unicorn / emu --mmu shadow >= 0.8)
  tlb-miss  reads one word from each of 15360 pages (60 MiB), 40 times: more pages than
            Unicorn's 256-entry TLB holds, so every access is a TLB fill. The first round walks
            (and sets A bits); later fills are answered from emu's shadow table, by its C front
            under --mmu shadow and by Python under --mmu shadow-python (goal: shadow at most 4x
            the time of --mmu unicorn). The bench also times one round alone, to split the two.
  switch    a process-switch loop: CR3 alternates between two address spaces each round (a
            full TLB flush in between), touching 64 pages per round
For the TLB-miss loop the bench also times raw Unicorn with an *empty* Python fill hook: the
cost of crossing from C into Python once per miss, which bounds any fill answered in Python.
Runs of the three --mmu settings are interleaved, best of --runs each.
Each figure is printed with the MMU counters that explain it.

    python bench/mmu.py [--runs R]
"""

from __future__ import annotations

import argparse
import struct

from common import ENTRY, LOAD, best_of, tempdir, timed
from unicorn import UC_ARCH_X86, UC_MODE_32, Uc

from emu.loader.multiboot_image import CODE_OFFSET, build_multiboot_elf
from emu.machine import Machine, MachineConfig

PD_A, PD_B = 0x101000, 0x102000
PT_BASE = 0x103000  # 17 page tables: 16 identity (0-64 MiB) + one remapping 4-8 MiB for PD_B
REGION = 0x400000

ENABLE_PAGING = bytes.fromhex("b8 00101000 0f22d8 0f20c0 0d00000080 0f22c0")  # cr3 = PD_A; CR0.PG = 1
EXIT = bytes.fromhex("31c0 e6f4")


def page_tables() -> bytes:
    """PD_A (+PD_B) and their tables, as they sit from PD_A on (appended to the code page)."""
    pd_a = b"".join(struct.pack("<I", (PT_BASE + i * 0x1000) | 3) for i in range(16)) + bytes(4096 - 64)
    pd_b = bytearray(pd_a)
    pd_b[4:8] = struct.pack("<I", (PT_BASE + 16 * 0x1000) | 3)  # 4-8 MiB through PT 16
    tables = b"".join(struct.pack("<I", ((i * 1024 + j) << 12) | 3) for i in range(16) for j in range(1024))
    remap = b"".join(struct.pack("<I", (0x800000 + (j << 12)) | 3) for j in range(1024))  # 4-8 MiB -> 8-12 MiB
    return pd_a + bytes(pd_b) + tables + remap


def image(body: bytes) -> bytes:
    code = ENABLE_PAGING + body + EXIT
    pad = (PD_A - LOAD) - CODE_OFFSET - len(code)
    return build_multiboot_elf(code + bytes(pad) + page_tables())


def compute(n: int) -> bytes:
    return image(b"\xb9" + struct.pack("<I", n) + b"\x49\x75\xfd")  # mov ecx, n; 1: dec ecx; jnz 1b


def touch(rounds: int, pages: int, switch: bool = False) -> bytes:
    """`rounds` times: (switch CR3,) read one word from each of `pages` pages at 4 MiB up."""
    body = b"\xbf" + struct.pack("<I", PD_A)  # mov edi, PD_A
    body += b"\xbb" + struct.pack("<I", rounds)  # mov ebx, rounds
    outer = b""
    if switch:
        outer += bytes.fromhex("0f22df") + b"\x81\xf7" + struct.pack("<I", PD_A ^ PD_B)  # cr3 = edi; toggle
    outer += b"\xbe" + struct.pack("<I", REGION) + b"\xb9" + struct.pack("<I", pages)  # esi, ecx
    inner = bytes.fromhex("8b06 81c600100000 49")  # mov eax,[esi]; add esi,4096; dec ecx
    inner += b"\x75" + bytes([(-(len(inner) + 2)) & 0xFF])  # jnz inner
    outer += inner + b"\x4b"  # dec ebx
    outer += b"\x75" + bytes([(-(len(outer) + 2)) & 0xFF])  # jnz outer
    return image(body + outer)


def run_emu(path, mmu: str) -> tuple[float, dict]:
    machine = Machine(MachineConfig(kernel=path, accel="tcg", mmu=mmu))
    try:
        elapsed = timed(machine.run)
        assert machine.exit_status == 1, machine.exit_status
        softmmu = machine.vcpu.softmmu
        return elapsed, (softmmu.counters.as_dict() if softmmu else {})
    finally:
        machine.close()


def run_raw_unicorn(elf: bytes) -> float:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 128 << 20)
    uc.mem_write(LOAD, elf)
    exit_address = ENTRY + elf[CODE_OFFSET:].index(EXIT) + 2
    return timed(lambda: uc.emu_start(ENTRY, exit_address))


_EMPTY_FILL = None


def run_raw_unicorn_python_fill(elf: bytes) -> float:
    """The floor for any Python MMU: raw Unicorn in UC_TLB_VIRTUAL mode with a fill hook that
    only answers identity mappings (no state read, no lookup)."""
    import ctypes

    from unicorn import UC_HOOK_TLB_FILL, UC_TLB_VIRTUAL
    from unicorn.unicorn_py3.unicorn import uclib

    from emu.tcg.softmmu import _FILL_HOOK, TlbEntry

    entries: dict[int, TlbEntry] = {}

    def fill(_uc: int, vaddr: int, _access: int, address: int, _ud: int) -> bool:
        entry = entries.get(address)
        if entry is None:
            entry = entries[address] = TlbEntry.from_address(address)
        entry.paddr, entry.perms = vaddr & 0xFFFF_FFFF, 7
        return True

    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 128 << 20)
    uc.mem_write(LOAD, elf)
    hook = _FILL_HOOK(fill)
    handle = ctypes.c_size_t()
    uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_TLB_FILL, hook, None, ctypes.c_uint64(1),
                      ctypes.c_uint64(0))  # fmt: skip
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    exit_address = ENTRY + elf[CODE_OFFSET:].index(EXIT) + 2
    return timed(lambda: uc.emu_start(ENTRY, exit_address))


def explain(counters: dict) -> str:
    keys = ("walks", "shadow_hits", "native_hits", "uncached_fills", "pt_write_traps", "page_faults")
    return ", ".join(f"{k} {counters[k]}" for k in keys) + f", flushes {dict(counters['flushes'])}"


MMUS = ("unicorn", "shadow", "shadow-python")


def interleaved(runs: int, paths: dict[str, object]) -> dict[tuple[str, str], tuple[float, dict]]:
    """Best time (and its counters) per (image, --mmu), runs interleaved so that a slow phase of
    a shared machine hits every configuration alike."""
    best: dict[tuple[str, str], tuple[float, dict]] = {}
    for _ in range(runs):
        for name, path in paths.items():
            for mmu in MMUS:
                elapsed, counters = run_emu(path, mmu)
                if (name, mmu) not in best or elapsed < best[name, mmu][0]:
                    best[name, mmu] = (elapsed, counters)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = tempdir()

    elf = compute(50_000_000)
    path = work / "compute.elf"
    path.write_bytes(elf)
    raw = best_of(args.runs, lambda: run_raw_unicorn(elf))
    shadow, counters = min((run_emu(path, "shadow") for _ in range(args.runs)), key=lambda r: r[0])
    print(f"compute loop with paging on (50M iterations), best of {args.runs}")
    print(f"  raw Unicorn (its own walker)   {raw:7.3f} s")
    print(f"  emu --mmu shadow               {shadow:7.3f} s   ratio raw/emu {raw / shadow:5.2f} (goal >= 0.8)")
    print(f"    {explain(counters)}")

    pages, rounds = 15360, 40
    images = {"tlb-miss": touch(rounds, pages), "first-touch": touch(1, pages),
              "switch": touch(20000, 64, switch=True)}  # fmt: skip
    paths = {}
    for name, image_bytes in images.items():
        paths[name] = work / f"{name}.elf"
        paths[name].write_bytes(image_bytes)
    best = interleaved(args.runs, paths)
    floor = best_of(args.runs, lambda: run_raw_unicorn_python_fill(images["tlb-miss"]))

    accesses = rounds * pages
    unicorn = best["tlb-miss", "unicorn"][0]
    print(f"tlb-miss: {rounds} rounds over {pages} pages (one read per page), best of {args.runs}")
    for mmu in MMUS:
        elapsed, counters = best["tlb-miss", mmu]
        goal = "  (goal <= 4)" if mmu == "shadow" else ""
        print(f"  emu --mmu {mmu:<14} {elapsed:7.3f} s  {elapsed / accesses * 1e9:6.0f} ns/access"
              f"   /unicorn {elapsed / unicorn:5.2f}{goal}")  # fmt: skip
        if counters:
            print(f"    {explain(counters)}")
    print(f"  raw Unicorn + empty Python fill {floor:6.3f} s  {floor / accesses * 1e9:6.0f} ns/access"
          f"   /unicorn {floor / unicorn:5.2f}  (any fill answered in Python pays at least this)")
    print("  split: the first round walks every page (A bits set, shadow entries made); later rounds are")
    print("  TLB misses answered from the shadow table")
    for mmu in MMUS:
        first = best["first-touch", mmu][0]
        repeat = (best["tlb-miss", mmu][0] - first) / ((rounds - 1) * pages)
        print(f"    {mmu:<14} first round {first / pages * 1e6:6.2f} us/page    later rounds {repeat * 1e9:6.0f} ns/access"
              f"   /unicorn {repeat / ((unicorn - best['first-touch', 'unicorn'][0]) / ((rounds - 1) * pages)):5.2f}")

    switches = 20000
    unicorn = best["switch", "unicorn"][0]
    print(f"switch: {switches} CR3 switches, 64 pages each, best of {args.runs}")
    for mmu in MMUS:
        elapsed, counters = best["switch", mmu]
        print(f"  emu --mmu {mmu:<14} {elapsed:7.3f} s  {elapsed / (switches * 64) * 1e9:6.0f} ns/access"
              f"   /unicorn {elapsed / unicorn:5.2f}")  # fmt: skip
        if counters:
            print(f"    {explain(counters)}")


if __name__ == "__main__":
    main()
