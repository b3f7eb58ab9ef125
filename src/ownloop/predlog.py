"""The prediction log and its labels: append-only Parquet segments, one folder per model and UTC day.

Layout under ``root`` (``Config.predictions_dir``)::

    <model>/date=YYYY-MM-DD/<segment>.parquet           predictions
    <model>/labels/date=YYYY-MM-DD/<segment>.parquet    labels

A segment is written to a ``.tmp-*`` name in its folder, fsynced and renamed, so a reader never sees
a torn file; readers skip names that start with ``.``. A segment is named
``<written µs>-<random>[-<first id ms>-<last id ms>].parquet``: the id times let a lookup of some
prediction ids open only the segments that can hold them (names without them are always read).

:mod:`ownloop.compaction` merges old segments into larger files named ``<µs>-m<random>...``
whose footer lists the segment names they replace; readers skip those names, so a row is read
from exactly one file whether or not its old segment is still on disk.

>>> table = read_window(config.predictions_dir, "churn", version=3, start=day)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ownloop import objectstore
from ownloop._files import create_private, inside, private_folder
from ownloop.artifacts import fsync_path
from ownloop.errors import InvalidInputError
from ownloop.names import validate_name
from ownloop.signature import Signature

__all__ = [
    "ARMS",
    "BASE_SCHEMA",
    "LABEL_SCHEMA",
    "REPLACES_KEY",
    "Block",
    "FlushStats",
    "LogRead",
    "PredictionLogger",
    "SegmentReadError",
    "SkippedSegment",
    "StagedLabels",
    "blocks_to_table",
    "claims_in",
    "compacted_name",
    "conform",
    "feature_type",
    "id_ms",
    "is_compacted",
    "join_labels",
    "label_key",
    "label_keys",
    "labelled_ids",
    "list_segments",
    "new_ids",
    "prediction_schema",
    "read_labels",
    "read_log",
    "read_segments",
    "read_window",
    "replaced_by",
    "replaced_in",
    "segments_holding",
    "select_rows",
    "stage_labels",
    "write_labels",
    "write_segment",
]

log = logging.getLogger("ownloop.predlog")

ARMS = ("stable", "canary", "shadow")
TS = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("ts", TS),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("arm", pa.string()),
        ("request_id", pa.string()),
        ("status", pa.string()),
        ("latency_s", pa.float64()),
        ("cpu_s", pa.float64()),
        ("prediction", pa.string()),
        ("prediction_value", pa.float64()),
        ("confidence", pa.float64()),
        ("proba", pa.list_(pa.float64())),
    ]
)
LABEL_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("label", pa.string()),
        ("label_value", pa.float64()),
        ("labeled_at", TS),
        ("source", pa.string()),
        ("weight", pa.float64()),
    ]
)
_FEATURE_TYPES = {
    "float": pa.float64(),
    "integer": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
_DAY_PREFIX = "date="
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def feature_type(kind: str) -> pa.DataType:
    """The Arrow type of an ``in.<feature>`` column for a signature feature type."""
    try:
        return _FEATURE_TYPES[kind]
    except KeyError:
        raise InvalidInputError(
            f"feature type '{kind}' has no prediction log column type"
        ) from None


def prediction_schema(signature: Signature) -> pa.Schema:
    """The full prediction schema of a version: the base columns, then one ``in.<feature>`` each."""
    fields = [pa.field(f"in.{f.name}", feature_type(f.type)) for f in signature.features]
    return pa.schema(list(BASE_SCHEMA) + fields)


# -- ids -------------------------------------------------------------------------------------


class _IdSource:
    """UUIDv7 ids (RFC 9562) as 32 lowercase hex: 48-bit unix milliseconds, the version nibble 7,
    then 74 random bits around the variant bits. Sortable by time across milliseconds, unguessable
    within one. The ids of one batch share its millisecond and are handed out sorted, so a
    request's rows sort in the order they were sent; batches of the same millisecond interleave.

    The millisecond part never goes back within a process even if the wall clock does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0

    def take(self, n: int) -> list[str]:
        with self._lock:
            ms = max(self._last_ms, time.time_ns() // 1_000_000)
            self._last_ms = ms
        high = (ms & _MS_MASK) << 80 | 0x7 << 76
        pool = os.urandom(10 * n)  # 80 bits an id, 74 of them kept
        ids = []
        for i in range(0, 10 * n, 10):
            rand = int.from_bytes(pool[i : i + 10])
            rand_a = rand >> 68  # 12 bits
            rand_b = rand & _RAND_B_MASK  # 62 bits
            ids.append(f"{high | rand_a << 64 | _VARIANT | rand_b:032x}")
        ids.sort()
        return ids


_MS_MASK = (1 << 48) - 1
_RAND_B_MASK = (1 << 62) - 1
_VARIANT = 0b10 << 62
_IDS = _IdSource()
_HEX = frozenset("0123456789abcdef")


def new_ids(n: int) -> list[str]:
    """``n`` fresh prediction ids: UUIDv7 (74 random bits), sortable by creation millisecond."""
    return _IDS.take(n)


def id_ms(prediction_id: str) -> int | None:
    """The unix millisecond an ownloop id was made, or None if it is not one.

    Reads UUIDv7 ids (``0190a3f2c41b7...``) and the legacy ids of earlier releases (11 hex
    milliseconds, 10 hex process part, 11 hex counter). A legacy id made since 2004 starts with a
    non-zero digit; a UUIDv7 id made before 2527 starts with ``0``, so the two never meet.
    """
    if len(prediction_id) != 32 or not _HEX.issuperset(prediction_id):
        return None
    if prediction_id[0] == "0" and prediction_id[12] == "7" and prediction_id[16] in "89ab":
        return int(prediction_id[:12], 16)
    return int(prediction_id[:11], 16)


# -- segments --------------------------------------------------------------------------------


def _model_dir(root: Path, model: str) -> Path:
    return inside(root, root / validate_name("model", model))


def _linked_inside(folder: Path, path: Path) -> Path:
    """``path`` (in ``folder``), refused if it is a link that leads out of ``folder``."""
    return inside(folder, path) if path.is_symlink() else path


def _day_of(path: Path) -> date | None:
    name = path.name
    if not name.startswith(_DAY_PREFIX):
        return None
    try:
        return date.fromisoformat(name[len(_DAY_PREFIX) :])
    except ValueError:
        return None


def _segment_name() -> str:
    return f"{time.time_ns() // 1000:016d}-{secrets.token_hex(4)}.parquet"


def _dictionary_columns(table: pa.Table) -> list[str]:
    """Dictionary-encode repetitive text (model, arm, class, ...); numbers and ids gain nothing."""
    return [
        f.name
        for f in table.schema
        if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
        and f.name != "prediction_id"
    ]


# (hidden name, final name, the bytes held in memory until published: object storage only)
_Staged: TypeAlias = tuple[Path, Path, pa.Buffer | None]


def _write_hidden(folder: Path, table: pa.Table) -> _Staged:
    """Write and fsync ``table`` under a hidden ``.tmp-*`` name; return it and its final name.

    In object storage nothing is written yet: the file is held in memory until published.
    """
    name = _span_name(table)
    tmp = folder / f".tmp-{name}"
    if objectstore.is_object(folder):
        data = objectstore.table_bytes(
            table, compression="lz4", use_dictionary=_dictionary_columns(table)
        )
        return tmp, folder / name, data
    private_folder(_linked_inside(folder.parent, folder))
    try:
        create_private(tmp)
        # a path, not a Python file object: Arrow then writes natively without taking the GIL
        # for every chunk, so serving threads are not held up by a flush
        pq.write_table(
            table, str(tmp), compression="lz4", use_dictionary=_dictionary_columns(table)
        )
        fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, folder / name, None


def _publish(staged: Sequence[_Staged]) -> list[Path]:
    """Rename written hidden files to their final names, then make the renames durable.

    In object storage each file is one PUT of the whole object under its final name; if one
    fails, the ones already published are deleted again, so the caller may retry all of them.
    """
    done: list[Path] = []
    try:
        for tmp, target, data in staged:
            if data is not None:
                objectstore.put_bytes(target, data)
            else:
                os.replace(tmp, target)
            done.append(target)
    except BaseException:
        for target in done:
            if objectstore.is_object(target):
                target.unlink(missing_ok=True)
        raise
    for folder in {target.parent for _, target, data in staged if data is None}:
        fsync_path(folder)
    return done


def _write_atomic(folder: Path, table: pa.Table) -> Path:
    return _publish([_write_hidden(folder, table)])[0]


def _split_by_day(table: pa.Table, column: str) -> Iterable[tuple[date, pa.Table]]:
    if table.num_rows == 0:
        return
    if table.schema.field(column).type != TS:
        table = table.set_column(
            table.schema.get_field_index(column), column, table[column].cast(TS)
        )
    micros = pc.cast(table[column], pa.int64()).to_numpy(zero_copy_only=False)
    days = micros // 86_400_000_000
    unique = np.unique(days)
    for day in unique:
        part = table if len(unique) == 1 else table.filter(pa.array(days == day))
        yield (_EPOCH + timedelta(days=int(day))).date(), part


def _write_split(folder: Path, table: pa.Table, column: str) -> list[Path]:
    written = []
    for day, part in _split_by_day(table, column):
        written.append(_write_atomic(folder / f"{_DAY_PREFIX}{day.isoformat()}", part))
    return written


def _check_columns(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise InvalidInputError(f"{what} table lacks columns: {', '.join(missing)}")
    for f in schema:
        index = table.schema.get_field_index(f.name)
        if table.schema.field(index).type != f.type:
            table = table.set_column(index, f.name, table[f.name].cast(f.type))
    return table


def write_segment(root: Path, model: str, table: pa.Table) -> list[Path]:
    """Write prediction rows atomically, one segment per UTC day of ``ts``; return the new files."""
    folder = _model_dir(root, model)
    table = _check_columns(table, BASE_SCHEMA, "prediction")
    # every day's file is written before any is renamed: a failure leaves nothing visible, so
    # the writer may retry or split the same rows without writing any of them twice
    staged: list[_Staged] = []
    try:
        for day, part in _split_by_day(table, "ts"):
            staged.append(_write_hidden(folder / f"{_DAY_PREFIX}{day.isoformat()}", part))
    except BaseException:
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return _publish(staged)


def _days(start: datetime | None, end: datetime | None) -> tuple[date | None, date | None]:
    first = None if start is None else _utc(start).date()
    last = None if end is None else (_utc(end) - timedelta(microseconds=1)).date()
    return first, last


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInputError(
            f"time {value.isoformat()} has no time zone; pass an aware datetime"
        )
    return value.astimezone(UTC)


def _segments_under(
    folder: Path,
    start: datetime | None,
    end: datetime | None,
    *,
    days: Container[date] | None = None,
    keep: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Published segments in the day folders in ``[start, end)`` (and in ``days``, if given)
    whose names ``keep`` accepts, in name order (names are sorted as text: it is cheap)."""
    if not folder.is_dir():
        return []
    first, last = _days(start, end)
    files: list[Path] = []
    for day_dir in sorted(folder.iterdir()):
        day = _day_of(day_dir)
        if day is None or not day_dir.is_dir() or (days is not None and day not in days):
            continue
        if (first is not None and day < first) or (last is not None and day > last):
            continue
        _linked_inside(folder, day_dir)
        names = [
            n for n in objectstore.list_names(day_dir) if n.endswith(".parquet") and n[0] != "."
        ]
        gone = replaced_in(day_dir, names)
        files.extend(
            _linked_inside(folder, day_dir / name)
            for name in names
            if name not in gone and (keep is None or keep(name))
        )
    return files


# -- compacted files ---------------------------------------------------------------------------

REPLACES_KEY = b"ownloop.replaces"  # footer metadata of a compacted file: the names it replaces
_COMPACTED_MARK = "-m"  # never a writer's: its random part is hex
_REPLACED: dict[tuple[str, int, int], frozenset[str]] = {}
_REPLACED_LIMIT = 4096


def is_compacted(name: str) -> bool:
    """Whether ``name`` is a compacted file's (``<µs>-m<random>[-<lo>-<hi>].parquet``)."""
    return len(name) > 18 and name[:16].isdigit() and name[16:18] == _COMPACTED_MARK


def compacted_name(written_us: int, lo_hi: tuple[int, int] | None) -> str:
    """A compacted file's name: the newest source's write time (so ``written_after`` still holds
    and the file sorts just after its sources), a random part marked ``m`` (merged), the id time span."""
    name = f"{written_us:016d}{_COMPACTED_MARK}{secrets.token_hex(4)}"
    if lo_hi is not None:
        name += f"-{lo_hi[0]:012x}-{lo_hi[1]:012x}"
    return f"{name}.parquet"


def replaced_by(path: Path) -> frozenset[str]:
    """The segment names (in the same folder) a compacted file replaces, from its footer.

    A file that cannot be read replaces nothing: its sources stay visible, so no row is lost.
    Compacted files never change, so the answer is kept per (path, size, mtime); in object
    storage per name alone (an object is written once under a random name), so a listing costs
    one footer read per compacted file the first time and no request afterwards.
    """
    if objectstore.is_object(path):
        key: tuple[str, int, int] = (str(path), 0, 0)
    else:
        try:
            st = path.stat()
        except OSError:
            return frozenset()
        key = (str(path), st.st_size, st.st_mtime_ns)
    known = _REPLACED.get(key)
    if known is not None:
        return known
    try:
        meta = objectstore.read_metadata(path).metadata or {}
        names = json.loads(meta[REPLACES_KEY])
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        if objectstore.is_object(path):  # not the file's fault: its sources would be read twice
            raise objectstore.unavailable(path, exc) from exc
        return frozenset()
    except (pa.ArrowException, KeyError, ValueError):
        return frozenset()
    found = frozenset(n for n in names if isinstance(n, str))
    if len(_REPLACED) >= _REPLACED_LIMIT:
        _REPLACED.clear()
    _REPLACED[key] = found
    return found


def claims_in(day_dir: Path, names: Iterable[str]) -> tuple[dict[str, frozenset[str]], list[str]]:
    """Which compacted file among ``names`` stands for which segments, and which are ignored.

    Compacted files are taken in name order; one that claims a segment an earlier-named one
    already claims (two runs merged the same segment: a lease ran out mid-run) is ignored whole,
    so every row is read from exactly one file; the next compaction removes it.
    Returns ``({winner: the names it replaces}, [ignored compacted files])``.
    """
    winners: dict[str, frozenset[str]] = {}
    losers: list[str] = []
    claimed: set[str] = set()
    for name in sorted(n for n in names if is_compacted(n)):
        replaces = replaced_by(day_dir / name)
        if claimed.isdisjoint(replaces):
            winners[name] = replaces
            claimed |= replaces
        else:
            losers.append(name)
    return winners, losers


def replaced_in(day_dir: Path, names: Iterable[str]) -> frozenset[str]:
    """The names among a folder's files that readers skip: the segments a compacted file replaces
    and the compacted files ignored because an earlier one claims their segments."""
    winners, losers = claims_in(day_dir, names)
    return frozenset(losers).union(*winners.values())


def list_segments(
    root: Path,
    model: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    written_after: datetime | None = None,
) -> list[Path]:
    """The prediction segments of ``model`` in the day folders that overlap ``[start, end)``.

    ``written_after`` also leaves out the segments a server wrote (by the time in their name)
    before that moment: they hold only rows logged before it. A file not named as the writer
    names segments is always kept.
    """
    files = _segments_under(_model_dir(root, model), start, end)
    if written_after is None:
        return files
    after = int(written_after.timestamp() * 1_000_000)
    return [p for p in files if (_written_at(p) or after) >= after]


def _written_at(path: Path) -> int | None:
    """When the writer published a segment, in microseconds, from its name (None: not its name)."""
    stamp = path.name[:16]
    return int(stamp) if len(path.name) > 17 and stamp.isdigit() and path.name[16] == "-" else None


@dataclass(frozen=True)
class SkippedSegment:
    """A log segment a read left out, and why (named so a person can inspect or move the file)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}: {self.reason}"


@dataclass(frozen=True)
class LogRead:
    """Rows read from the log, and the segments left out because they could not be read."""

    table: pa.Table
    skipped: tuple[SkippedSegment, ...] = ()


class SegmentReadError(Exception):
    """One segment cannot be read or cast; readers report it by name and go on without it."""


_FILTER_COLUMNS = ("ts", "version", "arm", "prediction_id")
_READ_ERRORS = (OSError, pa.ArrowException)


def _plain_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _column_type(name: str, seen: Sequence[pa.DataType], fixed: pa.Schema | None) -> pa.DataType:
    """The type a column is read as: the contract's, the caller's, else the most common (newest wins a tie)."""
    for schema in (BASE_SCHEMA, LABEL_SCHEMA, fixed):
        if schema is not None and name in schema.names:
            return schema.field(name).type
    if not seen:
        return pa.float64()
    counts = Counter(seen)
    best = max(counts.values())
    return next(kind for kind in reversed(seen) if counts[kind] == best)


def _target_schema(
    schemas: Sequence[pa.Schema], columns: Sequence[str] | None, fixed: pa.Schema | None
) -> pa.Schema:
    seen: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for f in schema:
            seen.setdefault(f.name, []).append(_plain_type(f.type))
    names = list(columns) if columns is not None else list(seen)
    return pa.schema([pa.field(n, _column_type(n, seen.get(n, []), fixed)) for n in names])


def _cast(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` with exactly ``target``'s columns and types; a missing column is null."""
    arrays = []
    for f in target:
        if f.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.type != f.type:
            try:
                column = column.cast(f.type)
            except pa.ArrowException as exc:
                raise SegmentReadError(
                    f"column '{f.name}' is {_plain_type(column.type)} here and cannot be read "
                    f"as {f.type} ({str(exc).splitlines()[0]})"
                ) from exc
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=target)


def _filter_column(table: pa.Table, name: str) -> pa.ChunkedArray:
    column = table.column(name)
    want = BASE_SCHEMA.field(name).type
    if column.type == want:
        return column
    try:
        return column.cast(want)
    except pa.ArrowException as exc:
        raise SegmentReadError(f"column '{name}' is {column.type}, not {want}") from exc


def _keep(table: pa.Table, conditions: Mapping[str, Any]) -> pa.Table:
    """Rows of ``table`` meeting the given ``start``/``end``/``version``/``arm``."""
    masks = []
    if "start" in conditions:
        ts = _filter_column(table, "ts")
        masks.append(pc.greater_equal(ts, pa.scalar(conditions["start"], TS)))
    if "end" in conditions:
        ts = _filter_column(table, "ts")
        masks.append(pc.less(ts, pa.scalar(conditions["end"], TS)))
    if "version" in conditions:
        version = _filter_column(table, "version")
        masks.append(pc.equal(version, pa.scalar(conditions["version"], pa.int32())))
    if "arm" in conditions:
        masks.append(pc.equal(_filter_column(table, "arm"), conditions["arm"]))
    if "first" in conditions:  # rows at exactly ``start`` count from this prediction id on
        at, first_id = conditions["first"]
        ts = _filter_column(table, "ts")
        ids = pc.fill_null(_filter_column(table, "prediction_id"), "")
        before = pc.and_(pc.equal(ts, pa.scalar(at, TS)), pc.less(ids, first_id))
        masks.append(pc.invert(before))
    if not masks:
        return table
    mask = masks[0]
    for m in masks[1:]:
        mask = pc.and_(mask, m)
    return table.filter(pc.fill_null(mask, False))


def _read_segment(
    path: Path, schema: pa.Schema, columns: Sequence[str] | None, conditions: Mapping[str, Any]
) -> pa.Table:
    wanted = schema.names if columns is None else [c for c in columns if c in schema.names]
    used = [c for c in _FILTER_COLUMNS if conditions.keys() & _USES[c]]
    missing = [c for c in used if c not in schema.names]
    if missing:
        raise SegmentReadError(f"it has no '{missing[0]}' column")
    try:
        table = objectstore.read_table(path, columns=list(dict.fromkeys([*wanted, *used])))
    except _READ_ERRORS as exc:
        raise SegmentReadError(f"not a readable Parquet file ({str(exc).splitlines()[0]})") from exc
    return _keep(table, conditions).select(wanted)


_USES = {
    "ts": {"start", "end", "first"},
    "version": {"version"},
    "arm": {"arm"},
    "prediction_id": {"first"},
}


def select_rows(table: pa.Table, conditions: Mapping[str, Any]) -> pa.Table:
    """Rows of one segment meeting ``start``/``end``/``version``/``arm``/``first`` (given ones).

    Raises SegmentReadError when a column the conditions need is missing or of a foreign type.
    """
    for c in _FILTER_COLUMNS:
        if conditions.keys() & _USES[c] and c not in table.column_names:
            raise SegmentReadError(f"it has no '{c}' column")
    return _keep(table, conditions)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with each column that ``schema`` names cast to its type (others untouched).

    Raises SegmentReadError naming the column when a value cannot be read as that type.
    """
    present = [f for f in schema if f.name in table.column_names]
    if all(table.schema.field(f.name).type == f.type for f in present):
        return table
    cast = _cast(table.select([f.name for f in present]), pa.schema(present))
    for f in present:
        table = table.set_column(table.schema.get_field_index(f.name), f, cast.column(f.name))
    return table


def read_segments(
    files: Sequence[Path],
    *,
    columns: Sequence[str] | None = None,
    conditions: Mapping[str, Any] | None = None,
    schema: pa.Schema | None = None,
    what: str = "prediction log",
) -> LogRead:
    """Read ``files`` one by one, keep the rows meeting ``conditions``, cast them to one schema.

    A column's type comes from the log's contract (base and label columns), then ``schema``
    (a version's signature), else the most common type among the segments holding wanted rows.
    A segment that cannot be read or cast is left out and named in ``skipped``, never fatal.
    """
    conditions = dict(conditions or {})
    skipped: list[SkippedSegment] = []
    schemas: dict[Path, pa.Schema] = {}
    for path in files:
        try:
            schemas[path] = objectstore.read_schema(path)
        except _READ_ERRORS as exc:
            skipped.append(SkippedSegment(path, f"not a readable Parquet file ({exc})"))
    if columns is not None and schemas:
        known = set().union(*(s.names for s in schemas.values()))
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise InvalidInputError(
                f"{what} has no column {', '.join(unknown)}; it has: {', '.join(sorted(known))}"
            )
    parts: list[tuple[Path, pa.Table]] = []
    for path, file_schema in schemas.items():
        try:
            part = _read_segment(path, file_schema, columns, conditions)
        except SegmentReadError as exc:
            skipped.append(SkippedSegment(path, str(exc)))
            continue
        if part.num_rows:
            parts.append((path, part))
    shapes = [p.schema for _, p in parts] or list(schemas.values()) or [BASE_SCHEMA]
    target = _target_schema(shapes, columns, schema)
    tables = []
    for path, part in parts:
        try:
            tables.append(_cast(part, target))
        except SegmentReadError as exc:
            skipped.append(SkippedSegment(path, str(exc)))
    for s in skipped:
        log.warning("%s: left out segment %s", what, s)
    table = pa.concat_tables(tables) if tables else target.empty_table()
    return LogRead(table, tuple(skipped))


def _conditions(
    start: datetime | None,
    end: datetime | None,
    version: int | None,
    arm: str | None,
    first_id: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if start is not None:
        out["start"] = _utc(start)
    if end is not None:
        out["end"] = _utc(end)
    if version is not None:
        out["version"] = version
    if arm is not None:
        out["arm"] = arm
    if first_id is not None:
        if start is None:
            raise InvalidInputError("first_id needs a start time")
        out["first"] = (_utc(start), first_id)
    return out


def read_log(
    root: Path,
    model: str,
    *,
    version: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: Sequence[str] | None = None,
    arm: str | None = None,
    schema: pa.Schema | None = None,
    first_id: str | None = None,
    written_after: datetime | None = None,
    files: Sequence[Path] | None = None,
) -> LogRead:
    """Like :func:`read_window`, and also name the segments left out (unreadable or of another type).

    ``schema`` fixes the types of the ``in.*`` columns (e.g. ``prediction_schema(signature)``);
    ``first_id`` drops the rows at exactly ``start`` whose prediction id sorts before it;
    ``written_after`` skips segments written before it (see :func:`list_segments`);
    ``files`` reads those segments (listed earlier, some left out) instead of listing them.
    """
    if files is None:
        files = list_segments(root, model, start=start, end=end, written_after=written_after)
    return read_segments(
        files,
        columns=columns,
        conditions=_conditions(start, end, version, arm, first_id),
        schema=schema,
        what=f"prediction log of '{model}'",
    )


def read_window(
    root: Path,
    model: str,
    *,
    version: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: Sequence[str] | None = None,
    arm: str | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """Predictions of ``model`` with ``start <= ts < end``, reading only those days and ``columns``.

    Segments that cannot be read as one table with the rest are left out with a logged warning;
    :func:`read_log` also returns them by name.

    >>> read_window(root, "churn", version=2, columns=["ts", "confidence"]).to_pandas()  # doctest: +SKIP
    """
    return read_log(
        root,
        model,
        version=version,
        start=start,
        end=end,
        columns=columns,
        arm=arm,
        schema=schema,
    ).table


# -- labels ----------------------------------------------------------------------------------


def label_key(value: Any) -> str:
    """A class label as text compared by value: ``1``, ``1.0``, ``"1"`` and ``"1.0"`` are all ``"1"``.

    Labels and predictions travel through JSON, CSV and Parquet, which turn ``1`` into ``1.0`` or
    ``"1"``; comparing these keys makes a class the same class whatever the route.
    """
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    text = str(value)
    if isinstance(value, float | np.floating):
        number = float(value)
    else:
        try:
            number = float(text)
        except ValueError:
            return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def label_keys(values: Iterable[Any]) -> np.ndarray:
    """:func:`label_key` of each value, as a string array (None stays None)."""
    return np.asarray([None if v is None else label_key(v) for v in values], dtype=object)


_PENDING = ".pending-"


def _labels_dir(root: Path, model: str) -> Path:
    return inside(root, _model_dir(root, model) / "labels")


@dataclass(frozen=True)
class StagedLabels:
    """Label segments written under hidden names (invisible to readers) until :meth:`publish`."""

    # (hidden name, published name, bytes held in memory: object storage only)
    files: tuple[_Staged, ...]

    def publish(self) -> list[Path]:
        """Make the labels visible (one atomic rename, or one PUT, per segment)."""
        return _publish(self.files)

    def discard(self) -> None:
        """Remove the hidden segments (the batch did not commit)."""
        for hidden, _, data in self.files:
            if data is None:
                hidden.unlink(missing_ok=True)


def stage_labels(root: Path, model: str, table: pa.Table) -> StagedLabels:
    """Write label rows under hidden names, one segment per UTC day of ``labeled_at``, fsynced."""
    folder = _labels_dir(root, model)
    table = _check_columns(table, LABEL_SCHEMA, "label").select(LABEL_SCHEMA.names)
    files: list[_Staged] = []
    try:
        for day, part in _split_by_day(table, "labeled_at"):
            day_dir = folder / f"{_DAY_PREFIX}{day.isoformat()}"
            name = _span_name(part)
            hidden = day_dir / f"{_PENDING}{name}"
            if objectstore.is_object(folder):
                files.append(
                    (hidden, day_dir / name, objectstore.table_bytes(part, compression="lz4"))
                )
                continue
            private_folder(inside(folder, day_dir))
            files.append((hidden, day_dir / name, None))
            create_private(hidden)
            pq.write_table(part, str(hidden), compression="lz4")
            fsync_path(hidden)
    except BaseException:
        StagedLabels(tuple(files)).discard()
        raise
    return StagedLabels(tuple(files))


def write_labels(root: Path, model: str, table: pa.Table) -> list[Path]:
    """Write label rows atomically and visibly, one segment per UTC day of ``labeled_at``."""
    return stage_labels(root, model, table).publish()


def _latest(labels: pa.Table) -> pa.Table:
    """One row per prediction id: the latest ``labeled_at`` (the later row on a tie)."""
    if labels.num_rows == 0:
        return labels
    ordered = labels.append_column("_row", pa.array(np.arange(labels.num_rows)))
    ordered = ordered.sort_by([("prediction_id", "ascending"), ("labeled_at", "ascending")])
    ids = ordered["prediction_id"].to_numpy(zero_copy_only=False)
    keep = np.append(ids[:-1] != ids[1:], True)
    ordered = ordered.filter(pa.array(keep))
    return ordered.drop_columns(["_row"])


def _span_name(table: pa.Table) -> str:
    """A segment name that also carries the id times its rows span (``...-<lo>-<hi>.parquet``),
    so a lookup of some ids opens only the segments that can hold them."""
    name = _segment_name()
    times = [id_ms(p) for p in table["prediction_id"].to_pylist()]
    if not times or any(t is None for t in times):
        return name
    known = [t for t in times if t is not None]
    return f"{name.removesuffix('.parquet')}-{min(known):012x}-{max(known):012x}.parquet"


def _id_span(name: str) -> tuple[int, int] | None:
    """The id times a segment holds, from its name (None: not named with them)."""
    parts = name.removesuffix(".parquet").split("-")
    if len(parts) != 4 or not all(len(p) == 12 and _HEX.issuperset(p) for p in parts[2:]):
        return None
    return int(parts[2], 16), int(parts[3], 16)


def _may_hold(name: str, times: Sequence[int]) -> bool:
    """Whether the segment named ``name`` can hold an id made at one of ``times`` (sorted)."""
    span = _id_span(name)
    if span is None:
        return True
    at = bisect_left(times, span[0])
    return at < len(times) and times[at] <= span[1]


def segments_holding(root: Path, model: str, ids: Sequence[str]) -> list[Path]:
    """The prediction segments that can hold ``ids``: in the day folders of each id's day and the
    days either side (a row's ``ts`` may fall across midnight from its id's time), and whose
    names do not rule them out. Ids that carry no time match nothing."""
    times = sorted(t for t in map(id_ms, ids) if t is not None)
    folder = _model_dir(root, model)
    if not times or not folder.is_dir():
        return []
    wanted: set[date] = set()
    for t in times:
        day = (_EPOCH + timedelta(milliseconds=t)).date()
        wanted.update((day - timedelta(days=1), day, day + timedelta(days=1)))
    return _segments_under(
        folder, None, None, days=wanted, keep=lambda name: _may_hold(name, times)
    )


def _label_files(root: Path, model: str) -> list[Path]:
    return _segments_under(_labels_dir(root, model), None, None)


def read_labels(root: Path, model: str, *, ids: tuple[str, str] | None = None) -> pa.Table:
    """All published labels of ``model``, the latest one per prediction id.

    With ``ids`` (the least and greatest prediction id wanted), only the label segments whose
    names do not rule that id range out are read: every label of those ids is among the rows
    returned (with others, which a join ignores).
    """
    lo, hi = (None, None) if ids is None else (id_ms(ids[0]), id_ms(ids[1]))
    keep = None
    if lo is not None and hi is not None and _is_v7(ids[0]) == _is_v7(ids[1]):  # type: ignore[index]
        # one id format at both ends: the ids between them (as text) were made in [lo, hi]
        keep = lambda name: _overlaps(name, lo, hi)  # noqa: E731
    files = _segments_under(_labels_dir(root, model), None, None, keep=keep)
    if not files:
        return LABEL_SCHEMA.empty_table()
    read = read_segments(files, columns=LABEL_SCHEMA.names, what=f"labels of '{model}'")
    return _latest(read.table)


def has_labels(root: Path, model: str) -> bool:
    """Whether ``model`` has any published label row (from the segments' footers)."""
    for path in _label_files(root, model):
        try:
            if objectstore.read_metadata(path).num_rows:
                return True
        except _READ_ERRORS:
            continue
    return False


def _is_v7(prediction_id: str) -> bool:
    return prediction_id[0] == "0"


def _overlaps(name: str, lo: int, hi: int) -> bool:
    """Whether the segment named ``name`` can hold an id made in ``[lo, hi]`` (ms)."""
    span = _id_span(name)
    return span is None or (span[0] <= hi and span[1] >= lo)


def labelled_ids(root: Path, model: str, among: Sequence[str]) -> set[str]:
    """Which of ``among`` already have a published label.

    Reads only the id column of the segments that can hold these ids (by the id times in their
    names), not every label segment ever written.
    """
    if not among:
        return set()
    times = [id_ms(p) for p in among]
    known = sorted(t for t in times if t is not None)
    files = _segments_under(
        _labels_dir(root, model),
        None,
        None,
        keep=(lambda name: _may_hold(name, known)) if len(known) == len(times) else None,
    )
    if not files:
        return set()
    found = read_segments(files, columns=["prediction_id"], what=f"labels of '{model}'").table
    hit = pc.is_in(found["prediction_id"], value_set=pa.array(list(among), pa.string()))
    return set(found["prediction_id"].filter(hit).to_pylist())


def join_labels(predictions: pa.Table, labels: pa.Table, *, latest_only: bool = False) -> pa.Table:
    """``predictions`` in their order with ``label``, ``label_value`` and ``weight`` added (null if none).

    ``latest_only`` says ``labels`` already hold one row per id (as :func:`read_labels` returns)."""
    latest = labels if latest_only else _latest(labels)
    index = pc.index_in(predictions["prediction_id"], value_set=latest["prediction_id"])
    out = predictions
    for name in ("label", "label_value", "weight"):
        column = (
            latest[name].take(index)
            if latest.num_rows
            else pa.nulls(len(index), LABEL_SCHEMA.field(name).type)
        )
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(LABEL_SCHEMA.field(name), column)
    return out


# -- the buffered writer -----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Rows of one request, kept as numpy arrays and scalars until the writer builds Arrow.

    ``columns`` maps a column of ``schema`` to an array or list of ``n`` values, a 2-D array
    (for ``proba``), or a single value repeated ``n`` times; a missing column is null.
    Float columns may instead come as one ``(n, k)`` ``matrix`` whose columns are
    ``matrix_columns`` (a request's numeric inputs, as decoded): the writer then joins the
    matrices of many blocks in one step instead of one step per column.
    The request path only makes this object; the writer concatenates many at once.
    """

    schema: pa.Schema
    n: int
    columns: dict[str, Any]
    matrix: np.ndarray | None = None
    matrix_columns: tuple[str, ...] = ()

    def unpacked(self) -> Block:
        """The same rows with the matrix's columns moved into ``columns``."""
        if self.matrix is None:
            return self
        moved = {c: self.matrix[:, i] for i, c in enumerate(self.matrix_columns)}
        return Block(self.schema, self.n, {**self.columns, **moved})


_MANY = (np.ndarray, list, tuple)


def _is_many(value: Any) -> bool:
    return isinstance(value, _MANY)


def _block_column(field: pa.Field, parts: Sequence[Any], counts: np.ndarray) -> pa.Array:
    kinds = set(map(type, parts))
    if kinds.isdisjoint(_MANY):
        if kinds == {type(None)}:
            return pa.nulls(int(counts.sum()), field.type)
        return _repeated(field, parts, counts)
    if pa.types.is_list(field.type):
        return _list_column(parts, counts)
    if kinds == {np.ndarray}:
        return pa.array(np.concatenate(parts), field.type, from_pandas=True)
    if kinds == {list}:
        return pa.array(list(chain.from_iterable(parts)), field.type, from_pandas=True)
    numeric = pa.types.is_floating(field.type) or pa.types.is_integer(field.type)
    dtype = np.float64 if numeric else object
    full = [
        np.asarray(p, dtype=dtype)
        if _is_many(p)
        else np.full(n, np.nan if p is None and numeric else p, dtype=dtype)
        for p, n in zip(parts, counts.tolist(), strict=True)
    ]
    return pa.array(np.concatenate(full), field.type, from_pandas=True)


def _repeated(field: pa.Field, parts: Sequence[Any], counts: np.ndarray) -> pa.Array:
    """One value per block, repeated for its rows, without a Python object per row."""
    whole = pa.types.is_timestamp(field.type) or pa.types.is_integer(field.type)
    if whole and type(None) not in set(map(type, parts)):
        values = np.repeat(np.array(parts, dtype=np.int64), counts)
        return pa.array(values, pa.int64()).cast(field.type)
    if pa.types.is_floating(field.type):
        values = np.repeat(np.array(parts, dtype=np.float64), counts)  # None becomes NaN
        return pa.array(values, field.type, from_pandas=True)
    # strings and the rest: a dictionary of the per-block values, expanded in C
    index = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
    dictionary = pa.array(list(parts), field.type, from_pandas=True)
    return pa.DictionaryArray.from_arrays(pa.array(index), dictionary).cast(field.type)


def _list_column(parts: Sequence[Any], counts: np.ndarray) -> pa.Array:
    """``proba``: 2-D arrays (one row per prediction) or None for blocks without it."""
    widths = {p.shape[1] for p in parts if isinstance(p, np.ndarray) and p.ndim == 2}
    if len(widths) == 1 and all(isinstance(p, np.ndarray) and p.ndim == 2 for p in parts):
        width = widths.pop()
        values = np.concatenate(parts).reshape(-1).astype(np.float64)
        offsets = np.arange(0, len(values) + 1, width, dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    rows: list[Any] = []
    for p, n in zip(parts, counts.tolist(), strict=True):
        if isinstance(p, np.ndarray) and p.ndim == 2:
            rows.extend(p)
        else:
            rows.extend([None] * n)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum([0 if r is None else len(r) for r in rows])
    flat = [r for r in rows if r is not None]
    values = np.concatenate(flat) if flat else np.zeros(0)
    mask = pa.array([r is None for r in rows]) if len(flat) < len(rows) else None
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float64()), mask=mask)


def _packed(blocks: Sequence[Block]) -> tuple[Sequence[Block], dict[str, np.ndarray]]:
    """The columns of all blocks' matrices, joined in one step (unpacking blocks that differ)."""
    packed = blocks[0].matrix_columns
    if packed and all(b.matrix_columns == packed and b.matrix is not None for b in blocks):
        whole = np.concatenate([b.matrix for b in blocks])
        return blocks, {c: whole[:, i] for i, c in enumerate(packed)}
    return [b.unpacked() for b in blocks], {}


def blocks_to_table(blocks: Sequence[Block]) -> pa.Table:
    """One Arrow table from blocks that share a schema."""
    schema = blocks[0].schema
    blocks, from_matrix = _packed(blocks)
    counts = np.array([b.n for b in blocks], dtype=np.int64)
    names = [n for n in schema.names if n not in from_matrix]
    try:  # blocks that name every column: one C-speed transposition
        by_column: list[Sequence[Any]] = list(
            zip(*map(itemgetter(*names), (b.columns for b in blocks)), strict=True)
        )
    except KeyError:
        by_column = [[b.columns.get(n) for b in blocks] for n in names]
    parts = dict(zip(names, by_column, strict=True))
    arrays = [
        pa.array(from_matrix[f.name], f.type, from_pandas=True)
        if f.name in from_matrix
        else _block_column(f, parts[f.name], counts)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass
class FlushStats:
    """What the writer has done so far (monotonic counters, plus the current queue depth)."""

    queued: int = 0
    flushed: int = 0
    dropped: int = 0
    segments: int = 0
    write_errors: int = 0


Batch: TypeAlias = Block | pa.RecordBatch | pa.Table


@dataclass
class _Queued:
    """A batch waiting to be written; ``attempts`` counts its failed writes (disk errors)."""

    model: str
    batch: Batch
    attempts: int = 0

    @property
    def n(self) -> int:
        return self.batch.n if isinstance(self.batch, Block) else self.batch.num_rows


class PredictionLogger:
    """Buffer prediction batches in memory and write them off the request path.

    ``submit`` never blocks on disk: when the buffer already holds ``max_buffer`` rows, the batch
    is dropped and counted. A background thread flushes every ``flush_interval_s``, or sooner once
    a quarter of the buffer is used; ``close()`` flushes what is left. A failed write never stops
    the writer: it is counted (``write_errors``), logged and makes ``healthy`` False. Rows that
    could not be written because of the disk (``OSError``: full, read-only) stay queued (they still
    count against ``max_buffer``) and are tried again at the next ``retries`` flushes, then dropped
    and counted; a batch that fails for any other reason (text that cannot be encoded, a value of
    the wrong type) is split until only the bad rows are dropped.
    """

    def __init__(
        self,
        root: Path,
        *,
        flush_interval_s: float = 1.0,
        max_buffer: int = 500_000,
        retries: int = 5,
        on_flush: Callable[[FlushStats], None] | None = None,
    ) -> None:
        self.root = root
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.retries = retries
        self.stats = FlushStats()
        self._on_flush = on_flush
        self._queue: deque[_Queued] = deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._last_warning = -1.0e9
        self._last_error: str | None = None
        self._flush_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while the most recent flush failed (until a later flush succeeds)."""
        return self._last_error is None

    @property
    def last_error(self) -> str | None:
        """Why the most recent flush failed, or None when it succeeded."""
        return self._last_error

    @property
    def alive(self) -> bool:
        """Whether the background writer thread runs (False before ``start`` and after ``close``)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PredictionLogger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ownloop-predlog", daemon=True)
            self._thread.start()
        return self

    def submit(self, model: str, batch: Batch) -> bool:
        """Queue rows for ``model``; False (and counted as dropped) when the buffer is full."""
        n = batch.n if isinstance(batch, Block) else batch.num_rows
        with self._lock:
            if self._stop or self.stats.queued + n > self.max_buffer:
                self.stats.dropped += n
                dropped = True
            else:
                self._queue.append(_Queued(model, batch))
                self.stats.queued += n
                dropped = False
                if self.stats.queued > self.max_buffer // 4:
                    self._wake.set()  # busy: write now rather than at the next interval
        if dropped:
            self._warn_dropped(model)
        return not dropped

    def _warn_dropped(self, model: str) -> None:
        """Log a warning at most once a second while rows are being dropped (each one is counted)."""
        now = time.monotonic()
        if now - self._last_warning < 1.0:
            return
        self._last_warning = now
        log.warning(
            "prediction log buffer full (%d rows) for model '%s': dropping rows; %d dropped so far "
            "(ownloop_predlog_dropped_records_total)",
            self.max_buffer,
            model,
            self.stats.dropped,
        )

    def flush(self) -> int:
        """Write everything queued now; return the number of rows written."""
        with self._write_lock:
            with self._lock:
                items = list(self._queue)
                self._queue.clear()
            by_model: dict[str, list[_Queued]] = {}
            for item in items:
                by_model.setdefault(item.model, []).append(item)
            self._flush_error = None
            written = sum(self._write_model(m, batch) for m, batch in by_model.items())
            if items:
                self._last_error = self._flush_error
        if self._on_flush is not None:
            try:
                self._on_flush(self.stats)
            except Exception:  # a failing observer must not stop the writer or a shutdown
                log.exception("prediction log flush callback failed")
        return written

    def _write_model(self, model: str, items: list[_Queued]) -> int:
        """Write ``items`` as one segment; on failure keep (disk) or isolate (bad rows) them."""
        try:
            files = write_segment(self.root, model, _combine([i.batch for i in items]))
        except OSError as exc:
            self._failed(model, exc, items)
            self._retry_later(model, items)
            return 0
        except Exception as exc:  # a bad block must never stop the log: find it, drop only it
            if len(items) > 1:
                half = len(items) // 2
                return self._write_model(model, items[:half]) + self._write_model(
                    model, items[half:]
                )
            self._failed(model, exc, items)
            self._drop(items)
            return 0
        n = sum(i.n for i in items)
        with self._lock:
            self.stats.queued -= n
            self.stats.flushed += n
            self.stats.segments += len(files)
        return n

    def _failed(self, model: str, exc: BaseException, items: list[_Queued]) -> None:
        self._flush_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.stats.write_errors += 1
        kept = isinstance(exc, OSError) and not self._closing
        log.warning(
            "prediction log write failed for model '%s' (%s): %s %d rows; %s",
            model,
            self._flush_error,
            "will retry" if kept else "dropped",
            sum(i.n for i in items),
            f"check free space and permissions of {self.root}"
            if isinstance(exc, OSError)
            else "the rows could not be stored in the log's columns",
        )

    def _retry_later(self, model: str, items: list[_Queued]) -> None:
        """Put batches back at the head of the queue, or drop those out of attempts."""
        keep = [] if self._closing else [i for i in items if i.attempts < self.retries]
        self._drop([i for i in items if i.attempts >= self.retries or self._closing])
        for i in keep:
            i.attempts += 1
        with self._lock:
            self._queue.extendleft(reversed(keep))

    def _drop(self, items: list[_Queued]) -> None:
        n = sum(i.n for i in items)
        with self._lock:
            self.stats.queued -= n
            self.stats.dropped += n

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the writer thread outlives anything (a failing on_flush, a bug)
                log.exception("prediction log flush failed; the writer goes on")

    def close(self) -> None:
        """Stop taking rows, flush what is queued (last attempt), stop the thread."""
        with self._lock:
            self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._closing = True
        self.flush()

    def __enter__(self) -> PredictionLogger:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _combine(batches: Sequence[Batch]) -> pa.Table:
    """Blocks grouped by schema (one group per served version), then everything concatenated."""
    groups: dict[int, list[Block]] = {}
    tables: list[pa.Table] = []
    for b in batches:
        if isinstance(b, Block):
            groups.setdefault(id(b.schema), []).append(b)
        elif isinstance(b, pa.RecordBatch):
            tables.append(pa.Table.from_batches([b]))
        else:
            tables.append(b)
    tables += [blocks_to_table(g) for g in groups.values()]
    return pa.concat_tables(tables, promote_options="permissive")


def rows_to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table from plain rows (tests, imports); missing columns become nulls."""
    return pa.Table.from_pylist(list(rows), schema=schema)
