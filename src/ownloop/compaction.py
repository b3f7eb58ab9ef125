"""Compaction: merge a closed period's prediction (and label) segments into larger files.

Under steady traffic the log gets one segment per model per second. :func:`compact` merges the
segments written before ``now - older_than`` into files of up to ``max_rows`` rows, sorted by
time, in row groups of ``row_group_rows``, one day folder at a time.

The protocol (a kill at any moment leaves each row visible in exactly one place):

1. Take the model's compaction lock, so two compactors never pick the same segments: in a
   folder a ``flock`` on ``<model>/.compact.lock``; in object storage, where no file lock reaches
   another host, a lease per model in the store (:func:`lease_lock`), renewed before every change
   to the log and given up (the run stops) if another process has taken it. Finish earlier runs:
   delete the segments a published compacted file replaces once it is older than
   ``keep_sources``, and remove ``.compacting-*`` temp files (under the lock nobody else writes
   one, so these are left by a killed run) and compacted files readers ignore (below).
2. Choose the sources: published segments (never hidden ``.tmp-``/``.pending-`` names, never
   compacted files) written before the cutoff, by the write time in their name, and not already
   replaced. The open period is never touched: its writer's segments are newer than the cutoff.
3. Read them in name order, one group per column layout, concatenate, sort stably by time, and
   put the list of source names in the footer metadata (``ownloop.replaces``). In a folder, write
   under ``.compacting-<name>`` and fsync.
4. Publish as ``<newest source µs>-m<random>-<lo>-<hi>.parquet``: in a folder by a rename and an
   fsync of the folder; in object storage by one PUT of the whole file under that name (a PUT
   that fails or is cut off publishes nothing). Before it readers list the sources only; from
   it on they list the compacted file and skip every name its footer lists
   (:func:`ownloop.predlog.replaced_in`), present or not.
5. Delete the sources once ``keep_sources`` has passed (at once when it is zero, else in a later
   run), fsync the folder. Sources are deleted only for a compacted file readers use.

A kill before 4 leaves the sources (and in a folder a hidden temp file, removed by the next run);
after 4 the compacted file and maybe some sources readers skip (deleted by the next run). The
name keeps the newest source's write time, so ``written_after`` filters stay right and the file
sorts where its sources did; its id span covers theirs, so id lookups still open it.

Two compacted files claiming the same segment (possible only if a lease ran out while its run
was stalled): readers use the earlier-named one and ignore the other whole
(:func:`ownloop.predlog.claims_in`), so each row is still read once; a run that finds its new
file ignored leaves the sources alone, and the next run removes the ignored file.

Concurrent readers: a reader that listed the sources just before step 4 reads them, and they are
kept for ``keep_sources`` (10 minutes by default) so such a read completes with every row; a
read that lasts longer may find a source gone and name it as skipped. Monitor caches are keyed by
file name: the compacted file gets its partials computed (and cached) on its first read, and the
partials of replaced sources are never used again.

>>> compact(config.predictions_dir, "churn", older_than=timedelta(hours=1))  # doctest: +SKIP
>>> compact(bucket_root, "churn", lock=lease_lock(ws.store, ws.clock))  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeAlias, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from ownloop import objectstore, predlog
from ownloop._files import create_private, inside
from ownloop.artifacts import fsync_path
from ownloop.clock import Clock
from ownloop.errors import ConflictError, InvalidInputError, OwnloopError
from ownloop.names import validate_name
from ownloop.store import Store
from ownloop.store.lease import Lease

__all__ = [
    "KINDS",
    "LEASE",
    "CompactionBusyError",
    "CompactionLoop",
    "CompactionResult",
    "ModelLock",
    "compact",
    "compact_kind",
    "lease_lock",
]

log = logging.getLogger("ownloop.compaction")

KINDS = ("predictions", "labels")
LEASE = "predlog.compaction"  # the background loop's lease; a model's own is LEASE/<model>
_TEMP = ".compacting-"
_LOCK = ".compact.lock"
_TIME_COLUMN = {"predictions": "ts", "labels": "labeled_at"}
_READERS = 8  # objects read at once from a bucket (each read waits on the network)

# Entered per model for a run; yields ``check``, called before each change to the log, which
# raises if the lock was lost meanwhile.
ModelLock: TypeAlias = Callable[[str], AbstractContextManager[Callable[[], None]]]
_T = TypeVar("_T")


class CompactionBusyError(ConflictError):
    """Another process is compacting this model's log (it holds the model's lease)."""


@dataclass
class CompactionResult:
    """What one run did for one model's predictions or labels."""

    model: str
    kind: str
    sources: int = 0  # segments merged in this run
    files: int = 0  # compacted files published in this run
    rows: int = 0  # rows in them
    removed: int = 0  # replaced segments deleted (of this run or earlier ones)
    cleaned: int = 0  # temp files of killed runs and ignored compacted files removed
    skipped: list[predlog.SkippedSegment] = field(default_factory=list)
    busy: str | None = None  # who else was compacting it (this run left it alone)
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
            "busy": self.busy,
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
    lock: ModelLock | None = None,
) -> list[CompactionResult]:
    """Compact the log of ``model`` (every model when None) under ``root``; see the module text.

    ``now`` is a unix time (default: the wall clock, the one segment names are stamped with).
    ``lock`` keeps runs on several hosts apart (:func:`lease_lock`); a log in object storage needs
    one. A model another process is compacting raises :class:`CompactionBusyError` when named,
    and is left alone (its results say ``busy``) when every model is compacted.
    """
    if objectstore.is_object(root) and lock is None:
        raise InvalidInputError(
            f"the prediction log at {root} is in object storage, where a file lock cannot keep "
            "compactions on two hosts apart; pass lock=lease_lock(ws.store, ws.clock) (ownloop "
            "compact and serve do)"
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
            try:
                out.append(
                    compact_kind(
                        root,
                        name,
                        kind,
                        cutoff_us=int((at - older_than.total_seconds()) * 1_000_000),
                        keep_until=None if not keep_sources else at - keep_sources.total_seconds(),
                        max_rows=max_rows,
                        row_group_rows=row_group_rows,
                        lock=lock,
                    )
                )
            except CompactionBusyError as exc:
                if model is not None:
                    raise
                out.append(CompactionResult(name, kind, busy=str(exc)))
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
    lock: ModelLock | None = None,
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
    with _locked(model_dir, model, lock) as check:
        for day_dir in _day_dirs(folder):
            _finish_earlier(day_dir, keep_until, result, check)
            _compact_day(
                day_dir, kind, cutoff_us, keep_until, max_rows, row_group_rows, result, check
            )
    result.seconds = time.perf_counter() - started
    return result


def _no_check() -> None:
    return None


@contextmanager
def _locked(model_dir: Path, model: str, lock: ModelLock | None) -> Iterator[Callable[[], None]]:
    """Hold the model's compaction locks: the file lock in a folder, and ``lock`` if given."""
    with ExitStack() as stack:
        if not objectstore.is_object(model_dir):
            stack.enter_context(_file_locked(model_dir))
        yield stack.enter_context(lock(model)) if lock is not None else _no_check


@contextmanager
def _file_locked(model_dir: Path) -> Iterator[None]:
    """Hold the model's file lock (released by the kernel if the process dies)."""
    fd = os.open(model_dir / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lease_name(model: str) -> str:
    name = f"{LEASE}/{model}"
    if len(name) <= 64:  # the store's lease names
        return name
    return f"{LEASE}/{hashlib.sha256(model.encode()).hexdigest()[:40]}"


def lease_lock(store: Store, clock: Clock, *, ttl_s: float = 300.0) -> ModelLock:
    """A :data:`ModelLock` held in the store: one lease per model (``predlog.compaction/<model>``),
    so runs on any number of hosts sharing the store never compact one model at once.

    The lease is renewed before every change to the log; a run that finds it taken (it stalled
    for more than ``ttl_s``) stops with :class:`~ownloop.errors.ConflictError` before changing
    anything more. A holder that died is replaced once its lease has expired.
    """

    @contextmanager
    def locked(model: str) -> Iterator[Callable[[], None]]:
        lease = Lease(store, clock, _lease_name(model), ttl_s=ttl_s)
        if not lease.acquire():
            held = lease.current()
            who = f"{held.holder} (until {held.expires_at:%Y-%m-%d %H:%M:%S} UTC)" if held else "?"
            raise CompactionBusyError(
                f"model '{model}' is being compacted by {who}; run again once it is done "
                "(a holder that died is replaced when its lease runs out)"
            )

        def check() -> None:
            if not lease.acquire():
                raise ConflictError(
                    f"the compaction of model '{model}' lost its lease (the run stalled for over "
                    f"{ttl_s:g} s and another process took over); stopped before changing the "
                    "log further: the next run finishes the work"
                )

        try:
            yield check
        finally:
            lease.release()

    return locked


def _day_dirs(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.name.startswith("date=") and inside(folder, p).is_dir()
    )


def _older(path: Path, keep_until: float | None) -> bool:
    """Whether ``path`` last changed before ``keep_until`` (None: always)."""
    if keep_until is None:
        return True
    try:
        return path.stat().st_mtime <= keep_until
    except FileNotFoundError:
        return False


def _finish_earlier(
    day_dir: Path, keep_until: float | None, result: CompactionResult, check: Callable[[], None]
) -> None:
    """Remove the temp files of killed runs, the sources whose keeping time is over, and the
    compacted files readers ignore (once the file they lost to is as old)."""
    entries = {p.name: p for p in day_dir.iterdir()}  # from a bucket: with time and size
    local = not objectstore.is_object(day_dir)
    changed = False
    for name, path in entries.items():
        if local and name.startswith(_TEMP):
            path.unlink(missing_ok=True)
            result.cleaned += 1
            changed = True
    winners, losers = predlog.claims_in(day_dir, entries)
    for name, replaces in winners.items():
        doomed = sorted(replaces & entries.keys())
        if doomed and _older(entries[name], keep_until):
            check()
            _each(day_dir, doomed, _delete)
            result.removed += len(doomed)
            changed = True
    for name in losers:
        claims = predlog.replaced_by(day_dir / name)
        rivals = [w for w, replaces in winners.items() if not replaces.isdisjoint(claims)]
        if all(_older(entries[n], keep_until) for n in [name, *rivals]):
            check()
            log.warning("removing %s: %s claims the same segments", entries[name], rivals)
            entries[name].unlink(missing_ok=True)
            result.cleaned += 1
            changed = True
    if changed and local:
        fsync_path(day_dir)


def _compact_day(
    day_dir: Path,
    kind: str,
    cutoff_us: int,
    keep_until: float | None,
    max_rows: int,
    row_group_rows: int,
    result: CompactionResult,
    check: Callable[[], None],
) -> None:
    names = [n for n in objectstore.list_names(day_dir) if n.endswith(".parquet") and n[0] != "."]
    gone = predlog.replaced_in(day_dir, names)
    sources = [
        n
        for n in names
        if n not in gone and not predlog.is_compacted(n) and (_stamp(n) or cutoff_us) < cutoff_us
    ]
    for group in _groups(day_dir, sources, max_rows, result):
        if len(group) < 2:
            continue
        table = _merged(day_dir, group, kind)
        check()
        final = _publish(day_dir, group, table, row_group_rows)
        result.sources += len(group)
        result.files += 1
        result.rows += table.num_rows
        if keep_until is None:  # no reader to wait for: step 5 at once
            check()
            _delete_sources(day_dir, final, group, result)


def _delete_sources(
    day_dir: Path, final: Path, group: Sequence[str], result: CompactionResult
) -> None:
    """Step 5 at once, if readers use ``final`` (no earlier file claims its sources)."""
    winners, _ = predlog.claims_in(day_dir, objectstore.list_names(day_dir))
    if final.name not in winners:
        log.warning("%s claims segments an earlier file claims; its sources stay", final)
        return
    _each(day_dir, group, _delete)
    result.removed += len(group)
    if not objectstore.is_object(day_dir):
        fsync_path(day_dir)


def _delete(path: Path) -> None:
    path.unlink(missing_ok=True)


def _stamp(name: str) -> int | None:
    """The write time (unix µs) in a segment's name, or None when it is not named by the writer."""
    stamp = name[:16]
    return int(stamp) if len(name) > 17 and stamp.isdigit() and name[16] == "-" else None


def _each(day_dir: Path, names: Sequence[str], read: Callable[[Path], _T]) -> list[_T]:
    """``read`` (or delete) each file, results in order; in a bucket several at a time (each waits
    on a request)."""
    paths = [day_dir / n for n in names]
    if not objectstore.is_object(day_dir) or len(paths) < 2:
        return [read(p) for p in paths]
    with ThreadPoolExecutor(_READERS) as pool:
        return list(pool.map(read, paths))


def _open(path: Path) -> pq.ParquetFile:
    """A source opened for reading: from a bucket fetched whole in one GET (segments are small;
    a ranged read would cost a HEAD and two GETs)."""
    if objectstore.is_object(path):
        return pq.ParquetFile(pa.BufferReader(path.read_bytes()))
    return pq.ParquetFile(str(path))


def _footer(path: Path) -> tuple[pq.FileMetaData, pa.Schema] | predlog.SkippedSegment:
    try:
        file = _open(path)
        return file.metadata, file.schema_arrow.remove_metadata()
    except OSError as exc:
        _unreachable(path, exc)
        return predlog.SkippedSegment(path, f"not readable ({exc})")
    except pa.ArrowException as exc:
        return predlog.SkippedSegment(path, f"not readable ({exc})")


def _unreachable(path: Path, exc: OSError) -> None:
    """Raise the bucket's refusal or silence as such: it says nothing of the file itself."""
    if objectstore.is_object(path) and not isinstance(exc, FileNotFoundError):
        raise objectstore.unavailable(path, exc) from exc


def _groups(
    day_dir: Path, names: Sequence[str], max_rows: int, result: CompactionResult
) -> list[list[str]]:
    """Sources split by column layout, then into runs of at most ``max_rows`` rows (name order)."""
    layouts: list[tuple[pa.Schema, list[list[str]], list[int]]] = []
    for name, footer in zip(names, _each(day_dir, names, _footer), strict=True):
        if isinstance(footer, predlog.SkippedSegment):
            result.skipped.append(footer)
            continue
        meta, schema = footer
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


def _read_whole(path: Path) -> pa.Table:
    # one small file at a time, without a thread pool: several times faster than read_table here
    try:
        return _open(path).read(use_threads=False)
    except OSError as exc:
        _unreachable(path, exc)
        raise


def _merged(day_dir: Path, names: Sequence[str], kind: str) -> pa.Table:
    """``names`` as one table sorted by time, its footer naming them (step 3)."""
    tables = _each(day_dir, names, _read_whole)
    table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
    table = table.sort_by([(_TIME_COLUMN[kind], "ascending")])  # stable: ties keep name order
    return table.replace_schema_metadata({predlog.REPLACES_KEY: json.dumps(list(names))})


def _publish(day_dir: Path, names: Sequence[str], table: pa.Table, row_group_rows: int) -> Path:
    """Publish the merged table under its final name (steps 3 and 4)."""
    final = day_dir / predlog.compacted_name(max(_stamp(n) or 0 for n in names), _span(names))
    options = {
        "compression": "lz4",
        "use_dictionary": predlog._dictionary_columns(table),
        "row_group_size": row_group_rows,
    }
    if objectstore.is_object(day_dir):  # one PUT of the whole file: all of it or nothing
        objectstore.put_bytes(final, objectstore.table_bytes(table, **options))
        return final
    tmp = day_dir / f"{_TEMP}{final.name}"
    try:
        create_private(tmp)
        pq.write_table(table, str(tmp), **options)
        fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    fsync_path(day_dir)
    return final


class CompactionLoop:
    """Compact every model's log every ``every_s`` seconds in a background thread, while
    ``hold()`` says this process holds the compaction lease (one process compacts at a time;
    the model locks of :func:`compact` keep two runs apart in any case: pass ``lock`` for a log
    in object storage).

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
        lock: ModelLock | None = None,
    ) -> None:
        self.root = root
        self.lock = lock
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
        results = compact(self.root, older_than=self.older_than, lock=self.lock)
        self.runs += 1
        for r in results:
            if r.busy:
                log.info("left %s %s alone: %s", r.model, r.kind, r.busy)
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
