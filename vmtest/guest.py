"""One guest: an initramfs of busybox and the kernel's 9p modules, booted under qemu's software
emulation (TCG) with the host's root shared read-only over 9p, so the host's venv, package and BPF
objects (compiled once, on the host) run inside. A second, writable 9p share carries run.sh in and
the results out."""

from __future__ import annotations

import gzip
import lzma
import os
import shlex
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .archive import Kernel, kernel_image

INIT = Path(__file__).with_name("init.sh")
BUSYBOX = Path("/bin/busybox")
# Enough to mount the host's root: everything else the kernel loads on demand through /modprobe.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
QEMU = {"x86_64": ["qemu-system-x86_64", "-machine", "q35"], "aarch64": ["qemu-system-aarch64", "-machine", "virt"]}
CONSOLE = {"x86_64": "ttyS0", "aarch64": "ttyAMA0"}
# Debian 12's qemu (7.2) emulates AVX2 wrongly under TCG: numpy's AVX2 argsort returned a misordered
# array in a guest (while the same data sorted right on the host). The guests get CPUs without AVX.
CPU = {"x86_64": "max,-avx,-avx2", "aarch64": "max"}


@dataclass
class Outcome:
    kernel: Kernel
    seconds: float
    status: int | None  # run.sh's exit status; None when the guest never wrote one (crash, timeout)
    out: Path
    timed_out: bool = False


def pytest_script(kernel: Kernel, repo: Path, pytest_args: list[str], *, python: str, plugin: bool = False) -> str:
    """run.sh for a guest: `bpfscope doctor --json`, then pytest on `repo`'s tests with results in the out
    share (-u: output.log shows each outcome as it comes). `python` is a venv's (its bin first on PATH)
    or the root's python3 with bpfscope from source, whose pytest plugin is then named (`plugin`)."""
    bin_dir = f"{Path(python).parent}:" if python.startswith("/") else ""
    return f"""export PATH={bin_dir}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 BPFSCOPE_EXPECT_ABSENT={",".join(kernel.absent)}
export PYTHONPATH={shlex.quote(str(repo / "src"))}  # this checkout's package, whichever a venv installed
cd {shlex.quote(str(repo))}
echo "guest: $(uname -r) $(uname -m), up $(cut -d' ' -f1 /proc/uptime) s"
{python} -m bpfscope.cli.main doctor --json > /tmp/vmout/doctor.json
exec {python} -u -m pytest {"-p bpfscope.testing.plugin " if plugin else ""}-p no:cacheprovider -v -rfE \\
    --junitxml=/tmp/vmout/junit.xml {shlex.join(pytest_args)}
"""


def _boot_modules(tree: Path, release: str) -> list[Path]:
    """The modules to insmod before the 9p mount, dependencies first, as modprobe would load them."""
    shown = subprocess.run(
        ["modprobe", "-d", str(tree), "-S", release, "--show-depends", "-a", *BOOT_MODULES],
        capture_output=True, text=True, check=True,
    ).stdout
    paths: list[Path] = []
    for line in shown.splitlines():
        kind, _, rest = line.partition(" ")
        path = Path(rest.split()[0]) if kind == "insmod" else None
        if path and path not in paths:
            paths.append(path)
    return paths


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks: (name, mode, data) per entry."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


@dataclass(frozen=True)
class Root:
    """The guest's user space: a folder of the host's (its own root by default; a foreign architecture's
    root for another guest arch), the static busybox for its initramfs, and host folders to bind in."""

    path: Path = Path("/")
    busybox: Path = BUSYBOX
    binds: tuple[Path, ...] = ()


def build_initramfs(kernel: Kernel, tree: Path, dest: Path, root: Root) -> Path:
    directory, file = 0o040755, 0o100755
    inside = "/host" + str(root.path).rstrip("/")
    modprobe = (f"#!/bin/sh\nexec chroot {inside} /sbin/modprobe -d {shlex.quote(str(tree))} -S {kernel.release}"
                ' "$@"\n')
    modules = _boot_modules(tree, kernel.release)
    names = [p.name.removesuffix(".xz").removesuffix(".zst") for p in modules]
    entries = [
        *((d, directory, b"") for d in ("bin", "dev", "proc", "sys", "modules")),
        ("bin/busybox", file, root.busybox.read_bytes()),
        ("init", file, INIT.read_bytes()),
        ("root", 0o100644, str(root.path).rstrip("/").encode()),
        ("binds", 0o100644, "".join(f"{b}\n" for b in root.binds).encode()),
        ("modprobe", file, modprobe.encode()),
        ("modules/order", 0o100644, "".join(f"{n}\n" for n in names).encode()),
        *((f"modules/{n}", 0o100644, _module_bytes(p)) for n, p in zip(names, modules)),
    ]
    dest.write_bytes(gzip.compress(_newc(entries), compresslevel=1))
    return dest


def qemu_command(kernel: Kernel, tree: Path, initramfs: Path, out: Path, memory_mb: int = 512) -> list[str]:
    return [
        *QEMU[kernel.arch], "-accel", "tcg", "-cpu", CPU[kernel.arch], "-smp", "1", "-m", str(memory_mb),
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{out / 'console.log'}",
        "-kernel", str(kernel_image(tree, kernel)), "-initrd", str(initramfs),
        "-append", f"console={CONSOLE[kernel.arch]} panic=-1 quiet",
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={out},mount_tag=out,security_model=none",
    ]  # fmt: skip


def run(
    kernel: Kernel, tree: Path, script: str, out: Path, timeout: float, memory_mb: int = 512, root: Root = Root()
) -> Outcome:
    """Boots the kernel, runs `script` (sh, chrooted in `root`) inside, and waits for it to power off."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "run.sh").write_text(script)
    initramfs = build_initramfs(kernel, tree, out / "initramfs.gz", root)
    started = time.monotonic()
    with subprocess.Popen(qemu_command(kernel, tree, initramfs, out, memory_mb), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=(out / "qemu.log").open("w")) as qemu:  # fmt: skip
        try:
            qemu.wait(timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait()
            timed_out = True
    initramfs.unlink()
    status_file = out / "status"
    status = int(status_file.read_text()) if status_file.exists() and not timed_out else None
    return Outcome(kernel, time.monotonic() - started, status, out, timed_out)


def _static_elf(path: Path) -> bool:
    """True for an ELF-64 with no PT_INTERP program header: it runs without a dynamic loader."""
    data = path.read_bytes()
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x36)
    return data[:4] == b"\x7fELF" and all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum)
    )


def finished(kernel: Kernel, out: Path) -> Outcome:
    """The outcome of an earlier run from what it left in `out`: run.sh is written at boot, the status
    when the tests end (no status: the guest crashed or was stopped)."""
    status_file, started = out / "status", (out / "run.sh").stat().st_mtime
    last = max((p.stat().st_mtime for p in out.iterdir() if p.is_file()), default=started)
    status = int(status_file.read_text()) if status_file.exists() else None
    return Outcome(kernel, last - started, status, out, timed_out=status is None)


def available() -> str | None:
    """Why guests cannot run here, or None."""
    missing = [q[0] for q in QEMU.values() if shutil.which(q[0]) is None]
    if not BUSYBOX.exists() or not _static_elf(BUSYBOX):
        missing.append("busybox-static")
    if os.geteuid() != 0:
        return "needs root (depmod into the cache, and the guests' tests load BPF programs)"
    return f"missing: {', '.join(missing)}" if missing else None
