"""Compaction: merge a closed period's prediction (and label) segments into larger files.

Under steady traffic the log gets one segment per model per second. :func:`compact` merges the
segments written before ``now - older_than`` into files of up to ``max_rows`` rows, sorted by
time, in row groups of ``row_group_rows``, one day folder at a time.

The protocol (a kill at any moment leaves each row visible in exactly one place):

1. Take the model's compaction lock (``flock`` on ``<model>/.compact.lock``), so two compactors
   never pick the same segments. Finish earlier runs: delete the segments a published compacted
   file replaces once it is older than ``keep_sources``, and remove ``.compacting-*`` temp files
   (under the lock nobody else writes one, so these are left by a killed run).
2. Choose the sources: published segments (never hidden ``.tmp-``/``.pending-`` names, never
   compacted files) written before the cutoff, by the write time in their name, and not already
   replaced. The open period is never touched: its writer's segments are newer than the cutoff.
3. Read them in name order, one group per column layout, concatenate, sort stably by time, write
   under ``.compacting-<name>`` with the list of source names in the footer metadata
   (``ownloop.replaces``), fsync.
4. Publish: rename to ``<newest source µs>-m<random>-<lo>-<hi>.parquet`` and fsync the folder.
   Before the rename readers list the sources only; from it on they list the compacted file and
   skip every name its footer lists (:func:`ownloop.predlog.replaced_in`), on disk or not.
5. Delete the sources once ``keep_sources`` has passed (at once when it is zero, else in a later
   run), fsync the folder.

A kill before 4 leaves the sources and a hidden temp file (removed by the next run); after 4 the
compacted file and maybe some sources readers skip (deleted by the next run). The name keeps the
newest source's write time, so ``written_after`` filters stay right and the file sorts where its
sources did; its id span covers theirs, so id lookups still open it.

Concurrent readers: a reader that listed the sources just before step 4 reads them, and they are
kept for ``keep_sources`` (10 minutes by default) so such a read completes with every row; a
read that lasts longer may find a source gone and name it as skipped. Monitor caches are keyed by
file name: the compacted file gets its partials computed (and cached) on its first read, and the
partials of replaced sources are never used again.

>>> compact(config.predictions_dir, "churn", older_than=timedelta(hours=1))  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ownloop import objectstore, predlog
from ownloop._files import create_private, inside
from ownloop.artifacts import fsync_path
from ownloop.errors import InvalidInputError, OwnloopError
from ownloop.names import validate_name

__all__ = ["KINDS", "CompactionLoop", "CompactionResult", "compact", "compact_kind"]

log = logging.getLogger("ownloop.compaction")

KINDS = ("predictions", "labels")
_TEMP = ".compacting-"
_LOCK = ".compact.lock"
_TIME_COLUMN = {"predictions": "ts", "labels": "labeled_at"}


@dataclass
class CompactionResult:
    """What one run did for one model's predictions or labels."""

    model: str
    kind: str
    sources: int = 0  # segments merged in this run
    files: int = 0  # compacted files published in this run
    rows: int = 0  # rows in them
    removed: int = 0  # replaced segments deleted (of this run or earlier ones)
    cleaned: int = 0  # temp files of killed runs removed
    skipped: list[predlog.SkippedSegment] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "kind": self.kind,
            "sources": self.sources,
            "files": self.files,
            "rows": self.rows,
            "removed": self.removed,
            "cleaned": self.cleaned,
            "skipped": [str(s) for s in self.skipped],
            "seconds": round(self.seconds, 3),
        }


