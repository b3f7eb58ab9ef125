"""Always-valid (sequential) bounds for a rollout's guardrails, looked at again and again.

A fixed-sample interval holds at one pre-planned look; checked at every tick of a rollout, its
error rate grows with the number of looks (a canary equal to stable is aborted far more often
than the nominal 5%). These bounds are *confidence sequences*: with probability at least
``1 - alpha`` they hold at every look at once, however many looks are made and whenever one
stops. The boundary is Robbins' normal mixture (Howard, Ramdas, McAuliffe and Sekhon,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021)
applied to the standardised estimate, i.e. an asymptotic confidence sequence (Waudby-Smith,
Arbour, Sinha, Kennedy and Ramdas, "Time-uniform central limit theory and asymptotic confidence
sequences"): with intrinsic time ``v`` (the effective sample size) the estimate lies within

    se * sqrt((v + rho) / v * log((v + rho) / (rho * alpha**2)))

of the truth at every ``v``, both sides together with probability ``1 - alpha`` (the mixture is
symmetric, so each side alone holds with at least ``1 - alpha``: conservative when only one side
decides). ``rho`` sets the sample size at which the boundary is tightest; it is chosen once from
the plan's minimum sample, never from the data.

Functions take plain numbers or numpy arrays (the bench evaluates thousands of rollouts at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "Bound",
    "bernoulli_moments",
    "difference_bound",
    "effective_size",
    "fixed_factor",
    "mixture_factor",
    "moments",
    "one_sample",
    "paired_binary_moments",
    "proportion_bound",
    "quantile_bounds",
    "rho_for",
    "unpaired",
]


def rho_for(v_star: float, alpha: float) -> float:
    """The mixture parameter whose boundary is (nearly) tightest at intrinsic time ``v_star``.

    Howard et al. (2021): ``rho = v* / (2 log(1/alpha) + log(1 + 2 log(1/alpha)))``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    two_log = 2 * math.log(1 / alpha)
    return max(float(v_star), 1.0) / (two_log + math.log(1 + two_log))


