"""Reference profile: the training data's shape, kept so drift and rollback never need raw rows.

The profile is typed: frozen dataclasses, read and written only here (``to_dict``/``from_dict``),
so every rule reads named fields. ``ReferenceProfile.version`` says which fields a stored profile
has; older profiles still read, with the fields they lack set to ``None`` or empty.

Numeric features keep 201 quantiles (0.5% steps), quantile bins (counts per bin, for PSI), a
30-bin histogram for plots, null and non-finite counts. Categorical features keep category counts.
The model's predictions and confidence on the reference are profiled the same way.

Bin convention, used by every reader: with interior ``cuts`` c0 < c1 < ... the bin of value v is
``searchsorted(cuts, v, side="right")``: bins are (-inf, c0), [c0, c1), ..., [c_last, inf).

Versions:
1. quantiles, quantile bins, histograms, category counts.
2. adds, for numeric columns, a fine ``grid`` (the distinct 0.5% quantiles together with the
   cuts, so it refines the quantile bins) with exact ``grid_counts`` under the same convention;
   monitoring bins current data on it for KS and Wasserstein without raw reference rows. For
   classifiers with labels it adds per-bin probability sums to the calibration bins and an
   isotonic calibration map per class.
3. adds the number of distinct values and, for columns with few of them, the values themselves
   (``support``), categories seen once (``singletons``), identifier-like columns, and the model's
   reliance on each feature (``importance``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # via scikit-learn

from ownloop.errors import InvalidInputError
from ownloop.signature import Signature

__all__ = [
    "PROFILE_VERSION",
    "CalibrationBins",
    "CalibrationBootstrap",
    "CalibrationMap",
    "CategoricalProfile",
    "ClassificationProfile",
    "ConfidenceProfile",
    "FeatureProfile",
    "NoPrediction",
    "NumericProfile",
    "PredictionProfile",
    "ReferencePerformance",
    "ReferenceProfile",
    "RegressionProfile",
    "bin_index",
    "calibration_bootstrap",
    "categorical_profile",
    "compute_profile",
    "feature_importance",
    "numeric_profile",
    "predict_frame",
]

PROFILE_VERSION = 3
PROFILE_FORMAT = PROFILE_VERSION  # the name older code used
N_QUANTILES = 201
N_QUANTILE_BINS = 20
N_HIST_BINS = 30
MAX_CATEGORIES = 1000
MAX_SUPPORT = 20  # a numeric column with at most this many distinct values keeps them (discrete)
# Identifier-like columns: at least this many distinct values, and (categorical) at least this share
# of the non-missing values distinct. Zip codes (1,000 values in 50,000 rows: 2%) and Zipf-like
# product codes (21-50%) stay categorical; user ids, emails and order numbers (68-100%) do not.
IDENTIFIER_MIN_DISTINCT = 50
IDENTIFIER_MIN_RATIO = 0.5
# Permutation importance: at most this many reference rows, this many repeats, and an estimated
# cost (one scoring of the sample per feature and repeat) of at most this many seconds.
IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 3
IMPORTANCE_BUDGET_S = 10.0
IMPORTANCE_BATCH_ROWS = 50_000  # shuffled rows scored in one call
PROB_EDGES = np.linspace(0.0, 1.0, 21)
CALIBRATION_DRAWS = 30  # bootstrap refits of the calibration map kept in the profile
CALIBRATION_GRID = 51  # points (score quantiles) each refitted map is kept at
CALIBRATION_BINS = 200  # equal-count score bins the refits resample (0.5% of rows each)


def _f(x: Any) -> float | None:
    """A JSON-safe float (None for NaN or infinity)."""
    v = float(x)
    return v if np.isfinite(v) else None


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def _floats(xs: Any) -> tuple[float, ...]:
    return () if xs is None else tuple(float(x) for x in xs)


def _ints(xs: Any) -> tuple[int, ...]:
    return () if xs is None else tuple(int(x) for x in xs)


def bin_index(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The quantile bin of each value under the profile's convention."""
    return np.searchsorted(cuts, values, side="right")


