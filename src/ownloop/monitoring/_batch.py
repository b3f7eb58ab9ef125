"""Drift and label-free performance on plain DataFrames, for data that never went through the server.

The workflow NannyML users know: a reference frame (with the model's probabilities and the
labels) and a current frame, cut into chunks of a chosen size; one result per chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ownloop import progress
from ownloop.errors import InvalidInputError
from ownloop.monitoring._drift import DriftReport, DriftSettings, evaluate_drift
from ownloop.monitoring._partial import (
    PartialSpec,
    WindowPartial,
    add_scores,
    column_threads,
    compute_partial,
    map_columns,
)
from ownloop.monitoring._performance import (
    Calibration,
    Estimate,
    Headline,
    Realised,
    bootstrap_pred_sums,
    calibration_test,
    choose_headline,
    estimate_from_partial,
    realised_performance,
    support_from_rows,
)
from ownloop.predlog import label_key
from ownloop.profile import (
    PROB_EDGES,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
    categorical_profile,
    isotonic_map,
    numeric_profile,
)
from ownloop.signature import column_type

if TYPE_CHECKING:
    from ownloop.monitoring._stream import Source

__all__ = [
    "ChunkDrift",
    "ChunkPerformance",
    "DriftChunks",
    "PerformanceChunks",
    "chunks",
    "drift",
    "estimate_performance",
    "frame_profile",
]


@dataclass(frozen=True)
class ChunkDrift:
    index: int
    start: int  # first row (position in the current frame)
    end: int  # one past the last row
    report: DriftReport

    @property
    def summary(self) -> str:
        return f"chunk {self.index} (rows {self.start} to {self.end - 1}): {self.report.summary}"

    def to_frame(self) -> pd.DataFrame:
        """One row per feature of this chunk (see :meth:`DriftReport.to_frame`)."""
        frame = self.report.to_frame()
        for i, (name, value) in enumerate(
            (("chunk", self.index), ("start", self.start), ("end", self.end))
        ):
            frame.insert(i, name, value)
        frame["dataset_drift"] = self.report.dataset_drift
        return frame


@dataclass(frozen=True)
class ChunkPerformance:
    index: int
    start: int
    end: int
    estimated: tuple[Estimate, ...]
    realised: tuple[Realised, ...]
    calibrated: bool
    headline: Headline | None = None  # the accuracy to lead with (estimated or realised) and why

    @property
    def warnings(self) -> tuple[str, ...]:
        """Why the estimate may not hold in this chunk (empty when nothing is flagged)."""
        return next((e.warnings for e in self.estimated if e.warnings), ())

    @property
    def summary(self) -> str:
        """One line: each estimated metric with its band, the warnings, and the headline's source."""
        figures = "; ".join(
            f"{e.metric} {e.value:.3f} [{e.lower:.3f}, {e.upper:.3f}]"
            for e in self.estimated
            if e.value is not None and e.lower is not None and e.upper is not None
        )
        if not figures:
            figures = next((e.note for e in self.estimated if e.note), "") or "no estimate"
        text = f"chunk {self.index} (rows {self.start} to {self.end - 1}): {figures}"
        for w in self.warnings:
            text += f"; warning: {w}"
        if self.headline is not None and self.headline.source == "realised":
            text += f"; {self.headline.reason}"
        return text

    def to_frame(self) -> pd.DataFrame:
        """One row per figure of this chunk: ``kind`` is ``estimated``, ``realised`` or
        ``headline`` (the accuracy to lead with; ``method`` says which, ``note`` why)."""
        rows = [
            {
                "kind": "estimated",
                "metric": e.metric,
                "value": e.value,
                "lower": e.lower,
                "upper": e.upper,
                "n": e.n,
                "method": e.method,
                "note": "; ".join(x for x in (e.note, *e.warnings) if x),
                "status": e.status,
            }
            for e in self.estimated
        ] + [
            {
                "kind": "realised",
                "metric": r.metric,
                "value": r.value,
                "lower": r.lower,
                "upper": r.upper,
                "n": r.n_labelled,
                "method": r.method,
                "note": r.note,
                "status": "ok" if r.value is not None else "undefined",
            }
            for r in self.realised
        ]
        h = self.headline
        if h is not None:
            rows.append(
                {
                    "kind": "headline",
                    "metric": h.metric,
                    "value": h.value,
                    "lower": h.lower,
                    "upper": h.upper,
                    "n": None,
                    "method": h.source,
                    "note": h.reason,
                    "status": h.source,
                }
            )
        frame = pd.DataFrame(rows, columns=_PERFORMANCE_COLUMNS)
        for i, (name, value) in enumerate(
            (("chunk", self.index), ("start", self.start), ("end", self.end))
        ):
            frame.insert(i, name, value)
        frame["calibrated"] = self.calibrated
        return frame


