"""Confidence intervals that evaluation gates and monitors both report."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["wilson_interval", "z_for"]


def z_for(level: float) -> float:
    """The two-sided normal quantile for a confidence ``level`` (1.96 for 0.95)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def wilson_interval(successes: float, n: float, level: float) -> tuple[float, float]:
    """Wilson score interval for a proportion (good coverage even near 0 or 1 and for small n)."""
    if n <= 0:
        return (0.0, 1.0)
    z = z_for(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))
