"""Sequential bounds on simulated data with known truth: valid over every look, and the
guardrail family (``judge``) aborts equal candidates rarely and worse ones almost always."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ownloop.deploy import _sequential as sq
from ownloop.deploy._analysis import Arm, Limits, family_for, judge
from ownloop.deploy._model import Outcome

STEPS = (5.0, 25.0, 50.0, 100.0)


def _sd(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def test_mixture_factor_is_wider_than_the_fixed_one_and_grows_slowly() -> None:
    rho = sq.rho_for(1000, 0.05)
    factors = sq.mixture_factor(np.array([10.0, 100.0, 1000.0, 1e5, 1e7]), rho, 0.05)
    assert (factors > sq.fixed_factor(0.05)).all()
    assert factors[2] < factors[0]  # tightest near the tuned size
    assert factors[-1] < 2 * factors[2]  # then grows like sqrt(log v) only
    assert math.isinf(float(sq.mixture_factor(0.0, rho, 0.05)))


def test_rho_for_refuses_a_level_outside_0_1() -> None:
    with pytest.raises(ValueError, match="alpha"):
        sq.rho_for(100, 1.5)


def _crossings(rng: np.random.Generator, factor_of: str, paths: int = 400) -> float:
    """Share of paths whose unpaired bound ever excludes the true difference 0 from above."""
    batch, looks, p = 20, 200, 0.05
    alpha = 0.05
    rho = sq.rho_for(1000, alpha)
    k_a = np.cumsum(rng.binomial(batch, p, (paths, looks)), axis=1)
    k_b = np.cumsum(rng.binomial(batch, p, (paths, looks)), axis=1)
    n = np.arange(1, looks + 1) * batch
    a = sq.bernoulli_moments(k_a, n)
    b = sq.bernoulli_moments(k_b, n)
    v = sq.effective_size(n, n)
    factor = (
        sq.mixture_factor(v, rho, alpha) if factor_of == "sequential" else sq.fixed_factor(alpha)
    )
    d, _, r = sq.difference_bound(a, b, factor=np.broadcast_to(factor, k_a.shape))
    return float(((d - r) > 0).any(axis=1).mean())


def test_the_confidence_sequence_holds_over_200_looks() -> None:
    rate = _crossings(np.random.default_rng(1), "sequential")
    assert rate <= 0.05 + 3 * _sd(0.05, 400)


def test_a_fixed_sample_bound_checked_at_every_look_fails_far_more_often() -> None:
    rate = _crossings(np.random.default_rng(2), "fixed")
    assert rate > 0.15  # nominal 5%, inflated by the 200 looks


def test_quantile_bounds_cover_the_true_p99_at_every_look() -> None:
    rng = np.random.default_rng(3)
    alpha, paths, misses = 0.05, 300, 0
    rho = sq.rho_for(1000, alpha)
    true_p99 = math.exp(math.log(0.004) + 0.4 * 2.3263478740408408)
    for _ in range(paths):
        x = rng.lognormal(math.log(0.004), 0.4, 3000)
        missed = False
        for n in range(100, 3001, 100):
            lo, hi = sq.quantile_bounds(x[:n], 0.99, rho=rho, alpha=alpha)
            missed |= lo > true_p99 or hi < true_p99
        misses += missed
    assert misses / paths <= 2 * alpha + 3 * _sd(2 * alpha, paths)  # two sides, alpha each


def _arm(rng: np.random.Generator, n: int, error: float, conf_shift: float = 0.0) -> Arm:
    failed = (rng.random(n) < error).astype(float)
    ok = failed == 0
    confidence = np.clip(rng.normal(0.8 - conf_shift, 0.1, n), 0.5, 1.0)
    prediction = np.where(rng.random(n) < 0.3, "yes", "no").astype(object)
    prediction[~ok] = None
    return Arm(
        failed=failed,
        latency=np.where(ok, rng.lognormal(math.log(0.004), 0.4, n), np.nan),
        confidence=np.where(ok, confidence, np.nan),
        prediction=prediction,
        correct=np.full(n, np.nan),
    )


def _cut(arm: Arm, n: int) -> Arm:
    return Arm(
        arm.failed[:n], arm.latency[:n], arm.confidence[:n], arm.prediction[:n], arm.correct[:n]
    )


def _rollout_fails(
    rng: np.random.Generator, error: float, conf_shift: float, *, paired: bool = False
) -> bool:
    """One step of 1,500 rows per arm (canary, or shadow: paired), looked at every 150 rows."""
    lim = Limits()
    fam = family_for(lim, steps=STEPS, shadow=paired, min_samples=1500, paired=paired)
    stable = _arm(rng, 1500, 0.01)
    cand = _arm(rng, 1500, error, conf_shift)
    if paired:  # the same requests: the candidate agrees with stable on about 95% of them
        flip = rng.random(1500) < 0.05
        same = np.where(flip, np.where(stable.prediction == "yes", "no", "yes"), stable.prediction)
        same = np.where(np.isnan(cand.latency), None, same)
        cand = Arm(cand.failed, cand.latency, cand.confidence, same.astype(object), cand.correct)
    for n in range(150, 1501, 150):
        if any(g.outcome is Outcome.FAIL for g in judge(_cut(stable, n), _cut(cand, n), lim, fam)):
            return True
    return False


def test_a_canary_equal_to_stable_is_rarely_aborted_by_any_guardrail() -> None:
    rng = np.random.default_rng(4)
    rate = np.mean([_rollout_fails(rng, 0.01, 0.0) for _ in range(150)])
    assert rate <= 0.05 / 3 + 3 * _sd(0.05, 150)  # one of the plan's 3 stages


def test_a_canary_worse_by_the_margin_is_aborted() -> None:
    rng = np.random.default_rng(5)
    errors = np.mean([_rollout_fails(rng, 0.06, 0.0) for _ in range(60)])
    confidence = np.mean([_rollout_fails(rng, 0.01, 0.08) for _ in range(60)])
    assert errors >= 0.95  # +5 points of errors against an allowed +1
    assert confidence >= 0.95  # confidence 8 points lower against an allowed 5


def test_a_canary_exactly_at_the_allowed_error_rate_is_aborted_at_most_at_the_family_rate() -> None:
    rng = np.random.default_rng(6)
    rate = np.mean([_rollout_fails(rng, 0.02, 0.0) for _ in range(150)])
    assert rate <= 0.05 + 3 * _sd(0.05, 150)


def test_a_shadow_equal_to_stable_passes_and_a_worse_one_fails_paired() -> None:
    rng = np.random.default_rng(7)
    equal = np.mean([_rollout_fails(rng, 0.01, 0.0, paired=True) for _ in range(60)])
    worse = np.mean([_rollout_fails(rng, 0.08, 0.0, paired=True) for _ in range(40)])
    assert equal <= 0.05 + 3 * _sd(0.05, 60)
    assert worse >= 0.95
