"""Guardrail analysis of a rollout: candidate against stable on the same window, looked at again
and again while data arrives.

Each guardrail compares one figure between the candidate's arm (canary or shadow) and stable on
the rows logged since the step started. Its *harm* is the difference in the direction that hurts
(e.g. candidate error rate minus stable's); its ``bound`` is the harm allowed. The guardrail
FAILS when the sequential lower bound of the harm exceeds the bound: harm beyond the allowance is
shown, with a confidence sequence (``ownloop.deploy._sequential``) that holds at every look of the
rollout at once. The family error is split by Bonferroni over the guardrails and the analysed
stages (shadow and each canary step below 100%), so a candidate no worse than the bounds is
aborted in at most ``family_alpha`` (5%) of rollouts, whatever the number of looks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from ownloop import predlog
from ownloop.config import Config
from ownloop.deploy import _sequential as sq
from ownloop.deploy._model import Guardrail, Outcome, Rollout, State, StepAnalysis, Strategy
from ownloop.monitoring import Monitor
from ownloop.registry import Registry

__all__ = [
    "Arm",
    "EstimateFigure",
    "Family",
    "Limits",
    "analyse_rollout",
    "family_for",
    "judge",
    "step_outcome",
]

LOW_CONFIDENCE = 0.6  # the monitor's low-confidence threshold, so both report the same share
_COLUMNS = ["prediction_id", "request_id", "status", "latency_s", "confidence", "prediction"]
_BINS = 10  # regression: prediction distributions compared on the stable arm's deciles


@dataclass(frozen=True)
class Limits:
    """The allowed harm per guardrail and the minimum samples; defaults and why in docs/deploy.md."""

    error_rate: float = 0.01  # +1 point of errors or refusals
    latency_ratio: float = 0.25  # p99 25% slower ...
    latency_floor_s: float = 0.002  # ... and at least 2 ms slower (sub-ms jitter is not harm)
    divergence: float = 0.10  # total variation: 10% of predictions would have to move class
    mean_confidence: float = 0.05  # mean confidence 5 points lower
    low_confidence: float = 0.05  # share of low-confidence answers 5 points higher
    disagreement: float = 0.20  # shadow: the candidate disagrees on 20% of requests
    estimated_accuracy: float = 0.02  # estimated accuracy 2 points lower
    realised_accuracy: float = 0.02  # realised accuracy 2 points lower
    min_rows: int = 100  # rows per arm before a guardrail may decide (the normal limit holds)
    min_latency_rows: int = 200  # a p99 needs a tail: 2 rows above it
    min_labels: int = 50  # labelled rows per arm before realised accuracy decides
    family_alpha: float = 0.05  # false-abort rate over the whole rollout, all guardrails


@dataclass(frozen=True)
class Family:
    """How the family error is shared: level per guardrail and the mixture's tuning."""

    alpha: float  # level of each guardrail's bounds (both sides together)
    rho: float
    guardrails: int
    stages: int
    paired: bool

    def describe(self) -> str:
        return (
            f"sequential bound (normal-mixture confidence sequence), level {self.alpha:.2g} per "
            f"guardrail: 5% shared over {self.guardrails} guardrails x {self.stages} stage(s)"
        )


def family_for(
    limits: Limits, *, steps: Sequence[float], shadow: bool, min_samples: int, paired: bool
) -> Family:
    """The per-guardrail level for a plan: ``family_alpha`` / (guardrails x analysed stages)."""
    stages = sum(1 for s in steps if s < 100) + (1 if shadow else 0)
    guardrails = 8 if paired else 7  # shadow adds the agreement rate
    alpha = limits.family_alpha / (guardrails * max(stages, 1))
    return Family(alpha, sq.rho_for(max(min_samples, 2) / 2, alpha), guardrails, stages, paired)


@dataclass(frozen=True)
class EstimateFigure:
    """A label-free accuracy estimate of one version on the window (from ``ownloop.monitoring``)."""

    value: float
    se: float
    n: int


