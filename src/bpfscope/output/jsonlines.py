"""One JSON object per line on stdout, flushed at once so a pipe sees each interval as it ends."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any, Mapping, TextIO

# Ctrl-C and SIGTERM end a tool through KeyboardInterrupt, raised wherever the main thread is: held
# off while a record is written, they cannot cut it in two (a reader then gets a torn line).
_HELD = {signal.SIGINT, signal.SIGTERM}


def emit(record: Mapping[str, Any], stream: TextIO = sys.stdout) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        stream.write(line)
        stream.flush()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