# -- features ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericProfile:
    """One numeric column of the reference.

    ``grid`` is None in version 1 profiles (readers bin on ``cuts``). ``distinct`` and ``support``
    are None before version 3; ``support`` holds the distinct finite values when there are at most
    ``MAX_SUPPORT`` of them (the column is discrete), else None, and ``support_counts`` how often
    each occurs.
    """

    kind: ClassVar[str] = "numeric"
    count: int
    nulls: int
    nonfinite: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: tuple[float, ...] = ()
    cuts: tuple[float, ...] = ()
    bin_counts: tuple[int, ...] = ()
    hist_edges: tuple[float, ...] = ()
    hist_counts: tuple[int, ...] = ()
    grid: tuple[float, ...] | None = None
    grid_counts: tuple[int, ...] | None = None
    distinct: int | None = None
    support: tuple[float, ...] | None = None
    support_counts: tuple[int, ...] | None = None
    identifier: bool = False

    @property
    def finite(self) -> int:
        """Values that are neither missing nor infinite."""
        return self.count - self.nulls - self.nonfinite

    @property
    def discrete(self) -> bool:
        return self.support is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "count": self.count,
            "nulls": self.nulls,
            "nonfinite": self.nonfinite,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "quantiles": list(self.quantiles),
            "cuts": list(self.cuts),
            "bin_counts": list(self.bin_counts),
            "hist_edges": list(self.hist_edges),
            "hist_counts": list(self.hist_counts),
            "distinct": self.distinct,
            "support": None if self.support is None else list(self.support),
            "support_counts": None if self.support_counts is None else list(self.support_counts),
            "identifier": self.identifier,
        }
        if self.grid is not None:
            d["grid"] = list(self.grid)
            d["grid_counts"] = list(self.grid_counts or ())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericProfile:
        grid = d.get("grid")
        support = d.get("support")
        support_counts = d.get("support_counts")
        return cls(
            count=int(d.get("count", 0)),
            nulls=int(d.get("nulls", 0)),
            nonfinite=int(d.get("nonfinite", 0)),
            min=_opt_float(d.get("min")),
            max=_opt_float(d.get("max")),
            mean=_opt_float(d.get("mean")),
            std=_opt_float(d.get("std")),
            quantiles=_floats(d.get("quantiles")),
            cuts=_floats(d.get("cuts")),
            bin_counts=_ints(d.get("bin_counts")),
            hist_edges=_floats(d.get("hist_edges")),
            hist_counts=_ints(d.get("hist_counts")),
            grid=None if grid is None else _floats(grid),
            grid_counts=None if grid is None else _ints(d.get("grid_counts")),
            distinct=None if d.get("distinct") is None else int(d["distinct"]),
            support=None if support is None else _floats(support),
            support_counts=None if support_counts is None else _ints(support_counts),
            identifier=bool(d.get("identifier", False)),
        )


@dataclass(frozen=True)
class CategoricalProfile:
    """One categorical column: counts of its ``MAX_CATEGORIES`` most common values, the rest in
    ``other``. ``singletons`` (values seen exactly once, all of them, not only the kept ones) is
    None before version 3."""

    kind: ClassVar[str] = "categorical"
    count: int
    nulls: int
    distinct: int
    categories: Mapping[str, int]
    other: int = 0
    singletons: int | None = None
    identifier: bool = False

    @property
    def finite(self) -> int:
        """Values that are not missing."""
        return self.count - self.nulls

    @property
    def top_share(self) -> float | None:
        """The share of non-missing values held by the most common value."""
        if self.finite <= 0 or not self.categories:
            return None
        return max(self.categories.values()) / self.finite

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "nulls": self.nulls,
            "distinct": self.distinct,
            "categories": dict(self.categories),
            "other": self.other,
            "singletons": self.singletons,
            "identifier": self.identifier,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalProfile:
        cats = {str(k): int(v) for k, v in (d.get("categories") or {}).items()}
        return cls(
            count=int(d.get("count", 0)),
            nulls=int(d.get("nulls", 0)),
            distinct=int(d.get("distinct", len(cats))),
            categories=cats,
            other=int(d.get("other", 0)),
            singletons=None if d.get("singletons") is None else int(d["singletons"]),
            identifier=bool(d.get("identifier", False)),
        )


FeatureProfile = NumericProfile | CategoricalProfile


def _feature_from_dict(d: Mapping[str, Any]) -> FeatureProfile:
    if d.get("kind") == "numeric":
        return NumericProfile.from_dict(d)
    return CategoricalProfile.from_dict(d)


