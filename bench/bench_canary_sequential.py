"""Rollout analysis under repeated looks: false aborts and power, sequential vs fixed-sample.

    .venv/bin/python bench/bench_canary_sequential.py [--rollouts 1000] [--rate 40] [--tick 5]

Simulates whole rollouts as a real one runs them: a shadow stage (every request mirrored,
paired) then canary steps 5%, 25%, 50% (100% promotes), traffic of ``--rate`` requests per
second, an analysis every ``--tick`` seconds, each stage ending with PASS once both arms hold the
plan's minimum sample (2,000 rows) unless a guardrail FAILS first. A rollout is aborted when any
guardrail FAILS at any look of any stage. The guardrails simulated are those whose figure is a
mean (error rate, low-confidence share, mean confidence, estimated accuracy, realised accuracy
on the labelled 30% of rows, prediction divergence between the two classes, shadow
disagreement); the latency p99 bound is checked in tests/test_sequential.py. Each guardrail's
family level is the one ``analyse_rollout`` uses (``family_for``: 5% / (guardrails x stages)),
and the bounds come from the same functions (``ownloop.deploy._sequential``).

Methods, side by side on the same simulated rollouts:
- sequential: the normal-mixture confidence sequence at the family level (what ownloop does);
- fixed 5% per look: a fixed-sample one-sided 95% bound per guardrail at every look (the
  Kayenta-style check of each figure at its own level, here applied to the growing window);
- fixed, family level: the fixed-sample bound at the same Bonferroni level as the sequential
  one, so only the repeated looks inflate it.

Scenarios: the candidate equal to stable; every guardrail exactly at its allowed harm (the
worst case of the 5% guarantee); and, one guardrail at a time, worse by its stated margin.
Monte-Carlo sd of a rate p over R rollouts: sqrt(p (1 - p) / R) (0.7 points at 5%, R = 1,000).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import numpy as np

from ownloop.deploy import _sequential as sq
from ownloop.deploy._analysis import Family, Limits, family_for

MIN_SAMPLES = 2000
STEPS = (5.0, 25.0, 50.0, 100.0)
LABELLED = 0.3  # share of rows whose label has arrived
PAIR_CORR = 0.8  # shadow: correlation of the two versions' per-row figures


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "binary" or "normal"
    base: float  # stable's share or mean
    sd: float  # per-row sd (normal)
    bound: float  # allowed harm
    sign: float  # +1: higher hurts; -1: lower hurts
    margin: float  # the harm the power is stated at
    two_sided: bool = False  # divergence: |difference of the class share|
    shadow_only: bool = False
    labelled: float = 1.0
    never_paired: bool = False  # the estimate: each version's own figure, compared unpaired


LIM = Limits()
METRICS = (
    Metric("error_rate", "binary", 0.01, 0, LIM.error_rate, 1, 0.03),
    Metric("low_confidence_share", "binary", 0.20, 0, LIM.low_confidence, 1, 0.10),
    Metric("mean_confidence", "normal", 0.80, 0.12, LIM.mean_confidence, -1, 0.07),
    # the estimate's standard error in analyse_rollout is the monitor's sampling sd of the
    # realised accuracy, sqrt(p (1 - p) / n) per version, so it is simulated with that spread
    Metric(
        "estimated_accuracy",
        "normal",
        0.85,
        0.36,
        LIM.estimated_accuracy,
        -1,
        0.06,
        never_paired=True,
    ),
    Metric(
        "realised_accuracy", "binary", 0.85, 0, LIM.realised_accuracy, -1, 0.12, labelled=LABELLED
    ),
    Metric("prediction_divergence", "binary", 0.30, 0, LIM.divergence, 1, 0.17, two_sided=True),
    Metric("shadow_disagreement", "binary", 0.05, 0, LIM.disagreement, 1, 0.26, shadow_only=True),
)
METHODS = ("sequential", "fixed 5% per look", "fixed, family level")


@dataclass(frozen=True)
class Stage:
    name: str
    weight: float  # candidate's share of requests, percent (shadow: every request, paired)
    paired: bool
    family: Family


def stages(limits: Limits) -> list[Stage]:
    out = [
        Stage(
            "shadow",
            100.0,
            True,
            family_for(limits, steps=STEPS, shadow=True, min_samples=MIN_SAMPLES, paired=True),
        )
    ]
    fam = family_for(limits, steps=STEPS, shadow=True, min_samples=MIN_SAMPLES, paired=False)
    out += [Stage(f"canary {w:g}%", w, False, fam) for w in STEPS if w < 100]
    return out


def _factor(method: str, v: np.ndarray, fam: Family, alpha_scale: float) -> np.ndarray:
    alpha = fam.alpha * alpha_scale
    if method == "sequential":
        return np.asarray(sq.mixture_factor(v, fam.rho, alpha))
    if method == "fixed 5% per look":
        return np.full_like(v, sq.fixed_factor(0.05 * alpha_scale))
    return np.full_like(v, sq.fixed_factor(alpha))


class _Arm:
    """Cumulative sufficient statistics of one metric in one stage, for R rollouts."""

    def __init__(self, r: int) -> None:
        self.n_s = np.zeros(r)
        self.n_c = np.zeros(r)
        self.sum_s = np.zeros(r)
        self.sum_c = np.zeros(r)
        self.plus = np.zeros(r)  # paired binary: candidate 1, stable 0
        self.minus = np.zeros(r)


def _draw(
    rng: np.random.Generator, m: Metric, harm: float, st: Stage, arm: _Arm, n_s: int, n_c: int
) -> None:
    r = arm.n_s.size
    cand = m.base + m.sign * harm
    if m.shadow_only:  # one share: how often the two answers differ
        k = rng.binomial(n_c, min(max(m.base + harm, 0), 1), r)
        arm.n_c += n_c
        arm.sum_c += k
        return
    if st.paired and m.never_paired:
        st = replace(st, paired=False)
        n_s = n_c
    if st.paired and m.kind == "binary":
        # independent 0/1 per arm on the same request: the discordant cells
        p_plus, p_minus = cand * (1 - m.base), m.base * (1 - cand)
        counts = rng.multinomial(n_c, [p_plus, p_minus, 1 - p_plus - p_minus], r)
        arm.n_c += n_c
        arm.plus += counts[:, 0]
        arm.minus += counts[:, 1]
        return
    if st.paired:  # normal, paired: differences with the arms' correlation
        sd_d = m.sd * np.sqrt(2 * (1 - PAIR_CORR))
        arm.n_c += n_c
        arm.sum_c += rng.normal(n_c * (cand - m.base), sd_d * np.sqrt(n_c), r)
        return
    arm.n_s += n_s
    arm.n_c += n_c
    if m.kind == "binary":
        arm.sum_s += rng.binomial(n_s, m.base, r)
        arm.sum_c += rng.binomial(n_c, cand, r)
    else:
        arm.sum_s += rng.normal(n_s * m.base, m.sd * np.sqrt(n_s), r)
        arm.sum_c += rng.normal(n_c * cand, m.sd * np.sqrt(n_c), r)


def _lower_harm(m: Metric, st: Stage, arm: _Arm, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The harm's lower bound per rollout and whether the metric has its minimum sample."""
    fam = st.family
    scale = 0.5 if m.two_sided else 1.0  # two classes: Bonferroni over both class shares
    least = LIM.min_labels if m.labelled < 1 else LIM.min_rows
    if m.never_paired:
        st = replace(st, paired=False)
    if m.shadow_only:
        n, mean, var = sq.bernoulli_moments(arm.sum_c, arm.n_c)
        r = np.sqrt(var / n) * _factor(method, n, fam, scale)
        return mean - r, n >= least
    if st.paired:
        if m.kind == "binary":
            n, mean, var = sq.paired_binary_moments(arm.plus, arm.minus, arm.n_c)
        else:
            sd_d = m.sd * np.sqrt(2 * (1 - PAIR_CORR))
            n, mean, var = arm.n_c, arm.sum_c / arm.n_c, np.full_like(arm.n_c, sd_d**2)
        r = np.sqrt(var / n) * _factor(method, n, fam, scale)
        d = m.sign * mean
    else:
        if m.kind == "binary":
            a = sq.bernoulli_moments(arm.sum_c, arm.n_c)
            b = sq.bernoulli_moments(arm.sum_s, arm.n_s)
        else:
            a = (arm.n_c, arm.sum_c / arm.n_c, np.full_like(arm.n_c, m.sd**2))
            b = (arm.n_s, arm.sum_s / arm.n_s, np.full_like(arm.n_s, m.sd**2))
        v = sq.effective_size(arm.n_c, arm.n_s)
        diff, _, r = sq.difference_bound(a, b, factor=_factor(method, v, fam, scale))
        d = m.sign * diff
        n = np.minimum(arm.n_c, arm.n_s)
    if m.two_sided:
        d = np.abs(d)
    return d - r, n >= least