def compact(
    root: Path,
    model: str | None = None,
    *,
    older_than: timedelta = timedelta(hours=1),
    keep_sources: timedelta = timedelta(minutes=10),
    labels: bool = True,
    max_rows: int = 1_000_000,
    row_group_rows: int = 128 * 1024,
    now: float | None = None,
) -> list[CompactionResult]:
    """Compact the log of ``model`` (every model when None) under ``root``; see the module text.

    ``now`` is a unix time (default: the wall clock, the one segment names are stamped with).
    """
    if objectstore.is_object(root):
        raise InvalidInputError(
            f"the prediction log at {root} is in object storage, and compaction runs only on a "
            "local or shared folder for now; leave OWNLOOP_COMPACT_EVERY_S unset and do not run "
            "ownloop compact while OWNLOOP_PREDICTIONS_URL is set"
        )
    if older_than < timedelta(0) or keep_sources < timedelta(0):
        raise InvalidInputError("older_than and keep_sources must not be negative")
    if max_rows < 1 or row_group_rows < 1:
        raise InvalidInputError("max_rows and row_group_rows must be at least 1")
    models = [validate_name("model", model)] if model is not None else _models(root)
    if model is not None and not (root / model).is_dir():
        raise InvalidInputError(
            f"model '{model}' has no prediction log under {root}; nothing to compact"
        )
    at = time.time() if now is None else now
    out = []
    for name in models:
        for kind in KINDS if labels else KINDS[:1]:
            out.append(
                compact_kind(
                    root,
                    name,
                    kind,
                    cutoff_us=int((at - older_than.total_seconds()) * 1_000_000),
                    keep_until=None if not keep_sources else at - keep_sources.total_seconds(),
                    max_rows=max_rows,
                    row_group_rows=row_group_rows,
                )
            )
    return out


def _models(root: Path) -> list[str]:
    """The model folders under ``root`` (a folder not named as a model could be is left alone)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_model_name(p.name))


def _is_model_name(name: str) -> bool:
    try:
        validate_name("model", name)
    except InvalidInputError:
        return False
    return True


def compact_kind(
    root: Path,
    model: str,
    kind: str,
    *,
    cutoff_us: int,
    keep_until: float | None,
    max_rows: int,
    row_group_rows: int,
) -> CompactionResult:
    """One model's predictions or labels: segments written before ``cutoff_us`` (unix µs) are
    merged; replaced segments of compacted files last changed before ``keep_until`` (any time:
    None) are deleted."""
    started = time.perf_counter()
    result = CompactionResult(model, kind)
    model_dir = inside(root, root / validate_name("model", model))
    folder = model_dir / "labels" if kind == "labels" else model_dir
    if not folder.is_dir():
        return result
    with _locked(model_dir):
        for day_dir in _day_dirs(folder):
            _finish_earlier(day_dir, keep_until, result)
            _compact_day(day_dir, kind, cutoff_us, keep_until, max_rows, row_group_rows, result)
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """Hold the model's compaction lock (released by the kernel if the process dies)."""
    fd = os.open(model_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _day_dirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.name.startswith("date=") and inside(folder, p).is_dir()
    )


def _finish_earlier(day_dir: Path, keep_until: float | None, result: CompactionResult) -> None:
    """Remove the temp files of killed runs and the sources whose keeping time is over."""
    names = sorted(os.listdir(day_dir))
    changed = False
    for name in names:
        if name.startswith(_TEMP):
            (day_dir / name).unlink(missing_ok=True)
            result.cleaned += 1
            changed = True
    present = set(names)
    for name in names:
        if not predlog.is_compacted(name):
            continue
        path = day_dir / name
        try:
            if keep_until is not None and path.stat().st_mtime > keep_until:
                continue
        except FileNotFoundError:
            continue
        for gone in sorted(predlog.replaced_by(path) & present):
            (day_dir / gone).unlink(missing_ok=True)
            result.removed += 1
            changed = True
    if changed:
        fsync_path(day_dir)


def _compact_day(
    day_dir: Path,
    kind: str,
    cutoff_us: int,
    keep_until: float | None,
    max_rows: int,
    row_group_rows: int,
    result: CompactionResult,
) -> None:
    names = [n for n in sorted(os.listdir(day_dir)) if n.endswith(".parquet") and n[0] != "."]
    gone = predlog.replaced_in(day_dir, names)
    sources = [
        n
        for n in names
        if n not in gone and not predlog.is_compacted(n) and (_stamp(n) or cutoff_us) < cutoff_us
    ]
    for group in _groups(day_dir, sources, max_rows, result):
        if len(group) < 2:
            continue
        rows = _merge(day_dir, group, kind, row_group_rows)[1]
        result.sources += len(group)
        result.files += 1
        result.rows += rows
        if keep_until is None:  # no reader to wait for: step 5 at once
            for name in group:
                (day_dir / name).unlink(missing_ok=True)
                result.removed += 1
            fsync_path(day_dir)


