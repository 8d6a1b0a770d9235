"""One JSON object per line on stdout, flushed at once so a pipe sees each interval as it ends."""

from __future__ import annotations

import json
import sys
from typing import Any, Mapping, TextIO


def emit(record: Mapping[str, Any], stream: TextIO = sys.stdout) -> None:
    stream.write(json.dumps(record, separators=(",", ":")) + "\n")
    stream.flush()
