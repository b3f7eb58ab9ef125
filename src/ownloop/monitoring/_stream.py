"""Drift over Parquet data too large for memory: both sides streamed in record batches.

``drift(reference, current)`` takes, for either side, a Parquet file, a folder of them (one
dataset, files in name order), a ``pyarrow.dataset.Dataset`` or a ``pyarrow.parquet.ParquetFile``
(a pandas DataFrame still works for either side). Only the compared columns are read, in batches
of ``batch_rows`` rows, so memory depends on the batch and row-group sizes, never on the row count.

The current side is exact: the per-batch partials (:func:`compute_partial`) are counts and sums
and merge without loss, so a chunk that crosses batches gets the figures it gets in memory.

The reference profile takes one pass, or two when the reference is larger than the sample:

1. every row: exact count, missing and non-finite counts, min, max, mean and standard deviation
   (merged per batch), the distinct values of a column while it has at most ``MAX_SUPPORT`` (with
   their exact counts), whether every value is whole, exact category counts (up to
   ``CATEGORY_CAP`` distinct values); and a uniform sample of at most ``sample_rows`` rows (each
   row gets a seeded random key, the rows with the smallest keys are kept).
2. the quantiles, quantile cuts and fine grid of each numeric column come from the sample (with the
   exact min and max as its 0% and 100% quantiles); every row is then counted into them, so the
   bin edges are values of the data and the counts in the bins are exact. Only the edges move:
   a cut is the sample's q-quantile, whose rank in the full data is within about
   ``sqrt(q (1 - q) / sample_rows)`` of q (0.05% of the rows at the median for 1M rows).

When the reference has at most ``sample_rows`` rows the sample is every row and the profile is the
one the DataFrame path builds. Estimated beyond that: the number of distinct values of a column
with more than ``MAX_SUPPORT`` of them (from the sample's distinct values, read as draws without
replacement from equally common values), hence "identifier-like" (whole numbers, and no repeat
in the sample); and a categorical column with more than ``CATEGORY_CAP`` distinct values is
profiled from the sample (its counts scaled to the rows).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from scipy import optimize

from ownloop import progress
from ownloop.errors import InvalidInputError
from ownloop.monitoring._batch import (
    ChunkDrift,
    DriftChunks,
    _arrow,
    _refuse_decimal_commas,
    chunks,
    frame_profile,
    numbers,
)
from ownloop.monitoring._drift import DriftSettings, evaluate_drift
from ownloop.monitoring._partial import Binner, PartialSpec, WindowPartial, compute_partial
from ownloop.profile import (
    IDENTIFIER_MIN_DISTINCT,
    IDENTIFIER_MIN_RATIO,
    MAX_CATEGORIES,
    MAX_SUPPORT,
    N_HIST_BINS,
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
)

__all__ = [
    "BATCH_ROWS",
    "CATEGORY_CAP",
    "SAMPLE_ROWS",
    "Source",
    "drift_stream",
    "stream_profile",
]

BATCH_ROWS = 65_536  # rows per record batch read
SAMPLE_ROWS = 500_000  # reference rows kept to place the quantile cuts
READ_BUFFER = 1 << 20  # bytes a Parquet column is read ahead by
CATEGORY_CAP = 100_000  # distinct values of a categorical column counted exactly
SEED = 0

Source: TypeAlias = pd.DataFrame | str | os.PathLike[str] | ds.Dataset | pq.ParquetFile
_Data: TypeAlias = ds.Dataset | pq.ParquetFile


# -- opening a side ------------------------------------------------------------------------------


def _open(source: Source, which: str) -> _Data:
    """The Parquet data behind ``source``; what cannot be read is refused, naming it."""
    if isinstance(source, ds.Dataset | pq.ParquetFile):
        return source
    if not isinstance(source, str | os.PathLike):
        raise InvalidInputError(
            f"the {which} data is a {type(source).__name__}; pass a DataFrame, a Parquet file, a "
            "folder of Parquet files, a pyarrow Dataset or a ParquetFile"
        )
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(
            f"the {which} data {path} does not exist; pass a Parquet file or a folder of them"
        )
    try:
        data = ds.dataset(path, format="parquet")
        if path.is_dir():
            if not data.files:
                raise InvalidInputError(
                    f"the {which} folder {path} holds no Parquet files; pass a Parquet file or "
                    "a folder of them"
                )
            data = ds.dataset(sorted(data.files), format="parquet")  # rows in file-name order
        data.count_rows()  # reads every file's footer: a file that is not Parquet fails here
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(
            f"the {which} data {path} is not readable as Parquet ({exc}); pass a Parquet file or "
            "a folder of them"
        ) from exc
    return data


def _rows(data: _Data) -> int:
    if isinstance(data, pq.ParquetFile):
        return int(data.metadata.num_rows)
    return int(data.count_rows())


def _batches(data: _Data, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of ``columns`` in order, ``batch_rows`` at most at a time.

    Files are read through a small buffered stream, not a row group at a time, so memory holds a
    batch and a few pages whatever the row count and the row-group size (a scanner that
    pre-buffers row groups piles them up when batches are consumed slower than read).
    """
    names = list(columns)
    try:
        if isinstance(data, pq.ParquetFile):
            for batch in data.iter_batches(batch_size=batch_rows, columns=names):
                yield _ordered(batch, names)
        elif isinstance(data, ds.FileSystemDataset):
            target = pa.schema([data.schema.field(n) for n in names])
            for path in data.files:
                with data.filesystem.open_input_file(path) as handle:
                    f = pq.ParquetFile(handle, buffer_size=READ_BUFFER, pre_buffer=False)
                    _same_columns(f.schema_arrow, target, path)
                    for batch in f.iter_batches(batch_size=batch_rows, columns=names):
                        yield _ordered(batch, names).cast(target)
        else:  # another kind of dataset: its own scanner, without read-ahead
            for batch in data.to_batches(
                columns=names, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1
            ):
                yield _ordered(batch, names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInputError(
            f"cannot read the Parquet data ({exc}); is a file damaged?"
        ) from exc


def _same_columns(schema: pa.Schema, target: pa.Schema, path: str) -> None:
    """Every file of a dataset has the compared columns, of types that convert to the first's."""
    missing = [f.name for f in target if f.name not in schema.names]
    if missing:
        raise InvalidInputError(
            f"file {path} lacks column(s) {', '.join(map(repr, missing))} that the dataset's first "
            "file has; pass --columns (columns=) that every file holds, or fix the files"
        )
    for f in target:
        other = schema.field(f.name).type
        same_kind = (_is_number(other) and _is_number(f.type)) or (
            _is_string(other) and _is_string(f.type)
        )
        if other != f.type and not same_kind:
            raise InvalidInputError(
                f"column '{f.name}' is {other} in file {path} but {f.type} in the dataset's "
                "first file; write the files with one type per column"
            )


def _ordered(batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
    """The batch's columns in the order asked (files of one dataset may order them apart)."""
    if batch.schema.names == names:
        return batch
    return pa.RecordBatch.from_arrays([batch.column(n) for n in names], names=names)


def _schema(data: _Data) -> pa.Schema:
    return data.schema_arrow if isinstance(data, pq.ParquetFile) else data.schema


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_text(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_dictionary(t)
        or pa.types.is_boolean(t)
    )


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _kinds(schema: pa.Schema, columns: Sequence[str], which: str) -> dict[str, str]:
    """``numeric`` or ``categorical`` per column, from the Arrow types (as ``column_type`` reads
    pandas dtypes: booleans and text are categorical)."""
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InvalidInputError(
            f"column(s) {', '.join(map(repr, missing))} are not in the {which} data; it has: "
            f"{', '.join(schema.names)}"
        )
    kinds = {}
    for c in columns:
        t = schema.field(c).type
        if _is_number(t):
            kinds[c] = "numeric"
        elif _is_text(t):
            kinds[c] = "categorical"
        else:
            raise InvalidInputError(
                f"column '{c}' has type {t}, which ownloop cannot profile; convert it to a "
                "number, boolean or string column"
            )
    return kinds


# -- the reference profile ---------------------------------------------------------------------


@dataclass
class _Numeric:
    """Exact pass-1 figures of one numeric column, merged batch by batch."""

    count: int = 0
    nulls: int = 0
    nonfinite: int = 0
    n: int = 0  # finite values
    mean: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean
    lo: float = np.inf
    hi: float = -np.inf
    whole: bool = True
    support: dict[float, int] | None = field(default_factory=dict)

    def add(self, x: np.ndarray) -> None:
        nan = np.isnan(x)
        finite = x[np.isfinite(x)]
        self.count += int(x.size)
        self.nulls += int(nan.sum())
        self.nonfinite += int(x.size - nan.sum() - finite.size)
        if finite.size == 0:
            return
        m = float(finite.mean())
        m2 = float(((finite - m) ** 2).sum())
        n = self.n + finite.size
        delta = m - self.mean
        self.mean += delta * finite.size / n  # Chan et al.: merging two means and squared sums
        self.m2 += m2 + delta * delta * self.n * finite.size / n
        self.n = n
        self.lo, self.hi = min(self.lo, float(finite.min())), max(self.hi, float(finite.max()))
        self.whole = self.whole and bool(np.all(finite == np.round(finite)))
        if self.support is not None:
            values, counts = np.unique(finite, return_counts=True)
            if values.size > MAX_SUPPORT:
                self.support = None
                return
            for v, k in zip(values.tolist(), counts.tolist(), strict=True):
                self.support[v] = self.support.get(v, 0) + k
            if len(self.support) > MAX_SUPPORT:
                self.support = None


@dataclass
class _Categorical:
    """Exact category counts of one column while it has at most ``CATEGORY_CAP`` values."""

    count: int = 0
    nulls: int = 0
    counts: dict[str, int] | None = field(default_factory=dict)

    def add(self, column: pa.Array) -> None:
        self.count += len(column)
        self.nulls += column.null_count
        if self.counts is None or column.null_count == len(column):
            return
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        vc = pc.value_counts(column)
        for k, v in zip(
            vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
        ):
            if k is not None:
                key = str(k)
                self.counts[key] = self.counts.get(key, 0) + v
        if len(self.counts) > CATEGORY_CAP:
            self.counts = None  # too many to count: profiled from the sample


class _Sample:
    """A uniform sample of at most ``cap`` rows: each row gets a seeded random key and the rows
    with the ``cap`` smallest keys are kept (bottom-k sampling, so any order of batches works)."""

    def __init__(self, cap: int, seed: int = SEED) -> None:
        self.cap = cap
        self.rng = np.random.default_rng(seed)
        self.keys: list[np.ndarray] = []
        self.parts: list[pa.RecordBatch] = []
        self.threshold = np.inf  # a row whose key is not below this can never be kept
        self.held = 0
        self.seen = 0
        self.largest = 0  # the most rows ever held at once (bounded by cap + cap // 4 + a batch)

    @property
    def complete(self) -> bool:
        """The sample holds every row seen."""
        return self.seen <= self.cap

    def add(self, batch: pa.RecordBatch) -> None:
        keys = self.rng.random(batch.num_rows)
        self.seen += batch.num_rows
        pick = np.flatnonzero(keys < self.threshold)
        if pick.size == 0:
            return
        whole = pick.size == batch.num_rows
        self.keys.append(keys if whole else keys[pick])
        self.parts.append(batch if whole else batch.take(pa.array(pick)))
        self.held += int(pick.size)
        self.largest = max(self.largest, self.held)
        if self.held >= self.cap + self.cap // 4:
            self._shrink()

    def _shrink(self) -> None:
        keys = np.concatenate(self.keys)
        if keys.size <= self.cap:
            return
        keep = np.sort(np.argpartition(keys, self.cap - 1)[: self.cap])
        table = pa.Table.from_batches(self.parts).take(pa.array(keep)).combine_chunks()
        self.keys = [keys[keep]]
        self.parts = table.to_batches()
        self.threshold = float(self.keys[0].max())
        self.held = self.cap

    def table(self, schema: pa.Schema) -> pa.Table:
        if self.held > self.cap:
            self._shrink()
        return pa.Table.from_batches(self.parts, schema=schema)


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.float64())
    out: np.ndarray = np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    return out


def _distinct(seen: int, m: int, total: int) -> int:
    """The distinct values of ``total`` values estimated from a uniform sample of ``m`` of them
    showing ``seen`` distinct values: the D equally common values for which such a sample would
    show as many (exact when the sample is everything; all distinct when it shows no repeat)."""
    if m >= total or seen == m:
        return total if seen == m else seen
    f = m / total

    def shown(d: float) -> float:
        return float(d * -np.expm1((total / d) * np.log1p(-f)) - seen)

    return round(float(optimize.brentq(shown, seen, total)))


def _numeric_feature(scan: _Numeric, sample: np.ndarray) -> tuple[NumericProfile, np.ndarray]:
    """The profile with the sample's quantile edges and pass-1 figures (its counts are filled
    by pass 2), and the fine grid pass 2 counts on."""
    finite = sample[np.isfinite(sample)]
    if scan.n == 0:
        empty = numeric_profile(np.zeros(0))  # no finite value: nothing to bin
        return replace(
            empty, count=scan.count, nulls=scan.nulls, nonfinite=scan.nonfinite
        ), np.zeros(0)
    shape = numeric_profile(finite)
    qs = np.asarray(shape.quantiles, dtype=float)
    qs[0], qs[-1] = scan.lo, scan.hi
    cuts = np.asarray(shape.cuts, dtype=float)
    grid = np.unique(np.concatenate((qs, cuts)))
    support = None if scan.support is None else sorted(scan.support)
    distinct = (
        len(support) if support is not None else _distinct(shape.distinct or 0, finite.size, scan.n)
    )
    identifier = (
        distinct == scan.n >= IDENTIFIER_MIN_DISTINCT and scan.whole and scan.nonfinite == 0
    )
    feat = NumericProfile(
        count=scan.count,
        nulls=scan.nulls,
        nonfinite=scan.nonfinite,
        min=scan.lo,
        max=scan.hi,
        mean=scan.mean,
        std=float(np.sqrt(scan.m2 / scan.n)),
        quantiles=tuple(qs.tolist()),
        cuts=tuple(cuts.tolist()),
        hist_edges=tuple(np.histogram_bin_edges([scan.lo, scan.hi], N_HIST_BINS).tolist()),
        grid=tuple(grid.tolist()),
        distinct=distinct,
        support=None if support is None else tuple(support),
        support_counts=None
        if support is None or scan.support is None
        else tuple(scan.support[v] for v in support),
        identifier=identifier,
    )
    return feat, grid


def _categorical_feature(scan: _Categorical, sample: pa.ChunkedArray) -> CategoricalProfile:
    nonnull = scan.count - scan.nulls
    if scan.counts is not None:
        counts = pd.Series(scan.counts, dtype="int64").sort_values(ascending=False, kind="stable")
        distinct = int(counts.size)
        return CategoricalProfile(
            count=scan.count,
            nulls=scan.nulls,
            distinct=distinct,
            categories={str(k): int(v) for k, v in counts.iloc[:MAX_CATEGORIES].items()},
            other=int(counts.iloc[MAX_CATEGORIES:].sum()),
            singletons=int((counts == 1).sum()),
            identifier=distinct >= IDENTIFIER_MIN_DISTINCT
            and distinct >= IDENTIFIER_MIN_RATIO * nonnull,
        )
    values = sample.to_pandas().dropna().astype(str)
    shape = categorical_profile(values)
    scale = nonnull / max(len(values), 1)
    top = {k: round(v * scale) for k, v in shape.categories.items()}
    distinct = _distinct(shape.distinct, len(values), nonnull)
    return CategoricalProfile(
        count=scan.count,
        nulls=scan.nulls,
        distinct=distinct,
        categories=top,
        other=max(nonnull - sum(top.values()), 0),
        singletons=None,
        identifier=distinct >= IDENTIFIER_MIN_DISTINCT
        and distinct >= IDENTIFIER_MIN_RATIO * nonnull,
    )


@dataclass
class StreamedProfile:
    """A reference profile built by streaming, and how: ``sampled`` rows of ``rows`` placed the
    numeric cuts (all of them when equal), ``passes`` reads of the reference."""

    profile: ReferenceProfile
    rows: int
    sampled: int
    passes: int
    largest_sample: int  # the most rows the sample ever held at once


def stream_profile(
    data: _Data,
    columns: Sequence[str],
    *,
    batch_rows: int = BATCH_ROWS,
    sample_rows: int = SAMPLE_ROWS,
) -> StreamedProfile:
    """A features-only reference profile of ``columns`` of Parquet ``data``, in bounded memory."""
    if sample_rows < 1:
        raise InvalidInputError(f"sample_rows {sample_rows} must be at least 1")
    kinds = _kinds(_schema(data), columns, "reference")
    if _rows(data) == 0:
        raise InvalidInputError(
            "the reference data has no rows; pass the data the model learned from"
        )
    numeric = {c: _Numeric() for c in columns if kinds[c] == "numeric"}
    categorical = {c: _Categorical() for c in columns if kinds[c] == "categorical"}
    sample = _Sample(sample_rows)
    schema: pa.Schema | None = None
    for batch in progress.track(_batches(data, columns, batch_rows), "reference profile"):
        if schema is None:
            schema = batch.schema
            _check_text(batch, categorical)
        for c, num in numeric.items():
            num.add(_floats(batch.column(c)))
        for c, cat in categorical.items():
            cat.add(batch.column(c))
        sample.add(batch)
    assert schema is not None  # at least one row was counted above
    table = sample.table(schema)
    if sample.complete:  # every row: the in-memory profile, exactly
        feats: dict[str, FeatureProfile] = {
            c: numeric_profile(_floats(table.column(c)))
            if kinds[c] == "numeric"
            else categorical_profile(_text(table.column(c)))
            for c in columns
        }
        profile = ReferenceProfile(rows=sample.seen, features=feats)
        return StreamedProfile(profile, sample.seen, sample.seen, 1, sample.largest)
    shapes = {c: _numeric_feature(numeric[c], _floats(table.column(c))) for c in numeric}
    cats = {c: _categorical_feature(categorical[c], table.column(c)) for c in categorical}
    del table
    counted = _count(data, shapes, batch_rows)
    feats = {c: counted[c] if c in counted else cats[c] for c in columns}
    profile = ReferenceProfile(rows=sample.seen, features=feats)
    return StreamedProfile(profile, sample.seen, sample_rows, 2, sample.largest)


def _text(column: pa.Array | pa.ChunkedArray) -> pd.Series:
    """A column as pandas holds it (booleans as booleans, text as text)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    series: pd.Series = column.to_pandas()
    return series


def _check_text(batch: pa.RecordBatch, categorical: dict[str, _Categorical]) -> None:
    for c in categorical:
        col = batch.column(c)
        if pa.types.is_boolean(col.type):
            continue
        _refuse_decimal_commas(_text(col).dropna().head(1000), c)


def _count(
    data: _Data, shapes: dict[str, tuple[NumericProfile, np.ndarray]], batch_rows: int
) -> dict[str, NumericProfile]:
    """Pass 2: every reference row counted into each numeric column's grid, cuts and histogram."""
    binners = {c: Binner(grid) for c, (_, grid) in shapes.items()}
    grid_counts = {c: np.zeros(grid.size + 1, np.int64) for c, (_, grid) in shapes.items()}
    hist_counts = {c: np.zeros(N_HIST_BINS, np.int64) for c in shapes}
    columns = list(shapes)
    for batch in progress.track(_batches(data, columns, batch_rows), "reference counts"):
        for c, (feat, grid) in shapes.items():
            if feat.min is None or feat.max is None:
                continue
            x = _floats(batch.column(c))
            x = x[np.isfinite(x)]
            grid_counts[c] += np.bincount(binners[c](x), minlength=grid.size + 1)
            # the in-memory profile's histogram: N_HIST_BINS equal bins from min to max
            hist_counts[c] += np.histogram(x, bins=N_HIST_BINS, range=(feat.min, feat.max))[0]
    out = {}
    for c, (feat, grid) in shapes.items():
        if feat.min is None:
            out[c] = feat
            continue
        cuts = np.asarray(feat.cuts)
        # cuts are grid points, so each grid bin lies in one cut bin: that of its lower edge
        coarse = np.concatenate(([0], np.searchsorted(cuts, grid, side="right")))
        bin_counts = np.bincount(coarse, weights=grid_counts[c], minlength=cuts.size + 1)
        out[c] = replace(
            feat,
            bin_counts=tuple(int(v) for v in bin_counts),
            grid_counts=tuple(int(v) for v in grid_counts[c]),
            hist_counts=tuple(int(v) for v in hist_counts[c]),
        )
    return out


# -- the current side --------------------------------------------------------------------------


def _inputs(
    batch: pa.RecordBatch | pa.Table, columns: Sequence[str], profile: ReferenceProfile
) -> pa.Table:
    """The ``in.`` columns :func:`compute_partial` reads, typed as the reference profile says."""
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for c in columns:
        col = batch.column(c)
        feat = profile.features[c]
        t = col.type
        if isinstance(feat, NumericProfile):
            if feat.identifier and pa.types.is_integer(t):
                arrays["in." + c] = col  # ids counted exactly, never through a float
            elif _is_number(t) or pa.types.is_boolean(t):
                arrays["in." + c] = pc.cast(col, pa.float64())
            elif _is_text(t):
                what = f"column '{c}' of the current data (numeric in the reference)"
                arrays["in." + c] = pa.array(numbers(_text(col), what))
            else:
                raise InvalidInputError(
                    f"column '{c}' of the current data has type {t}, numeric in the reference; "
                    "convert it to numbers"
                )
        elif pa.types.is_dictionary(t):
            arrays["in." + c] = col.cast(pa.string())
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            arrays["in." + c] = col
        else:  # numbers where the reference has categories: keyed as str() keys them
            s = _text(col)
            arrays["in." + c] = pa.array(
                s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v)),
                type=pa.string(),
            )
    return pa.table(arrays)