def mixture_factor(v: Any, rho: float, alpha: float) -> Any:
    """How many standard errors the sequential bound lies from the estimate at intrinsic time ``v``.

    Both sides together at level ``alpha``, valid over all ``v`` at once; ``inf`` where ``v`` is 0.
    """
    v = np.asarray(v, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt((v + rho) / v * np.log((v + rho) / (rho * alpha**2)))
    return np.where(v > 0, out, np.inf)


def fixed_factor(alpha: float) -> float:
    """The one-sided fixed-sample normal quantile: valid at ONE look only (the naive method)."""
    return float(stats.norm.ppf(1 - alpha))


@dataclass(frozen=True)
class Bound:
    """An estimate with its sequential bounds (together at the stated level)."""

    estimate: float
    lower: float
    upper: float
    se: float
    v: float  # intrinsic time: the effective sample size


def _bernoulli_var(mean: Any, n: Any) -> Any:
    """Variance of a 0/1 figure with a Laplace-smoothed share, so 0 of n still has spread."""
    p = (np.asarray(mean, dtype=float) * n + 1) / (np.asarray(n, dtype=float) + 2)
    return p * (1 - p)


def bernoulli_moments(k: Any, n: Any) -> tuple[Any, Any, Any]:
    """Count, share and smoothed variance of ``k`` ones in ``n`` 0/1 values (arrays allowed)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(k, dtype=float) / n
    return n, mean, _bernoulli_var(mean, n)


def paired_binary_moments(plus: Any, minus: Any, n: Any) -> tuple[Any, Any, Any]:
    """Count, mean and variance of paired differences of 0/1 values (each -1, 0 or +1).

    ``plus`` rows are 1 for the first arm only, ``minus`` for the second only. The variance is at
    least the smoothed share of discordant rows, so no discordance still leaves a width.
    """
    n = np.asarray(n, dtype=float)
    plus = np.asarray(plus, dtype=float)
    minus = np.asarray(minus, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (plus - minus) / n
        var = (plus + minus) / n - mean**2
        var = np.maximum(var * n / np.maximum(n - 1, 1), (plus + minus + 1) / (n + 2))
    return n, mean, var


def moments(x: np.ndarray, *, binary: bool = False) -> tuple[int, float, float]:
    """Count, mean and variance of ``x`` (a 0/1 figure gets the smoothed Bernoulli variance)."""
    n = int(x.size)
    if n == 0:
        return 0, math.nan, math.nan
    mean = float(np.mean(x))
    if binary:
        return n, mean, float(_bernoulli_var(mean, n))
    return n, mean, float(np.var(x, ddof=1)) if n > 1 else math.inf


def difference_bound(
    a: tuple[Any, Any, Any],
    b: tuple[Any, Any, Any],
    *,
    factor: Any,
) -> tuple[Any, Any, Any]:
    """Estimate, standard error and bounds' radius of ``mean(a) - mean(b)`` for two unpaired arms.

    ``a`` and ``b`` are (count, mean, variance); ``factor`` is a number of standard errors (from
    :func:`mixture_factor` at the effective size ``n_a n_b / (n_a + n_b)``, or
    :func:`fixed_factor`). Paired rows use :func:`one_sample` on their differences instead.
    """
    n_a, m_a, v_a = (np.asarray(x, dtype=float) for x in a)
    n_b, m_b, v_b = (np.asarray(x, dtype=float) for x in b)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(v_a / n_a + v_b / n_b)
    return m_a - m_b, se, se * factor


def effective_size(n_a: Any, n_b: Any) -> Any:
    """The intrinsic time of an unpaired comparison: ``n_a n_b / (n_a + n_b)`` (0 if either is 0)."""
    n_a = np.asarray(n_a, dtype=float)
    n_b = np.asarray(n_b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = n_a * n_b / (n_a + n_b)
    return np.where((n_a > 0) & (n_b > 0), out, 0.0)


def unpaired(
    a: tuple[int, float, float], b: tuple[int, float, float], *, rho: float, alpha: float
) -> Bound:
    """Sequential bounds of ``mean(a) - mean(b)`` for two unpaired arms given their moments."""
    v = float(effective_size(a[0], b[0]))
    factor = float(mixture_factor(v, rho, alpha))
    d, se, r = (float(x) for x in difference_bound(a, b, factor=factor))
    return _bound(d, se, r, v)


def one_sample(m: tuple[int, float, float], *, rho: float, alpha: float) -> Bound:
    """Sequential bounds of a mean (e.g. of paired differences) given its moments."""
    n, mean, var = m
    factor = float(mixture_factor(n, rho, alpha))
    se = math.sqrt(var / n) if n else math.inf
    return _bound(mean, se, se * factor, float(n))


def _bound(d: float, se: float, r: float, v: float) -> Bound:
    if not math.isfinite(r):
        return Bound(d, -math.inf, math.inf, se, v)
    return Bound(d, d - r, d + r, se, v)


def proportion_bound(k: int, n: int, *, rho: float, alpha: float) -> Bound:
    """Sequential bounds of a share ``k / n`` (smoothed variance, so ``0 / n`` has a width)."""
    if n == 0:
        return Bound(math.nan, -math.inf, math.inf, math.inf, 0.0)
    return one_sample((n, k / n, float(_bernoulli_var(k / n, n))), rho=rho, alpha=alpha)


def quantile_bounds(x: np.ndarray, p: float, *, rho: float, alpha: float) -> tuple[float, float]:
    """Sequential lower and upper bounds of the ``p`` quantile of ``x``'s distribution.

    The share of values at or below the true quantile is a mean of 0/1 values with mean ``p``;
    its sequential radius ``r`` turns into order statistics at ``p - r`` and ``p + r``
    (Howard and Ramdas, "Sequential estimation of quantiles with applications to A/B testing and
    best-arm identification", Bernoulli 2022). Both hold together with ``1 - alpha``. Outside the
    data: ``-inf`` / ``inf`` (too few values to bound that side).
    """
    n = int(x.size)
    if n == 0:
        return -math.inf, math.inf
    r = float(mixture_factor(n, rho, alpha)) * math.sqrt(p * (1 - p) / n)
    s = np.sort(x)
    lo_rank = math.floor(n * (p - r))  # 1-based rank of the lower order statistic
    hi_rank = math.ceil(n * (p + r))
    lower = float(s[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    upper = float(s[hi_rank - 1]) if hi_rank <= n else math.inf
    return lower, upper
