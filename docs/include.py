"""Keeps the code in the docs the code in the repository: after each `<!-- include PATH -->` line, the
fenced block that follows is PATH's text. `python docs/include.py` rewrites the blocks;
`--check` exits 1 naming each block that differs (a test runs it, so the docs cannot rot)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_INCLUDE = re.compile(r"^<!-- include (\S+) -->\n```(\w*)\n.*?^```\n", re.M | re.S)
_LANGUAGES = {".c": "c", ".py": "python", ".yaml": "yaml", ".h": "c"}


def synced(text: str) -> str:
    """`text` with every included block replaced by its file's current content."""

    def block(match: re.Match[str]) -> str:
        path = match.group(1)
        body = (ROOT / path).read_text()
        language = _LANGUAGES.get(Path(path).suffix, match.group(2))
        return f"<!-- include {path} -->\n```{language}\n{body}```\n"

    return _INCLUDE.sub(block, text)


def stale(doc: Path) -> list[str]:
    """The included paths whose block in `doc` differs from the file."""
    text = doc.read_text()
    fresh = synced(text)
    return [m.group(1) for m, f in zip(_INCLUDE.finditer(text), _INCLUDE.finditer(fresh)) if m.group(0) != f.group(0)]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    docs = [Path(a) for a in argv if a != "--check"] or sorted((ROOT / "docs").glob("*.md"))
    status = 0
    for doc in docs:
        if check:
            for path in stale(doc):
                print(f"{doc}: the block for {path} is stale: run python docs/include.py", file=sys.stderr)
                status = 1
        else:
            doc.write_text(synced(doc.read_text()))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