def simulate(
    rng: np.random.Generator, rollouts: int, harms: dict[str, float], rate: float, tick: float
) -> dict[str, tuple[float, int]]:
    """Abort rate per method over ``rollouts`` rollouts, and the looks a rollout makes."""
    aborted = {method: np.zeros(rollouts, dtype=bool) for method in METHODS}
    looks_total = 0
    per_look = rate * tick
    for st in stages(LIM):
        n_c = round(per_look * st.weight / 100)
        n_s = 0 if st.paired else round(per_look) - n_c
        arms = {m.name: _Arm(rollouts) for m in METRICS}
        looks = _looks(st, per_look)
        looks_total += looks
        for _ in range(looks):
            for m in METRICS:
                if m.shadow_only and not st.paired:
                    continue
                labelled = (n_s, n_c) if m.labelled == 1 else _labelled(rng, n_s, n_c, m)
                _draw(rng, m, harms.get(m.name, 0.0), st, arms[m.name], *labelled)
                for method in METHODS:
                    lower, enough = _lower_harm(m, st, arms[m.name], method)
                    aborted[method] |= enough & (lower > m.bound)
    return {method: (float(a.mean()), looks_total) for method, a in aborted.items()}


def _looks(st: Stage, per_look: float) -> int:
    """Looks until both arms hold the minimum sample (the stage's PASS)."""
    n_c = round(per_look * st.weight / 100)
    n_s = 0 if st.paired else round(per_look) - n_c
    return int(np.ceil(MIN_SAMPLES / (min(n_c, n_s) if n_s else n_c)))


