"""Text lines from a batch of ring buffer records with Python work per distinct record, not per record.

A tracer sees the same event over and over (a loop opening one file, a server answering one path):
the records differ only in their time. `distinct()` finds the equal ones with whole-column numpy
passes, the tool renders each distinct record once, and `join_lines()` puts every line together with
its own time stamp, made for the whole batch at once by `epoch_stamps()` or `clock_stamps()`."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["distinct", "epoch_stamps", "clock_stamps", "join_lines"]

Indices = np.ndarray[Any, np.dtype[np.intp]]

def _compared_words(batch: np.ndarray[Any, Any], ignore: Sequence[str]) -> np.ndarray[Any, Any]:
    """The records as rows of uint64 words without the bytes of the ignored fields: a view of the
    batch when those fields fill whole words at the start or the end of the record (a time stamp
    first, as the tools lay their records out), a masked copy otherwise."""
    n, itemsize = len(batch), batch.dtype.itemsize
    if itemsize % 8 == 0 and batch.flags.c_contiguous:
        words = batch.view(np.uint64).reshape(n, itemsize // 8)  # ring records are 8-aligned
    else:
        raw = np.zeros((n, itemsize + -itemsize % 8), dtype=np.uint8)
        raw[:, :itemsize] = np.ascontiguousarray(batch).view(np.uint8).reshape(n, itemsize)
        words = raw.view(np.uint64)
    mask = np.full(words.shape[1] * 8, 0xFF, dtype=np.uint8)
    for name in ignore:
        field, offset = batch.dtype.fields[name][:2]
        mask[offset:offset + field.itemsize] = 0
    kept = mask.view(np.uint64)
    whole = np.flatnonzero(kept == np.uint64(2**64 - 1))
    if len(whole) and whole[-1] - whole[0] + 1 == len(whole) and (kept[:whole[0]] == 0).all() \
            and (kept[whole[-1] + 1:] == 0).all():
        return words[:, whole[0]:whole[-1] + 1]
    return words & kept


# Odd multipliers, one per word, for the grouping hash: fixed, so the work done is the same every run.
_MULTIPLIERS = np.random.default_rng(0x6270_6673).integers(0, 2**63, size=512, dtype=np.uint64) * 2 + 1


def distinct(batch: np.ndarray[Any, Any], ignore: Sequence[str] = ()) -> tuple[Indices, Indices]:
    """`(first, inverse)`: `batch[first[k]]` is the k-th distinct record, comparing every byte but those
    of the `ignore` fields, and record i equals `batch[first[inverse[i]]]`. Records are grouped by a
    64-bit hash and then compared whole, so the grouping is exact: a record whose hash matches a
    different record's gets a group of its own."""
    n = len(batch)
    if n == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    words = _compared_words(batch, ignore)
    columns = words.shape[1]
    multipliers = np.resize(_MULTIPLIERS, columns)
    with np.errstate(over="ignore"):
        digest = (words * multipliers).sum(axis=1, dtype=np.uint64)
    _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    misfits = np.flatnonzero((words != words[first[inverse]]).any(axis=1))
    if len(misfits):  # equal hashes of different records: each such record stands alone
        first = np.concatenate([first, misfits])
        inverse = inverse.copy()
        inverse[misfits] = np.arange(len(first) - len(misfits), len(first))
    return first, inverse


_PAIRS = np.array([[ord(str(i // 10)), ord(str(i % 10))] for i in range(100)], dtype=np.uint8)  # "00".."99"


def _micro_digits(micros: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The six digits of each value's microseconds (`micros % 10**6`), as (n, 6) ASCII bytes."""
    fraction = micros % 1_000_000
    return np.hstack([_PAIRS[fraction // 10_000], _PAIRS[fraction // 100 % 100], _PAIRS[fraction % 100]])


def _stamps(epoch_ns: np.ndarray[Any, Any], second: Callable[[int], bytes], after: bytes) -> list[bytes]:
    """`second(s)` + "." + microseconds + `after`, one per time stamp; `second` runs once per distinct
    second (a batch spans a few), everything else for the whole batch at once."""
    n = len(epoch_ns)
    if n == 0:
        return []
    micros = epoch_ns.astype(np.int64) // 1000
    unique, which = np.unique(micros // 1_000_000, return_inverse=True)
    heads = [second(s) + b"." for s in unique.tolist()]
    width = len(heads[0])
    if any(len(h) != width for h in heads):  # seconds of different widths: rare enough to go one by one
        fractions = (micros % 1_000_000).tolist()
        return [b"%s%06d%s" % (heads[w], f, after) for w, f in zip(which.reshape(-1).tolist(), fractions)]
    out = np.empty((n, width + 6 + len(after)), dtype=np.uint8)
    out[:, :width] = np.frombuffer(b"".join(heads), dtype=np.uint8).reshape(-1, width)[which.reshape(-1)]
    out[:, width:width + 6] = _micro_digits(micros)
    out[:, width + 6:] = np.frombuffer(after, dtype=np.uint8)
    stamps: list[bytes] = out.view(f"S{out.shape[1]}").reshape(-1).tolist()
    return stamps


def epoch_stamps(epoch_ns: np.ndarray[Any, Any], before: bytes = b"", after: bytes = b"") -> list[bytes]:
    """Seconds since the epoch with six decimals (`1764650000.123456`), between `before` and `after`."""
    return _stamps(epoch_ns, lambda s: b"%s%d" % (before, s), after)


def clock_stamps(epoch_ns: np.ndarray[Any, Any], before: bytes = b"", after: bytes = b"") -> list[bytes]:
    """Local wall-clock time with microseconds (`14:03:27.123456`), between `before` and `after`."""
    return _stamps(epoch_ns, lambda s: before + time.strftime("%H:%M:%S", time.localtime(s)).encode(), after)


def join_lines(stamps: list[bytes], rendered: Sequence[bytes], inverse: np.ndarray[Any, Any]) -> bytes:
    """Each record's stamp followed by its distinct record's rendering (`rendered[inverse[i]]`)."""
    tails = np.array(rendered, dtype=object)[inverse].tolist() if len(rendered) else []
    parts: list[bytes] = [b""] * (2 * len(stamps))
    parts[0::2] = stamps
    parts[1::2] = tails
    return b"".join(parts)