def numeric_profile(values: np.ndarray) -> NumericProfile:
    """Profile one numeric column (NaN = missing)."""
    x = np.asarray(values, dtype=float)
    finite_mask = np.isfinite(x)
    if finite_mask.all():
        nulls = nonfinite = 0
        s = np.sort(x)
    else:
        nulls = int(np.isnan(x).sum())
        s = x[finite_mask]  # a copy, sorted in place below
        nonfinite = int(x.size - nulls - s.size)
        s.sort()
    if s.size == 0:
        return NumericProfile(
            count=int(x.size),
            nulls=nulls,
            nonfinite=nonfinite,
            min=None,
            max=None,
            mean=None,
            std=None,
            bin_counts=(0,),
            grid=(),
            grid_counts=(0,),
            distinct=0,
            support=(),
            support_counts=(),
        )
    # one sort serves every figure: quantiles and counts below an edge are positions in it
    qs = _sorted_quantiles(s, np.linspace(0.0, 1.0, N_QUANTILES))
    cuts = np.unique(_sorted_quantiles(s, np.linspace(0.0, 1.0, N_QUANTILE_BINS + 1)[1:-1]))
    counts = _counts_below(s, cuts)
    hist_counts, hist_edges = _sorted_histogram(s)
    grid = np.unique(np.concatenate((qs, cuts)))
    grid_counts = _counts_below(s, grid)
    change = s[1:] != s[:-1]
    distinct = int(np.count_nonzero(change)) + 1
    few = distinct <= MAX_SUPPORT
    starts = np.flatnonzero(np.concatenate(([True], change))) if few else None
    # integer-valued and every value distinct: a running or hashed id, not a quantity
    identifier = (
        distinct == s.size >= IDENTIFIER_MIN_DISTINCT
        and nonfinite == 0
        and _whole(s[:IDENTIFIER_MIN_DISTINCT])  # most measurements fail on their first values
        and _whole(s)
    )
    return NumericProfile(
        count=int(x.size),
        nulls=nulls,
        nonfinite=nonfinite,
        min=_f(s[0]),
        max=_f(s[-1]),
        mean=_f(s.mean()),
        std=_f(s.std()),
        quantiles=_floats(qs),
        cuts=_floats(cuts),
        bin_counts=_ints(counts),
        hist_edges=_floats(hist_edges),
        hist_counts=_ints(hist_counts),
        grid=_floats(grid),
        grid_counts=_ints(grid_counts),
        distinct=distinct,
        support=_floats(s[starts]) if starts is not None else None,
        support_counts=_ints(np.diff(np.append(starts, s.size))) if starts is not None else None,
        identifier=identifier,
    )


def _whole(s: np.ndarray) -> bool:
    return bool(np.all(s == np.round(s)))


