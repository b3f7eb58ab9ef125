"""Drift verdicts from a window's partial statistics and the reference profile.

Per feature, one rule at every window size (method "auto"): a feature has drifted when its
two-sample test is significant after adjustment across the window's features (adjusted p below
``alpha``) AND its estimated effect reaches ``min_effect``. The effect has one unit for every type,
standard deviations moved:
- continuous numeric columns: Wasserstein-1 distance over the reference standard deviation (a
  location shift of d sd is d); test: two-sample Kolmogorov-Smirnov on the profile's fine grid;
- categorical columns and discrete numeric ones (the profile keeps their few values): 2 * sqrt(sum
  of (sqrt(current share) - sqrt(reference share))^2) over the categories, 2 * sqrt(2) times the
  Hellinger distance. For two values it is, to first order, |share moved| / sqrt(p (1 - p)), the
  standard deviations moved by the same shift coded 0/1, so bool, 0/1 and "0"/"1" copies of a
  shift get the same verdict; it is bounded, so unseen categories cannot make it infinite; test:
  chi-square on reference against current counts, sparse categories pooled.
Small windows are judged by significance (a significant result in few rows implies a large
estimated effect), huge ones by the effect, and the detection rate rises smoothly with the size.
The distance methods (``wasserstein``, ``jensenshannon``, ``psi``: distance at least its threshold
AND the test significant) and the bare tests (``ks``, ``chi2``) stay available on request.

Tails, reported apart from drift: the share of current values beyond the reference's 0.5% and
99.5% quantiles, tested one-sided per side against the reference's own share (the exceedance
test: beta-binomial, valid for any continuous distribution and reference size), adjusted across
features as a family of its own, and material when a side's share at least doubles.

Categories expected under 5 times in the smaller of the two samples are pooled with 'other or
unseen', so a small reference's rare and missed categories are not taken for new ones.

Repeated rows (the same inputs scored again, retries, a replayed batch): the partial sketches the
distinct values of the columns that never repeat in the reference; when they hold clearly fewer
distinct values than rows, every test (not the effects) takes the window's effective size, that of
rows drawn at random from its distinct inputs (:func:`repeated_rows`), and the report says so.

P-values are adjusted across the features of one window (Benjamini-Hochberg by default, which
under no drift at all also bounds the chance of any false alarm by ``alpha``; Holm or none on
request). Dataset drift: the share of drifted features, among those with a verdict, reaches
``drift_share`` (default 0.5).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.spatial.distance import jensenshannon

from ownloop.errors import InvalidInputError
from ownloop.monitoring._partial import (
    CategoricalPartial,
    NumericPartial,
    WindowPartial,
    grid_of,
    hll_count,
)
from ownloop.profile import (
    MAX_SUPPORT,
    N_QUANTILES,
    CategoricalProfile,
    ClassificationProfile,
    NumericProfile,
    ReferenceProfile,
    RegressionProfile,
)

__all__ = ["DEFAULT_THRESHOLDS", "DriftReport", "DriftSettings", "FeatureDrift", "evaluate_drift"]

DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.2,
    "constant": 0.01,
}
NUMERIC_METHODS = ("auto", "ks", "wasserstein", "psi")
CATEGORICAL_METHODS = ("auto", "chi2", "jensenshannon", "psi")
CORRECTIONS = ("bh", "holm", "none")
# what "auto" reports as its method: the test, and an effect in standard deviations moved
AUTO_CONTINUOUS = "ks+effect"
AUTO_DISCRETE = "chi2+effect"
EFFECT_UNIT = "sd"
TAIL_RATIO = 2.0  # a side's tail share must at least double to count as contamination
# repeated rows: a window whose never-repeating columns hold under this share of distinct values
# (well beyond the sketch's ~2.3% error) is judged by its distinct rows
REPEAT_SHARE = 0.9


@dataclass(frozen=True)
class DriftSettings:
    """Thresholds for one model.

    ``min_effect``: the smallest effect, in standard deviations moved, that the default rule calls
    drift. ``feature_thresholds`` overrides it (or a chosen method's distance threshold) per feature.
    """

    alpha: float = 0.05
    correction: str = "bh"
    drift_share: float = 0.5
    min_effect: float = 0.05
    min_rows: int = 30
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    feature_thresholds: Mapping[str, float] = field(default_factory=dict)
    numeric_method: str = "auto"
    categorical_method: str = "auto"
    missing_delta: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise InvalidInputError(f"alpha {self.alpha} must lie between 0 and 1, e.g. 0.05")
        if not 0 < self.drift_share <= 1:
            raise InvalidInputError(f"drift share {self.drift_share} must lie in (0, 1], e.g. 0.5")
        if not self.min_effect >= 0:
            raise InvalidInputError(
                f"min_effect {self.min_effect} must be 0 or more standard deviations, e.g. 0.05"
            )
        if self.correction not in CORRECTIONS:
            raise InvalidInputError(
                f"unknown correction '{self.correction}'; use one of {', '.join(CORRECTIONS)}"
            )
        if self.numeric_method not in NUMERIC_METHODS:
            raise InvalidInputError(
                f"unknown numeric drift method '{self.numeric_method}'; use one of {', '.join(NUMERIC_METHODS)}"
            )
        if self.categorical_method not in CATEGORICAL_METHODS:
            raise InvalidInputError(
                f"unknown categorical drift method '{self.categorical_method}'; use one of {', '.join(CATEGORICAL_METHODS)}"
            )

    def threshold(self, feature: str, method: str) -> float:
        if feature in self.feature_thresholds:
            return float(self.feature_thresholds[feature])
        if method in (AUTO_CONTINUOUS, AUTO_DISCRETE):
            return float(self.min_effect)
        return float({**DEFAULT_THRESHOLDS, **self.thresholds}[method])

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftSettings:
        if "large_window" in d:
            raise InvalidInputError(
                "drift setting 'large_window' was removed: one rule now holds at every window "
                "size (the test significant AND an effect of at least 'min_effect' standard "
                "deviations); remove it, and set 'min_effect' (default 0.05) to choose the "
                "smallest shift worth flagging"
            )
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise InvalidInputError(
                f"unknown drift settings {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**dict(d))

    @classmethod
    def from_stored(cls, d: Mapping[str, Any]) -> DriftSettings:
        """Settings as stored by any version (older ones wrote ``large_window``, now gone)."""
        return cls.from_dict({k: v for k, v in d.items() if k != "large_window"})


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict; ``status`` says what happened when there is no verdict.

    ``effect`` is the standardised effect (standard deviations moved, ``effect_unit``) and
    ``moved_share`` the share of rows moved (total variation for categories and discrete values;
    for continuous values the largest gap between the two distribution functions, a lower bound).
    The ``tail_`` fields report values beyond the reference's 0.5%-99.5% quantiles, apart from
    ``drifted``; None where they do not apply (categories, discrete values, old profiles).
    """

    feature: str
    kind: str
    status: str  # ok | empty | too_few_rows | all_missing | reference_empty | constant_reference
    method: str | None
    score: float | None
    threshold: float | None
    p_value: float | None
    p_adjusted: float | None
    drifted: bool | None
    n: int
    reference_n: int
    missing_share: float | None
    reference_missing_share: float | None
    missing_drifted: bool | None
    nonfinite: int
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)
    effect: float | None = None
    effect_unit: str = EFFECT_UNIT
    moved_share: float | None = None
    tail_share: float | None = None
    tail_reference_share: float | None = None
    tail_p: float | None = None
    tail_p_adjusted: float | None = None
    tail_drifted: bool | None = None
    missing_p: float | None = None  # the two-proportion test of the missing share (unadjusted)


