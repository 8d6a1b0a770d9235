"""arm64 guests: Debian's arm64 kernels booted under qemu-system-aarch64 (TCG), with a Debian bookworm
arm64 user space built once into a folder of the cache (python3 and the libraries bpfscope needs, kmod
for the initramfs's /modprobe, a static busybox for the initramfs itself). The host's tree is bound in
at its own path and run from source (PYTHONPATH=src), so the arm64 objects `make bpf` built into
src/bpfscope/_bpf/aarch64 and tests/bpf/build/aarch64 are the ones loaded.

    from vmtest import arm64
    result = arm64.run_arm64(kernel, cache, apt, out, timeout)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import archive, guest, report

REPO = Path(__file__).resolve().parent.parent
ARCH = "aarch64"
ROOTFS_SUITE = "bookworm"
# What the tests and the initramfs need; apt adds the dependency closure. No recommends: they pull
# in compilers and documentation. Essential packages are not implied by an empty status: named here.
ROOTFS_PACKAGES = (
    "python3", "python3-numpy", "python3-yaml", "python3-rich", "python3-prometheus-client",
    "python3-pytest", "python3-hypothesis",
    "libbpf1", "libelf1", "zlib1g", "kmod", "iproute2", "bpftool", "busybox-static",
    "dash", "bash", "coreutils", "util-linux", "mount", "findutils", "grep", "sed", "procps",
)  # fmt: skip
# The library links that update-alternatives makes at install time (dpkg-deb -x runs no scripts).
ALTERNATIVES = {
    "usr/lib/aarch64-linux-gnu/libblas.so.3": "blas/libblas.so.3",
    "usr/lib/aarch64-linux-gnu/liblapack.so.3": "lapack/liblapack.so.3",
    "bin/sh": "dash",
}
# Loading every object, the core library's kernel tests (test_attach: every attach kind, uprobes on
# libc included), and the tools whose end-to-end tests need no more than this root carries; the
# others need a compiler, nginx or curl (execsnoop, funclatency, httptrace, bad_input's builds).
DEFAULT_TESTS = [
    "tests/kernel/test_shipped_objects.py",
    "tests/kernel/test_features.py",
    "tests/kernel/test_doctor.py",
    "tests/kernel/test_objects.py",
    "tests/kernel/test_maps.py",
    "tests/kernel/test_ringbuf.py",
    "tests/kernel/test_attach.py",
    "tests/tools/test_packets.py",
    "tests/tools/test_flows.py",
    "tests/tools/test_tcmon.py",
    "tests/tools/test_guard.py",
    "tests/tools/test_opensnoop.py",
]


def _manifest() -> str:
    return f"{ROOTFS_SUITE} arm64\n" + "\n".join(ROOTFS_PACKAGES) + "\n"


def rootfs_apt(cache: Path) -> archive.PrivateApt:
    """A private apt for the user space: bookworm alone, and arm64 as the native architecture."""
    return archive.PrivateApt(cache / "apt-arm64-rootfs", {ROOTFS_SUITE}, {archive.DEB_ARCH[ARCH]})


def _apt_get(apt: archive.PrivateApt, *args: str) -> None:
    command = ["apt-get", "-q", *apt.options, "-oAPT::Architecture=arm64", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"vmtest: apt-get {args[0]} (arm64 root) failed: {result.stderr.strip().splitlines()[-3:]}")


def build_rootfs(cache: Path, apt: archive.PrivateApt | None = None) -> Path:
    """The arm64 root under `cache`, built the first time (or when ROOTFS_PACKAGES changes)."""
    root = cache / f"rootfs-arm64-{ROOTFS_SUITE}"
    stamp = root / ".complete"
    if stamp.exists() and stamp.read_text() == _manifest():
        return root
    apt = apt or rootfs_apt(cache)
    _apt_get(apt, "update")
    _apt_get(apt, "clean")  # packages of an earlier build would be extracted too
    _apt_get(apt, "install", "--download-only", "-y", "--no-install-recommends", *ROOTFS_PACKAGES)
    debs = sorted((apt.root / "cache" / "archives").glob("*_arm64.deb")) + sorted(
        (apt.root / "cache" / "archives").glob("*_all.deb")
    )
    if not debs:
        raise SystemExit(f"vmtest: apt downloaded no packages for the arm64 root into {apt.root}")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    # Merged /usr, as an installed bookworm has it: packages that still ship /bin, /sbin or /lib land in
    # usr/ through these links (tar keeps them with --keep-directory-symlink).
    (root / "usr").mkdir()
    for top in ("bin", "sbin", "lib"):
        (root / "usr" / top).mkdir()
        (root / top).symlink_to(f"usr/{top}")
    for deb in debs:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as tarfile:
            subprocess.run(["tar", "-x", "-C", str(root), "--keep-directory-symlink", "--no-same-owner"],
                           stdin=tarfile.stdout, check=True)  # fmt: skip
        if tarfile.returncode != 0:
            raise SystemExit(f"vmtest: dpkg-deb could not read {deb.name}")
    for link, target in ALTERNATIVES.items():
        path = root / link
        if not path.exists() and (path.parent / target).exists():
            path.symlink_to(target)
    for folder in ("tmp", "run", "proc", "sys", "dev", "etc", "root"):
        (root / folder).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    if not (root / "etc/passwd").exists():
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
    busybox = root / "bin/busybox"
    if not busybox.exists():
        raise SystemExit("vmtest: the arm64 root has no bin/busybox (busybox-static)")
    stamp.write_text(_manifest())
    return root


def _mountpoints(root: Path, binds: tuple[Path, ...]) -> None:
    """Empty folders in the root where init.sh binds the host's folders."""
    for bind in binds:
        (root / str(bind).lstrip("/")).mkdir(parents=True, exist_ok=True)


def _kernel_config(root: Path, tree: Path, kernel: archive.Kernel) -> None:
    """/boot/config-<release> as an installed kernel has it (Debian's kernels have no /proc/config.gz):
    bpfscope.features reads it. A link into the kernel tree, which is bound in at its own path."""
    link = root / "boot" / f"config-{kernel.release}"
    link.parent.mkdir(exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(tree / "boot" / f"config-{kernel.release}")


def run_arm64(
    kernel: archive.Kernel,
    cache: Path,
    apt: archive.PrivateApt | None,
    out: Path,
    timeout: float,
    memory_mb: int = 1024,
    pytest_args: list[str] | None = None,
) -> report.KernelResult:
    """Fetches `kernel` (an aarch64 entry of kernels.toml) with `apt` (a private apt with its suite and
    arm64; None makes one under cache/apt-arm64 for every aarch64 suite in kernels.toml), builds the
    arm64 root once, boots the kernel with it and runs `pytest_args` (default DEFAULT_TESTS) inside."""
    if kernel.arch != ARCH:
        raise SystemExit(f"vmtest: kernel {kernel.name} is {kernel.arch}, not {ARCH}")
    if apt is None:
        suites = {k.suite for k in archive.load_kernels() if k.arch == ARCH}
        apt = archive.PrivateApt(cache / "apt-arm64", suites, {archive.DEB_ARCH[ARCH]})
    tree = archive.fetch(kernel, cache, apt)
    root = build_rootfs(cache)
    binds = (REPO, tree)
    _mountpoints(root, binds)
    _kernel_config(root, tree, kernel)
    script = guest.pytest_script(kernel, REPO, pytest_args or DEFAULT_TESTS, python="python3", plugin=True)
    root_fs = guest.Root(root, root / "bin/busybox", binds)
    return report.read(guest.run(kernel, tree, script, out, timeout, memory_mb, root=root_fs))