def _current(
    source: Source, columns: Sequence[str], profile: ReferenceProfile, batch_rows: int
) -> tuple[int, Iterator[pa.Table]]:
    """The current side's row count and its rows as ``in.`` tables, batch by batch."""
    if isinstance(source, pd.DataFrame):
        table = _arrow(source, columns, profile)
        pieces = (table.slice(a, batch_rows) for a in range(0, table.num_rows, batch_rows))
        return len(source), _nonempty(pieces, table.slice(0, 0))
    data = _open(source, "current")
    schema = _schema(data)
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InvalidInputError(
            f"column(s) {', '.join(map(repr, missing))} are in the reference but not in the "
            f"current data; it has: {', '.join(schema.names)}"
        )
    empty = _inputs(schema.empty_table(), columns, profile)
    batches = (_inputs(b, columns, profile) for b in _batches(data, columns, batch_rows))
    return _rows(data), _nonempty(batches, empty)


def _nonempty(tables: Iterator[pa.Table], empty: pa.Table) -> Iterator[pa.Table]:
    """The tables, with one empty table first (the shape an empty chunk is computed on)."""
    yield empty
    yield from tables


def drift_stream(
    reference: Source,
    current: Source,
    *,
    columns: Sequence[str] | None = None,
    chunk_size: int | None = None,
    chunk_number: int | None = None,
    settings: DriftSettings | None = None,
    batch_rows: int = BATCH_ROWS,
    sample_rows: int = SAMPLE_ROWS,
) -> DriftChunks:
    """:func:`ownloop.drift` over Parquet data (either side may also be a DataFrame), streamed.

    >>> ownloop.drift("train.parquet", "today/", chunk_size=1_000_000)  # doctest: +SKIP
    """
    if batch_rows < 1:
        raise InvalidInputError(f"batch_rows {batch_rows} must be at least 1")
    s = settings or DriftSettings()
    if isinstance(reference, pd.DataFrame):
        cols = list(columns) if columns is not None else [str(c) for c in reference.columns]
        profile = frame_profile(reference, cols)
    else:
        data = _open(reference, "reference")
        cols = list(columns) if columns is not None else list(_schema(data).names)
        profile = stream_profile(data, cols, batch_rows=batch_rows, sample_rows=sample_rows).profile
    spec = PartialSpec.from_profile(profile)
    total, tables = _current(current, cols, profile, batch_rows)
    return _chunked(tables, chunks(total, chunk_size, chunk_number), spec, profile, s)


def _chunked(
    tables: Iterator[pa.Table],
    bounds: list[tuple[int, int]],
    spec: PartialSpec,
    profile: ReferenceProfile,
    s: DriftSettings,
) -> DriftChunks:
    """One result per chunk of rows, a chunk's partial merged from the pieces of the batches it
    spans (partials are sums, so the split never changes a figure)."""
    out = DriftChunks()
    empty = next(tables)
    k, pos = 0, 0
    part: WindowPartial | None = None

    def close() -> None:
        nonlocal k, part
        a, b = bounds[k]
        done = part if part is not None else compute_partial(empty, spec)
        out.append(ChunkDrift(k, a, b, evaluate_drift(done, profile, s)))
        k, part = k + 1, None

    for table in progress.track(tables, "drift batches"):
        off = 0
        while off < table.num_rows and k < len(bounds):
            take = min(bounds[k][1] - pos, table.num_rows - off)
            if take > 0:
                piece = compute_partial(table.slice(off, take), spec)
                part = piece if part is None else part.merge(piece)
                off, pos = off + take, pos + take
            if pos == bounds[k][1]:
                close()
    while k < len(bounds):  # empty chunks at the end (or rows the metadata promised, missing)
        close()
    return out
