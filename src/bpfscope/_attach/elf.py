"""Function symbols of an ELF file and where their code is in the file: what a uprobe is placed at. 64-bit
little-endian ELF only, which is what x86_64 and aarch64 run."""

from __future__ import annotations

import errno
import fnmatch
import mmap
import struct

from ..errors import BpfscopeError

__all__ = ["function_offsets"]

_SHT_SYMTAB, _SHT_DYNSYM = 2, 11
_STT_FUNC = 2
_SHN_UNDEF = 0
_SECTION = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym


def _string(data: mmap.mmap, offset: int) -> str:
    return data[offset:data.find(b"\0", offset)].decode(errors="replace")


def function_offsets(path: str, pattern: str) -> dict[str, int]:
    """Each defined function of `path` (.symtab and .dynsym) whose name matches the shell-style `pattern`,
    with the file offset of its first instruction; names that alias one address are listed once."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise BpfscopeError(errno.ENOEXEC, f"{path} is not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
        found: dict[str, int] = {}
        seen: set[int] = set()
        for _, kind, _, _, offset, size, link, _, _, entsize in sections:
            if kind not in (_SHT_SYMTAB, _SHT_DYNSYM) or not entsize:
                continue
            strings = sections[link][4]
            for at in range(offset, offset + size, entsize):
                name_at, info, _, shndx, value, _ = _SYMBOL.unpack_from(data, at)
                if info & 0xF != _STT_FUNC or shndx == _SHN_UNDEF or shndx >= len(sections):
                    continue
                name = _string(data, strings + name_at)
                if not fnmatch.fnmatchcase(name, pattern) or name in found:
                    continue
                section_addr, section_offset = sections[shndx][3], sections[shndx][4]
                file_offset = value - section_addr + section_offset
                if file_offset not in seen:
                    seen.add(file_offset)
                    found[name] = file_offset
        return found
