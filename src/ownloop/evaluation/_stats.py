"""Interval and test machinery: Wilson, vectorised bootstrap weights, paired McNemar, Holm,
and ROC AUC's studentised (DeLong, logit scale) bootstrap with MOVER for paired differences.

Every decision is one-sided at ``alpha = (1 - level) / 2``, so a two-sided interval at
``level`` and the decision agree: the bound is met exactly when the interval's limit is on
the passing side of it (the usual non-inferiority convention: a 95% interval, 2.5% one-sided).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import expit, logit

from ownloop.intervals import wilson_interval, z_for

__all__ = [
    "AucInterval",
    "BcaInterval",
    "BootstrapPlan",
    "StudentisedMean",
    "auc_difference_interval",
    "auc_difference_pvalue",
    "auc_interval",
    "auc_pvalue",
    "bca_interval",
    "holm",
    "jackknife_acceleration",
    "mean_of_shares_interval",
    "mean_of_shares_pvalue",
    "paired_accuracy_difference",
    "percentile_interval",
    "quantile_interval",
    "satterthwaite_df",
    "studentised_mean",
    "wilson_interval",
    "wilson_pvalue",
]

# Cells (resamples x rows) per block: bounds memory (float32 counts plus temporaries).
_BLOCK_CELLS = 8_000_000


def wilson_pvalue(successes: float, n: float, bound: float, higher_passes: bool) -> float:
    """One-sided score-test p-value of H0 'the true proportion is on the failing side of bound'.

    It inverts the Wilson interval, so p <= alpha exactly when the Wilson limit clears the bound.
    """
    if n <= 0:
        return 1.0
    if bound <= 0.0:
        return 0.0 if higher_passes else 1.0
    if bound >= 1.0:
        return 1.0 if higher_passes else 0.0
    z = (successes / n - bound) / np.sqrt(bound * (1 - bound) / n)
    return float(stats.norm.sf(z) if higher_passes else stats.norm.cdf(z))


@dataclass(frozen=True)
class BootstrapPlan:
    """Bootstrap resampling as a weight matrix: row b holds how often each row was drawn.

    Weights turn every metric that is a ratio of sums into one matrix product, so resamples
    are computed together; blocks of resamples bound memory, not a loop over rows.
    """

    resamples: int
    seed: int

    def block_sizes(self, n: int) -> list[int]:
        per_block = max(1, min(self.resamples, _BLOCK_CELLS // max(n, 1)))
        full, rest = divmod(self.resamples, per_block)
        return [per_block] * full + ([rest] if rest else [])

    def draw(self, n: int, block: int) -> np.ndarray:
        """Count matrix of block ``block``, shape (size, n), each row summing to n.

        Each block has its own seed stream, so blocks can be drawn in any order or in parallel
        with the same result. float32 halves memory traffic; counts and their partial sums stay
        exact integers (below 2**24), and metric sums carry a relative rounding error near
        1e-6, far inside any interval's width. Point estimates are computed in float64.
        """
        sizes = self.block_sizes(n)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(len(sizes))[block])
        b = sizes[block]
        idx = rng.integers(0, n, size=(b, n))
        idx += (np.arange(b) * n)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n)
        return counts.astype(np.float32)

    def blocks(self, n: int) -> Iterator[np.ndarray]:
        """Every block in order."""
        for block in range(len(self.block_sizes(n))):
            yield self.draw(n, block)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval; NaN replicates (an undefined metric in a resample) dropped."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    lo, hi = np.quantile(finite, [a, 1 - a])
    return (float(lo), float(hi))


def jackknife_acceleration(theta: np.ndarray) -> float:
    """BCa's acceleration from the leave-one-out values: sum(U**3) / (6 sum(U**2) ** 1.5)."""
    theta = theta[np.isfinite(theta)]
    if theta.size < 3:
        return 0.0
    u = theta.mean() - theta
    s2 = float(np.sum(u * u))
    if not s2 > 0:
        return 0.0
    return float(np.sum(u**3) / (6 * s2**1.5))