def _counts_below(s: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per bin of ``edges`` (the profile's convention), the values of sorted ``s`` in it."""
    counts: np.ndarray = np.diff(
        np.concatenate(([0], np.searchsorted(s, edges, side="left"), [s.size]))
    )
    return counts


def _sorted_histogram(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(s, bins=N_HIST_BINS)`` of sorted finite ``s``, read off by position.

    NumPy's equal-width histogram puts v in bin i when edges[i] <= v < edges[i + 1] (the last bin
    closed), which on sorted values is a ``searchsorted`` per edge instead of a pass over them.
    NumPy finds that bin by arithmetic corrected by one step either way, which agrees with the
    comparisons while a bin spans many floats; bins within rounding of the values, or a range
    wider than a float holds, take NumPy's own pass.
    """
    edges = np.histogram_bin_edges(s[[0, -1]], bins=N_HIST_BINS)
    width = edges[1] - edges[0]
    scale = max(abs(float(edges[0])), abs(float(edges[-1])))
    if not (np.isfinite(edges[-1] - edges[0]) and width > 1e6 * np.spacing(scale)):
        counts, edges = np.histogram(s, bins=N_HIST_BINS)
        return counts, edges
    below = np.searchsorted(s, edges[1:-1], side="left")
    return np.diff(np.concatenate(([0], below, [s.size]))), edges


def _sorted_quantiles(s: np.ndarray, probs: np.ndarray) -> np.ndarray:
    pos = probs * (s.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, s.size - 1)
    frac = pos - lo
    result: np.ndarray = s[lo] * (1 - frac) + s[hi] * frac
    return result


def categorical_profile(series: pd.Series) -> CategoricalProfile:
    """Profile one categorical column (booleans as 'True' / 'False')."""
    nulls = int(series.isna().sum())
    counts = series.dropna().astype(str).value_counts(sort=True)
    top = counts.iloc[:MAX_CATEGORIES]
    distinct = int(counts.size)
    return CategoricalProfile(
        count=int(series.size),
        nulls=nulls,
        distinct=distinct,
        categories={str(k): int(v) for k, v in top.items()},
        other=int(counts.iloc[MAX_CATEGORIES:].sum()),
        singletons=int((counts == 1).sum()),
        identifier=distinct >= IDENTIFIER_MIN_DISTINCT
        and distinct >= IDENTIFIER_MIN_RATIO * (series.size - nulls),
    )


# -- the model's outputs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ReferencePerformance:
    """The model's figures on the reference (optimistic if it is the training set)."""

    n: int
    metrics: Mapping[str, float | None]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"n": self.n, **self.metrics}
        if self.note:
            d["note"] = self.note
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferencePerformance:
        metrics = {k: _opt_float(v) for k, v in d.items() if k not in ("n", "note")}
        return cls(int(d.get("n", 0)), metrics, str(d.get("note", "")))


@dataclass(frozen=True)
class ConfidenceProfile:
    """The top-class probability on the reference."""

    mean: float | None
    quantiles: tuple[float, ...]
    hist_edges: tuple[float, ...]
    hist_counts: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "quantiles": list(self.quantiles),
            "hist_edges": list(self.hist_edges),
            "hist_counts": list(self.hist_counts),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConfidenceProfile:
        return cls(
            _opt_float(d.get("mean")),
            _floats(d.get("quantiles")),
            _floats(d.get("hist_edges", PROB_EDGES)),
            _ints(d.get("hist_counts")),
        )


@dataclass(frozen=True)
class CalibrationBins:
    """Per probability bin (``PROB_EDGES``) of one class: rows, rows of that class, and the sum of
    the predicted probability (``prob_sums`` is empty before version 2)."""

    class_: str
    counts: tuple[int, ...]
    positives: tuple[int, ...]
    prob_sums: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "class": self.class_,
            "counts": list(self.counts),
            "positives": list(self.positives),
        }
        if self.prob_sums:
            d["prob_sums"] = list(self.prob_sums)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationBins:
        return cls(
            str(d.get("class")),
            _ints(d.get("counts")),
            _ints(d.get("positives")),
            _floats(d.get("prob_sums")),
        )


@dataclass(frozen=True)
class CalibrationMap:
    """An isotonic map of one class's predicted probability to its observed rate (knots)."""

    class_: str
    x: tuple[float, ...]
    y: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationMap:
        return cls(str(d.get("class")), _floats(d.get("x")), _floats(d.get("y")))


@dataclass(frozen=True)
class CalibrationBootstrap:
    """The calibration map of one class refitted on ``len(maps)`` bootstrap resamples of the
    reference, each kept at the points ``x`` (quantiles of the class's score, with 0 and 1).

    Their spread is the calibration's own uncertainty: it comes from the finite reference, is
    shared by every row of a window and so does not shrink as the window grows.
    """

    class_: str
    x: tuple[float, ...]
    maps: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_, "x": list(self.x), "maps": [list(m) for m in self.maps]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CalibrationBootstrap:
        return cls(
            str(d.get("class")), _floats(d.get("x")), tuple(_floats(m) for m in d.get("maps") or ())
        )


@dataclass(frozen=True)
class ClassificationProfile:
    """A classifier's outputs on the reference; target figures only when it had labels."""

    kind: ClassVar[str] = "classification"
    classes: tuple[str, ...]
    predicted_counts: tuple[int, ...]
    confidence: ConfidenceProfile
    probability: Mapping[str, tuple[int, ...]]  # class -> histogram over PROB_EDGES
    target_counts: tuple[int, ...] | None = None
    performance: ReferencePerformance | None = None
    calibration: tuple[CalibrationBins, ...] = ()
    calibration_map: tuple[CalibrationMap, ...] = ()
    calibration_bootstrap: tuple[CalibrationBootstrap, ...] = ()  # empty in older profiles
    reference_rows: int | None = None  # labelled rows the calibration was fitted on

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind,
            "classes": list(self.classes),
            "predicted_counts": list(self.predicted_counts),
            "confidence": self.confidence.to_dict(),
            "probability": [
                {"class": c, "hist_counts": list(h)} for c, h in self.probability.items()
            ],
        }
        if self.target_counts is not None:
            d["target_counts"] = list(self.target_counts)
        if self.performance is not None:
            d["performance"] = self.performance.to_dict()
        if self.calibration:
            d["calibration"] = [b.to_dict() for b in self.calibration]
        if self.calibration_map:
            d["calibration_map"] = [m.to_dict() for m in self.calibration_map]
        if self.calibration_bootstrap:
            d["calibration_bootstrap"] = [b.to_dict() for b in self.calibration_bootstrap]
        if self.reference_rows is not None:
            d["reference_rows"] = self.reference_rows
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassificationProfile:
        perf = d.get("performance")
        target = d.get("target_counts")
        return cls(
            classes=tuple(str(c) for c in d.get("classes", ())),
            predicted_counts=_ints(d.get("predicted_counts")),
            confidence=ConfidenceProfile.from_dict(d.get("confidence") or {}),
            probability={
                str(p.get("class")): _ints(p.get("hist_counts")) for p in d.get("probability") or ()
            },
            target_counts=None if target is None else _ints(target),
            performance=None if perf is None else ReferencePerformance.from_dict(perf),
            calibration=tuple(CalibrationBins.from_dict(b) for b in d.get("calibration") or ()),
            calibration_map=tuple(
                CalibrationMap.from_dict(m) for m in d.get("calibration_map") or ()
            ),
            calibration_bootstrap=tuple(
                CalibrationBootstrap.from_dict(b) for b in d.get("calibration_bootstrap") or ()
            ),
            reference_rows=None if d.get("reference_rows") is None else int(d["reference_rows"]),
        )


