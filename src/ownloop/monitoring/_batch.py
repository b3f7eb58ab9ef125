"""Drift and label-free performance on plain DataFrames, for data that never went through the server.

The workflow NannyML users know: a reference frame (with the model's probabilities and the
labels) and a current frame, cut into chunks of a chosen size; one result per chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ownloop import progress
from ownloop.errors import InvalidInputError
from ownloop.monitoring._drift import DriftReport, DriftSettings, evaluate_drift
from ownloop.monitoring._partial import PartialSpec, WindowPartial, add_scores, compute_partial
from ownloop.monitoring._performance import (
    Calibration,
    Estimate,
    Realised,
    calibration_test,
    estimate_from_partial,
    realised_performance,
)
from ownloop.profile import (
    PROB_EDGES,
    ReferenceProfile,
    categorical_profile,
    isotonic_map,
    numeric_profile,
)
from ownloop.signature import column_type

__all__ = [
    "ChunkDrift",
    "ChunkPerformance",
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


@dataclass(frozen=True)
class ChunkPerformance:
    index: int
    start: int
    end: int
    estimated: tuple[Estimate, ...]
    realised: tuple[Realised, ...]
    calibrated: bool

    @property
    def summary(self) -> str:
        """One line: each estimated metric with its band."""
        figures = "; ".join(
            f"{e.metric} {e.value:.3f} [{e.lower:.3f}, {e.upper:.3f}]"
            for e in self.estimated
            if e.value is not None and e.lower is not None and e.upper is not None
        )
        return (
            f"chunk {self.index} (rows {self.start} to {self.end - 1}): {figures or 'no estimate'}"
        )


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
    """A features-only reference profile of ``columns`` (types inferred from the frame)."""
    if len(reference) == 0:
        raise InvalidInputError(
            "the reference frame has no rows; pass the data the model learned from"
        )
    feats: dict[str, Any] = {}
    for c in columns:
        if c not in reference:
            raise InvalidInputError(
                f"column '{c}' is not in the reference frame; it has: {', '.join(map(str, reference.columns))}"
            )
        kind = column_type(c, reference[c])
        feats[c] = (
            numeric_profile(reference[c].to_numpy(dtype=float, na_value=np.nan))
            if kind in ("float", "integer")
            else categorical_profile(reference[c])
        )
    return ReferenceProfile(
        {"format": 2, "rows": len(reference), "features": feats, "prediction": {"kind": "none"}}
    )


def _arrow(frame: pd.DataFrame, columns: Sequence[str], profile: ReferenceProfile) -> pa.Table:
    arrays = {}
    for c in columns:
        if c not in frame:
            raise InvalidInputError(
                f"column '{c}' is in the reference but not in the current frame"
            )
        s = frame[c]
        if profile.features[c]["kind"] == "numeric":
            values = pd.to_numeric(s, errors="coerce") if s.dtype == object else s
            arrays["in." + str(c)] = pa.array(np.asarray(values, dtype=float))
        else:
            arrays["in." + str(c)] = pa.array(
                s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v)),
                type=pa.string(),
            )
    return pa.table(arrays)


def drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    chunk_size: int | None = None,
    chunk_number: int | None = None,
    settings: DriftSettings | None = None,
    **options: Any,
) -> list[ChunkDrift]:
    """Per-feature and dataset drift of ``current`` (per chunk) against ``reference``.

    >>> res = ownloop.drift(train_df, today_df, chunk_size=5000)  # doctest: +SKIP
    >>> res[0].report.summary  # doctest: +SKIP
    """
    cols = list(columns) if columns is not None else [str(c) for c in reference.columns]
    s = settings or DriftSettings.from_dict(options)
    profile = frame_profile(reference, cols)
    spec = PartialSpec.from_profile(profile)
    table = _arrow(current, cols, profile)
    out = []
    for i, (a, b) in enumerate(
        progress.track(chunks(len(current), chunk_size, chunk_number), "drift chunks")
    ):
        part = compute_partial(table.slice(a, b - a), spec)
        out.append(ChunkDrift(i, a, b, evaluate_drift(part, profile, s)))
    return out


def _proba(frame: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    missing = [c for c in cols if c not in frame]
    if missing:
        raise InvalidInputError(
            f"probability columns {missing} are not in the frame; it has: {', '.join(map(str, frame.columns))}"
        )
    if len(cols) == 1:
        p = frame[cols[0]].to_numpy(dtype=float)
        return np.column_stack((1 - p, p))
    return frame[list(cols)].to_numpy(dtype=float)


def reference_calibration(
    proba: np.ndarray, labels: np.ndarray, classes: Sequence[Any], calibrate: bool | None
) -> Calibration | None:
    """Isotonic maps from the reference when its probabilities fail a calibration test (or when forced)."""
    if calibrate is False:
        return None
    onehot = np.column_stack([(labels == c).astype(float) for c in classes])
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
    return tuple((np.asarray(m["x"]), np.asarray(m["y"])) for m in maps)


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
) -> list[ChunkPerformance]:
    """Label-free estimates (CBPE) per chunk of ``current``; realised figures too where it has labels.

    ``y_pred_proba`` names the positive-class probability column (binary) or one column per class.
    Assumes covariate shift only (no concept drift).

    >>> res = ownloop.estimate_performance(ref, cur, y_pred_proba="p_churn", y_true="churned", chunk_size=5000)  # doctest: +SKIP
    """
    cols = [y_pred_proba] if isinstance(y_pred_proba, str) else list(y_pred_proba)
    if y_true not in reference:
        raise InvalidInputError(
            f"the reference frame has no label column '{y_true}'; CBPE calibrates on labelled reference data"
        )
    labels = reference[y_true].to_numpy()
    cls = (
        list(classes)
        if classes is not None
        else sorted(pd.unique(reference[y_true].dropna()).tolist())
    )
    if len(cls) != max(len(cols), 2):
        raise InvalidInputError(
            f"{len(cls)} classes ({cls}) but {len(cols)} probability columns; pass classes= in column order"
        )
    ref_proba = _proba(reference, cols)
    calibration = reference_calibration(ref_proba, labels, cls, calibrate)
    proba = _proba(current, cols)
    if y_pred is not None:
        lookup = {str(c): i for i, c in enumerate(cls)}
        pred_idx = np.array([lookup.get(str(v), -1) for v in current[y_pred]])
    else:
        pred_idx = np.argmax(proba, axis=1)
    out = []
    for i, (a, b) in enumerate(
        progress.track(chunks(len(current), chunk_size, chunk_number), "estimate chunks")
    ):
        part = WindowPartial(rows=b - a)
        p, idx = proba[a:b], pred_idx[a:b]
        good = np.isfinite(p).all(axis=1) & (idx >= 0)
        add_scores(part, p[good], calibration, idx[good])
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
        )
        real: list[Realised] = []
        if y_true in current:
            yt = current[y_true].to_numpy()[a:b]
            has = pd.notna(yt) & good
            yp = np.asarray(cls, dtype=object)[idx[has]]
            real = realised_performance(
                yt[has].astype(str),
                yp.astype(str),
                score=p[has][:, 1] if len(cls) == 2 else None,
                positive=str(cls[1]) if len(cls) == 2 else None,
                total_rows=b - a,
                level=level,
                seed=i,
            )
        out.append(ChunkPerformance(i, a, b, tuple(est), tuple(real), calibration is not None))
    return out
