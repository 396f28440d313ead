"""Addresses to names: an ELF image's symbol table (and DWARF line table where there is one).

pyelftools reads the guest image the user gave; a report then says `kmain+0x1c` (and
`hello.c:42` when the image was built with -g) instead of a bare address.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Symbols:
    starts: list[int] = field(default_factory=list)
    names: list[tuple[str, int]] = field(default_factory=list)  # (name, size), parallel to starts
    lines: list[tuple[int, str, int]] = field(default_factory=list)  # (address, file, line), sorted

    @classmethod
    def load(cls, path: Path) -> Symbols:
        """The symbols of `path`, or none if it is not an ELF file (a raw disk, say)."""
        try:
            from elftools.common.exceptions import ELFError
            from elftools.elf.elffile import ELFFile
        except ImportError:
            return cls()
        table: list[tuple[int, str, int]] = []
        lines: list[tuple[int, str, int]] = []
        try:
            with path.open("rb") as f:
                elf = ELFFile(f)
                for section in elf.iter_sections():
                    if section.header.sh_type not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                        continue
                    for symbol in section.iter_symbols():
                        kind = symbol["st_info"]["type"]
                        if symbol.name and kind in ("STT_FUNC", "STT_NOTYPE", "STT_OBJECT") and symbol["st_value"]:
                            table.append((symbol["st_value"], symbol.name, symbol["st_size"]))
                if elf.has_dwarf_info():
                    lines = _line_table(elf.get_dwarf_info())
        except (OSError, ELFError):
            return cls()
        table.sort()
        return cls([a for a, _, _ in table], [(n, s) for _, n, s in table], sorted(lines))

    def describe(self, address: int) -> str:
        """`name+0xoff` (and ` file:line`), or "" when nothing covers `address`."""
        text = ""
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0:
            name, size = self.names[i]
            offset = address - self.starts[i]
            if size == 0 or offset < size or offset < 0x1000:
                text = name if offset == 0 else f"{name}+{offset:#x}"
        j = bisect.bisect_right(self.lines, (address, "\uffff", 1 << 30)) - 1
        if j >= 0 and address - self.lines[j][0] < 0x100:
            text += f" {self.lines[j][1]}:{self.lines[j][2]}"
        return text.strip()


def _line_table(dwarf) -> list[tuple[int, str, int]]:
    out = []
    for unit in dwarf.iter_CUs():
        program = dwarf.line_program_for_CU(unit)
        if program is None:
            continue
        files = program["file_entry"]
        for entry in program.get_entries():
            state = entry.state
            if state is None or state.end_sequence:
                continue
            index = state.file - 1 if program.header["version"] < 5 else state.file
            name = files[index].name.decode(errors="replace") if 0 <= index < len(files) else "?"
            out.append((state.address, name, state.line))
    return out