@dataclass(frozen=True)
class DriftReport:
    """One window's drift. A feature counts as drifted for the dataset verdict when its values
    drifted, its missing share drifted, or it became all missing (``reasons`` says which);
    ``share`` is the count share of such features among those judged and ``weighted_share`` the
    share of the model's importance they carry (when the profile has importance). The verdict
    (``verdict_by``) uses the weighted share when there is one."""

    rows: int
    features: tuple[FeatureDrift, ...]
    drifted_features: tuple[str, ...]
    tested: int
    share: float | None
    share_threshold: float
    dataset_drift: bool | None
    correction: str
    alpha: float
    prediction: tuple[FeatureDrift, ...] = ()
    weighted_share: float | None = None
    verdict_by: str = "count"  # count | importance
    importance_method: str | None = None
    reasons: Mapping[str, str] = field(default_factory=dict)
    distinct_rows: int | None = None  # about how many distinct inputs, when rows repeat
    effective_rows: int | None = None  # the window size its tests used, when rows repeat
    missing_delta: float = 0.05  # the smallest move of a missing share that counts

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.feature == name:
                return f
        raise InvalidInputError(f"no drift result for feature '{name}'")

    def to_frame(self) -> pd.DataFrame:
        """One row per feature (then the prediction checks), with the verdict and its evidence."""
        columns = [f for f in FeatureDrift.__dataclass_fields__ if f != "extra"]
        rows = [
            {"check": check, **{c: getattr(f, c) for c in columns}}
            for check, group in (("feature", self.features), ("prediction", self.prediction))
            for f in group
        ]
        return pd.DataFrame(rows, columns=["check", *columns])

    @property
    def drifted_with_reasons(self) -> tuple[str, ...]:
        """Each drifted feature with why it counts, e.g. ``income (all 5,000 values missing)``."""
        return tuple(
            f"{n} ({self.reasons[n]})" if n in self.reasons else n for n in self.drifted_features
        )

    @property
    def repeats_note(self) -> str:
        """What repeated rows did to the tests ('' when the rows did not repeat)."""
        if self.effective_rows is None:
            return ""
        return (
            f"the window's {self.rows:,} rows hold about {self.distinct_rows or 0:,} distinct "
            f"inputs (repeated rows); tests use {self.effective_rows:,}"
        )

    @property
    def summary(self) -> str:
        note = f"; {self.repeats_note}" if self.repeats_note else ""
        if self.dataset_drift is None:
            return f"no drift verdict: no feature could be tested in {self.rows} rows{note}"
        verdict = "DATASET DRIFT" if self.dataset_drift else "no dataset drift"
        names = ", ".join(self.drifted_with_reasons) or "none"
        head = f"{verdict}: {len(self.drifted_features)} of {self.tested} features drifted"
        if self.weighted_share is not None:
            return (
                f"{head}, carrying {self.weighted_share:.0%} of the model's reliance "
                f"(threshold {self.share_threshold:.0%}; {self.share:.0%} by count; importance: "
                f"{self.importance_method}); drifted: {names}{note}"
            )
        return (
            f"{head} ({self.share:.0%}, threshold {self.share_threshold:.0%}); "
            f"drifted: {names}{note}"
        )


# -- small helpers ---------------------------------------------------------------------------


