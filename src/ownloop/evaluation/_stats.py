"""Interval and test machinery: Wilson, vectorised bootstrap weights, paired McNemar, Holm.

Every decision is one-sided at ``alpha = (1 - level) / 2``, so a two-sided interval at
``level`` and the decision agree: the bound is met exactly when the interval's limit is on
the passing side of it (the usual non-inferiority convention: a 95% interval, 2.5% one-sided).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ownloop.intervals import wilson_interval, z_for

__all__ = [
    "BootstrapPlan",
    "holm",
    "paired_accuracy_difference",
    "percentile_interval",
    "quantile_interval",
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