def _stamp(name: str) -> int | None:
    """The write time (unix µs) in a segment's name, or None when it is not named by the writer."""
    stamp = name[:16]
    return int(stamp) if len(name) > 17 and stamp.isdigit() and name[16] == "-" else None


def _groups(
    day_dir: Path, names: Sequence[str], max_rows: int, result: CompactionResult
) -> list[list[str]]:
    """Sources split by column layout, then into runs of at most ``max_rows`` rows (name order)."""
    layouts: list[tuple[pa.Schema, list[list[str]], list[int]]] = []
    for name in names:
        path = day_dir / name
        try:
            file = pq.ParquetFile(str(path))
            meta, schema = file.metadata, file.schema_arrow.remove_metadata()
        except (OSError, pa.ArrowException) as exc:
            result.skipped.append(predlog.SkippedSegment(path, f"not readable ({exc})"))
            continue
        entry = next((e for e in layouts if e[0].equals(schema)), None)
        if entry is None:
            entry = (schema, [[]], [0])
            layouts.append(entry)
        runs, rows = entry[1], entry[2]
        if runs[-1] and rows[0] + meta.num_rows > max_rows:
            runs.append([])
            rows[0] = 0
        runs[-1].append(name)
        rows[0] += meta.num_rows
    return [run for _, runs, _ in layouts for run in runs if run]


def _span(names: Sequence[str]) -> tuple[int, int] | None:
    spans = [predlog._id_span(n) for n in names]
    if any(s is None for s in spans):
        return None
    known = [s for s in spans if s is not None]
    return min(s[0] for s in known), max(s[1] for s in known)


def _merge(day_dir: Path, names: Sequence[str], kind: str, row_group_rows: int) -> tuple[Path, int]:
    """Write ``names`` as one sorted file under a temp name, then publish it (steps 3 and 4)."""
    # one small file at a time, without a thread pool: several times faster than read_table here
    tables = [pq.ParquetFile(str(day_dir / n)).read(use_threads=False) for n in names]
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    table = table.sort_by([(_TIME_COLUMN[kind], "ascending")])  # stable: ties keep name order
    table = table.replace_schema_metadata({predlog.REPLACES_KEY: json.dumps(list(names))})
    final = predlog.compacted_name(max(_stamp(n) or 0 for n in names), _span(names))
    tmp = day_dir / f"{_TEMP}{final}"
    try:
        create_private(tmp)
        pq.write_table(
            table,
            str(tmp),
            compression="lz4",
            use_dictionary=predlog._dictionary_columns(table),
            row_group_size=row_group_rows,
        )
        fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, day_dir / final)
    fsync_path(day_dir)
    return day_dir / final, table.num_rows


class CompactionLoop:
    """Compact every model's log every ``every_s`` seconds in a background thread, while
    ``hold()`` says this process holds the compaction lease (one process compacts at a time;
    the file lock of :func:`compact` keeps two runs apart in any case).

    A failing run is logged and the loop goes on; ``stop`` waits for a run under way to end.
    """

    def __init__(
        self,
        root: Path,
        *,
        every_s: float,
        older_than: timedelta,
        hold: Callable[[], bool],
        release: Callable[[], object] | None = None,
    ) -> None:
        self.root = root
        self.every_s = every_s
        self.older_than = older_than
        self.hold = hold
        self.release = release
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CompactionLoop:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ownloop-compact", daemon=True)
            self._thread.start()
        return self

    def run_once(self) -> list[CompactionResult]:
        """One run if this process holds the lease (else nothing)."""
        if not self.hold():
            return []
        results = compact(self.root, older_than=self.older_than)
        self.runs += 1
        for r in results:
            if r.files or r.removed:
                log.info(
                    "compacted %s %s: %d segments into %d files (%d rows), %d removed, %.2f s",
                    r.model,
                    r.kind,
                    r.sources,
                    r.files,
                    r.rows,
                    r.removed,
                    r.seconds,
                )
        return results

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.run_once()
            except (OSError, pa.ArrowException, OwnloopError):
                log.exception("prediction log compaction failed; trying again next time")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.release is not None:
            self.release()
