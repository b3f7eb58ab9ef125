"""The per-segment partial cache: one JSON file per log segment and arms.

A segment never changes once written, so the partials of the rows it holds (per version, against
that version's reference profile) are computed once and reused by every later window that holds
the whole segment. An entry is valid while the segment has the size it had and the partial format
is current; each version's partial also names the profile digest it was computed against, which
the caller compares. An entry also keeps the segment's ``ts`` range, so a cached window decides
that a segment lies inside it without opening the segment, and its prediction id range, so the
realised figures open only the segments that can hold a labelled id.

Layout: ``<home>/monitoring/partials/<model>/<day>/<segment>.<arms>.json``. Entries are written
through a private temporary file renamed over the final name: a reader sees a whole entry or none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from ownloop._files import private_folder, replace_private_text
from ownloop.monitoring._partial import WindowPartial

__all__ = ["PARTIAL_CACHE_FORMAT", "CacheEntry", "PartialCache"]

PARTIAL_CACHE_FORMAT = 6  # bump when the partial's content changes, so old caches are recomputed
# (format 6 entries written before the ts range was kept still read: the segment's footer gives it)
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
        return self.root / model / seg.parent.name / f"{seg.stem}.{'+'.join(arms)}.json"

    def read(self, seg: Path, model: str, arms: Sequence[str]) -> CacheEntry | None:
        """The valid entry of ``seg``, or None (missing, unreadable, stale or of an old format).

        The caller counts a hit or a miss once it knows whether the entry fits its window."""
        try:
            data = _loads(self.path(seg, model, arms).read_bytes())
            size = seg.stat().st_size
        except (OSError, ValueError):
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
        replace_private_text(
            path, json.dumps(body), path.with_name(f".tmp-{os.getpid()}-{path.name}")
        )
        self.writes += 1


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