@dataclass(frozen=True)
class RegressionProfile:
    """A regressor's predicted values on the reference, and its errors when it had labels."""

    kind: ClassVar[str] = "regression"
    values: NumericProfile
    performance: ReferencePerformance | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "values": self.values.to_dict()}
        if self.performance is not None:
            d["performance"] = self.performance.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegressionProfile:
        perf = d.get("performance")
        return cls(
            NumericProfile.from_dict(d.get("values") or {}),
            None if perf is None else ReferencePerformance.from_dict(perf),
        )


@dataclass(frozen=True)
class NoPrediction:
    """A features-only profile (batch drift on two frames): no model outputs."""

    kind: ClassVar[str] = "none"
    performance: ClassVar[ReferencePerformance | None] = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}


PredictionProfile = ClassificationProfile | RegressionProfile | NoPrediction


def _prediction_from_dict(d: Mapping[str, Any]) -> PredictionProfile:
    kind = d.get("kind")
    if kind == "classification":
        return ClassificationProfile.from_dict(d)
    if kind == "regression" or "values" in d:
        return RegressionProfile.from_dict(d)
    return NoPrediction()


# -- the whole profile -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceProfile:
    """A computed profile. ``importance`` is the model's reliance on each feature (shares summing
    to 1), with ``importance_method`` saying how it was measured; None when unknown."""

    rows: int
    features: Mapping[str, FeatureProfile]
    prediction: PredictionProfile = field(default_factory=NoPrediction)
    version: int = PROFILE_VERSION
    importance: Mapping[str, float] | None = None
    importance_method: str | None = None

    @property
    def format(self) -> int:
        return self.version

    @property
    def row_count(self) -> int:
        return self.rows

    def numeric(self) -> dict[str, NumericProfile]:
        return {k: f for k, f in self.features.items() if isinstance(f, NumericProfile)}

    def categorical(self) -> dict[str, CategoricalProfile]:
        return {k: f for k, f in self.features.items() if isinstance(f, CategoricalProfile)}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.version,
            "rows": self.rows,
            "features": {k: f.to_dict() for k, f in self.features.items()},
            "prediction": self.prediction.to_dict(),
        }
        if self.importance is not None:
            d["importance"] = dict(self.importance)
            d["importance_method"] = self.importance_method
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReferenceProfile:
        """Any stored version; a version this code does not know is refused, naming the fix."""
        version = int(d.get("format", 1))
        if version > PROFILE_VERSION:
            raise InvalidInputError(
                f"the reference profile has format {version}, newer than this ownloop reads "
                f"({PROFILE_VERSION}); upgrade ownloop"
            )
        imp = d.get("importance")
        return cls(
            rows=int(d.get("rows", 0)),
            features={str(k): _feature_from_dict(v) for k, v in (d.get("features") or {}).items()},
            prediction=_prediction_from_dict(d.get("prediction") or {}),
            version=version,
            importance=None if imp is None else {str(k): float(v) for k, v in imp.items()},
            importance_method=d.get("importance_method"),
        )

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReferenceProfile:
        return cls.from_dict(json.loads(raw))


# -- computing it ------------------------------------------------------------------------------