@dataclass(frozen=True)
class BcaInterval:
    """Efron's bias-corrected and accelerated bootstrap on a set of replicates.

    The percentile interval assumes the estimate's distribution is symmetric about the truth
    and does not change shape with it; BCa corrects the median bias (z0, from the share of
    replicates below the estimate) and the skew (the acceleration, from the jackknife), which
    is what lets a percentile limit pass too often for a skewed metric at small n.
    """

    estimate: float
    replicates: np.ndarray  # sorted, finite
    z0: float
    acceleration: float

    def _level(self, z: float) -> float:
        x = self.z0 + z
        den = 1 - self.acceleration * x
        if den <= 0:
            return 1.0 if z > 0 else 0.0
        return float(stats.norm.cdf(self.z0 + x / den))

    def limits(self, alpha: float) -> tuple[float, float]:
        if self.replicates.size == 0 or not np.isfinite(self.estimate):
            return (float("nan"), float("nan"))
        z = float(stats.norm.ppf(1 - alpha))
        lo_q, hi_q = self._level(-z), self._level(z)
        lo = float(np.quantile(self.replicates, lo_q, method="lower"))
        hi = float(np.quantile(self.replicates, hi_q, method="higher"))
        return (lo, hi)

    def pvalue(self, bound: float, higher_passes: bool) -> float:
        """One-sided p-value, the inverse of the limits (p <= alpha when the limit clears)."""
        side = 0 if higher_passes else 1
        return _invert(lambda a: self.limits(a)[side], bound, higher_passes)


def bca_interval(estimate: float, replicates: np.ndarray, acceleration: float) -> BcaInterval:
    finite = np.sort(replicates[np.isfinite(replicates)])
    if finite.size == 0:
        return BcaInterval(float(estimate), finite, 0.0, 0.0)
    below = (np.sum(finite < estimate) + 0.5 * np.sum(finite == estimate)) / finite.size
    below = float(np.clip(below, 0.5 / finite.size, 1 - 0.5 / finite.size))
    return BcaInterval(float(estimate), finite, float(stats.norm.ppf(below)), acceleration)


@dataclass(frozen=True)
class StudentisedMean:
    """Bootstrap-t of a mean: t* = (mean* - mean) / se*, limits mean - t*[1 - alpha] se.

    Second-order accurate for the one-sided limits of a skewed mean (log loss, squared and
    absolute errors), where the percentile interval's limit on the long side falls short.
    ``back`` maps the mean to the metric (a monotone increasing map: RMSE's root).
    """

    mean: float
    se: float
    t: np.ndarray  # sorted, finite
    back: Callable[[float], float]

    def limits(self, alpha: float) -> tuple[float, float]:
        if self.t.size == 0 or not self.se > 0:
            return (self.back(self.mean), self.back(self.mean))
        t_hi = float(np.quantile(self.t, 1 - alpha, method="higher"))
        t_lo = float(np.quantile(self.t, alpha, method="lower"))
        return (self.back(self.mean - t_hi * self.se), self.back(self.mean - t_lo * self.se))

    def pvalue(self, bound: float, higher_passes: bool) -> float:
        side = 0 if higher_passes else 1
        return _invert(lambda a: self.limits(a)[side], bound, higher_passes)


def studentised_mean(
    mean: float, se: float, moments: np.ndarray, back: Callable[[float], float]
) -> StudentisedMean:
    """From the point mean and se and the resamples' (mean, se) columns."""
    m, s = moments[:, 0], moments[:, 1]
    keep = np.isfinite(m) & (s > 0)
    t = (m[keep] - mean) / s[keep]
    return StudentisedMean(float(mean), float(se), np.sort(t), back)


def mean_of_shares_interval(
    hits: np.ndarray, rows: np.ndarray, alpha: float
) -> tuple[float, float]:
    """Limits of mean(hits / rows) over independent binomial shares, each one-sided at alpha.

    One share: its Wilson interval. Several (per-class shares on disjoint rows): MOVER, each
    share's distance to its Wilson limit standing in for its standard error on that side.
    """
    level = 1 - 2 * alpha
    p = hits / rows
    limits = np.array(
        [wilson_interval(float(h), float(m), level) for h, m in zip(hits, rows, strict=True)]
    )
    c = p.size
    est = float(p.mean())
    lo = est - float(np.sqrt(np.sum((p - limits[:, 0]) ** 2))) / c
    hi = est + float(np.sqrt(np.sum((limits[:, 1] - p) ** 2))) / c
    return (max(lo, 0.0), min(hi, 1.0))


def mean_of_shares_pvalue(
    hits: np.ndarray, rows: np.ndarray, bound: float, higher_passes: bool
) -> float:
    """One-sided p-value, the inverse of :func:`mean_of_shares_interval`."""
    side = 0 if higher_passes else 1
    return _invert(lambda a: mean_of_shares_interval(hits, rows, a)[side], bound, higher_passes)


