"""pyproject.toml's dependency floors as pip constraints, one `name==floor` a line, for `make test-floors`:
the runtime dependencies and those of the extras named as arguments (`python3 .ci/floors.py otlp`)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# name, optional [extras], then the one lower bound this project gives each dependency.
_FLOOR = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?>=([0-9][^,;\s]*)")


def floors(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    constraints = []
    for requirement in requirements:
        match = _FLOOR.fullmatch(requirement.replace(" ", ""))
        if match is None:
            sys.exit(f"{PYPROJECT.name}: {requirement!r} has no floor (name>=version) to test")
        constraints.append(f"{match.group(1)}=={match.group(2)}")
    return constraints


if __name__ == "__main__":
    print("\n".join(floors(sys.argv[1:])))