def predict_frame(
    model: Any, X: pd.DataFrame, signature: Signature
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions (and class probabilities for classifiers) on ``X``; user-model errors become input errors."""
    try:
        if signature.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X), dtype=float)
            classes = np.asarray(
                signature.classes if signature.classes is not None else model.classes_
            )
            return classes[np.argmax(proba, axis=1)], proba
        return np.asarray(model.predict(X)), None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InvalidInputError(
            f"the model failed to predict on the reference data: {exc}"
        ) from exc


def _prediction_profile(
    signature: Signature, pred: np.ndarray, proba: np.ndarray | None, y: pd.Series | None
) -> PredictionProfile:
    if signature.task == "regression" or proba is None:
        perf = None
        if y is not None:
            err = pred.astype(float) - y.to_numpy(dtype=float)
            perf = ReferencePerformance(
                int(err.size),
                {"mae": _f(np.nanmean(np.abs(err))), "rmse": _f(np.sqrt(np.nanmean(err**2)))},
            )
        return RegressionProfile(numeric_profile(pred.astype(float)), perf)
    classes = [str(c) for c in (signature.classes or [])]
    conf = proba.max(axis=1)
    labels_of = np.asarray(signature.classes or [])
    out = ClassificationProfile(
        classes=tuple(classes),
        predicted_counts=tuple(int((pred == c).sum()) for c in labels_of),
        confidence=ConfidenceProfile(
            mean=_f(conf.mean()),
            quantiles=_floats(np.quantile(conf, np.linspace(0, 1, 101))),
            hist_edges=_floats(PROB_EDGES),
            hist_counts=_ints(np.histogram(conf, bins=PROB_EDGES)[0]),
        ),
        probability={
            c: _ints(np.histogram(proba[:, i], bins=PROB_EDGES)[0]) for i, c in enumerate(classes)
        },
    )
    if y is None:
        return out
    labels = y.to_numpy()
    bins = np.clip(np.digitize(proba, PROB_EDGES[1:-1]), 0, len(PROB_EDGES) - 2)
    k = len(PROB_EDGES) - 1
    hit = [(labels == c).astype(float) for c in labels_of]
    return ClassificationProfile(
        classes=out.classes,
        predicted_counts=out.predicted_counts,
        confidence=out.confidence,
        probability=out.probability,
        target_counts=tuple(int(h.sum()) for h in hit),
        performance=ReferencePerformance(
            int(labels.size),
            {"accuracy": _f((pred == labels).mean())},
            "on the reference data itself; optimistic if it is the training set",
        ),
        calibration=tuple(
            CalibrationBins(
                c,
                _ints(np.bincount(bins[:, i], minlength=k)),
                _ints(np.bincount(bins[:, i], weights=hit[i], minlength=k)),
                _floats(np.bincount(bins[:, i], weights=proba[:, i], minlength=k)),
            )
            for i, c in enumerate(classes)
        ),
        calibration_map=tuple(
            CalibrationMap(c, *isotonic_map(proba[:, i], hit[i])) for i, c in enumerate(classes)
        ),
        calibration_bootstrap=tuple(
            CalibrationBootstrap(c, *calibration_bootstrap(proba[:, i], hit[i], seed=i))
            for i, c in enumerate(classes)
        ),
        reference_rows=int(labels.size),
    )


def isotonic_map(
    scores: np.ndarray, outcomes: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Isotonic regression of outcomes on scores, as the knots of a piecewise-linear map."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, outcomes)
    return _floats(iso.X_thresholds_), _floats(iso.y_thresholds_)


def calibration_bootstrap(
    scores: np.ndarray,
    outcomes: np.ndarray,
    *,
    draws: int = CALIBRATION_DRAWS,
    seed: int = 0,
) -> tuple[tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """Isotonic maps refitted on ``draws`` bootstrap resamples of (score, outcome) rows.

    Rows are grouped into ``CALIBRATION_BINS`` equal-count score bins; a resample of rows is a
    multinomial draw over the (bin, outcome) cells, so each refit costs the same whatever the
    reference's size. Returns the points (score quantiles, with 0 and 1) and each map's values
    there.
    """
    from sklearn.isotonic import isotonic_regression

    s = np.asarray(scores, dtype=float)
    o = np.asarray(outcomes, dtype=float)
    n = int(s.size)
    if n == 0:
        return (), ()
    order = np.argsort(s, kind="stable")
    s, o = s[order], o[order]
    k = min(CALIBRATION_BINS, n)
    bin_of = (np.arange(n) * k) // n
    rows = np.bincount(bin_of, minlength=k).astype(float)
    pos = np.bincount(bin_of, weights=o, minlength=k)
    x_bin = np.bincount(bin_of, weights=s, minlength=k) / rows
    grid = np.unique(
        np.concatenate(([0.0, 1.0], _sorted_quantiles(s, np.linspace(0, 1, CALIBRATION_GRID))))
    )
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, np.concatenate((pos, rows - pos)) / n, size=draws).astype(float)
    maps = []
    for b in range(draws):
        p_b, w_b = cells[b, :k], cells[b, :k] + cells[b, k:]
        keep = w_b > 0
        fitted = isotonic_regression(p_b[keep] / w_b[keep], sample_weight=w_b[keep])
        maps.append(_floats(np.round(np.interp(grid, x_bin[keep], fitted), 6)))
    return _floats(grid), tuple(maps)


def compute_profile(model: Any, reference: pd.DataFrame, signature: Signature) -> ReferenceProfile:
    """Profile the reference features, target and the model's outputs on them."""
    if len(reference) == 0:
        raise InvalidInputError(
            "the reference data has no rows; pass the data the model was trained or validated on"
        )
    X = reference[signature.feature_names]
    features: dict[str, FeatureProfile] = {}
    for feat in signature.features:
        col = X[feat.name]
        if feat.type in ("float", "integer"):
            features[feat.name] = numeric_profile(col.to_numpy(dtype=float, na_value=np.nan))
        else:
            features[feat.name] = categorical_profile(col)
    pred, proba = predict_frame(model, X, signature)
    y = reference[signature.target] if signature.target and signature.target in reference else None
    importance, method = feature_importance(model, X, y, signature)
    return ReferenceProfile(
        rows=len(reference),
        features=features,
        prediction=_prediction_profile(signature, pred, proba, y),
        importance=importance,
        importance_method=method,
    )


# -- the model's reliance on each feature ------------------------------------------------------


def feature_importance(
    model: Any, X: pd.DataFrame, y: pd.Series | None, signature: Signature
) -> tuple[dict[str, float] | None, str | None]:
    """Each feature's share of the model's reliance on the features (shares sum to 1), and how
    it was measured: the model's own importances when they map one to one onto the signature's
    features, else permutation importance on a sample of the reference when it has the target,
    else unknown (None, None)."""
    names = list(signature.feature_names)
    own = _own_importance(model, X, names)
    if own is not None:
        return own
    if y is None:
        return None, None
    return _permutation_importance(model, X, y, signature)


def _shares(names: list[str], raw: np.ndarray) -> dict[str, float] | None:
    raw = np.where(np.isfinite(raw), np.maximum(raw, 0.0), 0.0)
    total = float(raw.sum())
    if total <= 0:
        return None
    return {n: float(v / total) for n, v in zip(names, raw, strict=True)}


def _own_importance(
    model: Any, X: pd.DataFrame, names: list[str]
) -> tuple[dict[str, float], str] | None:
    """``feature_importances_`` or ``|coef_| x the feature's sd``, when the model itself (not a
    pipeline whose last step sees encoded columns) was fitted on exactly the signature's features."""
    fitted_on = getattr(model, "feature_names_in_", None)
    if fitted_on is not None:
        if [str(c) for c in fitted_on] != names:
            return None
    elif getattr(model, "n_features_in_", None) != len(names):
        return None
    try:
        fi = getattr(model, "feature_importances_", None)
        coef = getattr(model, "coef_", None)
    except (AttributeError, ValueError, TypeError):  # unfitted or not defined for this model
        return None
    if fi is not None and np.ndim(fi) == 1 and np.size(fi) == len(names):
        shares = _shares(names, np.abs(np.asarray(fi, dtype=float)))
        return None if shares is None else (shares, "feature_importances_")
    if coef is not None and np.atleast_2d(coef).shape[-1] == len(names):
        try:
            sd = X.to_numpy(dtype=float, na_value=np.nan)
        except (ValueError, TypeError):
            return None
        raw = (np.abs(np.atleast_2d(np.asarray(coef, dtype=float))) * np.nanstd(sd, axis=0)).sum(0)
        shares = _shares(names, raw)
        return None if shares is None else (shares, "coef_ x feature sd")
    return None


def _scorer(
    model: Any, signature: Signature
) -> tuple[Callable[[pd.DataFrame], np.ndarray], Callable[[np.ndarray, np.ndarray], float], str]:
    """The model's output on rows, a higher-is-better score of outputs against targets (class
    indices for classifiers), and the score's name."""
    if signature.task == "regression":

        def neg_mse(out: np.ndarray, y: np.ndarray) -> float:
            return -float(np.mean((out.astype(float) - y) ** 2))

        return lambda X: np.asarray(model.predict(X)), neg_mse, "mean squared error"
    classes = np.asarray(signature.classes or [])
    if hasattr(model, "predict_proba") and classes.size:

        def neg_log_loss(proba: np.ndarray, y: np.ndarray) -> float:
            return float(np.mean(np.log(np.clip(proba[np.arange(y.size), y], 1e-15, 1.0))))

        return lambda X: np.asarray(model.predict_proba(X), dtype=float), neg_log_loss, "log loss"

    def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(pred == classes[y]))

    return lambda X: np.asarray(model.predict(X)), accuracy, "accuracy"