def _share(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _ks_p(d: float, n: float, m: float) -> float:
    n_eff = n * m / (n + m)
    if n_eff > 2000:  # the asymptotic Kolmogorov distribution; the exact one is slow for large n
        return float(stats.kstwobign.sf(d * np.sqrt(n_eff)))
    return float(stats.kstwo.sf(d, max(round(n_eff), 1)))


MAX_BINS = 30  # bins kept per stored histogram


def _bins(
    labels: list[str], ref: np.ndarray, cur: np.ndarray, top: int = MAX_BINS
) -> dict[str, Any]:
    """Reference and current shares per category, for plots (at most ``top`` bins: the rest
    are folded into the last, so each side's shares still sum to 1)."""
    ref, cur = np.asarray(ref, dtype=float), np.asarray(cur, dtype=float)
    if len(labels) > top:
        labels = [*labels[: top - 1], f"(other: {len(labels) - top + 1} more)"]
        ref = np.append(ref[: top - 1], ref[top - 1 :].sum())
        cur = np.append(cur[: top - 1], cur[top - 1 :].sum())
    r = ref / max(ref.sum(), 1)
    c = cur / max(cur.sum(), 1)
    return {
        "kind": "categorical",
        "labels": labels,
        "edges": [],
        "reference": r.round(5).tolist(),
        "current": c.round(5).tolist(),
    }


def numeric_bins(
    cuts: np.ndarray, ref: np.ndarray, cur: np.ndarray, lo: float, hi: float
) -> dict[str, Any]:
    """Shares per quantile bin with the bins' real edges: ``lo``, the cut points, ``hi``.

    ``lo`` and ``hi`` close the outer bins (the reference's min and max, widened to the
    window's); bins of no width (an outer edge on a cut point) fold into their neighbour, so
    the edges are strictly ascending and finite.
    """
    cuts = np.asarray(cuts, dtype=float)
    edges = [min(lo, float(cuts[0])) if cuts.size else lo, *cuts.tolist()]
    edges.append(max(hi, edges[-1]))
    ref_l = np.asarray(ref, dtype=float).tolist()
    cur_l = np.asarray(cur, dtype=float).tolist()
    i = 0
    while len(edges) > 2 and i < len(edges) - 1:
        if edges[i + 1] > edges[i]:
            i += 1
            continue
        j = i + 1 if i + 1 < len(ref_l) else i - 1  # fold the empty-width bin into a neighbour
        ref_l[j] += ref_l[i]
        cur_l[j] += cur_l[i]
        del ref_l[i], cur_l[i]
        del edges[i + 1 if i + 1 < len(edges) - 1 else i]
    r = np.asarray(ref_l) / max(sum(ref_l), 1)
    c = np.asarray(cur_l) / max(sum(cur_l), 1)
    last = len(edges) - 2
    labels = [
        f"< {edges[k + 1]:.4g}" if k < last else f">= {edges[k]:.4g}" if last else "all"
        for k in range(last + 1)
    ]
    return {
        "kind": "numeric",
        "labels": labels,
        "edges": [float(e) for e in edges],
        "reference": r.round(5).tolist(),
        "current": c.round(5).tolist(),
    }


def _outer(
    pick: Callable[[list[float]], float], values: Sequence[float | None], fallback: float
) -> float:
    """The finite ``pick`` (min or max) of the reference's and the window's extreme, else the
    grid's end (a profile that kept no min or max)."""
    found = [float(v) for v in values if v is not None and np.isfinite(v)]
    return pick(found) if found else fallback


def _psi(ref: np.ndarray, cur: np.ndarray) -> float:
    r = np.maximum(ref / max(ref.sum(), 1), 1e-4)
    c = np.maximum(cur / max(cur.sum(), 1), 1e-4)
    return float(((c - r) * np.log(c / r)).sum())


def _missing(
    nulls: int, n: int, ref_nulls: int, ref_n: int, s: DriftSettings, dup: float = 1.0
) -> tuple[float | None, float | None, bool | None, float | None]:
    """Missing shares, their verdict and the test's p-value; ``dup`` scales the window's counts
    to its distinct rows."""
    cur = _share(nulls, n)
    ref = _share(ref_nulls, ref_n)
    if cur is None or ref is None:
        return cur, ref, None, None
    n_w = n * dup
    pooled = (nulls * dup + ref_nulls) / (n_w + ref_n)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_w + 1 / ref_n))
    p = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(cur - ref) / se))
    return cur, ref, bool(abs(cur - ref) >= s.missing_delta and p < s.alpha), p


def _unjudgeable(
    name: str,
    kind: str,
    rows: int,
    ref_n: int,
    n_vals: int,
    min_rows: int,
    args: tuple[int, int, tuple[Any, ...], int],
) -> FeatureDrift | None:
    """The no-verdict result when the window or the reference cannot be judged, else None."""
    finite = "finite " if kind == "numeric" else ""
    if rows == 0:
        return _no_verdict(name, kind, "empty", "no rows in the window", *args)
    if ref_n == 0:
        detail = f"the reference has no {finite}values for this feature"
        return _no_verdict(name, kind, "reference_empty", detail, *args)
    if n_vals == 0:
        lost = "missing or non-finite" if kind == "numeric" else "missing"
        return _no_verdict(name, kind, "all_missing", f"all {rows} values are {lost}", *args)
    if n_vals < min_rows:
        detail = f"{n_vals} {finite}values; a verdict needs at least {min_rows}"
        return _no_verdict(name, kind, "too_few_rows", detail, *args)
    return None


def _no_verdict(
    name: str,
    kind: str,
    status: str,
    detail: str,
    n: int,
    ref_n: int,
    miss: tuple[Any, ...],
    nonfinite: int,
) -> FeatureDrift:
    return FeatureDrift(
        name,
        kind,
        status,
        None,
        None,
        None,
        None,
        None,
        None,
        n,
        ref_n,
        miss[0],
        miss[1],
        miss[2],
        nonfinite,
        detail,
        missing_p=miss[3],
    )


# -- repeated rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repeats:
    """Repeated rows in a window: ``share`` of its size the tests use (1.0: none) and about how
    many distinct inputs its rows hold (None when the rows do not clearly repeat)."""

    share: float = 1.0
    distinct: int | None = None


