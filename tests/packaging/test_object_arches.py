"""What can be checked of each architecture's BPF objects without loading them (no kernel of that
architecture needed): every object `make bpf` built is a little-endian ELF-64 for EM_BPF with BTF and,
when it has programs, .BTF.ext; its CO-RE relocations name the same kernel types on every architecture;
and the programs that read registers were compiled for their architecture's register layout (bpf_tracing.h's
__TARGET_ARCH_*): on arm64 `struct user_pt_regs` (x0..x30 in regs[]), on x86-64 `struct pt_regs` (di,
si, ...). An object of one architecture copied into the other's folder fails here."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import bpfscope.object
from bpfscope.btf import Btf, BtfType, Kind

REPO = Path(__file__).resolve().parent.parent.parent
FOLDERS = {"package": bpfscope.object._PACKAGE_OBJECTS, "tests": REPO / "tests" / "bpf" / "build"}
ARCHES = ("x86_64", "aarch64")

EM_BPF = 247
ELFCLASS64, ELFDATA2LSB = 2, 1
SHT_NOBITS = 8
SHF_EXECINSTR = 0x4
BTF_EXT_MAGIC = 0xEB9F
# The register structs each architecture's BPF_KPROBE/BPF_UPROBE arguments are read from, with their
# size in that architecture's vmlinux.h, and the other architecture's struct that must not appear.
REGISTERS = {
    "x86_64": {"struct": "pt_regs", "size": 168, "member": "di", "foreign": "user_pt_regs"},
    "aarch64": {"struct": "user_pt_regs", "size": 272, "member": "regs", "foreign": None},
}
PT_REGS_SIZE = {"x86_64": 168, "aarch64": 336}
# Programs of these kinds take a struct pt_regs context and read arguments from registers.
REGISTER_CONTEXTS = ("kprobe", "kretprobe", "uprobe", "uretprobe", "ksyscall", "kretsyscall", "usdt")


def _objects() -> list[tuple[str, str, str]]:
    return [(folder, arch, p.name.removesuffix(".bpf.o"))
            for folder, path in FOLDERS.items() for arch in ARCHES
            for p in sorted((path / arch).glob("*.bpf.o"))]  # fmt: skip


def _path(folder: str, arch: str, name: str) -> Path:
    return FOLDERS[folder] / arch / f"{name}.bpf.o"


def _register_readers() -> list[tuple[str, str]]:
    """(folder, name) of the objects with a program of a REGISTER_CONTEXTS kind, on x86_64."""
    return sorted({(folder, name) for folder, arch, name in _objects() if arch == "x86_64"
                   and any(s.split("/")[0] in REGISTER_CONTEXTS
                           for s in program_sections(_path(folder, arch, name).read_bytes()))})  # fmt: skip


def sections(data: bytes) -> dict[str, bytes]:
    """An ELF-64 little-endian file's sections by name (empty bytes for SHT_NOBITS)."""
    return {name: content for name, (_flags, content) in _section_table(data).items()}


def program_sections(data: bytes) -> list[str]:
    """The sections holding BPF instructions (SHF_EXECINSTR, not empty): one per program kind."""
    return [name for name, (flags, content) in _section_table(data).items() if flags & SHF_EXECINSTR and content]


def _section_table(data: bytes) -> dict[str, tuple[int, bytes]]:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    found = {}
    for name_off, sh_type, flags, _addr, offset, size, *_ in headers:
        start = names_at + name_off
        name = data[start : data.index(b"\0", start)].decode()
        found[name] = (flags, b"" if sh_type == SHT_NOBITS else data[offset : offset + size])
    return found


def core_relocations(btf_raw: bytes, ext: bytes) -> set[tuple[str, str, int]]:
    """(type name, access string, relocation kind) of each CO-RE relocation in .BTF.ext."""
    if not ext:
        return set()
    btf = Btf(btf_raw)
    hdr_len = struct.unpack_from("<I", ext, 4)[0]
    if hdr_len < 32:  # no core_relo fields: an old compiler's .BTF.ext
        return set()
    relo_off, relo_len = struct.unpack_from("<II", ext, 24)
    data = ext[hdr_len + relo_off : hdr_len + relo_off + relo_len]
    btf_hdr_len, _type_off, _type_len, str_off = struct.unpack_from("<IIII", btf_raw, 4)
    strings = btf_raw[btf_hdr_len + str_off :]
    found: set[tuple[str, str, int]] = set()
    if not data:
        return found
    record_size, at = struct.unpack_from("<I", data, 0)[0], 4
    while at < len(data):
        _section, count = struct.unpack_from("<II", data, at)
        at += 8
        for _ in range(count):
            _insn, type_id, access_off, kind = struct.unpack_from("<IIII", data, at)
            at += record_size
            access = strings[access_off : strings.index(b"\0", access_off)].decode()
            found.add((btf[type_id].name, access, kind))
    return found