_PERFORMANCE_COLUMNS = [
    "kind",
    "metric",
    "value",
    "lower",
    "upper",
    "n",
    "method",
    "note",
    "status",
]


class DriftChunks(list[ChunkDrift]):
    """The per-chunk results of :func:`drift` (a list), and all of them as one frame."""

    def to_frame(self) -> pd.DataFrame:
        """One row per chunk and feature."""
        frames = [c.to_frame() for c in self]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class PerformanceChunks(list[ChunkPerformance]):
    """The per-chunk results of :func:`estimate_performance` (a list), and one frame of them."""

    def to_frame(self) -> pd.DataFrame:
        """One row per chunk and figure."""
        frames = [c.to_frame() for c in self]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def chunks(n: int, chunk_size: int | None, chunk_number: int | None) -> list[tuple[int, int]]:
    """Row ranges: fixed-size chunks, a fixed number of chunks, or one chunk of everything."""
    if chunk_size is not None and chunk_number is not None:
        raise InvalidInputError("pass chunk_size or chunk_number, not both")
    if chunk_size is not None:
        if chunk_size < 1:
            raise InvalidInputError(f"chunk_size {chunk_size} must be at least 1")
        return [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)] or [(0, 0)]
    if chunk_number is not None:
        if chunk_number < 1:
            raise InvalidInputError(f"chunk_number {chunk_number} must be at least 1")
        edges = np.linspace(0, n, chunk_number + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    return [(0, n)]


def frame_profile(reference: pd.DataFrame, columns: Sequence[str]) -> ReferenceProfile:
    """A features-only reference profile of ``columns`` (types inferred from the frame); large
    frames are profiled a column per thread (:func:`column_threads`), with the same result."""
    if len(reference) == 0:
        raise InvalidInputError(
            "the reference frame has no rows; pass the data the model learned from"
        )
    work: dict[str, tuple[pd.Series, bool]] = {}
    for c in columns:
        if c not in reference:
            raise InvalidInputError(
                f"column '{c}' is not in the reference frame; it has: {', '.join(map(str, reference.columns))}"
            )
        series = reference[c]
        numeric = column_type(c, series) in ("float", "integer")
        if not numeric:
            _refuse_decimal_commas(series, str(c))
        work[c] = (series, numeric)

    def one(item: tuple[pd.Series, bool]) -> FeatureProfile:
        series, numeric = item
        if numeric:
            return numeric_profile(series.to_numpy(dtype=float, na_value=np.nan))
        return categorical_profile(series)

    profiles = map_columns(one, list(work.values()), column_threads(len(reference)))
    return ReferenceProfile(rows=len(reference), features=dict(zip(work, profiles, strict=True)))


def _refuse_decimal_commas(series: pd.Series, name: str) -> None:
    """A text column whose values are numbers written with decimal commas is refused, not taken
    for categories (every value would be its own category)."""
    text = series.dropna().head(1000)  # a sample decides; a text column may be long
    if text.empty or pd.api.types.is_bool_dtype(text.dtype):
        return
    text = text.astype(str)
    commas = text.str.match(_DECIMAL_COMMA)
    if commas.mean() >= 0.9:
        raise InvalidInputError(
            f"column '{name}' of the reference frame holds numbers written as text with a decimal "
            f"comma, e.g. {text[commas].iloc[0]!r}; convert with "
            ".str.replace(',', '.').astype(float) or pass the columns to compare"
        )


def _arrow(frame: pd.DataFrame, columns: Sequence[str], profile: ReferenceProfile) -> pa.Table:
    arrays = {}
    for c in columns:
        if c not in frame:
            raise InvalidInputError(
                f"column '{c}' is in the reference but not in the current frame"
            )
        s = frame[c]
        feat = profile.features[c]
        if (
            isinstance(feat, NumericProfile)
            and feat.identifier
            and pd.api.types.is_integer_dtype(s)
        ):
            arrays["in." + str(c)] = pa.array(s)  # ids counted exactly, never through a float
        elif isinstance(feat, NumericProfile):
            values = numbers(s, f"column '{c}' of the current frame (numeric in the reference)")
            arrays["in." + str(c)] = pa.array(values)
        else:
            arrays["in." + str(c)] = category_array(s)
    return pa.table(arrays)


def category_array(series: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A categorical column as Arrow, each value as its text (``str(v)``, as the profile counts
    it; missing values null).

    Strings, booleans and pandas categoricals convert through Arrow without a Python call per
    row; booleans stay boolean (counted as 'True' / 'False'). Anything else, and object columns
    holding other than text, take the per-value path.
    """
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        names = pa.array([str(v) for v in dtype.categories], type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), names)
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.StringDtype):
        return pa.array(series, from_pandas=True)
    if isinstance(dtype, pd.ArrowDtype) and (
        pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)
    ):
        return pa.array(series)
    if pd.api.types.is_object_dtype(dtype):
        try:
            arr = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arr = None  # values other than text: each one through str() below
        if arr is not None and (pa.types.is_string(arr.type) or pa.types.is_null(arr.type)):
            return arr.cast(pa.string())
    values = series.astype(object).where(series.notna(), None)
    return pa.array(values.map(lambda v: v if v is None else str(v)), type=pa.string())


def drift(
    reference: Source,
    current: Source,
    *,
    columns: Sequence[str] | None = None,
    chunk_size: int | None = None,
    chunk_number: int | None = None,
    settings: DriftSettings | None = None,
    **options: Any,
) -> DriftChunks:
    """Per-feature and dataset drift of ``current`` (per chunk) against ``reference``.

    >>> res = ownloop.drift(train_df, today_df, chunk_size=5000)  # doctest: +SKIP
    >>> res[0].report.summary  # doctest: +SKIP

    Either side may also be Parquet (a file, a folder of files, a pyarrow Dataset or
    ParquetFile): it is then streamed in batches, in memory bounded whatever its size.
    """
    if not (isinstance(reference, pd.DataFrame) and isinstance(current, pd.DataFrame)):
        from ownloop.monitoring._stream import drift_stream

        return drift_stream(
            reference,
            current,
            columns=columns,
            chunk_size=chunk_size,
            chunk_number=chunk_number,
            settings=settings or DriftSettings.from_dict(options),
        )
    cols = list(columns) if columns is not None else [str(c) for c in reference.columns]
    s = settings or DriftSettings.from_dict(options)
    profile = frame_profile(reference, cols)
    spec = PartialSpec.from_profile(profile)
    table = _arrow(current, cols, profile)
    out = DriftChunks()
    for i, (a, b) in enumerate(
        progress.track(chunks(len(current), chunk_size, chunk_number), "drift chunks")
    ):
        part = compute_partial(table.slice(a, b - a), spec, threads=column_threads(b - a))
        out.append(ChunkDrift(i, a, b, evaluate_drift(part, profile, s)))
    return out


def _proba(frame: pd.DataFrame, cols: Sequence[str], which: str) -> np.ndarray:
    """Probabilities from ``cols`` of ``frame`` as an (n, k) array; NaN marks a missing value."""
    missing = [c for c in cols if c not in frame]
    if missing:
        raise InvalidInputError(
            f"probability columns {missing} are not in the {which} frame; it has: {', '.join(map(str, frame.columns))}"
        )
    columns = [_probability_column(frame[c], str(c), which) for c in cols]
    if len(columns) == 1:
        return np.column_stack((1 - columns[0], columns[0]))
    out = np.column_stack(columns)
    total = out.sum(axis=1)
    with np.errstate(invalid="ignore"):
        off = np.flatnonzero(np.isfinite(total) & (np.abs(total - 1) > ROW_SUM_TOLERANCE))
    if off.size:
        raise InvalidInputError(
            f"the probability columns {', '.join(map(repr, cols))} of the {which} frame do not "
            f"sum to 1 in {off.size:,} rows (row {off[0]} sums to {total[off[0]]:.4g}); pass one "
            "column per class of predict_proba output, every class"
        )
    return out


ROW_SUM_TOLERANCE = 0.01  # float32 probabilities and rounding to 2-3 decimals stay well inside
_DECIMAL_COMMA = r"^\s*[-+]?\d*,\d+\s*$"


def numbers(series: pd.Series, what: str) -> np.ndarray:
    """A column as floats (NaN = missing); text that is not a number is refused, naming ``what``."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return np.asarray(series.to_numpy(dtype=float, na_value=np.nan), dtype=float)
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = np.flatnonzero(np.isnan(values) & series.notna().to_numpy())
    if bad.size:
        example = series.iloc[bad[0]]
        text = series.iloc[bad].astype(str)
        commas = int(text.str.match(_DECIMAL_COMMA).sum())
        hint = (
            f"; {commas:,} of them look like numbers with a decimal comma: convert with "
            ".str.replace(',', '.').astype(float)"
            if commas
            else "; convert the column to numbers first"
        )
        raise InvalidInputError(
            f"{what} holds text that is not a number in {bad.size:,} rows, e.g. {example!r} at "
            f"row {bad[0]}{hint}"
        )
    return np.asarray(values, dtype=float)


def _probability_column(series: pd.Series, name: str, which: str) -> np.ndarray:
    values = numbers(series, f"probability column '{name}' of the {which} frame")
    with np.errstate(invalid="ignore"):
        outside = (values < 0) | (values > 1) | np.isinf(values)
    if outside.any():
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        seen = (
            f"values from {lo:g} to {hi:g}"
            if lo < 0 and hi > 1
            else f"values up to {hi:g}"
            if hi > 1
            else f"values down to {lo:g}"
        )
        raise InvalidInputError(
            f"probability column '{name}' of the {which} frame holds {seen} "
            f"({int(outside.sum()):,} of {values.size:,} outside [0, 1]); probabilities must lie "
            "in [0, 1]; pass predict_proba output, not logits or percentages"
        )
    if which == "reference" and np.isnan(values).any():
        raise InvalidInputError(
            f"probability column '{name}' of the reference frame has {int(np.isnan(values).sum())} "
            "missing values; the reference must be complete to calibrate on"
        )
    return values


def _keys(values: Any) -> np.ndarray:
    """Class keys (compared by value: 1, 1.0 and '1' are one class) of an array; None where missing."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    keys = np.asarray([label_key(u) for u in uniques] + [None], dtype=object)
    out: np.ndarray = keys[codes]
    return out


def _onehot(labels: np.ndarray, classes: Sequence[Any]) -> np.ndarray:
    keys = _keys(labels)
    return np.column_stack([(keys == label_key(c)).astype(float) for c in classes])


def reference_calibration(
    proba: np.ndarray, onehot: np.ndarray, classes: Sequence[Any], calibrate: bool | None
) -> Calibration | None:
    """Isotonic maps from the reference when its probabilities fail a calibration test (or when forced)."""
    if calibrate is False:
        return None
    if calibrate is None:
        bins = np.clip(np.digitize(proba, PROB_EDGES[1:-1]), 0, len(PROB_EDGES) - 2)
        m = len(PROB_EDGES) - 1
        worst = min(
            calibration_test(
                np.bincount(bins[:, i], minlength=m),
                np.bincount(bins[:, i], weights=onehot[:, i], minlength=m),
                np.bincount(bins[:, i], weights=proba[:, i], minlength=m),
            )
            for i in range(len(classes))
        )
        if worst >= 0.01:
            return None
    maps = [isotonic_map(proba[:, i], onehot[:, i]) for i in range(len(classes))]
    return tuple((np.asarray(x), np.asarray(y)) for x, y in maps)


def estimate_performance(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    y_pred_proba: str | Sequence[str],
    y_true: str,
    y_pred: str | None = None,
    classes: Sequence[Any] | None = None,
    chunk_size: int | None = None,
    chunk_number: int | None = None,
    calibrate: bool | None = None,
    level: float = 0.95,
) -> PerformanceChunks:
    """Label-free estimates (CBPE) per chunk of ``current``; realised figures too where it has labels.

    ``y_pred_proba`` names the positive-class probability column (binary) or one column per class.
    Assumes covariate shift only (no concept drift). Each band includes the calibration's own
    uncertainty (bootstrap refits on the reference); each estimate carries warnings when the
    chunk's scores lie where the reference cannot vouch for the calibration. A chunk with fewer
    than ``MIN_ROWS`` scored rows (or 5 expected rows of the rarer class) gets no figure: its
    status is ``inconclusive``. Where ``current`` has labels, ``headline`` tests the estimate
    against them and leads with the realised accuracy when they disagree.

    >>> res = ownloop.estimate_performance(ref, cur, y_pred_proba="p_churn", y_true="churned", chunk_size=5000)  # doctest: +SKIP
    """
    cols = [y_pred_proba] if isinstance(y_pred_proba, str) else list(y_pred_proba)
    if y_true not in reference:
        raise InvalidInputError(
            f"the reference frame has no label column '{y_true}'; CBPE calibrates on labelled reference data"
        )
    labels = reference[y_true].to_numpy()
    cls = list(classes) if classes is not None else _classes_of(reference[y_true])
    if len(cls) != max(len(cols), 2):
        raise InvalidInputError(
            f"{len(cls)} classes ({cls}) but {len(cols)} probability columns; pass classes= in column order"
        )
    keys = [label_key(c) for c in cls]
    ref_proba = _proba(reference, cols, "reference")
    onehot = _onehot(labels, cls)
    calibration = reference_calibration(ref_proba, onehot, cls, calibrate)
    support = support_from_rows(ref_proba, onehot)
    proba = _proba(current, cols, "current")
    pred_idx = (
        _predicted_index(current, y_pred, cls) if y_pred is not None else np.argmax(proba, axis=1)
    )
    true_keys = _keys(current[y_true].to_numpy()) if y_true in current else None
    out = PerformanceChunks()
    for i, (a, b) in enumerate(
        progress.track(chunks(len(current), chunk_size, chunk_number), "estimate chunks")
    ):
        part = WindowPartial(rows=b - a)
        p, idx = proba[a:b], pred_idx[a:b]
        good = np.isfinite(p).all(axis=1) & (idx >= 0)
        add_scores(part, p[good], calibration, idx[good])
        boot = bootstrap_pred_sums(p[good], idx[good], support.bootstrap) if len(cls) > 2 else None
        est = estimate_from_partial(
            part.score_counts,
            part.score_c,
            part.score_c2,
            n_classes=len(cls),
            pred_c=part.pred_c,
            pred_c2=part.pred_c2,
            n_rows=int(good.sum()),
            calibrated=calibration is not None,
            level=level,
            seed=i,
            support=support,
            pred_c_boot=boot,
            confidence=part.confidence,
        )
        real: list[Realised] = []
        if true_keys is not None:
            yt = true_keys[a:b]
            has = pd.notna(yt) & good
            real = realised_performance(
                yt[has].astype(str),
                np.asarray(keys, dtype=object)[idx[has]].astype(str),
                score=p[has][:, 1] if len(cls) == 2 else None,
                positive=keys[1] if len(cls) == 2 else None,
                total_rows=b - a,
                level=level,
                seed=i,
            )
        out.append(
            ChunkPerformance(
                i,
                a,
                b,
                tuple(est),
                tuple(real),
                calibration is not None,
                choose_headline(est, real, level=level),
            )
        )
    return out


def _classes_of(labels: pd.Series) -> list[Any]:
    """The reference's classes, one per value (1 and 1.0 are one class), in sorted order."""
    uniques = pd.unique(labels.dropna()).tolist()
    by_key = {label_key(v): v for v in uniques}
    try:
        return sorted(by_key.values())
    except TypeError:  # mixed types (e.g. 1 and "yes"): sort by their text
        return sorted(by_key.values(), key=label_key)


def _predicted_index(current: pd.DataFrame, y_pred: str, cls: Sequence[Any]) -> np.ndarray:
    """The class index of each row's predicted class (-1 where missing or not a class)."""
    if y_pred not in current:
        raise InvalidInputError(
            f"the current frame has no predicted-class column '{y_pred}'; it has: "
            f"{', '.join(map(str, current.columns))}"
        )
    lookup = {label_key(c): i for i, c in enumerate(cls)}
    keys = _keys(current[y_pred].to_numpy())
    idx = np.array([-1 if k is None else lookup.get(k, -1) for k in keys], dtype=np.int64)
    given = np.asarray([k is not None for k in keys], dtype=bool)
    if given.any() and not (idx >= 0).any():
        seen = sorted({str(k) for k in keys[given]})[:10]
        raise InvalidInputError(
            f"no value of the predicted-class column '{y_pred}' is one of the classes: it holds "
            f"{', '.join(seen)}; the classes are {', '.join(map(repr, cls))} (compared by value, "
            "so 1, 1.0 and '1' match); pass classes= or the right y_pred column"
        )
    return idx
