"""Kernels from Debian's archive, fetched with a private apt configuration: its own sources list, state
and cache under the cache folder, passed to apt-get as -o Dir::... options. The system's /etc/apt is
only read (for the mirror it already uses), never written: adding suites there once pulled half a
machine to other releases."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import tomllib

KERNELS_FILE = Path(__file__).with_name("kernels.toml")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Kernel:
    name: str  # the kernel line: "6.1", "arm64-6.12"
    arch: str  # uname -m of the guest
    suite: str
    release: str  # uname -r, the folder under lib/modules
    absent: tuple[str, ...]  # bpfscope.features keys this kernel lacks
    packages: tuple[Package, ...]


def load_kernels(path: Path = KERNELS_FILE) -> list[Kernel]:
    with path.open("rb") as f:
        entries = tomllib.load(f)["kernel"]
    return [
        Kernel(e["name"], e["arch"], e["suite"], e["release"], tuple(e.get("absent", ())),
               tuple(Package(**p) for p in e["packages"]))
        for e in entries
    ]


def _system_mirrors() -> dict[str, str]:
    """{"archive": uri, "security": uri} from the sources this machine already uses."""
    out = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)"], capture_output=True, text=True, check=True
    ).stdout
    mirrors: dict[str, str] = {}
    for line in out.splitlines():
        uri, _, release = line.partition(" ")
        kind = "security" if release.endswith("-security") else "archive" if "-" not in release else None
        if kind and kind not in mirrors:
            mirrors[kind] = uri.rstrip("/")
    missing = {"archive", "security"} - mirrors.keys()
    if missing:
        raise SystemExit(f"vmtest: this machine's apt sources name no Debian {' or '.join(sorted(missing))} mirror")
    return mirrors


class PrivateApt:
    """apt-get with every path under `root`."""

    def __init__(self, root: Path, suites: set[str], arches: set[str]) -> None:
        self.root = root
        mirrors = _system_mirrors()
        lines = [
            f"deb [signed-by={KEYRING}] {mirrors['security' if s.endswith('-security') else 'archive']} {s} main"
            for s in sorted(suites)
        ]
        for sub in ("lists/partial", "cache/archives/partial", "etc/apt.conf.d", "etc/preferences.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        sources = root / "etc/sources.list"
        changed = not sources.exists() or sources.read_text() != "\n".join(lines) + "\n"
        sources.write_text("\n".join(lines) + "\n")
        self.options = [
            f"-oDir::Etc::SourceList={sources}",
            "-oDir::Etc::SourceParts=/dev/null",
            f"-oDir::Etc::Parts={root}/etc/apt.conf.d",
            f"-oDir::Etc::PreferencesParts={root}/etc/preferences.d",
            f"-oDir::State={root}",
            f"-oDir::State::Lists={root}/lists",
            f"-oDir::State::status={root}/status",
            f"-oDir::Cache={root}/cache",
            "-oAcquire::Languages=none",
            "-oAPT::Sandbox::User=root",
            *(f"-oAPT::Architectures::={a}" for a in sorted(arches)),
        ]
        self._updated = not changed and any((root / "lists").glob("*Packages*"))

    def run(self, *args: str, cwd: Path | None = None) -> None:
        if not self._updated:
            self._apt("update")
            self._updated = True
        self._apt(*args, cwd=cwd)

    def _apt(self, *args: str, cwd: Path | None = None) -> None:
        result = subprocess.run(["apt-get", "-q", *self.options, *args], cwd=cwd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"vmtest: apt-get {args[0]} failed: {result.stderr.strip().splitlines()[-1:]}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(kernel: Kernel, cache: Path, apt: PrivateApt) -> Path:
    """The kernel's packages extracted under cache (boot/vmlinuz-*, lib/modules/<release>), fetched,
    checked against kernels.toml and run through depmod the first time, reused afterwards."""
    tree = cache / f"{kernel.arch}-{kernel.release}"
    if (tree / ".complete").exists():
        return tree
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    arch = DEB_ARCH[kernel.arch]
    shutil.rmtree(tree, ignore_errors=True)
    for package in kernel.packages:
        deb = debs / f"{package.name}_{package.version.replace(':', '%3a')}_{arch}.deb"
        if not deb.exists() or _sha256(deb) != package.sha256:
            apt.run("download", f"{package.name}:{arch}={package.version}", cwd=debs)
        if _sha256(deb) != package.sha256:
            deb.unlink()
            raise SystemExit(f"vmtest: {deb.name} does not match the SHA-256 in {KERNELS_FILE.name}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    if not (tree / "lib").exists():  # merged /usr (trixie on): modules sit in usr/lib/modules
        (tree / "lib").symlink_to("usr/lib")
    subprocess.run(["depmod", "-b", str(tree), kernel.release], check=True)
    (tree / ".complete").touch()
    return tree


def kernel_image(tree: Path, kernel: Kernel) -> Path:
    """boot/vmlinuz-<release> up to 6.x; from 7.x the binary package puts it beside the modules."""
    for image in (tree / "boot" / f"vmlinuz-{kernel.release}", tree / "lib/modules" / kernel.release / "vmlinuz"):
        if image.exists():
            return image
    raise SystemExit(f"vmtest: no kernel image in {tree}")
