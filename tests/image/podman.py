"""podman as this machine runs it, a Debian base image made without a registry, and the DaemonSet's pod spec
turned into `podman run` options, so the image test runs the agent exactly as the manifest asks."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

# The defaults podman would take here are refused by this kernel build: crun, the systemd cgroup manager,
# and the host's ulimits (raising RLIMIT_NOFILE to podman's 1048576 needs CAP_SYS_RESOURCE, which the
# bounding set lacks). Each limit is given explicitly, below the machine's hard limits.
GLOBAL_OPTIONS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]
# Local names, so they are never taken for images of a registry.
BASE_IMAGE = "localhost/bpfscope-base"
IMAGE = "localhost/bpfscope-agent:test"
BUILD_STAGE = "localhost/bpfscope-agent:test-build-stage"
BUILT_HERE = "io.bpfscope.test-image=1"  # a label on every layer the image test builds
# Where Debian keeps certificate authorities of the machine's own; the base trusts what the machine trusts,
# so that pip in the build stage reaches PyPI through a TLS-inspecting proxy as the host's pip does.
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
_PROPAGATION = {"None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


class Podman:
    """`podman(*args)` runs podman with GLOBAL_OPTIONS; a failure fails the test with podman's own words."""

    command = ["podman", *GLOBAL_OPTIONS]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:2])} exited with {result.returncode}:\n"
                                 f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
        return result

    def exists(self, image: str) -> bool:
        return self("image", "exists", image, check=False).returncode == 0

    def remove_containers(self, *names: str) -> None:
        for name in names:
            self("rm", "--force", "--time", "5", name, check=False, timeout=60)

    def pid(self, container: str) -> int:
        return int(self("inspect", "--format", "{{.State.Pid}}", container).stdout)

    def running(self, container: str) -> bool:
        result = self("inspect", "--format", "{{.State.Running}}", container, check=False)
        return result.stdout.strip() == "true"


def debian_suite(dockerfile: Path) -> str:
    """The Debian suite of the Dockerfile's default base: debian:bookworm-slim → bookworm."""
    (base,) = re.findall(r"^ARG BASE=(\S+)$", dockerfile.read_text(), re.M)
    match = re.fullmatch(r"(?:docker\.io/(?:library/)?)?debian:([a-z]+)(?:-slim)?", base)
    assert match, f"{dockerfile}: the base {base} is not a Debian suite a test can rebuild with debootstrap"
    return match.group(1)


def debian_mirror(suite: str) -> str:
    """The mirror apt fetches `suite`'s main component from on this machine."""
    out = subprocess.run(["apt-get", "indextargets", "--format", "$(REPO_URI)", "Created-By: Packages",
                          f"Codename: {suite}", "Component: main"], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    assert out, f"apt knows no mirror for Debian {suite} main: the base image is made from one"
    return out[0]


def _run(argv: list[str], timeout: float) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{argv[0]} exited with {result.returncode}:\n{result.stderr[-4000:]}"


def make_base(podman: Podman, suite: str) -> str:
    """`localhost/bpfscope-base:<suite>`: Debian's minimal root from debootstrap, imported into podman's storage,
    which keeps it for the next run. Debian's own image is on a registry this machine cannot reach."""
    tag = f"{BASE_IMAGE}:{suite}"
    if podman.exists(tag):
        return tag
    work = Path(tempfile.mkdtemp(prefix="bpfscope-base-", dir="/var/tmp"))
    root, tarball = work / "root", work / "root.tar"
    try:
        _run(["debootstrap", "--variant=minbase", suite, str(root), debian_mirror(suite)], timeout=1200)
        # As Debian's images do: no package lists or downloaded packages in the image.
        for cache in ("var/lib/apt/lists", "var/cache/apt"):
            for path in (root / cache).rglob("*"):
                if path.is_file():
                    path.unlink()
        local = root / LOCAL_CAS.relative_to("/")
        local.mkdir(parents=True, exist_ok=True)
        for certificate in LOCAL_CAS.glob("*.crt"):
            shutil.copy2(certificate, local)
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(tarball), "."], timeout=600)
        podman("import", "--change", 'CMD ["bash"]', str(tarball), tag, timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


def quantity(text: str | int) -> float:
    """A Kubernetes quantity: "500m" → 0.5, "384Mi" → 402653184."""
    match = re.fullmatch(r"([0-9.]+)(m|[kMG]i?|)", str(text))
    assert match, f"not a quantity: {text!r}"
    number, unit = match.groups()
    return float(number) / 1000 if unit == "m" else float(number) * _UNITS[unit]


def run_options(pod: dict[str, Any], container: dict[str, Any], *, config_dir: Path) -> list[str]:
    """`podman run` options that give a container what the pod spec gives it: its security context,
    capabilities, host namespaces, limits, environment and volumes (a ConfigMap volume is `config_dir`)."""
    context = container["securityContext"]
    assert not context.get("privileged"), "the agent is never privileged"
    capabilities = context["capabilities"]
    options = [*ULIMITS, "--cap-drop", ",".join(capabilities["drop"]), "--cap-add", ",".join(capabilities["add"])]
    if context.get("readOnlyRootFilesystem"):
        # As in Kubernetes: nothing writable but the volumes (podman would add tmpfs on /run, /tmp, /var/tmp).
        options += ["--read-only", "--read-only-tmpfs=false"]
    if "seLinuxOptions" in context:
        options += ["--security-opt", f"label=type:{context['seLinuxOptions']['type']}"]
    if context.get("appArmorProfile", {}).get("type") == "Unconfined":
        options += ["--security-opt", "apparmor=unconfined"]
    if pod.get("hostNetwork"):
        options += ["--network", "host"]
    if pod.get("hostPID"):
        options += ["--pid", "host"]
    limits = container["resources"]["limits"]
    options += ["--memory", str(int(quantity(limits["memory"]))), "--cpus", str(quantity(limits["cpu"]))]
    env = {"NODE_NAME": socket.gethostname()}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], variable["value"])
    options += [f"--env={name}={value}" for name, value in env.items()]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume, target = volumes[mount["name"]], mount["mountPath"]
        if "hostPath" in volume:
            path = volume["hostPath"]["path"]
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                os.makedirs(path, exist_ok=True)
            assert os.path.isdir(path), f"the node has no {path}, which the pod mounts"
            flags = ["ro" if mount.get("readOnly") else "rw", _PROPAGATION[mount.get("mountPropagation", "None")]]
            options += ["--volume", f"{path}:{target}:{','.join(flags)}"]
        elif "emptyDir" in volume:
            size = volume["emptyDir"].get("sizeLimit")
            options += ["--tmpfs", f"{target}:rw,mode=1777" + (f",size={int(quantity(size))}" if size else "")]
        elif "configMap" in volume:
            options += ["--volume", f"{config_dir}:{target}:ro"]
        else:
            raise AssertionError(f"volume {mount['name']}: a kind the test does not know how to give podman")
    return options