def _labelled(rng: np.random.Generator, n_s: int, n_c: int, m: Metric) -> tuple[int, int]:
    return round(n_s * m.labelled), round(n_c * m.labelled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--tick", type=float, default=5.0, help="seconds between analyses")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    per_look = args.rate * args.tick
    plan = ", ".join(f"{st.name} {_looks(st, per_look)} looks" for st in stages(LIM))
    shadow, canary = stages(LIM)[0].family, stages(LIM)[1].family
    print(
        f"{args.rollouts:,} rollouts; {args.rate:g} requests/s, a look every {args.tick:g} s "
        f"({per_look:g} requests); minimum sample {MIN_SAMPLES:,} per arm per stage; {plan}; "
        f"family 5% over {canary.guardrails} guardrails ({shadow.guardrails} in shadow) x "
        f"{shadow.stages} stages: level per guardrail {shadow.alpha:.2g} in shadow, "
        f"{canary.alpha:.2g} in canary"
    )
    scenarios: list[tuple[str, dict[str, float]]] = [
        ("equal to stable (shadow disagreement 5%)", {}),
        ("every guardrail exactly at its allowed harm", {m.name: _at_bound(m) for m in METRICS}),
    ]
    scenarios += [
        (
            f"{m.name} worse by {_amount(m, m.margin)} (allowed {_amount(m, m.bound)})",
            {m.name: _at(m, m.margin)},
        )
        for m in METRICS
    ]
    print(f"{'scenario':<62} {'looks':>5}  " + "  ".join(f"{x:>20}" for x in METHODS))
    for name, harms in scenarios:
        rates = simulate(rng, args.rollouts, harms, args.rate, args.tick)
        looks = next(iter(rates.values()))[1]
        cells = "  ".join(f"{rates[x][0]:>20.1%}" for x in METHODS)
        print(f"{name:<62} {looks:>5}  {cells}")
    print(f"({time.perf_counter() - t0:.1f} s)")


def _at_bound(m: Metric) -> float:
    return m.bound - m.base if m.shadow_only else m.bound


def _at(m: Metric, harm: float) -> float:
    return harm - m.base if m.shadow_only else harm


def _amount(m: Metric, x: float) -> str:
    return f"{x:.0%}" if m.shadow_only else f"{x * 100:.0f} pt"


if __name__ == "__main__":
    main()