def _struct(btf: Btf, name: str) -> BtfType | None:
    return btf.find(name, Kind.STRUCT)


def test_each_architecture_has_the_same_objects() -> None:
    for folder, path in FOLDERS.items():
        names = {arch: sorted(p.name for p in (path / arch).glob("*.bpf.o")) for arch in ARCHES}
        assert names["x86_64"], f"no x86_64 objects in {path}: run `make bpf`"
        assert names["aarch64"] == names["x86_64"], f"{folder}: {names}"


@pytest.mark.parametrize(("folder", "arch", "name"), _objects())
def test_object_is_bpf_elf_with_btf(folder: str, arch: str, name: str) -> None:
    data = _path(folder, arch, name).read_bytes()
    assert data[:4] == b"\x7fELF"
    assert (data[4], data[5]) == (ELFCLASS64, ELFDATA2LSB), "not a little-endian ELF-64"
    assert struct.unpack_from("<H", data, 18)[0] == EM_BPF, "e_machine is not EM_BPF"
    found = sections(data)
    assert found.get(".BTF"), "no .BTF section"
    Btf(found[".BTF"])  # decodes
    if program_sections(data):
        ext = found.get(".BTF.ext", b"")
        assert ext and struct.unpack_from("<H", ext, 0)[0] == BTF_EXT_MAGIC, "programs but no .BTF.ext"


@pytest.mark.parametrize(("folder", "name"), sorted({(f, n) for f, _, n in _objects()}))
def test_core_relocations_match_across_architectures(folder: str, name: str) -> None:
    """The same fields are relocated on every architecture, register structs aside (those differ by
    design, checked below); an architecture built without CO-RE would have none."""
    relocations = {}
    for arch in ARCHES:
        found = sections(_path(folder, arch, name).read_bytes())
        relocations[arch] = core_relocations(found[".BTF"], found.get(".BTF.ext", b""))
    # Field indices (the access strings) differ with each architecture's struct layouts: compare names.
    named = {arch: {t for t, _, _ in r if t not in ("pt_regs", "user_pt_regs")} for arch, r in relocations.items()}
    assert named["aarch64"] == named["x86_64"]


def test_the_register_readers_are_found() -> None:
    """Guards the parametrization below from finding nothing."""
    assert {("package", "funclatency"), ("package", "httptrace")} <= set(_register_readers())


def test_some_objects_have_core_relocations() -> None:
    """Guards the comparison above from passing on two empty sets."""
    for arch in ARCHES:
        found = sections(_path("package", arch, "execsnoop").read_bytes())
        assert any(t == "task_struct" for t, _, _ in core_relocations(found[".BTF"], found[".BTF.ext"])), arch


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize(("folder", "name"), _register_readers())
def test_register_reads_use_the_architecture_layout(folder: str, name: str, arch: str) -> None:
    found = sections(_path(folder, arch, name).read_bytes())
    btf = Btf(found[".BTF"])
    want = REGISTERS[arch]
    # The context type every kprobe/uprobe program declares: the architecture's own struct pt_regs.
    pt_regs = _struct(btf, "pt_regs")
    relocated = {t for t, _, _ in core_relocations(found[".BTF"], found.get(".BTF.ext", b""))}
    if pt_regs is None:
        # Programs that take the context and read no register (attach tests counting hits) leave
        # pt_regs a forward declaration: no layout to check, and no read that could use the wrong one.
        assert btf.find("pt_regs", Kind.FWD) is not None, "no struct pt_regs: the programs take no register context"
        assert not relocated & {"pt_regs", "user_pt_regs"}
        return
    assert pt_regs.size == PT_REGS_SIZE[arch], f"struct pt_regs is {pt_regs.size} bytes: another arch's vmlinux.h"
    regs = _struct(btf, str(want["struct"]))
    assert regs is not None, f"no struct {want['struct']}: not compiled with __TARGET_ARCH for {arch}"
    assert regs.size == want["size"]
    assert want["member"] in {m.name for m in regs.members}
    if want["foreign"]:
        assert _struct(btf, str(want["foreign"])) is None, f"struct {want['foreign']} in an {arch} object"
    # Registers read through CO-RE relocate against the architecture's struct, never the other's.
    register_relos = relocated & {"pt_regs", "user_pt_regs"}
    assert register_relos <= {want["struct"]}, f"registers relocated against {register_relos}"