@dataclass(frozen=True)
class Arm:
    """One arm's rows, aligned with the other arm's when paired (shadow); NaN where missing."""

    failed: np.ndarray  # 1.0 for status error or refused
    latency: np.ndarray  # seconds, ok rows
    confidence: np.ndarray
    prediction: np.ndarray  # object: predicted class (or value as text), None when not ok
    correct: np.ndarray  # 1.0 / 0.0 on labelled ok rows
    estimate: EstimateFigure | None = None

    @property
    def n(self) -> int:
        return int(self.failed.size)


# -- the guardrails -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Figure:
    """What one guardrail computed, before its outcome and text."""

    name: str
    stable: float | None
    candidate: float | None
    harm: sq.Bound
    bound: float
    n_stable: int
    n_candidate: int
    min_samples: int
    unit: str  # "pt" (shares), "x" (ratio), "" (plain)


def _mean_harm(
    s: np.ndarray, c: np.ndarray, fam: Family, sign: float, binary: bool
) -> tuple[sq.Bound, int, int, float | None, float | None]:
    """Sequential bounds of ``sign * (mean(c) - mean(s))``, paired on rows where both exist."""
    if fam.paired:
        both = np.isfinite(s) & np.isfinite(c)
        d = sign * (c[both] - s[both])
        n, mean, var = sq.moments(d)
        if binary and n:
            m = sq.paired_binary_moments(np.sum(d > 0), np.sum(d < 0), n)
            n, mean, var = n, float(m[1]), float(m[2])
        b = sq.one_sample((n, mean, var), rho=fam.rho, alpha=fam.alpha)
        return b, n, n, _mean(s[both]), _mean(c[both])
    s, c = s[np.isfinite(s)], c[np.isfinite(c)]
    ms, mc = sq.moments(s, binary=binary), sq.moments(c, binary=binary)
    b = sq.unpaired(mc, ms, rho=fam.rho, alpha=fam.alpha)
    if sign < 0:
        b = sq.Bound(-b.estimate, -b.upper, -b.lower, b.se, b.v)
    return b, ms[0], mc[0], _mean(s), _mean(c)


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if x.size else None