def bootstrap_pvalue(replicates: np.ndarray, bound: float, higher_passes: bool) -> float:
    """Share of resamples on the failing side of ``bound`` (ties count half), kept above 0."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return 1.0
    worse = finite < bound if higher_passes else finite > bound
    ties = finite == bound
    return float((worse.sum() + 0.5 * ties.sum() + 1) / (finite.size + 1))


@dataclass(frozen=True)
class PairedDifference:
    estimate: float
    interval: tuple[float, float]
    pvalue: float
    candidate_only: int  # rows the candidate gets right and the baseline wrong
    baseline_only: int


def paired_accuracy_difference(
    cand_correct: np.ndarray, base_correct: np.ndarray, margin: float, level: float
) -> PairedDifference:
    """McNemar-type comparison of paired accuracy: difference, Wald interval, one-sided p-value.

    H0: candidate accuracy - baseline accuracy <= -margin. Only discordant rows carry information;
    with margin 0 the statistic is McNemar's (b - c) / sqrt(b + c).
    """
    n = cand_correct.size
    b = int(np.sum(cand_correct & ~base_correct))
    c = int(np.sum(~cand_correct & base_correct))
    d = (b - c) / n
    var = max(((b + c) / n - d * d) / n, 0.0)
    se = float(np.sqrt(var))
    z = z_for(level)
    if margin == 0.0:
        # McNemar's own standard error (under "no difference"): interval and test agree.
        se = float(np.sqrt(b + c) / n)
        p = 0.5 if b + c == 0 else float(stats.norm.sf(d / se))
    elif se == 0.0:
        p = 0.0 if d > -margin else 1.0
    else:
        p = float(stats.norm.sf((d + margin) / se))
    return PairedDifference(d, (d - z * se, d + z * se), p, b, c)


def quantile_interval(values: np.ndarray, q: float, level: float) -> tuple[float, float, float]:
    """A quantile with its distribution-free (order statistic, binomial) interval."""
    s = np.sort(values)
    n = s.size
    est = float(np.quantile(s, q))
    a = (1 - level) / 2
    lo_rank = int(stats.binom.ppf(a, n, q))
    hi_rank = int(stats.binom.ppf(1 - a, n, q)) + 1
    lo = float(s[max(lo_rank - 1, 0)])
    hi = float(s[min(hi_rank - 1, n - 1)])
    return est, lo, hi


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (controls the family-wise error rate, any dependence)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]


# -- ROC AUC -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AucInterval:
    """ROC AUC's studentised bootstrap on the logit scale, with DeLong's standard error.

    ``t`` holds, per resample, (logit AUC* - logit AUC) / se*, with se* DeLong's standard error
    of that resample's AUC moved to the logit scale (delta method); a resample ranking every
    positive above every negative has t = +inf (and -inf for the reverse). Limits at one-sided
    ``alpha``: logit AUC - t[1 - alpha] se and logit AUC - t[alpha] se, back-transformed. The
    bootstrap t carries what the normal quantile misses near 1 and at small n: the skew, and
    the standard error shrinking with the estimate. Near 1 both are still short of the truth
    (the rows that cost AUC are few, and a sample sees too few of them); so each limit takes
    the wider of the bootstrap t and Student's t on Satterthwaite's degrees of freedom of
    DeLong's variance (few rows carrying the variance give few degrees of freedom).

    When the sample itself is perfectly ranked (or more than alpha of its resamples are), no
    standard error exists; the lower limit is then ``alpha ** (1 / smallest_class)``: with true AUC
    L, a share 1 - L of one class scored past the whole other class leaves a sample perfectly
    ranked with probability L ** size of that class, so anything above alpha ** (1 / size)
    cannot be told from a perfect sample at level alpha.
    """

    estimate: float
    se: float
    t: np.ndarray  # sorted, +-inf allowed
    smallest_class: int
    df: float = float("inf")  # Satterthwaite degrees of freedom of DeLong's variance

    def limits(self, alpha: float) -> tuple[float, float]:
        """Lower and upper limit, each one-sided at ``alpha``."""
        est, m = self.estimate, max(self.smallest_class, 1)
        perfect_lo, perfect_hi = alpha ** (1 / m), 1 - alpha ** (1 / m)
        if not np.isfinite(est):
            return (float("nan"), float("nan"))
        if self.t.size == 0 or not 0 < est < 1 or not self.se > 0:
            if est >= 1:
                return (perfect_lo, 1.0)
            if est <= 0:
                return (0.0, perfect_hi)
            return (0.0, 1.0)
        g, s = float(logit(est)), self.se / (est * (1 - est))
        student = float(stats.t.ppf(1 - alpha, self.df))
        t_hi = max(float(np.quantile(self.t, 1 - alpha, method="higher")), student)
        t_lo = min(float(np.quantile(self.t, alpha, method="lower")), -student)
        lo = perfect_lo if t_hi == np.inf else float(expit(g - t_hi * s))
        hi = perfect_hi if t_lo == -np.inf else float(expit(g - t_lo * s))
        return (lo, hi)


def satterthwaite_df(psi: np.ndarray, groups: np.ndarray) -> float:
    """Degrees of freedom of ``sum(psi**2)`` read as a sum of independent terms per group
    (rows of a class): 2 V**2 / Var(V), with Var(V) estimated within each group."""
    u = psi.astype(np.float64) ** 2
    total = u.sum()
    spread = 0.0
    for g in np.unique(groups):
        ug = u[groups == g]
        if ug.size > 1:
            spread += ug.size * ug.var(ddof=1)
    if not total > 0:
        return float("nan")
    return float(2 * total * total / spread) if spread > 0 else float("inf")


def auc_interval(
    estimate: float,
    se: float,
    replicates: np.ndarray,
    replicate_se: np.ndarray,
    smallest_class: int,
    df: float = float("inf"),
) -> AucInterval:
    """Build the studentised bootstrap of one AUC from its resamples (NaN resamples dropped)."""
    keep = np.isfinite(replicates)
    a, sa = replicates[keep], replicate_se[keep]
    t = np.empty(a.size)
    if 0 < estimate < 1 and se > 0:
        g = logit(estimate)
        inner = (a > 0) & (a < 1) & (sa > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t[inner] = (logit(a[inner]) - g) * (a[inner] * (1 - a[inner])) / sa[inner]
        flat = ~inner
        t[flat] = np.sign(a[flat] - estimate) * np.inf
        t[flat & (a == estimate)] = 0.0
    else:
        t = np.empty(0)
    df = float(df) if np.isfinite(df) else float("inf")
    return AucInterval(float(estimate), float(se), np.sort(t), int(smallest_class), max(df, 1.0))


def _invert(limit: Callable[[float], float], bound: float, higher_passes: bool) -> float:
    """The one-sided p-value of an interval family: the smallest alpha whose limit clears
    ``bound`` (bisection; the limit moves monotonically with alpha)."""

    def clears(alpha: float) -> bool:
        x = limit(alpha)
        return bool(x >= bound) if higher_passes else bool(x <= bound)

    lo, hi = 1e-9, 1 - 1e-9
    if clears(lo):
        return lo
    if not clears(hi):
        return 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if clears(mid):
            hi = mid
        else:
            lo = mid
    return hi


def auc_pvalue(auc: AucInterval, bound: float, higher_passes: bool) -> float:
    """One-sided p-value of H0 'the true AUC is on the failing side of bound', the inverse
    of the interval: p <= alpha exactly when the limit at alpha clears the bound."""
    side = 0 if higher_passes else 1
    return _invert(lambda a: auc.limits(a)[side], bound, higher_passes)


def auc_difference_interval(
    cand: AucInterval, base: AucInterval, correlation: float, alpha: float
) -> tuple[float, float]:
    """MOVER limits of candidate AUC - baseline AUC from the two AUCs' own limits.

    Zou & Donner's method of variance estimates recovery: each AUC's distance to its own limit
    stands in for its standard error on that side, combined with DeLong's correlation of the
    two AUCs on the same rows. The difference inherits the single limits' asymmetry near 1,
    which a symmetric interval on the difference lacks.
    """
    d = cand.estimate - base.estimate
    lc, uc = cand.limits(alpha)
    lb, ub = base.limits(alpha)
    r = float(np.clip(correlation, -1.0, 1.0)) if np.isfinite(correlation) else 0.0
    a, b = cand.estimate - lc, ub - base.estimate
    lo = d - np.sqrt(max(a * a + b * b - 2 * r * a * b, 0.0))
    a, b = uc - cand.estimate, base.estimate - lb
    hi = d + np.sqrt(max(a * a + b * b - 2 * r * a * b, 0.0))
    return (float(lo), float(hi))


def auc_difference_pvalue(
    cand: AucInterval, base: AucInterval, correlation: float, bound: float, higher_passes: bool
) -> float:
    """One-sided p-value of H0 'the difference is on the failing side of bound' (MOVER inverted)."""
    side = 0 if higher_passes else 1
    return _invert(
        lambda a: auc_difference_interval(cand, base, correlation, a)[side], bound, higher_passes
    )