def repeated_rows(partial: WindowPartial, profile: ReferenceProfile, min_rows: int = 30) -> Repeats:
    """How far the window's rows repeat, and the size its tests should use.

    Read from the columns that never repeat by themselves (continuous, not identifiers, their
    reference values at least 99% distinct; the partial sketches their distinct values). Per
    column, its sketched distinct count D stands for -K log(1 - D / K) distinct rows, the
    reference's ties read as draws from K equally likely values; K is the fewest values those
    ties allow (their count read high), so fresh values that tie by chance in a window large
    against K are never read as repeats (repeats may be read a little low). A window holds at
    least as many distinct rows as any one column shows, so the largest over the columns is
    taken: a column stuck at one value (drift, not repeats) cannot shrink the others' tests.

    Under ``REPEAT_SHARE`` of the rows, the window's n rows are read as drawn at random, with
    replacement, from N distinct inputs (N (1 - exp(-n / N)) of them seen): its empirical
    distribution then varies like that of n N / (n + N) independent rows (Kish's effective size
    for such draws), which the tests use, never under ``min_rows``. Otherwise (and with no
    sketched column) the rows are taken as independent.
    """
    share: float | None = None
    rows = 0
    for name, ref in profile.features.items():
        part = partial.features.get(name)
        if not isinstance(ref, NumericProfile) or not isinstance(part, NumericPartial):
            continue
        n = int(part.counts.sum()) if part.counts.size else 0
        if part.hll.size == 0 or n < 30 or ref.distinct is None or ref.finite <= 0:
            continue
        found = min(hll_count(part.hll), float(n))
        # the fewest values K the reference's ties allow: ties read high (Poisson, about 97.5%)
        m, ties = ref.finite, ref.finite - ref.distinct
        high = ties + 2.0 * np.sqrt(ties) + 2.0
        k = m / _draws(min(max(1.0 - high / m, 1e-6), 1.0 - 1e-9))
        found = float(n) if found >= k else min(-k * float(np.log1p(-found / k)), float(n))
        col = found / n
        share = col if share is None else max(share, col)
        rows = max(rows, n)
    if share is None or share >= REPEAT_SHARE or rows == 0:
        return Repeats()
    x = _draws(share)
    return Repeats(min(1.0, max(1.0 / (1.0 + x), min_rows / rows)), round(share * rows))


def _draws(share: float) -> float:
    """x = draws / values when draws at random from that many equally likely values see
    ``share`` of the draws as distinct values: (1 - exp(-x)) / x = share, for share in (0, 1)."""
    return float(optimize.brentq(lambda t: -np.expm1(-t) / t - share, 1e-12, 2.0 / share + 10.0))


def _effective(n: int, dup: float) -> dict[str, Any]:
    return {"effective_n": max(round(n * dup), 1)} if dup < 1.0 else {}


# -- numeric ---------------------------------------------------------------------------------


def _ref_grid_counts(ref: NumericProfile, grid: np.ndarray) -> np.ndarray:
    """The reference's counts on ``grid`` (``grid_of(ref)``)."""
    if ref.support and ref.support_counts:  # bin 2i+1 holds support value i, the rest are empty
        out = np.zeros(grid.size + 1)
        out[1::2] = ref.support_counts
        return out
    counts = ref.grid_counts if ref.grid is not None else ref.bin_counts
    return np.asarray(counts or [0], dtype=float)


def _looks_discrete(ref: NumericProfile) -> bool:
    """A profile from before distinct values were recorded whose quantiles take few values: its
    grid points are then the values themselves, each bin holding one."""
    return (
        ref.distinct is None
        and ref.grid is not None
        and len(np.unique(np.asarray(ref.quantiles))) <= MAX_SUPPORT
    )


def _wasserstein(
    grid: np.ndarray,
    g_ref: np.ndarray,
    g_cur: np.ndarray,
    part: NumericPartial,
    n_vals: int,
    discrete: bool,
) -> float:
    """Wasserstein-1 on the grid: the distribution functions at the edges are exact; within a bin
    they are linear (continuous data) or flat (discrete data: a bin's values sit at its left edge,
    where interpolating would halve the distance of a 0/1 shift)."""
    diff = np.abs(g_cur - g_ref)
    if grid.size < 2:
        interior = 0.0
    elif discrete:
        interior = float((np.diff(grid) * diff[1:]).sum())  # F(x) = F(next edge -)
    else:
        interior = float((np.diff(grid) * (diff[:-1] + diff[1:]) / 2).sum())
    return interior + (part.below + part.above) / n_vals


