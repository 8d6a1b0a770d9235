"""`bpfscope build` and bpfscope.build: a user's program compiled with bpfscope's headers, no root needed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bpfscope.btf import Kind
from bpfscope.build import (
    ARCHES,
    CompileError,
    CompileWarning,
    asm_include_dir,
    compile_command,
    compile_object,
    find_clang,
    include_dir,
    libbpf_headers,
    loaded_libbpf,
)
from bpfscope.errors import BpfscopeError, NotSupportedError
from bpfscope.object import ObjectSpec

ROOT = Path(__file__).resolve().parents[2]
EM_BPF = 247

OPENS = r"""
#include "bpfscope.bpf.h"

struct open_key {
	__u32 pid;
	char comm[16];
};

struct open_tally {
	__u64 calls;
	__s64 last_flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct open_key);
	__type(value, struct open_tally);
} opens SEC(".maps");

const volatile __u32 cfg_target_pid = 0;

SEC("tracepoint/syscalls/sys_enter_openat")
int count_opens(struct trace_event_raw_sys_enter *ctx)
{
	struct open_key key = {};
	struct open_tally *tally;

	key.pid = bpf_get_current_pid_tgid() >> 32;
	if (cfg_target_pid && key.pid != cfg_target_pid)
		return 0;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	tally = bpf_map_lookup_elem(&opens, &key);
	if (tally) {
		tally->calls += 1;
		tally->last_flags = ctx->args[2];
	} else {
		struct open_tally first = { .calls = 1, .last_flags = ctx->args[2] };

		bpf_map_update_elem(&opens, &key, &first, BPF_NOEXIST);
	}
	return 0;
}
"""

# PT_REGS_PARM1 reads a different register struct on each architecture: the object shows which
# vmlinux.h and __TARGET_ARCH_ it was built with.
FIRST_ARG = r"""
#include "bpfscope.bpf.h"

const volatile __u64 cfg_min_size = 0;
__u64 big_allocations = 0;

SEC("uprobe")
int BPF_KPROBE(count_malloc, __u64 size)
{
	if (size >= cfg_min_size)
		__sync_fetch_and_add(&big_allocations, 1);
	return 0;
}
"""

# usdt.bpf.h includes <linux/errno.h>, which includes <asm/errno.h>: the target architecture's uapi headers.
USDT = r"""
#include "bpfscope.bpf.h"
#include <bpf/usdt.bpf.h>

__u64 request_bytes = 0;

SEC("usdt")
int BPF_USDT(count_request, long bytes)
{
	if (bytes == -EINVAL)
		return 0;
	__sync_fetch_and_add(&request_bytes, bytes);
	return 0;
}
"""

# Written as against current libbpf headers: the uprobe and syscall spellings, CO-RE reads, an asm/ header.
CURRENT_LIBBPF = r"""
#include "bpfscope.bpf.h"
#include <asm/errno.h>

__u64 calls = 0, returns = 0, last_fd = 0, last_pid = 0;

SEC("uprobe")
int BPF_UPROBE(enter_getppid)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	last_pid = BPF_CORE_READ(task, tgid);
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(leave_getppid, long ret)
{
	if (ret != -EINVAL)
		__sync_fetch_and_add(&returns, 1);
	return 0;
}

SEC("ksyscall/close")
int BPF_KPROBE_SYSCALL(enter_close, int fd)
{
	last_fd = fd;
	return 0;
}
"""

# Open-coded loops came with libbpf 1.2's headers.
OPEN_CODED_LOOP = r"""
#include "bpfscope.bpf.h"

