"""The per-segment partial cache: one file per log segment and arms.

A segment never changes once written, so the partials of the rows it holds (per version, against
that version's reference profile) are computed once and reused by every later window that holds
the whole segment. An entry is valid while the segment has the size it had and the partial format
is current; each version's partial also names the profile digest it was computed against, which
the caller compares. An entry also keeps the segment's ``ts`` range, so a cached window decides
that a segment lies inside it without opening the segment, and its prediction id range, so the
realised figures open only the segments that can hold a labelled id.

Layout: ``<home>/monitoring/partials/<model>/<day>/<segment>.<arms>.partial``. An entry is a
small JSON header followed by its number lists as raw little-endian arrays: a window of thousands
of segments reads thousands of entries, and parsing long number lists as text would cost more than
the rest of a cached run. Entries are written through a private temporary file renamed over the
final name: a reader sees a whole entry or none.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ownloop._files import private_folder, replace_private_bytes
from ownloop.monitoring._partial import WindowPartial

__all__ = ["PARTIAL_CACHE_FORMAT", "CacheEntry", "PartialCache"]

PARTIAL_CACHE_FORMAT = 7  # bump when the partial's content changes, so old caches are recomputed
_MAGIC = b"OLPC"
_HEAD = struct.Struct("<4sI")  # magic, header length
_MIN_ARRAY = 8  # shorter number lists stay in the header
_INT64 = 1 << 62
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class CacheEntry:
    """One segment's cached partials by version (each with its profile digest), ``ts`` range
    and prediction id range (None: not known, e.g. an entry written before it was kept)."""

    versions: dict[int, tuple[str, WindowPartial]]
    lo: datetime | None
    hi: datetime | None
    ids: tuple[str, str] | None = None


class PartialCache:
    """Reads and writes the cached partials of log segments.

    ``hits`` and ``misses`` count the segments a window took from the cache or had to compute,
    ``writes`` the entries written, since this object was made."""

    def __init__(self, home: Path) -> None:
        self.root = home / "monitoring" / "partials"
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def path(self, seg: Path, model: str, arms: Sequence[str]) -> Path:
        """Where the entry of ``seg`` (a segment of ``model``) counted over ``arms`` lives."""
        return self.root / model / seg.parent.name / f"{seg.stem}.{'+'.join(arms)}.partial"

    def read(self, seg: Path, model: str, arms: Sequence[str]) -> CacheEntry | None:
        """The valid entry of ``seg``, or None (missing, unreadable, stale or of an old format).

        The caller counts a hit or a miss once it knows whether the entry fits its window."""
        try:
            data = _unpack(bytearray(self.path(seg, model, arms).read_bytes()))
            size = seg.stat().st_size
        except (OSError, ValueError, struct.error):
            return None
        if not isinstance(data, dict) or data.get("format") != PARTIAL_CACHE_FORMAT:
            return None
        if data.get("size") != size:
            return None
        try:
            versions = {
                int(v): (str(d["digest"]), WindowPartial.from_json(d["partial"]))
                for v, d in data["versions"].items()
            }
            lo, hi = _time(data.get("lo")), _time(data.get("hi"))
            ids = _ids(data.get("ids"))
        except (KeyError, TypeError, ValueError):
            return None
        return CacheEntry(versions, lo, hi, ids)

    def write(
        self,
        seg: Path,
        model: str,
        arms: Sequence[str],
        parts: Mapping[int, tuple[str, WindowPartial]],
        lo: datetime | None,
        hi: datetime | None,
        ids: tuple[str, str] | None = None,
    ) -> None:
        """Store the partials of ``seg`` by version (digest, partial) with its ``ts`` and
        prediction id ranges."""
        try:
            size = seg.stat().st_size
        except OSError:
            return  # replaced meanwhile (compacted): nothing to cache
        path = self.path(seg, model, arms)
        private_folder(path.parent)
        body = {
            "size": size,
            "format": PARTIAL_CACHE_FORMAT,
            "lo": _stamp(lo),
            "hi": _stamp(hi),
            "ids": None if ids is None else list(ids),
            "versions": {
                str(v): {"digest": d, "partial": p.to_json()} for v, (d, p) in parts.items()
            },
        }
        replace_private_bytes(path, _pack(body), path.with_name(f".tmp-{os.getpid()}-{path.name}"))
        self.writes += 1


def _pack(body: dict[str, Any]) -> bytes:
    """``body`` as a JSON header with its long number lists moved into raw arrays after it;
    the header names where each array goes (its path of keys and list positions)."""
    arrays: list[np.ndarray] = []
    paths: list[list[str | int]] = []

    def out(value: Any, path: list[str | int]) -> Any:
        if isinstance(value, dict):
            return {k: out(v, [*path, k]) for k, v in value.items()}
        if not isinstance(value, list):
            return value
        kinds = {type(v) for v in value}
        if len(value) >= _MIN_ARRAY and kinds == {float}:
            arrays.append(np.asarray(value, dtype="<f8"))
        elif len(value) >= _MIN_ARRAY and kinds == {int} and -_INT64 < min(value) < _INT64:
            if max(value) >= _INT64:
                return value
            arrays.append(np.asarray(value, dtype="<i8"))
        else:
            return [out(v, [*path, i]) for i, v in enumerate(value)]
        paths.append(path)
        return None

    header = out(body, [])
    header["arrays"] = [[p, a.dtype.str, a.size] for p, a in zip(paths, arrays, strict=True)]
    text = json.dumps(header).encode()
    text += b" " * (-(_HEAD.size + len(text)) % 8)  # arrays start 8-byte aligned
    return b"".join([_HEAD.pack(_MAGIC, len(text)), text, *(a.tobytes() for a in arrays)])


def _unpack(raw: bytearray) -> Any:
    """An entry written by :func:`_pack`: its header with each array put back in its place.

    The arrays are writable views of ``raw``; a damaged entry raises ValueError."""
    magic, length = _HEAD.unpack_from(raw)
    if magic != _MAGIC:
        raise ValueError("not a partial cache entry")
    header = _loads(bytes(raw[_HEAD.size : _HEAD.size + length]))
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise ValueError("a partial cache entry without its array table")
    at = _HEAD.size + length
    try:
        for path, kind, size in header.pop("arrays"):
            array = np.frombuffer(raw, dtype=np.dtype(kind), count=size, offset=at)
            at += array.nbytes
            place = header
            for key in path[:-1]:
                place = place[key]
            place[path[-1]] = array
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"a damaged partial cache entry ({exc})") from exc
    if at != len(raw):
        raise ValueError("a partial cache entry of the wrong length")
    return header


def _loads(raw: bytes) -> Any:
    """Parse an entry: orjson first (several times faster on long number lists), the standard
    parser for what orjson refuses (a NaN written by ``json.dumps``)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _stamp(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _US


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int):
        raise ValueError(f"a cached ts bound is {value!r}, not microseconds")
    return _EPOCH + value * _US


def _ids(value: object) -> tuple[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        raise ValueError(f"a cached id range is {value!r}, not two ids")
    return value[0], value[1]