def _coarse(grid: np.ndarray, counts: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Fold fine-grid bin counts into the profile's quantile bins (the grid refines them)."""
    lower = np.concatenate(([-np.inf], grid))
    idx = np.searchsorted(cuts, lower, side="right")
    return np.bincount(idx, weights=counts, minlength=cuts.size + 1)


def numeric_drift(
    name: str, ref: NumericProfile, part: NumericPartial, s: DriftSettings, dup: float = 1.0
) -> FeatureDrift:
    """One numeric feature's test and effect; ``dup`` (the window's distinct rows over its rows,
    1 when rows do not repeat) scales the window's size in every test, never the effect."""
    ref_count = ref.count
    ref_bad = ref.nulls + ref.nonfinite
    ref_n = ref_count - ref_bad
    grid = grid_of(ref)
    counts = part.counts.astype(float)
    n_vals = int(counts.sum()) if counts.size else 0
    miss = _missing(part.nulls + part.nonfinite, part.n, ref_bad, ref_count, s, dup)
    args = (n_vals, ref_n, miss, part.nonfinite)
    unjudged = _unjudgeable(name, "numeric", part.n, ref_n, n_vals, s.min_rows, args)
    if unjudged is not None:
        return unjudged
    if counts.size != grid.size + 1:
        return _no_verdict(
            name,
            "numeric",
            "reference_empty",
            "the window was binned on another profile's grid",
            *args,
        )
    std = ref.std or 0.0
    if std == 0.0 or grid.size < 2:
        return _constant(name, grid, counts, n_vals, ref_n, miss, part, s)
    ref_counts = _ref_grid_counts(ref, grid)
    support = bool(ref.support)
    discrete = support or _looks_discrete(ref)
    g_ref = np.cumsum(ref_counts)[:-1] / ref_counts.sum()
    g_cur = np.cumsum(counts)[:-1] / n_vals
    d = float(np.abs(g_cur - g_ref).max())
    p_ks = _ks_p(d, n_vals * dup, ref_n)
    w = _wasserstein(grid, g_ref, g_cur, part, n_vals, discrete) / float(std)
    cuts = np.asarray(ref.cuts, dtype=float)
    ref_coarse = np.asarray(ref.bin_counts, float)
    cur_coarse = _coarse(grid, counts, cuts)
    psi = _psi(ref_coarse, cur_coarse)
    extra: dict[str, Any] = {
        "ks": d,
        "wasserstein": w,
        "psi": psi,
        "mean": part.total / n_vals,
        "reference_mean": ref.mean,
        "discrete": discrete,
        **_effective(n_vals, dup),
    }
    method = s.numeric_method
    if discrete:  # the support values, then every value off them as one "other" category
        if support:
            keys = [f"{v:g}" for v in ref.support or ()]
            ref_vec = np.append(ref_counts[1::2], 0.0)
            cur_vec = np.append(counts[1::2], counts[0::2].sum())
        else:  # an older profile: each grid bin is one value
            keys = [f"< {grid[0]:g}", *(f"{g:g}" for g in grid)]
            ref_vec, cur_vec = np.append(ref_counts, 0.0), np.append(counts, 0.0)
        found = _categories(ref_vec, cur_vec, dup)
        extra["bins"] = _bins([*keys, "(other)"], ref_vec, cur_vec)
        extra.update(found)
        effect, moved = found["effect"], found["moved"]
    else:
        lo = _outer(min, (ref.min, part.lo), float(grid[0]))
        hi = _outer(max, (ref.max, part.hi), float(grid[-1]))
        extra["bins"] = numeric_bins(cuts, ref_coarse, cur_coarse, lo, hi)
        effect, moved = w, d
    if method == "auto" and discrete:
        method, score, p = AUTO_DISCRETE, effect, extra["p"]
        extra["test"] = "chi-square"
    else:
        method = AUTO_CONTINUOUS if method == "auto" else method
        score = {AUTO_CONTINUOUS: w, "ks": d, "wasserstein": w, "psi": psi}[method]
        p = p_ks
        extra["test"] = "KS"
    threshold = s.alpha if method == "ks" else s.threshold(name, method)
    tail: dict[str, Any] = {}
    if not discrete:
        tail = _tails(ref, grid, ref_counts, counts, part, n_vals, ref_n, dup)
        extra["tail"] = tail
    return FeatureDrift(
        name,
        "numeric",
        "ok",
        method,
        score,
        threshold,
        p,
        None,
        None,
        n_vals,
        ref_n,
        miss[0],
        miss[1],
        miss[2],
        part.nonfinite,
        "",
        extra,
        effect=effect,
        moved_share=moved,
        tail_share=tail.get("share"),
        tail_reference_share=tail.get("reference_share"),
        tail_p=tail.get("p"),
        missing_p=miss[3],
    )


def _tails(
    ref: NumericProfile,
    grid: np.ndarray,
    ref_counts: np.ndarray,
    counts: np.ndarray,
    part: NumericPartial,
    n: int,
    m: int,
    dup: float = 1.0,
) -> dict[str, Any]:
    """Values beyond the reference's 0.5% and 99.5% quantiles, per side, against the reference's
    own share there; Bonferroni over the two sides. Both sides are counted on the grid the same
    way for reference and window: below the 0.5% quantile, and at or above the 99.5% one.

    The test is the exceedance test: with r of the reference's m values beyond a cut that lies
    between two of its values, the population's share beyond it is at most Beta(r + 1, m - r)
    (order statistics of continuous data), so the window's count is at most beta-binomial. Valid
    (conservative) for any continuous distribution and any reference size, where a binomial or Fisher test that
    ignored that the cut was chosen from the reference would alarm too often for small ones."""
    if ref.grid is None or len(ref.quantiles) != N_QUANTILES:
        return {}
    q_lo, q_hi = ref.quantiles[1], ref.quantiles[-2]
    j, k = np.searchsorted(grid, [q_lo, q_hi])
    if k >= grid.size or grid[j] != q_lo or grid[k] != q_hi:
        return {}
    sides = {
        "below": (float(ref_counts[: j + 1].sum()), float(counts[: j + 1].sum())),
        "above": (float(ref_counts[k + 1 :].sum()), float(counts[k + 1 :].sum())),
    }
    n_eff = max(round(n * dup), 1)  # repeated rows: the counts scaled to the distinct rows
    p_side = {
        side: float(stats.betabinom.sf(round(c * n_eff / n) - 1, n_eff, r + 1, m - r))
        for side, (r, c) in sides.items()
    }
    side = min(p_side, key=lambda x: p_side[x])
    r, c = sides[side]
    std = float(ref.std or 1.0)
    far = None
    if side == "above" and part.hi is not None and ref.max is not None and part.hi > ref.max:
        far = f", up to {(part.hi - ref.max) / std:.1f} sd above its maximum"
    if side == "below" and part.lo is not None and ref.min is not None and part.lo < ref.min:
        far = f", up to {(ref.min - part.lo) / std:.1f} sd below its minimum"
    share = sum(v[1] for v in sides.values()) / n
    ref_share = sum(v[0] for v in sides.values()) / m
    return {
        "share": share,
        "reference_share": ref_share,
        "p": min(1.0, 2 * p_side[side]),
        "side": side,
        "side_share": c / n,
        "side_reference_share": r / m,
        "material": c / n > r / m and c / n >= TAIL_RATIO * r / m,
        "text": (
            f"{share:.1%} of values beyond the reference's 0.5%-99.5% range (reference "
            f"{ref_share:.1%}); {c / n:.1%} {side} it (reference {r / m:.1%}){far or ''}"
        ),
    }


def _constant(
    name: str,
    grid: np.ndarray,
    counts: np.ndarray,
    n_vals: int,
    ref_n: int,
    miss: tuple[Any, ...],
    part: NumericPartial,
    s: DriftSettings,
) -> FeatureDrift:
    # a constant reference value c is binned on [c, nextafter(c)), so counts[1] holds x == c
    at = float(counts[1]) if counts.size == 3 else float(counts[-1])
    off = 1.0 - at / n_vals
    thr = s.threshold(name, "constant")
    drifted = off > thr
    value = grid[0] if grid.size else None
    detail = f"the reference is constant ({value}); {off:.1%} of current values differ ({'>' if drifted else '<='} {thr:.1%})"
    return FeatureDrift(
        name,
        "numeric",
        "constant_reference",
        "share_off_constant",
        off,
        thr,
        None,
        None,
        drifted,
        n_vals,
        ref_n,
        miss[0],
        miss[1],
        miss[2],
        part.nonfinite,
        detail,
        moved_share=off,
        missing_p=miss[3],
    )


# -- categorical -----------------------------------------------------------------------------


def _pool(ref: np.ndarray, cur: np.ndarray, least: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Pool categories expected fewer than ``least`` times in the smaller of the two samples (and
    the last, 'other or unseen', bucket) into one, so the chi-square approximation holds for sparse
    categories and small references; a pooled bucket still expected under ``least`` times joins
    the smallest remaining one. Expected counts come from both samples together, as under no
    drift. Pooling by the smaller sample matters for small references: a category a 200-row
    reference saw once is expected under 5 times in its row whatever the window's size, and the
    values it saw once stand, pooled, for those it happened to miss."""
    total = ref.sum() + cur.sum()
    small = min(ref.sum(), cur.sum()) / max(total, 1.0)
    expected = small * (ref + cur)
    rare = expected < least
    rare[-1] = True
    r = np.append(ref[~rare], ref[rare].sum())
    c = np.append(cur[~rare], cur[rare].sum())
    if r.size > 2 and small * (r[-1] + c[-1]) < least:
        j = int(np.argmin(r[:-1] + c[:-1]))
        r[j] += r[-1]
        c[j] += c[-1]
        r, c = r[:-1], c[:-1]
    keep = (r + c) > 0
    return r[keep], c[keep]


def _categories(ref_vec: np.ndarray, cur_vec: np.ndarray, dup: float = 1.0) -> dict[str, float]:
    """Test and effect over category counts (the last is 'other or unseen'), sparse ones pooled.
    ``dup`` < 1 scales the window's counts to its distinct rows before the test (repeated rows).

    ``effect``: 2 * sqrt(sum (sqrt(c) - sqrt(r))^2) over the shares, standard deviations moved;
    ``moved``: total variation, the share of rows that changed category.
    """
    ref_vec, cur_vec = _pool(ref_vec, cur_vec * dup)
    if ref_vec.size < 2:
        p, chi = 1.0, 0.0
    else:
        chi, p, _, _ = stats.chi2_contingency(np.vstack((ref_vec, cur_vec)), correction=False)
        chi, p = float(chi), float(p)
    r, c = ref_vec / ref_vec.sum(), cur_vec / cur_vec.sum()
    return {
        "chi2": chi,
        "p": p,
        "effect": float(2 * np.sqrt(((np.sqrt(c) - np.sqrt(r)) ** 2).sum())),
        "moved": float(np.abs(c - r).sum() / 2),
        "jensenshannon": _js(r, c),
        "psi": _psi(ref_vec, cur_vec),
    }


def _js(r: np.ndarray, c: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2); 0 where rounding leaves equal shares a hair negative."""
    with np.errstate(invalid="ignore"):
        d = float(jensenshannon(r, c, base=2))
    return 0.0 if np.isnan(d) else d


def categorical_drift(
    name: str,
    ref: CategoricalProfile,
    part: CategoricalPartial,
    s: DriftSettings,
    dup: float = 1.0,
) -> FeatureDrift:
    ref_cats = ref.categories
    ref_count, ref_nulls = ref.count, ref.nulls
    ref_n = ref_count - ref_nulls
    n_vals = int(sum(part.counts.values()))
    miss = _missing(part.nulls, part.n, ref_nulls, ref_count, s, dup)
    args = (n_vals, ref_n, miss, 0)
    unjudged = _unjudgeable(name, "categorical", part.n, ref_n, n_vals, s.min_rows, args)
    if unjudged is not None:
        return unjudged
    keys = list(ref_cats)
    unseen = sorted((k for k in part.counts if k not in ref_cats), key=lambda k: -part.counts[k])
    ref_vec = np.array([ref_cats[k] for k in keys] + [ref.other], dtype=float)
    cur_vec = np.array(
        [part.counts.get(k, 0) for k in keys] + [sum(part.counts[k] for k in unseen)], dtype=float
    )
    found = _categories(ref_vec, cur_vec, dup)
    method = AUTO_DISCRETE if s.categorical_method == "auto" else s.categorical_method
    score = {AUTO_DISCRETE: found["effect"], "chi2": found["chi2"]}.get(method, found.get(method))
    threshold = s.alpha if method == "chi2" else s.threshold(name, method)
    extra: dict[str, Any] = {
        "bins": _bins([*keys, "(other/unseen)"], ref_vec, cur_vec),
        **found,
        "test": "chi-square",
        "unseen": unseen[:10],
        "unseen_share": sum(part.counts[k] for k in unseen) / n_vals,
        **_effective(n_vals, dup),
    }
    return FeatureDrift(
        name,
        "categorical",
        "ok",
        method,
        score,
        threshold,
        found["p"],
        None,
        None,
        n_vals,
        ref_n,
        miss[0],
        miss[1],
        miss[2],
        0,
        "",
        extra,
        effect=found["effect"],
        moved_share=found["moved"],
        missing_p=miss[3],
    )


# -- the window ------------------------------------------------------------------------------


def adjust(p: np.ndarray, correction: str) -> np.ndarray:
    """Adjusted p-values: Benjamini-Hochberg, Holm, or none."""
    if p.size == 0 or correction == "none":
        return p
    if correction == "bh":
        out: np.ndarray = stats.false_discovery_control(p, method="bh")
        return out
    order = np.argsort(p)
    m = p.size
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    result = np.empty_like(p)
    result[order] = np.minimum(adj, 1.0)
    return result


def _verdict(f: FeatureDrift, p_adj: float, s: DriftSettings) -> FeatureDrift:
    assert f.score is not None
    assert f.threshold is not None
    assert f.p_value is not None
    significant = p_adj < s.alpha
    how = {"bh": "Benjamini-Hochberg", "holm": "Holm", "none": "unadjusted"}[s.correction]
    test = f"{f.extra.get('test', 'test')} p={f.p_value:.3g} ({how} {p_adj:.3g})"
    if f.method in ("ks", "chi2"):
        drifted = significant
        detail = f"{f.method} {f.score:.4g}, p={f.p_value:.3g} ({how} {p_adj:.3g}) {'<' if drifted else '>='} {s.alpha}"
    elif f.method in (AUTO_CONTINUOUS, AUTO_DISCRETE):
        material = f.score >= f.threshold
        drifted = material and significant
        detail = (
            f"moved {f.score:.3g} sd ({'>=' if material else '<'} {f.threshold:g}); "
            f"{_moved(f)}; {test} {'<' if significant else '>='} {s.alpha}"
        )
        if material != significant:
            detail += (
                f": {'not significant' if material else 'under the minimum effect'}, so no drift"
            )
    else:
        material = f.score >= f.threshold
        drifted = material and significant
        detail = f"{f.method} {f.score:.4f} {'>=' if material else '<'} {f.threshold:g}; {test}"
        if material and not significant:
            detail += f": not significant at {s.alpha}, so no drift"
    if f.extra.get("unseen"):
        detail += f"; unseen categories {f.extra['unseen']} ({f.extra['unseen_share']:.1%})"
    if "effective_n" in f.extra:
        detail += (
            f"; repeated rows: tests use {f.extra['effective_n']:,} of the window's {f.n:,} values"
        )
    if 0 < f.reference_n < f.n:
        detail += (
            f"; the reference's {f.reference_n:,} values limit this test, not the window's {f.n:,}"
        )
    return replace(f, p_adjusted=float(p_adj), drifted=bool(drifted), detail=detail)


def _moved(f: FeatureDrift) -> str:
    if f.moved_share is None:
        return ""
    if f.method == AUTO_CONTINUOUS:
        return f"distribution functions up to {f.moved_share:.1%} apart"
    return f"{f.moved_share:.1%} of rows moved"


def _tail_verdicts(results: list[FeatureDrift], s: DriftSettings) -> list[FeatureDrift]:
    """Adjust the tail p-values across features (a family of their own) and give each a verdict:
    significant AND material (a side's share at least doubled)."""
    tested = [i for i, f in enumerate(results) if f.tail_p is not None]
    adjusted = adjust(np.array([results[i].tail_p for i in tested], dtype=float), s.correction)
    out = list(results)
    for i, p_adj in zip(tested, adjusted, strict=True):
        f = out[i]
        tail = f.extra.get("tail", {})
        hit = bool(p_adj < s.alpha and tail.get("material", False))
        detail = f.detail + (f"; tail contamination: {tail['text']} (p={p_adj:.3g})" if hit else "")
        out[i] = replace(f, tail_p_adjusted=float(p_adj), tail_drifted=hit, detail=detail)
    return out


def evaluate_drift(
    partial: WindowPartial, profile: ReferenceProfile, settings: DriftSettings | None = None
) -> DriftReport:
    """Per-feature and dataset drift of one window against the reference profile."""
    from ownloop.monitoring._identifier import (
        IDENTIFIER_METHOD,
        identifier_drift,
        identifier_verdict,
    )

    s = settings or DriftSettings()
    repeats = repeated_rows(partial, profile, s.min_rows)
    dup = repeats.share
    results: list[FeatureDrift] = []
    for name, ref in profile.features.items():
        part = partial.features.get(name)
        if ref.identifier:
            c_part = (
                part
                if isinstance(part, CategoricalPartial)
                else CategoricalPartial(partial.scored_rows, partial.scored_rows)
            )
            results.append(identifier_drift(name, ref, c_part, s))
        elif isinstance(ref, NumericProfile):
            np_part = (
                part
                if isinstance(part, NumericPartial)
                else NumericPartial(partial.scored_rows, partial.scored_rows)
            )
            results.append(numeric_drift(name, ref, np_part, s, dup))
        else:
            c_part = (
                part
                if isinstance(part, CategoricalPartial)
                else CategoricalPartial(partial.scored_rows, partial.scored_rows)
            )
            results.append(categorical_drift(name, ref, c_part, s, dup))
    tested = [i for i, f in enumerate(results) if f.status == "ok"]
    adjusted = adjust(np.array([results[i].p_value for i in tested], dtype=float), s.correction)
    for i, p_adj in zip(tested, adjusted, strict=True):
        f = results[i]
        verdict = identifier_verdict if f.method == IDENTIFIER_METHOD else _verdict
        results[i] = verdict(f, float(p_adj), s)
    results = _tail_verdicts(results, s)
    rows = {
        f.feature: (
            partial.features[f.feature].n if f.feature in partial.features else partial.scored_rows
        )
        for f in results
    }
    reasons = {f.feature: _reasons(f, rows[f.feature], s) for f in results}
    judged = [f.feature for f in results if reasons[f.feature] is not None]
    drifted = tuple(n for n in judged if reasons[n])
    share = len(drifted) / len(judged) if judged else None
    weighted = _weighted_share(profile.importance, judged, drifted)
    by = share if weighted is None else weighted
    return DriftReport(
        rows=partial.scored_rows,
        features=tuple(results),
        drifted_features=drifted,
        tested=len(judged),
        share=share,
        share_threshold=s.drift_share,
        dataset_drift=None if by is None else by >= s.drift_share,
        correction=s.correction,
        alpha=s.alpha,
        prediction=prediction_drift(partial, profile, s, dup),
        weighted_share=weighted,
        verdict_by="count" if weighted is None else "importance",
        importance_method=None if weighted is None else profile.importance_method,
        reasons={n: str(reasons[n]) for n in drifted},
        distinct_rows=repeats.distinct,
        effective_rows=max(round(partial.scored_rows * dup), 1) if dup < 1.0 else None,
        missing_delta=s.missing_delta,
    )


def _reasons(f: FeatureDrift, rows: int, s: DriftSettings) -> str | None:
    """Why a feature counts as drifted for the dataset ('' when judged and not drifted), or None
    when it cannot be judged: its values, its missing share (from ``min_rows`` rows in the window)
    or all of it missing where the reference had values (when its missing share drifted, or an
    all-missing window had under ``alpha`` chance at the reference's missing share)."""
    why: list[str] = []
    judged = f.drifted is not None
    if f.drifted:
        why.append(_value_reason(f))
    if f.missing_drifted is not None and rows >= s.min_rows:
        judged = True
        ref = f.reference_missing_share or 0.0
        if f.status == "all_missing" and (f.missing_drifted or ref**rows < s.alpha):
            why.append(f"all {rows:,} values missing; reference {ref:.1%}")
        elif f.missing_drifted:
            why.append(f"missing {f.missing_share or 0.0:.1%}; reference {ref:.1%}")
    return "; ".join(why) if judged else None


def _value_reason(f: FeatureDrift) -> str:
    e = f.extra
    if e.get("identifier") and e.get("by") == "top":
        return (
            f"most common value {e['top_value']!r} {e['top_share']:.1%} of values; "
            f"reference {_pct(e['reference_top_share'])}"
        )
    if e.get("identifier"):
        return f"unseen values {e['unseen_share']:.1%}; expected {e['expected_unseen_share']:.1%}"
    if f.effect is not None:
        return f"distribution moved {f.effect:.2f} {f.effect_unit}"
    return f"distribution, {f.method} {f.score:.3g}" if f.score is not None else "distribution"


def _pct(x: float) -> str:
    """A share as a percentage that stays readable when tiny (0.002%, not 0.00%)."""
    return f"{x:.1%}" if x == 0 or x >= 0.001 else f"{100 * x:.2g}%"


def _weighted_share(
    importance: Mapping[str, float] | None, judged: list[str], drifted: tuple[str, ...]
) -> float | None:
    """The share of the judged features' importance carried by the drifted ones."""
    if importance is None:
        return None
    total = sum(max(importance.get(n, 0.0), 0.0) for n in judged)
    if total <= 0:
        return None
    return sum(max(importance.get(n, 0.0), 0.0) for n in drifted) / total


def prediction_drift(
    partial: WindowPartial, profile: ReferenceProfile, s: DriftSettings, dup: float = 1.0
) -> tuple[FeatureDrift, ...]:
    """Predicted classes (or values) and, for binary classifiers, the score distribution; ``dup``
    as for the features (a repeated row repeats its prediction)."""
    pred = profile.prediction
    out: list[FeatureDrift] = []
    single = replace(s, correction="none")
    if isinstance(pred, ClassificationProfile):
        ref = CategoricalProfile(
            count=sum(pred.predicted_counts),
            nulls=0,
            distinct=len(pred.classes),
            categories=dict(zip(pred.classes, pred.predicted_counts, strict=False)),
        )
        part = (
            partial.prediction
            if isinstance(partial.prediction, CategoricalPartial)
            else CategoricalPartial(partial.ok_rows, partial.ok_rows)
        )
        out.append(categorical_drift("predicted_class", ref, part, single, dup))
        probs = list(pred.probability.values())
        if len(pred.classes) == 2 and len(probs) == 2 and partial.score_counts.sum() > 0:
            ref_hist = probs[1]
            per = partial.score_counts.shape[1] // len(ref_hist)
            cur_hist = partial.score_counts.sum(axis=0).reshape(len(ref_hist), per).sum(axis=1)
            ref2 = CategoricalProfile(
                count=int(sum(ref_hist)),
                nulls=0,
                distinct=len(ref_hist),
                categories={str(i): int(c) for i, c in enumerate(ref_hist)},
            )
            cur2 = CategoricalPartial(
                int(cur_hist.sum()), 0, {str(i): int(c) for i, c in enumerate(cur_hist) if c}
            )
            out.append(categorical_drift(f"score_{pred.classes[1]}", ref2, cur2, single, dup))
    elif isinstance(pred, RegressionProfile):
        part_n = (
            partial.prediction
            if isinstance(partial.prediction, NumericPartial)
            else NumericPartial(partial.ok_rows, partial.ok_rows)
        )
        out.append(numeric_drift("predicted_value", pred.values, part_n, single, dup))
    judged = [
        _verdict(f, float(f.p_value), single) if f.status == "ok" and f.p_value is not None else f
        for f in out
    ]
    return tuple(_tail_verdicts(judged, single))
