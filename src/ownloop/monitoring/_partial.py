"""Window statistics as mergeable partial results: a pure function of an Arrow batch and a profile.

``compute_partial(batch, spec)`` reads one batch of the prediction log (any number of rows, any
source: one log segment, one Spark or Dask partition) and returns counts and sums only: bin
counts against the reference profile's grid, category counts, null counts, probability-score
histograms with calibrated-probability sums, a latency sketch. ``merge`` adds two partials, so a
long window is the sum of the partials of its segments and the order never matters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ownloop.predlog import label_key
from ownloop.profile import (
    PROB_EDGES,
    ClassificationProfile,
    NumericProfile,
    ReferenceProfile,
    RegressionProfile,
)

__all__ = [
    "CONF_BINS",
    "LATENCY_EDGES",
    "SCORE_BINS",
    "Binner",
    "CategoricalPartial",
    "NumericPartial",
    "PartialSpec",
    "WindowPartial",
    "column_threads",
    "compute_partial",
    "distinct_eligible",
    "hll_count",
    "hll_sketch",
    "map_columns",
    "merge",
    "merge_all",
    "support_grid",
]

ROW_SUM_TOLERANCE = 0.01  # a multiclass probability row must sum to 1 within this
REFUSED = "refused"  # status of a logged request whose input was refused (answered 400)
SCORE_BINS = 1000  # positive-class score histogram for label-free estimates (edge at 0.5)
CONF_BINS = 100  # max-probability histogram (low-confidence share at any 0.01 threshold)
# log-spaced latency sketch: 1 microsecond to 1,000 s, about 2.3% relative resolution
LATENCY_EDGES = np.logspace(-6, 3, 901)
HLL_BITS = 11  # 2^11 HyperLogLog registers: about 2.3% relative error on a distinct count
DISTINCT_SHARE = 0.99  # a column whose reference values are this distinct never repeats by itself
MAX_THREADS = 8  # per-column work spreads over at most this many threads ...
THREAD_MIN_ROWS = 100_000  # ... and only for batches of at least this many rows

_T = TypeVar("_T")
_R = TypeVar("_R")


class Binner:
    """``searchsorted(grid, x, side="right")``, exactly, through a uniform lookup table.

    Quantile grids are dense in the middle and sparse in the tails, so a binary search over ~200
    edges costs ~8 comparisons per value. Over the grid's middle ``[a, b)`` the table maps a value
    to the first bin of its neighbourhood in one multiply, then at most ``need`` comparisons finish
    the job (``need`` is computed from the table, so the result is exact; rounding can move a value
    by one bucket, which the neighbourhood covers). Values outside ``[a, b)``, NaN and infinities
    go through ``searchsorted``. Grids where no small table works keep plain ``searchsorted``.
    """

    def __init__(self, grid: np.ndarray) -> None:
        self.grid = np.asarray(grid, dtype=float)
        self.table: tuple[float, float, float, int, np.ndarray, int, np.ndarray] | None = None
        k_edges = self.grid.size
        if k_edges < 16 or not np.isfinite(self.grid).all():
            return
        for trim in (0, 2, 5, 10, 20):
            a, b = float(self.grid[trim]), float(self.grid[k_edges - 1 - trim])
            if not b > a:
                return
            best: tuple[int, int, np.ndarray] | None = None  # need, buckets, first
            for m in (4 * k_edges, 8 * k_edges, 16 * k_edges, 32 * k_edges):
                if (b - a) / m < 64 * np.spacing(max(abs(a), abs(b))):
                    continue  # buckets too narrow for float rounding to stay within one bucket
                start = np.searchsorted(self.grid, a + (b - a) * (np.arange(m) / m), side="right")
                first = np.append(start[0], start[:-1])  # bucket j starts looking at bucket j-1
                last = np.append(start[2:], [k_edges, k_edges])  # ... and ends after bucket j+1
                need = int((last - first).max())
                if best is None or need < best[0]:  # each comparison is a pass over the values
                    best = (need, m, first)
            if best is not None and best[0] <= 4:
                need, m, first = best
                ext = np.append(self.grid, np.nan)  # NaN compares false: never steps past the end
                self.table = (a, b, m / (b - a), m, first.astype(np.int64), need, ext)
                return

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.table is None:
            found: np.ndarray = np.searchsorted(self.grid, x, side="right")
            return found
        a, b, scale, m, first, need, ext = self.table
        j = np.subtract(x, a)
        np.multiply(j, scale, out=j)
        np.fmax(j, 0.0, out=j)
        np.minimum(j, m - 1, out=j)
        idx: np.ndarray = first[j.astype(np.int64)]
        step = np.empty(idx.shape, dtype=bool)
        for _ in range(need):  # scratch arrays reused: each pass is a gather and a compare
            np.take(ext, idx, out=j)
            np.less_equal(j, x, out=step)
            idx += step
        outside = ~((x >= a) & (x < b))
        if outside.any():
            w = np.flatnonzero(outside)
            idx[w] = np.searchsorted(self.grid, x[w], side="right")
        return idx


@dataclass(frozen=True)
class PartialSpec:
    """What a partial needs from the reference: the grid per numeric feature and the calibration."""

    numeric: dict[str, np.ndarray]
    categorical: tuple[str, ...]
    task: str  # "classification" or "regression"
    classes: tuple[str, ...] = ()
    calibration: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None
    input_prefix: str = "in."
    prediction_grid: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # multiclass: bootstrap calibration maps per class (points, draws x points), for pred_c_boot
    bootstrap: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None
    binners: dict[str, Binner] = field(init=False, repr=False, compare=False)
    identifiers: tuple[str, ...] = ()  # identifier-like numeric features: their values counted
    distinct: tuple[str, ...] = ()  # continuous features whose distinct values are sketched

    def __post_init__(self) -> None:
        object.__setattr__(self, "binners", {k: Binner(g) for k, g in self.numeric.items()})

    @classmethod
    def from_profile(
        cls, profile: ReferenceProfile, *, calibrate: bool | None = None, input_prefix: str = "in."
    ) -> PartialSpec:
        from ownloop.monitoring._performance import calibration_from_profile, support_from_profile

        numeric: dict[str, np.ndarray] = {}
        categorical: list[str] = []
        identifiers: list[str] = []
        distinct: list[str] = []
        for name, feat in profile.features.items():
            if isinstance(feat, NumericProfile) and feat.identifier:
                identifiers.append(name)
            elif isinstance(feat, NumericProfile):
                numeric[name] = grid_of(feat)
                if distinct_eligible(feat):
                    distinct.append(name)
            else:
                categorical.append(name)
        pred = profile.prediction
        task = "classification" if isinstance(pred, ClassificationProfile) else "regression"
        classes = pred.classes if isinstance(pred, ClassificationProfile) else ()
        calibration = calibration_from_profile(profile, calibrate) if classes else None
        pgrid = grid_of(pred.values) if isinstance(pred, RegressionProfile) else None
        support = support_from_profile(profile) if len(classes) > 2 else None
        return cls(
            numeric,
            tuple(categorical),
            task,
            classes,
            calibration,
            input_prefix,
            np.zeros(0) if pgrid is None else pgrid,
            None if support is None else support.bootstrap,
            identifiers=tuple(identifiers),
            distinct=tuple(distinct),
        )


def distinct_eligible(feat: NumericProfile) -> bool:
    """A continuous, non-identifier column whose reference values (nearly) never repeat, so a
    window's repeats of it are repeated rows: its distinct values are worth sketching."""
    return (
        not feat.identifier
        and feat.support is None
        and feat.distinct is not None
        and feat.finite > 0
        and feat.distinct >= DISTINCT_SHARE * feat.finite
    )


