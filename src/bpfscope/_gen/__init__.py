"""`bpfscope gen`: the bpf2go step for Python. Compiles a .bpf.c and writes a module beside it that
knows the object: its types from BTF as numpy dtypes and frozen dataclasses (enums as IntEnum), its
programs, maps, ring buffers and `const volatile` knobs as typed attributes, and a .pyi stub, so
editors complete the names and mypy checks their use. The text depends on the source, the headers
and the generator only (no version, path or time), so `--check` can regenerate it and compare, as CI
does for bpf2go. What the modules import at run time is bpfscope.typed.

`--type NAME` makes a class of a type besides those the maps, globals and exports use. clang writes
BTF only for the types of maps, globals and function signatures, so a ring buffer record the program
builds in a local variable is not in the object's BTF, and bpf2go's -type cannot make a type of it.
gen compiles such a program once more with an unused global pointer to each type asked for, as
BTF_EXPORT would declare it: the object beside the module then carries the type (8 bytes of .bss
each), and readers find it by name (`record="event"`). A typedef has to be in the BTF already."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional, Union

from ..build import compile_object
from ..object import ObjectSpec
from .model import TYPE_ANCHOR, GenError, Model, basename, find_named_type, split_type_name
from .writer import MARKER, Writer

__all__ = ["GenError", "generate", "render", "stale"]


def render(obj: Union[str, os.PathLike[str]], *, source: Union[str, os.PathLike[str]],
           types: Sequence[str] = ()) -> tuple[str, str]:
    """The module and its .pyi for a compiled object whose program is `source` (its name and sha256
    go in the header; everything else comes from the object). `types` names types of the object's
    BTF to make classes of besides those its maps, globals and exports use (`--type`)."""
    source_path = Path(source)
    sha256 = hashlib.sha256(source_path.read_bytes()).hexdigest()
    spec = ObjectSpec.open(obj)
    try:
        model = Model(spec, basename(source_path), extra_types=types)
        module = Writer(model, stub=False, source=source_path.name, sha256=sha256).render()
        stub = Writer(model, stub=True, source=source_path.name, sha256=sha256).render()
    finally:
        spec.close()
    return module, stub


def compile_with_types(
    source: Path,
    output: Path,
    *,
    arch: Optional[str],
    include_dirs: Iterable[Union[str, os.PathLike[str]]],
    types: Sequence[str],
) -> Path:
    """Compiles `source` into `output`; where a struct, union or enum asked for (`types`) is not in the
    BTF, compiles a file that includes the source and declares an unused global pointer to each such
    type (`struct event *__bpfscope_type_event`) instead, so the BTF has them."""
    include_dirs = list(include_dirs)
    obj = compile_object(source, output, arch=arch, include_dirs=include_dirs)
    spec = ObjectSpec.open(obj)
    try:
        missing = [split_type_name(name) for name in types if find_named_type(spec.btf, name) is None]
    finally:
        spec.close()
    anchors = [f"{tag or 'struct'} {bare} *{TYPE_ANCHOR}{bare} __attribute__((unused));"
               for tag, bare in missing if tag != "typedef"]
    if not anchors:
        return obj
    wrapper = output.with_name(f"{basename(source)}.types.bpf.c")
    wrapper.write_text("\n".join([f'#include "{source.resolve()}"', *anchors, ""]), encoding="utf-8")
    try:
        return compile_object(wrapper, output, arch=arch, include_dirs=include_dirs)
    finally:
        wrapper.unlink()


def _outputs(source: Path, output: Optional[Union[str, os.PathLike[str]]]) -> tuple[Path, Path]:
    """The module and its stub: `output`, by default <basename>.py beside the source."""
    module = Path(output) if output is not None else source.with_name(f"{basename(source)}.py")
    if module.suffix != ".py":
        raise GenError(f"{module}: the module must be a .py file")
    return module, module.with_suffix(".pyi")


def generate(
    source: Union[str, os.PathLike[str]],
    output: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    arch: Optional[str] = None,
    include_dirs: Iterable[Union[str, os.PathLike[str]]] = (),
    types: Sequence[str] = (),
) -> Path:
    """Compiles `source` into <basename>.bpf.o beside the module, then writes the module (by default
    <basename>.py beside the source) and its .pyi; returns the module's path. Overwrites only files
    that gen wrote (their first line says so). `types` as render() takes them."""
    source_path = Path(source)
    module, stub = _outputs(source_path, output)
    for path in (module, stub):
        if path.exists() and not path.read_text(errors="replace").startswith(MARKER):
            raise GenError(f"{path} exists and bpfscope gen did not write it; choose another with -o")
    target = module.with_name(f"{basename(source_path)}.bpf.o")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bpfscope-gen-", dir=module.parent) as tmp:
        # Rendered before anything is replaced: a program gen refuses leaves the old object and module together.
        obj = compile_with_types(source_path, Path(tmp) / target.name, arch=arch, include_dirs=include_dirs,
                                 types=types)
        texts = render(obj, source=source_path, types=types)
        os.replace(obj, target)
    for path, text in zip((module, stub), texts):
        path.write_text(text, encoding="utf-8")
    return module


def stale(
    source: Union[str, os.PathLike[str]],
    output: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    arch: Optional[str] = None,
    include_dirs: Iterable[Union[str, os.PathLike[str]]] = (),
    types: Sequence[str] = (),
) -> list[Path]:
    """The module and stub files that differ from what `generate` would write now (missing ones
    included): compiled in a temporary directory, so nothing beside the source changes."""
    source_path = Path(source)
    paths = _outputs(source_path, output)
    with tempfile.TemporaryDirectory(prefix="bpfscope-gen-") as tmp:
        obj = compile_with_types(source_path, Path(tmp) / f"{basename(source_path)}.bpf.o", arch=arch,
                                 include_dirs=include_dirs, types=types)
        texts = render(obj, source=source_path, types=types)
    return [path for path, text in zip(paths, texts) if not path.is_file() or path.read_bytes() != text.encode()]