SEC("xdp")
int count_to_three(struct xdp_md *ctx)
{
	int i, sum = 0;

	bpf_for(i, 0, 3) sum += i;
	return sum == 3 ? XDP_PASS : XDP_DROP;
}
"""


def has_clang() -> bool:
    try:
        find_clang()
    except BpfscopeError:
        return False
    return True


needs_clang = pytest.mark.skipif(not has_clang(), reason="clang is not installed (apt-get install clang)")


def cli(*args: str, cwd: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "bpfscope.cli.main", "build", *args],
        check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def elf_machine(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[18:20], "little")


def test_headers_are_found_for_every_arch() -> None:
    headers = include_dir()
    assert (headers / "bpfscope.bpf.h").is_file()
    assert (headers / "packet.bpf.h").is_file()
    for arch in ARCHES:
        assert (headers / arch / "vmlinux.h").is_file(), arch


@needs_clang
def test_struct_map_and_knob_come_out_in_btf(tmp_path: Path) -> None:
    source = tmp_path / "opens.bpf.c"
    source.write_text(OPENS)
    output = compile_object(source)
    assert output == tmp_path / "opens.bpf.o"
    assert elf_machine(output) == EM_BPF

    spec = ObjectSpec.open(output)
    try:
        assert spec.programs["count_opens"].section == "tracepoint/syscalls/sys_enter_openat"
        assert "opens" in spec.maps
        assert dict(spec.rodata) == {"cfg_target_pid": 0}
        key = spec.btf.find("open_key", Kind.STRUCT)
        value = spec.btf.find("open_tally", Kind.STRUCT)
        assert key is not None and value is not None
        key_dtype = spec.btf.codec(key.id).dtype
        value_dtype = spec.btf.codec(value.id).dtype
        assert key_dtype.names == ("pid", "comm")
        assert key_dtype["comm"].str == "|S16"
        assert key_dtype.itemsize == 20
        assert value_dtype.names == ("calls", "last_flags")
        assert (value_dtype["calls"].str, value_dtype["last_flags"].str) == ("<u8", "<i8")
    finally:
        spec.close()


@needs_clang
@pytest.mark.parametrize(("arch", "regs"), [("x86_64", "pt_regs"), ("aarch64", "user_pt_regs")])
def test_arch_picks_its_vmlinux_h(tmp_path: Path, arch: str, regs: str) -> None:
    source = tmp_path / "first_arg.bpf.c"
    source.write_text(FIRST_ARG)
    output = compile_object(source, tmp_path / arch / "first_arg.bpf.o", arch=arch)
    assert elf_machine(output) == EM_BPF
    spec = ObjectSpec.open(output)
    try:
        assert spec.btf.find(regs, Kind.STRUCT) is not None
        assert dict(spec.rodata) == {"cfg_min_size": 0}
    finally:
        spec.close()


@needs_clang
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_asm_headers_are_the_target_architectures(tmp_path: Path, arch: str) -> None:
    source = tmp_path / "usdt.bpf.c"
    source.write_text(USDT)
    asm = asm_include_dir(arch)
    if asm is None:  # no headers of that architecture here: the error names the package that has them
        with pytest.raises(CompileError, match=f"the {arch} <asm/...> headers are missing: install them"):
            compile_object(source, tmp_path / arch / "usdt.bpf.o", arch=arch)
        return
    assert asm.name == f"{arch}-linux-gnu" or asm.parent.name == f"{arch}-linux-gnu"
    command = compile_command(source, tmp_path / "usdt.bpf.o", arch=arch)
    assert command[command.index("-idirafter") + 1] == str(asm)
    output = compile_object(source, tmp_path / arch / "usdt.bpf.o", arch=arch)
    spec = ObjectSpec.open(output)
    try:
        assert spec.programs["count_request"].section == "usdt"
    finally:
        spec.close()


def test_libbpf_headers_match_the_loaded_libbpf() -> None:
    library = loaded_libbpf()
    assert library is not None
    headers = libbpf_headers()
    assert headers.version == library, headers  # this machine's libbpf-dev and libbpf1 are one version
    assert (headers.directory / "bpf" / "bpf_helpers.h").is_file()


def test_headers_newer_than_the_library_are_refused_in_one_line() -> None:
    headers = libbpf_headers()
    older = (headers.version[0], headers.version[1] - 1)
    with pytest.raises(NotSupportedError) as caught:
        libbpf_headers(older)
    message = str(caught.value)
    assert "\n" not in message
    assert f"newer than the libbpf bpfscope loads ({older[0]}.{older[1]})" in message
    assert f"libbpf {headers.version[0]}.{headers.version[1]}'s headers in " in message


@needs_clang
@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_programs_written_against_current_libbpf_headers_compile(tmp_path: Path, arch: str) -> None:
    if asm_include_dir(arch) is None:
        pytest.skip(f"no {arch} asm/ headers on this machine")
    source = tmp_path / "current.bpf.c"
    source.write_text(CURRENT_LIBBPF)
    spec = ObjectSpec.open(compile_object(source, tmp_path / arch / "current.bpf.o", arch=arch))
    try:
        sections = {name: program.section for name, program in spec.programs.items()}
        assert sections == {"enter_getppid": "uprobe", "leave_getppid": "uretprobe", "enter_close": "ksyscall/close"}
    finally:
        spec.close()


@needs_clang
def test_a_name_from_newer_libbpf_headers_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "loop.bpf.c").write_text(OPEN_CODED_LOOP)
    version = libbpf_headers().version
    if version >= (1, 2):
        compile_object(tmp_path / "loop.bpf.c")
        return
    result = cli("loop.bpf.c", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"bpfscope build: clang could not compile loop.bpf.c (exit 1); bpf_for needs libbpf 1.2's headers, "
        f"these are {version[0]}.{version[1]}'s"
    )


@needs_clang
def test_user_include_dirs_come_first(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "limits.bpf.h").write_text("#define MAX_FLOWS 4096\n")
    source = tmp_path / "src" / "flows.bpf.c"
    source.parent.mkdir()
    source.write_text(
        '#include "packet.bpf.h"\n#include "limits.bpf.h"\n'
        "struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, MAX_FLOWS);\n"
        "  __type(key, __u32); __type(value, __u64); } flows SEC(\".maps\");\n"
        'SEC("xdp") int pass_all(struct xdp_md *ctx) { return XDP_PASS; }\n'
    )
    result = cli("src/flows.bpf.c", "-I", "inc", "-o", "out/flows.bpf.o", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "out/flows.bpf.o"
    spec = ObjectSpec.open(tmp_path / "out" / "flows.bpf.o")
    try:
        assert spec.maps["flows"].max_entries == 4096
    finally:
        spec.close()


@needs_clang
def test_flags_match_bpf_makefile(tmp_path: Path) -> None:
    for arch in ARCHES:
        dry_run = subprocess.run(
            ["make", "-s", "-n", "-B", "-C", str(ROOT / "bpf"), f"ARCH={arch}"],
            capture_output=True, text=True, check=True,
        ).stdout
        make_line = shlex.split(next(line for line in dry_run.splitlines() if " -target bpf " in line))
        ours = compile_command(tmp_path / "x.bpf.c", tmp_path / "x.bpf.o", arch=arch)
        first_include = next(i for i, flag in enumerate(ours) if flag.startswith("-I"))
        flags, includes = ours[1:first_include], [flag for flag in ours if flag.startswith("-I")]
        assert set(flags) <= set(make_line), (flags, make_line)
        assert includes == [flag for flag in make_line if flag.startswith("-I")]


@needs_clang
def test_warnings_are_shown_and_the_build_succeeds(tmp_path: Path) -> None:
    source = tmp_path / "warn.bpf.c"
    source.write_text(
        '#include "bpfscope.bpf.h"\nSEC("xdp") int pass_all(struct xdp_md *ctx) { int unused; return 2; }\n'
    )
    with pytest.warns(CompileWarning, match="unused variable 'unused'"):
        compile_object(source)
    result = cli("warn.bpf.c", cwd=tmp_path)
    assert result.returncode == 0
    assert "unused variable 'unused'" in result.stderr
    assert result.stdout == "warn.bpf.o\n"


@needs_clang
def test_compile_error_shows_clang_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bad.bpf.c").write_text(
        '#include "bpfscope.bpf.h"\nSEC("xdp") int broken(struct xdp_md *ctx) { return no_such_thing; }\n'
    )
    with pytest.raises(CompileError) as caught:
        compile_object(tmp_path / "bad.bpf.c")
    assert "use of undeclared identifier 'no_such_thing'" in caught.value.diagnostics

    result = cli("bad.bpf.c", cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.bpf.c:2:" in result.stderr
    assert "error: use of undeclared identifier 'no_such_thing'" in result.stderr
    assert result.stderr.splitlines()[-1] == "bpfscope build: clang could not compile bad.bpf.c (exit 1)"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad.bpf.o").exists()


def test_without_clang_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "prog.bpf.c").write_text("")
    result = cli("prog.bpf.c", cwd=tmp_path, path=str(tmp_path / "empty"))
    assert result.returncode == 1
    assert result.stderr == "bpfscope build: clang not found; install it (Debian: apt-get install clang)\n"


def test_newest_versioned_clang_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("clang-14", "clang-19", "clang-format-19", "clang-9"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_clang() == str(tmp_path / "clang-19")


def test_missing_source_is_one_line(tmp_path: Path) -> None:
    result = cli("nope.bpf.c", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == "bpfscope build: no such file: nope.bpf.c\n"


def test_unknown_arch_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("x.bpf.c", "--arch", "sparc64", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'sparc64'" in result.stderr
    (tmp_path / "x.bpf.c").write_text("")
    with pytest.raises(BpfscopeError, match="no BPF target for architecture 'sparc64'"):
        compile_object(tmp_path / "x.bpf.c", arch="sparc64")
