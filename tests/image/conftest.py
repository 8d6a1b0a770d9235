"""The container image, built from deploy/Dockerfile with podman and run as deploy/kubernetes/daemonset.yaml runs
it. Minutes of work, so only `make test-image` runs these (it sets BPFSCOPE_IMAGE_TESTS=1 and installs podman,
runc and debootstrap); a plain `pytest` skips them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .podman import BUILD_STAGE, BUILT_HERE, IMAGE, ULIMITS, Podman, debian_suite, make_base

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here not in Path(str(item.fspath)).parents:
            continue
        if os.environ.get("BPFSCOPE_IMAGE_TESTS") != "1":
            item.add_marker(pytest.mark.skip(reason="builds and runs the container image (minutes): "
                                                    "`make test-image` runs it"))
        elif os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root: podman runs the agent with BPF capabilities"))


@pytest.fixture(scope="session")
def podman() -> Podman:
    missing = [name for name in ("podman", "runc", "debootstrap") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (`make test-image` installs Debian's podman, runc and "
                    "debootstrap)")
    return Podman()


@pytest.fixture(scope="session")
def image(podman: Podman) -> str:
    """deploy/Dockerfile built on a base made here. The base stays in podman's storage between runs, and so do
    the image and the layers it shares with the next build (the apt steps, and more when nothing changed)."""
    base = make_base(podman, debian_suite(DOCKERFILE))
    # The build stage is tagged too (the second build takes it from the cache), so that the layers it shares
    # with the next build are not dangling; every layer built here carries BUILT_HERE, and those of earlier
    # runs that no tagged image uses any more are removed, and no other image.
    for target, tag in (["--target", "build"], BUILD_STAGE), ([], IMAGE):
        # --format docker keeps HEALTHCHECK, which OCI image configs have no field for.
        podman("build", "--pull=never", "--network", "host", *ULIMITS, "--format", "docker", *target,
               "--label", BUILT_HERE, "--build-arg", f"BASE={base}", "--file", str(DOCKERFILE),
               "--ignorefile", f"{DOCKERFILE}.dockerignore", "--tag", tag, str(ROOT), timeout=1800)
    podman("image", "prune", "--force", "--filter", f"label={BUILT_HERE}", timeout=300)
    return IMAGE


def _daemonset() -> dict[str, Any]:
    documents = yaml.safe_load_all((DEPLOY / "kubernetes" / "daemonset.yaml").read_text())
    (daemonset,) = [d for d in documents if d and d["kind"] == "DaemonSet"]
    return daemonset  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def pod() -> dict[str, Any]:
    return _daemonset()["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return only  # type: ignore[no-any-return]