def _error_rate(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    b, ns, nc, vs, vc = _mean_harm(s.failed, c.failed, fam, 1.0, True)
    return _Figure("error_rate", vs, vc, b, lim.error_rate, ns, nc, lim.min_rows, "pt")


def _mean_confidence(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    b, ns, nc, vs, vc = _mean_harm(s.confidence, c.confidence, fam, -1.0, False)
    return _Figure("mean_confidence", vs, vc, b, lim.mean_confidence, ns, nc, lim.min_rows, "pt")


def _low_share(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), (x < LOW_CONFIDENCE).astype(float), np.nan)


def _low_confidence(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    b, ns, nc, vs, vc = _mean_harm(_low_share(s.confidence), _low_share(c.confidence), fam, 1, True)
    return _Figure(
        "low_confidence_share", vs, vc, b, lim.low_confidence, ns, nc, lim.min_rows, "pt"
    )


def _realised(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    b, ns, nc, vs, vc = _mean_harm(s.correct, c.correct, fam, -1.0, True)
    lim_n = lim.min_labels
    return _Figure("realised_accuracy", vs, vc, b, lim.realised_accuracy, ns, nc, lim_n, "pt")


def _estimated(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    es, ec = s.estimate, c.estimate
    if es is None or ec is None:
        nan = sq.Bound(math.nan, -math.inf, math.inf, math.inf, 0.0)
        ns, nc = es.n if es else 0, ec.n if ec else 0
        return _Figure(
            "estimated_accuracy",
            None,
            None,
            nan,
            lim.estimated_accuracy,
            ns,
            nc,
            lim.min_rows,
            "pt",
        )
    # each estimate comes with its own standard error: an unpaired comparison of two means
    v = float(sq.effective_size(es.n, ec.n))
    r = math.sqrt(es.se**2 + ec.se**2) * float(sq.mixture_factor(v, fam.rho, fam.alpha))
    d = es.value - ec.value
    b = sq.Bound(d, d - r, d + r, math.sqrt(es.se**2 + ec.se**2), v)
    lim_n = lim.min_rows
    return _Figure(
        "estimated_accuracy", es.value, ec.value, b, lim.estimated_accuracy, es.n, ec.n, lim_n, "pt"
    )


def _latency(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    """p99 ratio: candidate's lower bound over stable's upper bound, each at half the level."""
    xs, xc = s.latency[np.isfinite(s.latency)], c.latency[np.isfinite(c.latency)]
    half = fam.alpha / 2
    s_lo, s_hi = sq.quantile_bounds(xs, 0.99, rho=fam.rho, alpha=half)
    c_lo, c_hi = sq.quantile_bounds(xc, 0.99, rho=fam.rho, alpha=half)
    ps = float(np.quantile(xs, 0.99)) if xs.size else None
    pc_ = float(np.quantile(xc, 0.99)) if xc.size else None
    ratio = pc_ / ps - 1 if ps and pc_ is not None else math.nan
    lower = _ratio_minus_one(c_lo, s_hi, lim.latency_floor_s)
    upper = _ratio_minus_one(c_hi, s_lo, -math.inf)
    b = sq.Bound(ratio, lower, upper, math.nan, float(sq.effective_size(xs.size, xc.size)))
    return _Figure(
        "latency_p99", ps, pc_, b, lim.latency_ratio, xs.size, xc.size, lim.min_latency_rows, "x"
    )


def _ratio_minus_one(num: float, den: float, floor: float) -> float:
    """``num / den - 1``; no harm counted while ``num - den`` stays within ``floor`` seconds."""
    if not (math.isfinite(num) and math.isfinite(den)) or den <= 0:
        return -math.inf if num < math.inf else math.inf
    return num / den - 1 if num - den > floor else min(num / den - 1, 0.0)


def _categories(s: Arm, c: Arm) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each arm's predictions as category codes: classes, or the stable arm's deciles (values)."""
    ps = pd.Series(s.prediction, dtype=object)
    pc_ = pd.Series(c.prediction, dtype=object)
    numeric = s.confidence.size and not np.isfinite(s.confidence).any()
    if numeric:
        vs = pd.to_numeric(ps, errors="coerce").to_numpy(dtype=float)
        vc = pd.to_numeric(pc_, errors="coerce").to_numpy(dtype=float)
        edges = (
            np.unique(np.nanquantile(vs, np.linspace(0, 1, _BINS + 1)[1:-1]))
            if np.isfinite(vs).any()
            else np.array([])
        )
        code_s = np.where(np.isfinite(vs), np.searchsorted(edges, vs), -1)
        code_c = np.where(np.isfinite(vc), np.searchsorted(edges, vc), -1)
        return code_s, code_c, [f"bin {i + 1}" for i in range(edges.size + 1)]
    names = sorted(set(ps.dropna().astype(str)) | set(pc_.dropna().astype(str)))
    kinds = pd.CategoricalDtype(names)
    code_s = ps.where(ps.isna(), ps.astype(str)).astype(kinds).cat.codes.to_numpy()
    code_c = pc_.where(pc_.isna(), pc_.astype(str)).astype(kinds).cat.codes.to_numpy()
    return code_s, code_c, names


def _divergence(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    """Total variation between the prediction distributions, bounded class by class."""
    code_s, code_c, names = _categories(s, c)
    k = max(len(names), 1)
    per = replace(fam, alpha=fam.alpha / k)  # simultaneous over the classes (Bonferroni)
    est = low = high = 0.0
    ns = nc = 0
    for i in range(len(names)):
        xs = np.where(code_s >= 0, (code_s == i).astype(float), np.nan)
        xc = np.where(code_c >= 0, (code_c == i).astype(float), np.nan)
        b, ns, nc, _, _ = _mean_harm(xs, xc, per, 1.0, True)
        d, r = abs(b.estimate), b.upper - b.estimate
        est, low, high = est + d / 2, low + max(0.0, d - r) / 2, high + (d + r) / 2
    b = sq.Bound(est, low, min(high, 1.0), math.nan, float(sq.effective_size(ns, nc)))
    return _Figure(
        "prediction_divergence", None, None, b, lim.divergence, ns, nc, lim.min_rows, "pt"
    )


def _agreement(s: Arm, c: Arm, lim: Limits, fam: Family) -> _Figure:
    """Shadow only: the share of requests where the candidate's answer differs from stable's."""
    ps, pc_ = pd.Series(s.prediction, dtype=object), pd.Series(c.prediction, dtype=object)
    both = (ps.notna() & pc_.notna()).to_numpy()
    differ = int((ps[both].astype(str).to_numpy() != pc_[both].astype(str).to_numpy()).sum())
    n = int(both.sum())
    b = sq.proportion_bound(differ, n, rho=fam.rho, alpha=fam.alpha)
    return _Figure(
        "shadow_disagreement",
        None,
        differ / n if n else None,
        b,
        lim.disagreement,
        n,
        n,
        lim.min_rows,
        "pt",
    )


_GUARDRAILS: tuple[Callable[[Arm, Arm, Limits, Family], _Figure], ...] = (
    _error_rate,
    _latency,
    _divergence,
    _mean_confidence,
    _low_confidence,
    _estimated,
    _realised,
)


def judge(stable: Arm, candidate: Arm, limits: Limits, family: Family) -> tuple[Guardrail, ...]:
    """Every guardrail of ``candidate`` against ``stable`` with its outcome and text."""
    checks = _GUARDRAILS + ((_agreement,) if family.paired else ())
    arm = "shadow" if family.paired else "canary"
    return tuple(_guardrail(f(stable, candidate, limits, family), arm, family) for f in checks)


_LABELS = {
    "error_rate": "error rate",
    "latency_p99": "latency p99",
    "prediction_divergence": "prediction divergence (total variation)",
    "mean_confidence": "mean confidence",
    "low_confidence_share": f"low-confidence share (< {LOW_CONFIDENCE})",
    "estimated_accuracy": "estimated accuracy",
    "realised_accuracy": "realised accuracy",
    "shadow_disagreement": "shadow disagreement",
}
_HARM = {
    "error_rate": "candidate minus stable",
    "latency_p99": "candidate over stable, minus 1",
    "prediction_divergence": "share of predictions that would have to move",
    "mean_confidence": "stable minus candidate",
    "low_confidence_share": "candidate minus stable",
    "estimated_accuracy": "stable minus candidate, each against its own reference (cbpe)",
    "realised_accuracy": "stable minus candidate on labelled rows",
    "shadow_disagreement": "share of mirrored requests answered differently",
}


def _value(x: float | None, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 1000:.1f} ms" if unit == "x" else f"{x:.1%}"


def _harm(x: float, unit: str) -> str:
    if math.isinf(x):
        return "unbounded"
    if not math.isfinite(x):
        return "n/a"
    return f"{x:+.0%}" if unit == "x" else f"{x * 100:+.1f} pt"


def _figures(f: _Figure, arm: str) -> str:
    label = _LABELS[f.name]
    if f.stable is None and f.candidate is None:
        return label
    if f.stable is None:
        return f"{label} {_value(f.candidate, f.unit)}"
    return f"{label} {arm} {_value(f.candidate, f.unit)} vs stable {_value(f.stable, f.unit)}"


def _decide(f: _Figure, arm: str) -> tuple[Outcome, str]:
    """The guardrail's outcome and its text with the numbers and the bound in words."""
    h, figures = f.harm, _figures(f, arm)
    sizes = f"n {f.n_candidate:,} {arm} / {f.n_stable:,} stable"
    allowed = _harm(f.bound, f.unit)
    if f.name == "estimated_accuracy" and not math.isfinite(h.estimate):
        return (
            Outcome.INCONCLUSIVE,
            f"{figures}: no label-free estimate for both versions ({sizes})",
        )
    if min(f.n_stable, f.n_candidate) < f.min_samples or not math.isfinite(h.estimate):
        return (
            Outcome.INCONCLUSIVE,
            f"{figures}: too few rows to decide ({sizes}; needs {f.min_samples:,} each)",
        )
    if math.isinf(h.lower) and math.isinf(h.upper):
        return (
            Outcome.INCONCLUSIVE,
            f"{figures} ({sizes}): too few rows in the tail to bound it at the family level",
        )
    if h.lower > f.bound:
        return Outcome.FAIL, (
            f"{figures} ({sizes}): harm {_harm(h.estimate, f.unit)}, at least "
            f"{_harm(h.lower, f.unit)} by the sequential bound, above the allowed {allowed}"
        )
    bounds = f"sequential bounds {_harm(h.lower, f.unit)} to {_harm(h.upper, f.unit)}"
    if h.upper > f.bound:  # harm beyond the allowance is not excluded yet: not a PASS to show
        return Outcome.INCONCLUSIVE, (
            f"{figures} ({sizes}): harm {_harm(h.estimate, f.unit)} ({bounds}): not shown above "
            f"the allowed {allowed}, nor within it yet"
        )
    return Outcome.PASS, (
        f"{figures} ({sizes}): harm {_harm(h.estimate, f.unit)} ({bounds}), within the allowed "
        f"{allowed}"
    )


def _guardrail(f: _Figure, arm: str, fam: Family) -> Guardrail:
    h = f.harm
    outcome, text = _decide(f, arm)
    paired = "paired on the same requests" if fam.paired else "unpaired arms"
    return Guardrail(
        name=f.name,
        outcome=outcome,
        stable=f.stable,
        candidate=f.candidate,
        difference=_finite(h.estimate),
        lower=_finite(h.lower),
        upper=_finite(h.upper),
        bound=f.bound,
        n_stable=f.n_stable,
        n_candidate=f.n_candidate,
        min_samples=f.min_samples,
        method=f"harm = {_HARM[f.name]}; {paired}; {fam.describe()}",
        text=text,
    )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def step_outcome(
    guardrails: Sequence[Guardrail], n_stable: int, n_candidate: int, min_samples: int
) -> tuple[Outcome, tuple[str, ...], str]:
    """FAIL if any guardrail fails; PASS with the step's minimum sample in both arms; else wait.

    PASS certifies: with at least ``min_samples`` rows per arm, no guardrail's sequential bound
    shows harm beyond its allowance. It does not prove the candidate within the bounds; how much
    harm is caught with what sample is measured in bench/bench_canary_sequential.py.
    """
    failed = tuple(g.name for g in guardrails if g.outcome is Outcome.FAIL)
    if failed:
        texts = "; ".join(g.text for g in guardrails if g.outcome is Outcome.FAIL)
        return Outcome.FAIL, failed, f"FAIL: {texts}"
    short = min(n_stable, n_candidate)
    if short >= min_samples:
        checked = tuple(g.name for g in guardrails if g.outcome is Outcome.PASS)
        waiting = [g.name for g in guardrails if g.outcome is Outcome.INCONCLUSIVE]
        rest = f" ({', '.join(waiting)}: not decided yet)" if waiting else ""
        return (
            Outcome.PASS,
            checked,
            f"PASS: {short:,} rows per arm (minimum {min_samples:,}); no guardrail shows harm "
            f"beyond its allowance, {len(checked)} shown within it{rest}",
        )
    return (
        Outcome.INCONCLUSIVE,
        (),
        f"INCONCLUSIVE: {n_candidate:,} candidate and {n_stable:,} stable rows, the step needs "
        f"{min_samples:,} in each; no guardrail shows harm beyond its allowance so far",
    )


# -- reading the window ---------------------------------------------------------------------


WRITE_MARGIN = timedelta(minutes=5)  # clock differences between servers, and flush delays


def _read(
    config: Config,
    model: str,
    version: int,
    arm: str,
    window: tuple[datetime, datetime],
    notes: list[str],
) -> pd.DataFrame:
    """Only the rows of one arm and version since the step started, and only the columns used;
    segments that cannot be read are left out and named in ``notes``."""
    read = predlog.read_log(
        config.predictions_dir,
        model,
        version=version,
        arm=arm,
        start=window[0],
        end=window[1],
        columns=_COLUMNS,
        # a segment published well before the step began holds none of its rows; on a busy
        # server a day has tens of thousands of segments, and each tick would open every one
        written_after=window[0] - WRITE_MARGIN,
    )
    notes.extend(f"log segment left out: {skipped}" for skipped in read.skipped)
    return read.table.to_pandas() if read.table.num_rows else pd.DataFrame(columns=_COLUMNS)


def _correct(frame: pd.DataFrame, labels: pa.Table, ids: pd.Series) -> np.ndarray:
    """1.0 / 0.0 where the row is ok and ``ids`` (its prediction ids) have a label, else NaN."""
    out = np.full(len(frame), np.nan)
    if labels.num_rows == 0 or frame.empty:
        return out
    joined = predlog.join_labels(
        pa.table({"prediction_id": pa.array(ids.astype(str).tolist())}), labels
    )
    label = predlog.label_keys(joined.column("label").to_pylist())
    pred = predlog.label_keys(frame["prediction"].tolist())
    has = (label != None) & (pred != None) & (frame["status"] == "ok").to_numpy()  # noqa: E711
    out[has] = (label[has] == pred[has]).astype(float)
    return out


def _arm(frame: pd.DataFrame, labels: pa.Table, ids: pd.Series | None = None) -> Arm:
    ok = (frame["status"] == "ok").to_numpy(dtype=bool)
    status = frame["status"].astype(str)
    latency = pd.to_numeric(frame["latency_s"], errors="coerce").to_numpy(dtype=float)
    confidence = pd.to_numeric(frame["confidence"], errors="coerce").to_numpy(dtype=float)
    prediction = frame["prediction"].to_numpy(dtype=object).copy()
    prediction[~ok] = None
    return Arm(
        failed=status.isin(["error", "refused"]).to_numpy(dtype=float),
        latency=np.where(ok, latency, np.nan),
        confidence=np.where(ok, confidence, np.nan),
        prediction=prediction,
        correct=_correct(frame, labels, frame["prediction_id"] if ids is None else ids),
    )


def _paired(stable: pd.DataFrame, shadow: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stable and shadow rows of the same request, matched by request id and position in it."""

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        position = frame.groupby("request_id", sort=False).cumcount().astype(str)
        return frame.assign(_key=frame["request_id"].astype(str) + "#" + position)

    both = keyed(stable).merge(keyed(shadow), on="_key", suffixes=("", "_c"), sort=False)
    left = both[_COLUMNS]
    right = both[[f"{c}_c" for c in _COLUMNS]].set_axis(_COLUMNS, axis=1)
    return left, right


def _estimate(
    monitor: Monitor, model: str, version: int, arm: str, start: datetime, end: datetime
) -> EstimateFigure | None:
    """The monitor's label-free accuracy estimate of ``version`` on the window, against its own
    reference; its standard error joins the sampling and the calibration map's error."""
    for report in monitor.window_reports(model, start, end, version=version, arm=arm):
        for e in report.estimated:
            if (
                report.version == version
                and e.metric == "accuracy"
                and e.status == "ok"
                and e.value is not None
            ):
                se = math.hypot(e.sampling_sd or 0.0, e.calibration_sd or 0.0)
                return EstimateFigure(e.value, se, e.n) if se > 0 else None
    return None


MIN_ROWS_FLOOR = 30  # below this the normal approximation behind the bounds is not trusted


def _within_plan(limits: Limits, min_samples: int) -> Limits:
    """Guardrail minimums no larger than the step's own (at least 30 rows), so a plan with a
    small minimum sample still has its guardrails decide before the step can PASS."""
    cap = max(min_samples, MIN_ROWS_FLOOR)
    return replace(
        limits,
        min_rows=min(limits.min_rows, cap),
        min_latency_rows=min(limits.min_latency_rows, cap),
        min_labels=min(limits.min_labels, cap),
    )


def _arm_of(rollout: Rollout) -> str:
    if rollout.state is State.SHADOWING or (rollout.state is State.PAUSED and rollout.step < 0):
        return "shadow"
    return "canary"


def _window_arms(
    monitor: Monitor,
    config: Config,
    rollout: Rollout,
    stable: int,
    arm: str,
    window: tuple[datetime, datetime],
    notes: list[str],
) -> tuple[Arm, Arm]:
    """Stable's and the candidate's rows in the window (paired by request in shadow), with
    labels where they have arrived and each version's label-free estimate."""
    stable_rows = _read(config, rollout.model, stable, "stable", window, notes)
    cand_rows = _read(config, rollout.model, rollout.candidate, arm, window, notes)
    if stable_rows.empty and cand_rows.empty:
        empty = _arm(stable_rows, pa.table({}))
        return empty, empty
    labels = predlog.read_labels(config.predictions_dir, rollout.model)
    if arm == "shadow":
        unpaired = len(stable_rows)
        stable_rows, cand_rows = _paired(stable_rows, cand_rows)
        if unpaired > len(stable_rows):
            left = unpaired - len(stable_rows)
            notes.append(f"{left:,} stable row(s) without a shadow score yet are left out")
        # a label names the prediction the client got: the stable row's
        s, c = _arm(stable_rows, labels), _arm(cand_rows, labels, stable_rows["prediction_id"])
    else:
        s, c = _arm(stable_rows, labels), _arm(cand_rows, labels)
    start, end = window
    return (
        replace(s, estimate=_estimate(monitor, rollout.model, stable, "stable", start, end)),
        replace(c, estimate=_estimate(monitor, rollout.model, rollout.candidate, arm, start, end)),
    )


def analyse_rollout(
    registry: Registry,
    monitor: Monitor,
    config: Config,
    rollout: Rollout,
    *,
    now: datetime,
    looks: int,
    limits: Limits | None = None,
) -> StepAnalysis:
    """The candidate's arm (shadow or canary) against stable on the rollout's window up to ``now``.

    ``looks`` is this analysis's number in the rollout (1 for the first), for the sequential bound.
    Reads only the rows logged since the step (or the shadow stage) started.
    """
    arm, start, plan = _arm_of(rollout), rollout.step_started_at, rollout.plan
    lim = _within_plan(limits or Limits(), plan.min_samples)
    notes: list[str] = []
    if rollout.stable is None:
        return _nothing(
            rollout, arm, start, now, looks, "there is no stable version to compare with"
        )
    s, c = _window_arms(monitor, config, rollout, rollout.stable, arm, (start, now), notes)
    fam = family_for(
        lim,
        steps=plan.steps,
        shadow=plan.strategy is Strategy.SHADOW,
        min_samples=plan.min_samples,
        paired=arm == "shadow",
    )
    guardrails = judge(s, c, lim, fam)
    outcome, decided, summary = step_outcome(guardrails, s.n, c.n, plan.min_samples)
    return StepAnalysis(
        outcome=outcome,
        at=now,
        window_start=start,
        window_end=now,
        arm=arm,
        n_stable=s.n,
        n_candidate=c.n,
        guardrails=guardrails,
        decided_by=decided,
        summary=summary,
        looks=looks,
        notes=tuple(notes),
    )


def _nothing(
    rollout: Rollout, arm: str, start: datetime, now: datetime, looks: int, why: str
) -> StepAnalysis:
    return StepAnalysis(
        outcome=Outcome.INCONCLUSIVE,
        at=now,
        window_start=start,
        window_end=now,
        arm=arm,
        n_stable=0,
        n_candidate=0,
        guardrails=(),
        decided_by=(),
        summary=f"INCONCLUSIVE: {why}",
        looks=looks,
        notes=(why,),
    )