def _permutation_importance(
    model: Any, X: pd.DataFrame, y: pd.Series, signature: Signature
) -> tuple[dict[str, float] | None, str | None]:
    """Permutation importance (Breiman's, as ``sklearn.inspection.permutation_importance``
    computes it, for any model with ``predict``: scikit-learn's refuses models without ``fit``) on
    at most ``IMPORTANCE_ROWS`` reference rows, seeded; fewer repeats, or none, when scoring the
    sample is too slow for ``IMPORTANCE_BUDGET_S``."""
    labels = y.to_numpy()
    keep = np.asarray(pd.notna(labels), dtype=bool)
    if signature.task == "regression":
        target = pd.to_numeric(y, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        keep &= np.isfinite(target)
    else:
        index = {c: i for i, c in enumerate(signature.classes or [])}
        target = np.array(
            [index.get(v, -1) if k else -1 for v, k in zip(labels, keep, strict=True)]
        )
        keep &= target >= 0
    rows = np.flatnonzero(keep)
    if rows.size < 2:
        return None, None
    rng = np.random.default_rng(0)
    if rows.size > IMPORTANCE_ROWS:
        rows = np.sort(rng.choice(rows, IMPORTANCE_ROWS, replace=False))
    Xs, ys = X.iloc[rows].reset_index(drop=True), target[rows]
    # one native thread: 2,000 rows gain little from more, and a busy machine loses a lot
    with threadpool_limits(limits=1):
        return _permute(model, Xs, ys, signature, rng)


def _permute(
    model: Any, Xs: pd.DataFrame, ys: np.ndarray, signature: Signature, rng: np.random.Generator
) -> tuple[dict[str, float] | None, str | None]:
    """The mean drop in score when each feature's values are shuffled, the shuffled copies scored
    together in a few large calls (a call per copy costs a pipeline's overhead each time)."""
    output, score, metric = _scorer(model, signature)
    names = list(Xs.columns)
    n = len(Xs)
    per_call = max(1, IMPORTANCE_BATCH_ROWS // n)  # shuffled copies scored per call
    try:
        base = score(output(Xs), ys)  # also warms the model up before the timed call
        start = time.perf_counter()
        output(pd.concat([Xs] * min(per_call, len(names)), ignore_index=True))
        once = (time.perf_counter() - start) / min(per_call, len(names))
        repeats = min(IMPORTANCE_REPEATS, int(IMPORTANCE_BUDGET_S / max(once * len(names), 1e-9)))
        if repeats < 1:
            return None, None
        jobs = [(j, r) for j in range(len(names)) for r in range(repeats)]
        drops = np.zeros((len(names), repeats))
        for k in range(0, len(jobs), per_call):
            if time.perf_counter() - start > 2 * IMPORTANCE_BUDGET_S:
                return None, None  # far slower than timed (a loaded machine): give up, unknown
            batch = jobs[k : k + per_call]
            copies = []
            for j, _ in batch:
                copy = Xs.copy()
                copy[names[j]] = Xs[names[j]].iloc[rng.permutation(n)].set_axis(Xs.index)
                copies.append(copy)
            out = output(pd.concat(copies, ignore_index=True))
            for i, (j, r) in enumerate(batch):
                drops[j, r] = base - score(out[i * n : (i + 1) * n], ys)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None, None  # the model cannot score a shuffled sample: importance stays unknown
    shares = _shares(names, drops.mean(axis=1))
    if shares is None:
        return None, None
    return shares, f"permutation ({metric}, {repeats} repeats on {n} reference rows)"