def hll_sketch(values: np.ndarray) -> np.ndarray:
    """HyperLogLog registers (2^11, uint8) of the distinct finite values of a float column.

    Each value's float64 bit pattern (-0.0 read as 0.0) is mixed by splitmix64's finaliser; the top
    11 bits pick a register, which keeps the largest rank (leading zeros + 1) of the other 53.
    Two sketches merge by the elementwise maximum, which equals the sketch of the union.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    z = ((x if finite.all() else x[finite]) + 0.0).view(np.uint64)  # a copy; -0.0 + 0.0 is 0.0
    # splitmix64's finaliser, in place (one scratch array instead of one per step)
    z += np.uint64(0x9E3779B97F4A7C15)
    t = z >> np.uint64(30)
    z ^= t
    z *= np.uint64(0xBF58476D1CE4E5B9)
    np.right_shift(z, np.uint64(27), out=t)
    z ^= t
    z *= np.uint64(0x94D049BB133111EB)
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    q = 64 - HLL_BITS
    np.right_shift(z, np.uint64(q), out=t)  # t: the register
    z &= np.uint64((1 << q) - 1)
    _hll_ranks(z, q)
    # the largest rank per register: mark (register, rank) pairs, then the highest mark per row
    np.left_shift(t, np.uint64(6), out=t)  # ranks are at most q + 1 = 54: 64 slots per register
    t += z
    seen = np.zeros((1 << HLL_BITS) * 64, dtype=bool)
    seen[t] = True
    registers: np.ndarray = (
        (seen.reshape(1 << HLL_BITS, 64) * np.arange(64, dtype=np.uint8)).max(axis=1)
    ).astype(np.uint8)
    return registers


def _hll_ranks(z: np.ndarray, q: int) -> None:
    """Replace each value of ``z`` (uint64, below 2^q, q <= 53) by its HyperLogLog rank, q + 1
    minus its bit length (leading zeros among q bits, plus one), in place.

    The bit length is read off the exponent of the value as a float (exact below 2^53): exponent
    field e = bit length + 1022, so the rank is q + 1023 - e; 0 has e = 0, which the minimum turns
    into the rank q + 1 that ``np.frexp`` gives it.
    """
    np.copyto(z.view(np.float64), z, casting="unsafe")  # same place, uint64 to float64
    np.right_shift(z, np.uint64(52), out=z)
    np.subtract(np.uint64(q + 1023), z, out=z)
    np.minimum(z, np.uint64(q + 1), out=z)


def hll_count(registers: np.ndarray) -> float:
    """The distinct count a HyperLogLog sketch holds: Ertl's improved estimator (2017), unbiased
    from a handful of values to billions without bias tables."""
    m = registers.size
    q = 64 - HLL_BITS
    c = np.bincount(registers.astype(np.intp), minlength=q + 2).astype(float)
    z = m * _hll_tau(1.0 - c[q + 1] / m)
    for k in range(q, 0, -1):
        z = 0.5 * (z + c[k])
    z += m * _hll_sigma(c[0] / m)
    if not np.isfinite(z) or z <= 0:
        return 0.0
    return float(m * m / (2.0 * np.log(2.0)) / z)


def _hll_sigma(x: float) -> float:
    if x == 1.0:
        return float("inf")
    y, z = 1.0, x
    while True:
        x *= x
        z_old = z
        z += x * y
        y += y
        if z == z_old:
            return z


def _hll_tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = float(np.sqrt(x))
        z_old = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_old:
            return z / 3.0


def grid_of(feat: NumericProfile) -> np.ndarray:
    """The grid a numeric column is binned on.

    A discrete column (the profile keeps its ``support``) gets each value s as its own bin
    [s, next float after s), with the values between two of them in a bin of their own, so a value
    off the support is never counted as one on it; a constant column is the case of one value.
    Otherwise the profile's fine grid (format 2), or its quantile cuts (format 1).
    """
    if feat.std == 0.0 and feat.min is not None:
        return support_grid(np.array([float(feat.min)]))
    if feat.support:
        return support_grid(np.asarray(feat.support, dtype=float))
    return np.asarray(feat.grid if feat.grid is not None else feat.cuts, dtype=float)


def support_grid(support: np.ndarray) -> np.ndarray:
    """Edges s0, s0+, s1, s1+, ... (s+ the next float after s): bin 2i+1 holds exactly s_i."""
    return np.column_stack((support, np.nextafter(support, np.inf))).ravel()


@dataclass
class NumericPartial:
    n: int = 0
    nulls: int = 0
    nonfinite: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    below: float = 0.0  # sum of (grid[0] - x) over finite x below the grid
    above: float = 0.0  # sum of (x - grid[-1]) over finite x at or above the grid's end
    total: float = 0.0  # sum of finite values
    lo: float | None = None  # smallest finite value
    hi: float | None = None  # largest finite value
    # HyperLogLog registers of the finite values (sketched columns only, else empty)
    hll: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))

    def merge(self, other: NumericPartial) -> NumericPartial:
        return NumericPartial(
            self.n + other.n,
            self.nulls + other.nulls,
            self.nonfinite + other.nonfinite,
            _add(self.counts, other.counts),
            self.below + other.below,
            self.above + other.above,
            self.total + other.total,
            _opt(min, self.lo, other.lo),
            _opt(max, self.hi, other.hi),
            _hll_merge(self.hll, other.hll),
        )


@dataclass
class CategoricalPartial:
    n: int = 0
    nulls: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def merge(self, other: CategoricalPartial) -> CategoricalPartial:
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        return CategoricalPartial(self.n + other.n, self.nulls + other.nulls, counts)


@dataclass
class WindowPartial:
    """Everything a window report needs, as counts and sums."""

    rows: int = 0  # log rows, refused requests included
    errors: int = 0  # rows not "ok" (model errors and refused requests)
    requests: int = 0  # distinct request ids per batch, summed (a request's rows share a batch)
    refused: int = 0  # rows of refused requests (status "refused": no inputs, no outputs)
    refused_requests: int = 0  # requests answered 400 (their input was refused)
    error_requests: int = 0  # requests with a model error (status "error") and none refused
    features: dict[str, NumericPartial | CategoricalPartial] = field(default_factory=dict)
    prediction: NumericPartial | CategoricalPartial | None = None
    ok_rows: int = 0
    # max-probability histogram, CONF_BINS bins on [0, 1]
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(CONF_BINS, dtype=np.int64))
    confidence_sum: float = 0.0
    # binary: [predicted class index, score bin] of count, sum c, sum c^2 (c = calibrated P(class 1))
    score_counts: np.ndarray = field(default_factory=lambda: np.zeros((2, SCORE_BINS)))
    score_c: np.ndarray = field(default_factory=lambda: np.zeros((2, SCORE_BINS)))
    score_c2: np.ndarray = field(default_factory=lambda: np.zeros((2, SCORE_BINS)))
    # multiclass: sums of the calibrated probability of the predicted class (and of its square)
    pred_c: float = 0.0
    pred_c2: float = 0.0
    # multiclass: pred_c under each bootstrap calibration map of the reference (empty without)
    pred_c_boot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # rows whose probabilities were unusable (outside [0, 1], rows not summing to 1, wrong length)
    bad_proba: int = 0
    latency: np.ndarray = field(
        default_factory=lambda: np.zeros(LATENCY_EDGES.size + 1, dtype=np.int64)
    )
    latency_sum: float = 0.0
    cpu_sum: float = 0.0
    ts_min: float | None = None  # epoch seconds
    ts_max: float | None = None

    @property
    def scored_rows(self) -> int:
        """Rows whose inputs reached the model (refused requests have no inputs to compare)."""
        return self.rows - self.refused

    @property
    def failed_requests(self) -> int:
        """Requests answered with an error: refused inputs plus model errors."""
        return self.refused_requests + self.error_requests

    def merge(self, other: WindowPartial) -> WindowPartial:
        feats = dict(self.features)
        for name, part in other.features.items():
            mine = feats.get(name)
            feats[name] = part if mine is None else _merge_part(mine, part)
        pred = (
            other.prediction
            if self.prediction is None
            else self.prediction
            if other.prediction is None
            else _merge_part(self.prediction, other.prediction)
        )
        return WindowPartial(
            rows=self.rows + other.rows,
            errors=self.errors + other.errors,
            requests=self.requests + other.requests,
            refused=self.refused + other.refused,
            refused_requests=self.refused_requests + other.refused_requests,
            error_requests=self.error_requests + other.error_requests,
            features=feats,
            prediction=pred,
            ok_rows=self.ok_rows + other.ok_rows,
            confidence=self.confidence + other.confidence,
            confidence_sum=self.confidence_sum + other.confidence_sum,
            score_counts=self.score_counts + other.score_counts,
            score_c=self.score_c + other.score_c,
            score_c2=self.score_c2 + other.score_c2,
            pred_c=self.pred_c + other.pred_c,
            pred_c2=self.pred_c2 + other.pred_c2,
            pred_c_boot=_add(self.pred_c_boot, other.pred_c_boot),
            bad_proba=self.bad_proba + other.bad_proba,
            latency=self.latency + other.latency,
            latency_sum=self.latency_sum + other.latency_sum,
            cpu_sum=self.cpu_sum + other.cpu_sum,
            ts_min=_opt(min, self.ts_min, other.ts_min),
            ts_max=_opt(max, self.ts_max, other.ts_max),
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (for caching per segment)."""
        return {
            "rows": self.rows,
            "errors": self.errors,
            "requests": self.requests,
            "refused": self.refused,
            "refused_requests": self.refused_requests,
            "error_requests": self.error_requests,
            "features": {k: _part_json(v) for k, v in self.features.items()},
            "prediction": None if self.prediction is None else _part_json(self.prediction),
            "ok_rows": self.ok_rows,
            "confidence": self.confidence.tolist(),
            "confidence_sum": self.confidence_sum,
            "score_counts": self.score_counts.tolist(),
            "score_c": self.score_c.tolist(),
            "score_c2": self.score_c2.tolist(),
            "pred_c": self.pred_c,
            "pred_c2": self.pred_c2,
            "pred_c_boot": self.pred_c_boot.tolist(),
            "bad_proba": self.bad_proba,
            "latency": self.latency.tolist(),
            "latency_sum": self.latency_sum,
            "cpu_sum": self.cpu_sum,
            "ts_min": self.ts_min,
            "ts_max": self.ts_max,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WindowPartial:
        pred = d.get("prediction")
        return cls(
            rows=int(d["rows"]),
            errors=int(d["errors"]),
            requests=int(d.get("requests", 0)),
            refused=int(d.get("refused", 0)),
            refused_requests=int(d.get("refused_requests", 0)),
            error_requests=int(d.get("error_requests", 0)),
            features={k: _part_from_json(v) for k, v in d["features"].items()},
            prediction=None if pred is None else _part_from_json(pred),
            ok_rows=int(d["ok_rows"]),
            confidence=np.asarray(d["confidence"], dtype=np.int64),
            confidence_sum=float(d["confidence_sum"]),
            score_counts=np.asarray(d["score_counts"], dtype=float),
            score_c=np.asarray(d["score_c"], dtype=float),
            score_c2=np.asarray(d["score_c2"], dtype=float),
            pred_c=float(d["pred_c"]),
            pred_c2=float(d["pred_c2"]),
            pred_c_boot=np.asarray(d.get("pred_c_boot", ()), dtype=float),
            bad_proba=int(d.get("bad_proba", 0)),
            latency=np.asarray(d["latency"], dtype=np.int64),
            latency_sum=float(d["latency_sum"]),
            cpu_sum=float(d["cpu_sum"]),
            ts_min=d.get("ts_min"),
            ts_max=d.get("ts_max"),
        )


def _opt(f: Any, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return float(f(a, b))


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0:
        return b.copy()
    if b.size == 0:
        return a.copy()
    total: np.ndarray = a + b
    return total


def _hll_merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0:
        return b.copy()
    if b.size == 0:
        return a.copy()
    out: np.ndarray = np.maximum(a, b)
    return out


def _merge_part(
    a: NumericPartial | CategoricalPartial, b: NumericPartial | CategoricalPartial
) -> NumericPartial | CategoricalPartial:
    if isinstance(a, NumericPartial) and isinstance(b, NumericPartial):
        return a.merge(b)
    if isinstance(a, CategoricalPartial) and isinstance(b, CategoricalPartial):
        return a.merge(b)
    raise TypeError("cannot merge a numeric partial with a categorical one")


def _part_json(p: NumericPartial | CategoricalPartial) -> dict[str, Any]:
    if isinstance(p, NumericPartial):
        return {
            "kind": "numeric",
            "n": p.n,
            "nulls": p.nulls,
            "nonfinite": p.nonfinite,
            "counts": p.counts.tolist(),
            "below": p.below,
            "above": p.above,
            "total": p.total,
            "lo": p.lo,
            "hi": p.hi,
            **({"hll": p.hll.tolist()} if p.hll.size else {}),
        }
    return {"kind": "categorical", "n": p.n, "nulls": p.nulls, "counts": p.counts}


def _part_from_json(d: Mapping[str, Any]) -> NumericPartial | CategoricalPartial:
    if d["kind"] == "numeric":
        return NumericPartial(
            int(d["n"]),
            int(d["nulls"]),
            int(d["nonfinite"]),
            np.asarray(d["counts"], dtype=np.int64),
            float(d["below"]),
            float(d["above"]),
            float(d["total"]),
            None if d.get("lo") is None else float(d["lo"]),
            None if d.get("hi") is None else float(d["hi"]),
            np.asarray(d.get("hll", ()), dtype=np.uint8),
        )
    return CategoricalPartial(
        int(d["n"]), int(d["nulls"]), {k: int(v) for k, v in d["counts"].items()}
    )


def merge(a: WindowPartial, b: WindowPartial) -> WindowPartial:
    return a.merge(b)


def merge_all(parts: Iterable[WindowPartial]) -> WindowPartial:
    out = WindowPartial()
    for p in parts:
        out = out.merge(p)
    return out


# -- the per-batch step ---------------------------------------------------------------------


def numeric_partial(
    values: np.ndarray, grid: np.ndarray, binner: Binner | None = None, *, sketch: bool = False
) -> NumericPartial:
    """Bin one numeric column on ``grid`` (NaN = missing; +-inf counted apart, never binned);
    with ``sketch``, also sketch its distinct finite values (:func:`hll_sketch`)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    idx = binner(x) if binner is not None else np.searchsorted(grid, x, side="right")
    counts = np.bincount(idx, minlength=grid.size + 1).astype(np.int64)
    nan = posinf = neginf = 0
    if not np.isfinite(x).all():
        nan = int(np.count_nonzero(np.isnan(x)))
        posinf = int(np.count_nonzero(x == np.inf))
        neginf = int(np.count_nonzero(x == -np.inf))
    counts[-1] -= nan + posinf  # NaN and +inf sort past every edge
    counts[0] -= neginf
    clean = nan == 0 and posinf == 0 and neginf == 0
    finite = x if clean else x[np.isfinite(x)]
    below = above = 0.0
    if grid.size:
        if counts[0] > 0:
            lo = finite[finite < grid[0]]
            below = float((grid[0] - lo).sum())
        if counts[-1] > 0:
            hi = finite[finite >= grid[-1]]
            above = float((hi - grid[-1]).sum())
    lo = hi = None
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
    hll = hll_sketch(finite) if sketch else np.zeros(0, dtype=np.uint8)
    return NumericPartial(
        n, nan, posinf + neginf, counts, below, above, float(finite.sum()), lo, hi, hll
    )


def categorical_partial(column: pa.Array | pa.ChunkedArray) -> CategoricalPartial:
    """Count the categories of one column (booleans as 'True' / 'False', like the profile)."""
    n = len(column)
    nulls = column.null_count
    if n == 0 or nulls == n:
        return CategoricalPartial(n, nulls, {})
    if pa.types.is_boolean(column.type):
        trues = int(pc.sum(column).as_py() or 0)
        falses = n - nulls - trues
        return CategoricalPartial(
            n, nulls, {k: v for k, v in (("True", trues), ("False", falses)) if v}
        )
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        if pa.types.is_dictionary(column.type):
            column = column.cast(pa.string())
        else:
            column = pc.cast(column, pa.string())
    vc = pc.value_counts(column)
    keys = vc.field("values").to_pylist()
    counts = vc.field("counts").to_pylist()
    return CategoricalPartial(
        n, nulls, {str(k): int(c) for k, c in zip(keys, counts, strict=True) if k is not None}
    )


def identifier_partial(column: pa.Array | pa.ChunkedArray) -> CategoricalPartial:
    """Count the values of an identifier-like numeric column, keyed as :func:`label_key` keys them
    (``7``, ``7.0`` and ``"7"`` are one value); integers are counted exactly, never through a float."""
    n = len(column)
    if pa.types.is_integer(column.type):
        vc = pc.value_counts(pc.drop_null(column))
        keys = vc.field("values").to_numpy(zero_copy_only=False).astype(str)
        counts = vc.field("counts").to_numpy(zero_copy_only=False)
        return CategoricalPartial(
            n, column.null_count, dict(zip(keys.tolist(), counts.tolist(), strict=True))
        )
    col = column
    if pa.types.is_boolean(col.type) or pa.types.is_string(col.type):
        col = pc.cast(col, pa.float64(), safe=False)
    x = np.asarray(col.to_numpy(zero_copy_only=False), dtype=float)
    missing = np.isnan(x)
    u, c = np.unique(x[~missing], return_counts=True)
    whole = np.isfinite(u) & (u == np.round(u)) & (np.abs(u) < 2.0**63)
    keys = np.empty(u.size, dtype=object)
    keys[whole] = u[whole].astype(np.int64).astype(str)
    keys[~whole] = [label_key(float(v)) for v in u[~whole]]
    return CategoricalPartial(
        n, int(missing.sum()), dict(zip(keys.tolist(), c.tolist(), strict=True))
    )


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_boolean(col.type) or pa.types.is_string(col.type):
        col = pc.cast(col, pa.float64(), safe=False)
    arr: np.ndarray = col.to_numpy(zero_copy_only=False).astype(float, copy=False)
    return arr


def compute_partial(
    batch: pa.Table | pa.RecordBatch, spec: PartialSpec, *, threads: int = 1
) -> WindowPartial:
    """The partial statistics of one batch of prediction-log rows (pure: no I/O, no clock).

    Refused requests (status "refused") count as requests and errors only: they have no inputs
    or outputs, so they stay out of drift, prediction and confidence figures. ``threads`` spreads
    the feature columns over that many threads (see :func:`column_threads`); the result is the
    same.
    """
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    out = WindowPartial(rows=table.num_rows)
    names = set(table.column_names)
    scored = table
    ok = table
    if "status" in names:
        status = table.column("status")
        scored = table.filter(pc.invert(pc.fill_null(pc.equal(status, REFUSED), False)))
        ok = table.filter(pc.fill_null(pc.equal(status, "ok"), False))
        out.refused = table.num_rows - scored.num_rows
        out.errors = table.num_rows - ok.num_rows
    out.ok_rows = ok.num_rows
    _features(scored, names, spec, out, threads)
    _system(table, names, out)
    if "ts" in names and table.num_rows:
        ts = pc.min_max(table.column("ts"))
        lo, hi = ts["min"].as_py(), ts["max"].as_py()
        out.ts_min = None if lo is None else lo.timestamp()
        out.ts_max = None if hi is None else hi.timestamp()
    if spec.task == "classification":
        _classification(ok, names, spec, out)
    elif "prediction_value" in names:
        out.prediction = numeric_partial(
            _float_column(ok, "prediction_value"), spec.prediction_grid
        )
    return out


def _features(
    table: pa.Table, names: set[str], spec: PartialSpec, out: WindowPartial, threads: int = 1
) -> None:
    n = table.num_rows

    def one(name: str) -> NumericPartial | CategoricalPartial:
        col = spec.input_prefix + name
        if col not in names and name in spec.numeric:
            return NumericPartial(n, n, 0, np.zeros(0))
        if col not in names:
            return CategoricalPartial(n, n, {})
        if name in spec.numeric:
            return numeric_partial(
                _float_column(table, col),
                spec.numeric[name],
                spec.binners.get(name),
                sketch=name in spec.distinct,
            )
        if name in spec.identifiers:
            return identifier_partial(table.column(col))
        return categorical_partial(table.column(col))

    order = [*spec.numeric, *spec.identifiers, *spec.categorical]
    out.features.update(zip(order, map_columns(one, order, threads), strict=True))


def column_threads(rows: int) -> int:
    """Threads to spread per-column work over: one per core this process may use (at most
    ``MAX_THREADS``), or one for batches under ``THREAD_MIN_ROWS`` rows, where starting threads
    costs more than they save. NumPy and Arrow release the GIL in the heavy loops (sorting,
    binning, counting); results never depend on the threading."""
    if rows < THREAD_MIN_ROWS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def map_columns(fn: Callable[[_T], _R], items: Sequence[_T], threads: int) -> list[_R]:
    """``[fn(x) for x in items]``, on up to ``threads`` threads; results in the order of ``items``
    (the first error raised, as in a plain loop)."""
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def _requests(ids: pa.ChunkedArray | None, mask: pa.ChunkedArray | None, n: int) -> int:
    """Distinct request ids among the rows in ``mask`` (a row without an id is one request)."""
    if ids is None:
        return n if mask is None else int(pc.sum(mask).as_py() or 0)
    if mask is not None:
        ids = ids.filter(mask)
    distinct = pc.count_distinct(ids).as_py()
    return int(distinct) + int(ids.null_count)


def _system(table: pa.Table, names: set[str], out: WindowPartial) -> None:
    if table.num_rows:
        ids = table.column("request_id") if "request_id" in names else None
        out.requests = _requests(ids, None, table.num_rows)
        if "status" in names:
            status = table.column("status")
            refused = pc.fill_null(pc.equal(status, REFUSED), False)
            failed = pc.fill_null(pc.is_in(status, value_set=pa.array([REFUSED, "error"])), False)
            out.refused_requests = _requests(ids, refused, table.num_rows)
            out.error_requests = _requests(ids, failed, table.num_rows) - out.refused_requests
    if "latency_s" in names:
        lat = _float_column(table, "latency_s")
        lat = lat[np.isfinite(lat)]
        out.latency = np.bincount(
            np.searchsorted(LATENCY_EDGES, lat, side="right"), minlength=LATENCY_EDGES.size + 1
        ).astype(np.int64)
        out.latency_sum = float(lat.sum())
    if "cpu_s" in names:
        cpu = _float_column(table, "cpu_s")
        out.cpu_sum = float(cpu[np.isfinite(cpu)].sum())


def proba_matrix(column: pa.Array | pa.ChunkedArray, k: int) -> np.ndarray:
    """A list<float64> column of class probabilities as an (n, k) array.

    A row that is null, has another number of entries than ``k``, holds a value outside
    [0, 1] or (more than two classes) does not sum to 1 becomes a row of NaN, which every caller
    leaves out as unscored.
    """
    n = len(column)
    out = np.full((n, k), np.nan)
    if n == 0:
        return out
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    good = np.asarray(lengths == k, dtype=bool)
    if good.any():
        flat = pc.list_flatten(column.filter(pa.array(good)))
        out[good] = flat.to_numpy(zero_copy_only=False).astype(float).reshape(-1, k)
    with np.errstate(invalid="ignore"):
        bad = ((out < 0) | (out > 1)).any(axis=1)
        if k > 2:
            bad |= np.abs(out.sum(axis=1) - 1) > ROW_SUM_TOLERANCE
        out[bad] = np.nan
    return out


def _classification(ok: pa.Table, names: set[str], spec: PartialSpec, out: WindowPartial) -> None:
    if "prediction" in names:
        out.prediction = categorical_partial(ok.column("prediction"))
    if "proba" not in names or not spec.classes or ok.num_rows == 0:
        if "confidence" in names and ok.num_rows:
            conf = _float_column(ok, "confidence")
            conf = conf[np.isfinite(conf)]
            out.confidence = _conf_hist(conf)
            out.confidence_sum = float(conf.sum())
        return
    k = len(spec.classes)
    column = ok.column("proba")
    proba = proba_matrix(column, k)
    usable = np.isfinite(proba).all(axis=1)
    out.bad_proba = int((~usable).sum()) - column.null_count
    add_scores(out, proba[usable], spec.calibration, bootstrap=spec.bootstrap)


def add_scores(
    out: WindowPartial,
    proba: np.ndarray,
    calibration: tuple[tuple[np.ndarray, np.ndarray], ...] | None,
    pred_idx: np.ndarray | None = None,
    *,
    bootstrap: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None,
) -> None:
    """Add confidence and label-free-estimate sums for rows of class probabilities."""
    from ownloop.monitoring._performance import bootstrap_pred_sums, calibrate

    conf = proba.max(axis=1) if proba.shape[0] else np.zeros(0)
    out.confidence = out.confidence + _conf_hist(conf)
    out.confidence_sum += float(conf.sum())
    if pred_idx is None:
        pred_idx = np.argmax(proba, axis=1)
    cal = calibrate(proba, calibration)
    if proba.shape[1] == 2:
        score_bin = np.minimum((proba[:, 1] * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
        key = pred_idx * SCORE_BINS + score_bin
        c = cal[:, 1]
        size = 2 * SCORE_BINS
        out.score_counts = out.score_counts + np.bincount(key, minlength=size).reshape(2, -1)
        out.score_c = out.score_c + np.bincount(key, weights=c, minlength=size).reshape(2, -1)
        out.score_c2 = out.score_c2 + np.bincount(key, weights=c * c, minlength=size).reshape(2, -1)
    c_pred = cal[np.arange(cal.shape[0]), pred_idx]
    out.pred_c += float(c_pred.sum())
    out.pred_c2 += float((c_pred * c_pred).sum())
    if bootstrap and proba.shape[1] > 2:
        out.pred_c_boot = _add(out.pred_c_boot, bootstrap_pred_sums(proba, pred_idx, bootstrap))


def _conf_hist(conf: np.ndarray) -> np.ndarray:
    b = np.minimum((np.clip(conf, 0.0, 1.0) * CONF_BINS).astype(np.int64), CONF_BINS - 1)
    return np.bincount(b, minlength=CONF_BINS).astype(np.int64)


def prob_hist_edges() -> np.ndarray:
    return PROB_EDGES
