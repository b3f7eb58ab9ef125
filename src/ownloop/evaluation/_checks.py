"""Running checks. Each check is planned first (what it needs bootstrapped), then judged.

Planning before judging lets every check on the same rows share one set of bootstrap
resamples: the weight matrix is drawn once per dataset (or slice) and every metric of every
check is computed from it, which also makes candidate-vs-baseline comparisons paired.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ownloop import progress
from ownloop.errors import InvalidInputError
from ownloop.evaluation import _stats as st
from ownloop.evaluation._data import Dataset, score_of
from ownloop.evaluation._latency import CLOCKS, measure_budget, measure_ratio
from ownloop.evaluation._metrics import METRICS, Outputs, PreparedMetric, prepare_metric
from ownloop.evaluation._results import SKIPPED, CheckResult, decide
from ownloop.evaluation._suite import CheckSpec, SliceSpec, Suite
from ownloop.profile import predict_frame
from ownloop.signature import Signature

__all__ = ["Bootstrapper", "Context", "judge_outputs", "run_checks"]

Finisher = Callable[[], list[CheckResult]]
MAX_BEHAVIOUR_ROWS = 2000
MAX_LISTED_CASES = 25
_WORKERS = max(1, min(4, os.cpu_count() or 1))


class Bootstrapper:
    """Collects metric functions per group of rows, then evaluates them on shared resamples."""

    def __init__(self, resamples: int, seed: int) -> None:
        self.resamples = resamples
        self.seed = seed
        self._groups: dict[str, tuple[int, dict[str, Callable[[np.ndarray], np.ndarray]]]] = {}
        self._results: dict[tuple[str, str], np.ndarray] = {}

    def request(
        self, group: str, name: str, n: int, fn: Callable[[np.ndarray], np.ndarray]
    ) -> Callable[[], np.ndarray]:
        fns = self._groups.setdefault(group, (n, {}))[1]
        fns.setdefault(name, fn)
        return lambda: self._results[(group, name)]

    def run(self) -> None:
        """Evaluate every requested function on every block; blocks run on a few threads
        (NumPy releases the GIL in the heavy loops), results do not depend on the threading."""
        tasks = []
        for group, (n, fns) in self._groups.items():
            seed = (zlib.crc32(group.encode()) + self.seed) % 2**32
            plan = st.BootstrapPlan(self.resamples, seed)
            tasks += [(group, n, fns, plan, b) for b in range(len(plan.block_sizes(n)))]

        def work(task: tuple[Any, ...]) -> dict[str, np.ndarray]:
            _, n, fns, plan, block = task
            W = plan.draw(n, block)
            return {name: fn(W) for name, fn in fns.items()}

        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            done = list(pool.map(work, tasks))
        parts: dict[tuple[str, str], list[np.ndarray]] = {}
        for task, values in zip(tasks, done, strict=True):
            for name, value in values.items():
                parts.setdefault((task[0], name), []).append(value)
        self._results = {key: np.concatenate(chunks) for key, chunks in parts.items()}


@dataclass
class Context:
    suite: Suite
    signature: Signature
    candidate: Any
    baseline: Any | None
    baseline_ref: str | None
    artifact_size: int
    datasets: dict[str, Dataset]
    outputs: dict[str, Outputs]
    base_outputs: dict[str, Outputs]
    boot: Bootstrapper = field(init=False)
    ordered: dict[tuple[str, str | None], tuple[Outputs, Outputs | None]] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.boot = Bootstrapper(self.suite.resamples, self.suite.seed)

    @property
    def alpha(self) -> float:
        return (1 - self.suite.level) / 2


def run_checks(ctx: Context) -> list[CheckResult]:
    """Plan every check, run the shared bootstrap once, then judge."""
    planners: dict[str, Callable[[CheckSpec, Context], Finisher]] = {
        "metric": _plan_metric,
        "non_inferiority": _plan_comparison,
        "superiority": _plan_comparison,
        "pass_rate": _plan_pass_rate,
        "invariance": _plan_invariance,
        "directional": _plan_directional,
        "latency": _plan_latency,
        "model_size": _plan_model_size,
    }
    finishers = [
        planners[spec.type](spec, ctx) for spec in progress.track(ctx.suite.checks, "checks")
    ]
    with progress.task("bootstrap"):
        ctx.boot.run()
    results: list[CheckResult] = []
    for finish in progress.track(finishers, "judging checks"):
        results.extend(finish())
    return results


# -- shared wording ---------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


@dataclass(frozen=True)
class _Finding:
    """What a check found on one group of rows, before the decision (slices adjust p first)."""

    spec: CheckSpec
    what: str
    estimate: float
    interval: tuple[float, float]
    bound: float
    higher_passes: bool
    pvalue: float
    n: int
    method: str
    min_rows: int
    slice: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def point_passes(self) -> bool:
        return self.estimate >= self.bound if self.higher_passes else self.estimate <= self.bound

    @property
    def limit_clears(self) -> bool:
        """The confidence limit on the passing side of the bound (the unadjusted decision)."""
        if self.higher_passes:
            return bool(self.interval[0] >= self.bound)
        return bool(self.interval[1] <= self.bound)

    def judge(self, alpha: float, level: float, adjusted: float | None = None) -> CheckResult:
        """Decide on the interval, or on a multiplicity-adjusted p-value for a slice."""
        p = self.pvalue if adjusted is None else adjusted
        evidence = self.limit_clears if adjusted is None else adjusted <= alpha
        status = decide(
            n=self.n,
            min_rows=self.min_rows,
            evidence=evidence and bool(np.isfinite(self.estimate)),
            point_passes=bool(self.point_passes),
        )
        message = self.message(status, level)
        if adjusted is not None and status != "PASS" and self.limit_clears:
            message += (
                f"; not enough after the Holm adjustment across slices (adjusted p={adjusted:.3g})"
            )
        name = self.spec.name if self.slice is None else f"{self.spec.name} [{self.slice}]"
        return CheckResult(
            name=name,
            type=self.spec.type,
            status=status,
            message=message,
            method=self.method,
            n=self.n,
            level=level,
            estimate=self.estimate,
            interval=self.interval,
            bound=self.bound,
            pvalue=p,
            dataset=self.spec.dataset,
            metric=self.spec.metric,
            slice=self.slice,
            **self.extra,
        )

    def message(self, status: str, level: float) -> str:
        op = ">=" if self.higher_passes else "<="
        side = "lower" if self.higher_passes else "upper"
        limit = self.interval[0] if self.higher_passes else self.interval[1]
        pct = f"{level:.0%}"
        figures = (
            f"{self.what} {_fmt(self.estimate)} ({pct} interval {_fmt(self.interval[0])} to "
            f"{_fmt(self.interval[1])}, n={self.n:,})"
        )
        if self.n < self.min_rows:
            return f"{figures}: only {self.n} rows, fewer than the {self.min_rows} needed to judge; the bound is {op} {_fmt(self.bound)}"
        if status == "PASS":
            return f"{figures}: the {side} limit {_fmt(limit)} {op} {_fmt(self.bound)}"
        if self.limit_clears:  # held back only by the multiplicity adjustment
            return f"{figures}: the estimate and the {side} limit {_fmt(limit)} meet {op} {_fmt(self.bound)}"
        if status == "FAIL":
            worse = "below" if self.higher_passes else "above"
            return f"{figures}: the estimate itself is {worse} the bound {_fmt(self.bound)}"
        return (
            f"{figures}: the estimate meets {op} {_fmt(self.bound)} but the {side} limit "
            f"{_fmt(limit)} does not; more rows are needed to decide"
        )


def _judge_family(findings: list[_Finding | CheckResult], ctx: Context) -> list[CheckResult]:
    """Judge the slices of one check together: Holm-adjusted p-values across judged slices."""
    judged = [
        (i, f)
        for i, f in enumerate(findings)
        if isinstance(f, _Finding) and f.slice is not None and f.n >= f.min_rows
    ]
    adjusted = st.holm([f.pvalue for _, f in judged])
    adj = {i: p for (i, _), p in zip(judged, adjusted, strict=True)}
    out = []
    for i, f in enumerate(findings):
        if isinstance(f, CheckResult):
            out.append(f)
            continue
        result = f.judge(ctx.alpha, ctx.suite.level, adj.get(i))
        if i in adj and len(judged) > 1:
            result.details["multiple_comparisons"] = (
                f"Holm across {len(judged)} slices; p-value shown is adjusted"
            )
        out.append(result)
    return out


# -- slices ------------------------------------------------------------------------------------


def _slice_masks(data: Dataset, slices: tuple[SliceSpec, ...]) -> list[tuple[str, np.ndarray]]:
    out: list[tuple[str, np.ndarray]] = []
    for s in slices:
        if s.column not in data.frame.columns:
            raise InvalidInputError(
                f"slice column '{s.column}' is not in dataset '{data.name}' "
                f"(columns: {', '.join(map(str, data.frame.columns))})"
            )
        col = data.frame[s.column]
        if s.edges is None:
            for value in sorted(col.dropna().unique(), key=str):
                out.append((f"{s.column}={value}", (col == value).to_numpy()))
            continue
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        for lo, hi in zip(s.edges[:-1], s.edges[1:], strict=True):
            out.append((f"{s.column} in [{lo:g}, {hi:g})", (values >= lo) & (values < hi)))
    return out


def _subset(out: Outputs, mask: np.ndarray) -> Outputs:
    return Outputs(
        out.y[mask],
        out.pred[mask],
        None if out.proba is None else out.proba[mask],
        out.classes,
        out.positive,
    )


def _group_outputs(
    spec: CheckSpec, ctx: Context, label: str | None, mask: np.ndarray | None
) -> tuple[Outputs, Outputs | None]:
    """The rows of one group, candidate and baseline, in one shared order (cached per group).

    The order is the candidate's score order: its ROC AUC then needs no gather per resample.
    Any order is a valid bootstrap order; sharing it keeps candidate and baseline paired.
    """
    key = (str(spec.dataset), label)
    if key not in ctx.ordered:
        cand = ctx.outputs[str(spec.dataset)]
        base = ctx.base_outputs.get(str(spec.dataset))
        if mask is not None:
            cand = _subset(cand, mask)
            base = None if base is None else _subset(base, mask)
        if cand.proba is not None and len(cand.classes) == 2:
            order = np.lexsort((cand.y != cand.positive, cand.proba[:, cand.positive]))
            cand = _subset(cand, order)
            base = None if base is None else _subset(base, order)
        ctx.ordered[key] = (cand, base)
    return ctx.ordered[key]


def _groups(spec: CheckSpec, ctx: Context) -> list[tuple[str | None, np.ndarray | None]]:
    data = ctx.datasets[str(spec.dataset)]
    groups: list[tuple[str | None, np.ndarray | None]] = [(None, None)]
    if spec.sliced:
        groups.extend(_slice_masks(data, ctx.suite.slices))
    return groups


def _too_small(spec: CheckSpec, label: str, n: int, ctx: Context) -> CheckResult:
    return CheckResult(
        name=f"{spec.name} [{label}]",
        type=spec.type,
        status=SKIPPED,
        message=f"slice {label} has {n} rows, fewer than min_slice_rows {ctx.suite.min_slice_rows}: too small to judge",
        method="not judged",
        n=n,
        level=ctx.suite.level,
        dataset=spec.dataset,
        metric=spec.metric,
        slice=label,
    )


def _labelled(spec: CheckSpec, ctx: Context) -> Outputs:
    out = ctx.outputs[str(spec.dataset)]
    if ctx.datasets[str(spec.dataset)].y is None:
        target = ctx.signature.target or "LABEL"
        raise InvalidInputError(
            f"{spec.where()}dataset '{spec.dataset}' has no label column (the model's target is "
            f"'{target}'); add that column or set 'label: COLUMN' on the dataset"
        )
    return out


# -- metric bounds -----------------------------------------------------------------------------


def _plan_metric(spec: CheckSpec, ctx: Context) -> Finisher:
    full = _labelled(spec, ctx)
    d = METRICS[str(spec.metric)]
    higher = spec.at_least is not None
    bound = float(spec.at_least if higher else spec.at_most)  # type: ignore[arg-type]
    prepare_metric(d.name, full)  # task and output checks, before any work
    pending: list[Callable[[], _Finding | CheckResult]] = []
    for label, mask in _groups(spec, ctx):
        out = _group_outputs(spec, ctx, label, mask)[0]
        if label is not None and out.n < ctx.suite.min_slice_rows:
            pending.append(partial(_too_small, spec, label, out.n, ctx))
            continue
        group = f"{spec.dataset}|{label or ''}"
        metric = prepare_metric(d.name, out)
        if d.proportion:
            pending.append(partial(_wilson_finding, spec, out, bound, higher, label, ctx))
            continue
        if metric.shares is not None:
            pending.append(partial(_shares_finding, spec, metric, out.n, bound, higher, label, ctx))
            continue
        if metric.influence is not None:
            reps = _auc_replicates(spec, ctx, label, mask, group, metric)
            pending.append(
                partial(_auc_finding, spec, metric, reps, out.y, bound, higher, label, ctx)
            )
            continue
        if metric.moments is not None:
            reps = ctx.boot.request(group, f"cand:{d.name}:moments", out.n, metric.moments)
            pending.append(
                partial(_mean_finding, spec, metric, reps, out.n, bound, higher, label, ctx)
            )
            continue
        reps = ctx.boot.request(group, f"cand:{d.name}", out.n, metric.value)
        pending.append(partial(_boot_finding, spec, metric, reps, out.n, bound, higher, label, ctx))
    return lambda: _judge_family([p() for p in pending], ctx)


def _auc_replicates(
    spec: CheckSpec,
    ctx: Context,
    label: str | None,
    mask: np.ndarray | None,
    group: str,
    metric: PreparedMetric,
) -> Callable[[], np.ndarray]:
    """The AUC and its DeLong variance per resample. When the suite also compares ROC AUC with
    the baseline on this dataset, they are read from that comparison's resamples (computed
    once for both checks)."""
    compared = any(
        c.type in ("non_inferiority", "superiority")
        and c.dataset == spec.dataset
        and METRICS[str(c.metric)].name == "roc_auc"
        for c in ctx.suite.checks
    )
    base_full = ctx.base_outputs.get(str(spec.dataset))
    cand, base = _group_outputs(spec, ctx, label, mask)
    if not compared or ctx.baseline is None or base_full is None:
        return ctx.boot.request(group, f"cand:{metric.name}:delong", cand.n, _delong(metric))
    bm = prepare_metric(metric.name, base_full if base is None else base)
    pair = ctx.boot.request(group, f"pair:{metric.name}:delong", cand.n, _delong_pair(metric, bm))
    return lambda: pair()[:, [0, 2]]


def _wilson_finding(
    spec: CheckSpec, out: Outputs, bound: float, higher: bool, label: str | None, ctx: Context
) -> _Finding:
    correct = float(np.sum(out.y == out.pred))
    return _Finding(
        spec,
        str(spec.metric),
        correct / out.n,
        st.wilson_interval(correct, out.n, ctx.suite.level),
        bound,
        higher,
        st.wilson_pvalue(correct, out.n, bound, higher),
        out.n,
        "Wilson score interval",
        ctx.suite.min_rows,
        label,
    )


def _shares_finding(
    spec: CheckSpec,
    metric: PreparedMetric,
    n: int,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    assert metric.shares is not None
    hits, rows = metric.shares
    if hits.size > 1:
        method = f"Wilson score interval per class ({hits.size}), combined by MOVER"
    else:
        method = f"Wilson score interval on the {int(rows[0]):,} rows the share is of"
    return _Finding(
        spec,
        metric.name,
        float(np.mean(hits / rows)),
        st.mean_of_shares_interval(hits, rows, ctx.alpha),
        bound,
        higher,
        st.mean_of_shares_pvalue(hits, rows, bound, higher),
        n,
        method,
        ctx.suite.min_rows,
        label,
    )


_STUDENTISED = {"r2": "with the delta-method standard error", "rmse": "of the mean squared error"}


def _mean_finding(
    spec: CheckSpec,
    metric: PreparedMetric,
    replicates: Callable[[], np.ndarray],
    n: int,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    assert metric.moments is not None and metric.from_mean is not None
    point = metric.moments(np.ones((1, n)))[0]
    boot = st.studentised_mean(float(point[0]), float(point[1]), replicates(), metric.from_mean)
    return _Finding(
        spec,
        metric.name,
        metric.point(n),
        boot.limits(ctx.alpha),
        bound,
        higher,
        boot.pvalue(bound, higher),
        n,
        f"studentised bootstrap {_STUDENTISED.get(metric.name, 'of the mean')} "
        f"({ctx.suite.resamples:,} resamples)",
        ctx.suite.min_rows,
        label,
    )


# ECE's estimate is biased upward (an absolute value per bin); BCa's bias correction pulls its
# limits down past the truth (an upper bound at the true ECE passed 3-7% of runs), while the
# percentile interval keeps the bias and is conservative for the usual "at_most" bound.
PERCENTILE_ONLY = ("ece",)


def _boot_finding(
    spec: CheckSpec,
    metric: PreparedMetric,
    replicates: Callable[[], np.ndarray],
    n: int,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    bca = _bca(metric.point(n), replicates(), metric.leave_one_out, metric.name)
    return _Finding(
        spec,
        metric.name,
        bca.estimate,
        bca.limits(ctx.alpha),
        bound,
        higher,
        bca.pvalue(bound, higher),
        n,
        f"{_boot_words(metric.name)} ({ctx.suite.resamples:,} resamples)",
        ctx.suite.min_rows,
        label,
    )


def _bca(
    estimate: float,
    reps: np.ndarray,
    leave_one_out: Callable[[], np.ndarray] | None,
    name: str,
) -> st.BcaInterval:
    """BCa on the replicates; for PERCENTILE_ONLY metrics no correction (the percentile)."""
    if name in PERCENTILE_ONLY:
        return st.BcaInterval(float(estimate), np.sort(reps[np.isfinite(reps)]), 0.0, 0.0)
    a = 0.0 if leave_one_out is None else st.jackknife_acceleration(leave_one_out())
    return st.bca_interval(estimate, reps, a)


def _boot_words(name: str) -> str:
    if name in PERCENTILE_ONLY:
        return "percentile bootstrap"
    return "BCa bootstrap with jackknife acceleration"


def _delong(metric: PreparedMetric) -> Callable[[np.ndarray], np.ndarray]:
    """Per resample: the AUC and DeLong's variance of it, as two columns."""
    assert metric.auc_variance is not None
    return metric.auc_variance


def _delong_pair(cm: PreparedMetric, bm: PreparedMetric) -> Callable[[np.ndarray], np.ndarray]:
    """Per resample: both AUCs, their DeLong variances and covariance, as five columns."""
    assert cm.influence is not None and bm.influence is not None
    c_inf, b_inf = cm.influence, bm.influence

    def value(W: np.ndarray) -> np.ndarray:
        (ca, cp), (ba, bp) = c_inf(W), b_inf(W)
        wc = W * cp
        # Sums in W's dtype (float32 in blocks): ample for variances, several times faster.
        return np.column_stack(
            [
                ca,
                ba,
                np.einsum("bn,bn->b", wc, cp).astype(np.float64),
                np.einsum("bn,bn->b", W * bp, bp).astype(np.float64),
                np.einsum("bn,bn->b", wc, bp).astype(np.float64),
            ]
        )

    return value


def _auc_of(
    metric: PreparedMetric, y: np.ndarray, point: np.ndarray, reps: np.ndarray, at: int, var_at: int
) -> st.AucInterval:
    assert metric.influence is not None
    _, psi = metric.influence(np.ones((1, y.size)))
    return st.auc_interval(
        float(point[0, at]),
        float(np.sqrt(max(point[0, var_at], 0.0))),
        reps[:, at],
        np.sqrt(np.maximum(reps[:, var_at], 0.0)),
        metric.smallest_class,
        st.satterthwaite_df(psi[0], y),
    )


AUC_METHOD = "studentised bootstrap of AUC on the logit scale with DeLong's standard error"


def _auc_finding(
    spec: CheckSpec,
    metric: PreparedMetric,
    replicates: Callable[[], np.ndarray],
    y: np.ndarray,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    n = y.size
    point = _delong(metric)(np.ones((1, n)))
    auc = _auc_of(metric, y, point, replicates(), 0, 1)
    return _Finding(
        spec,
        metric.name,
        auc.estimate,
        auc.limits(ctx.alpha),
        bound,
        higher,
        st.auc_pvalue(auc, bound, higher),
        n,
        f"{AUC_METHOD} ({ctx.suite.resamples:,} resamples)",
        ctx.suite.min_rows,
        label,
    )


# -- candidate vs baseline ---------------------------------------------------------------------


def _plan_comparison(spec: CheckSpec, ctx: Context) -> Finisher:
    if ctx.baseline is None:
        raise InvalidInputError(
            f"{spec.where()}compares against a baseline, but none was given: pass "
            "--baseline production (an alias or a version) or set 'baseline:' in the suite"
        )
    full = _labelled(spec, ctx)
    base_full = ctx.base_outputs[str(spec.dataset)]
    d = METRICS[str(spec.metric)]
    prepare_metric(d.name, full)
    prepare_metric(d.name, base_full)
    superiority = spec.type == "superiority"
    # The bound on (candidate - baseline); "better" depends on the metric's direction.
    sign = 1.0 if d.higher_is_better else -1.0
    bound = sign * (spec.margin if superiority else -spec.margin) + 0.0  # no "-0"
    pending: list[Callable[[], _Finding | CheckResult]] = []
    for label, mask in _groups(spec, ctx):
        cand, maybe_base = _group_outputs(spec, ctx, label, mask)
        base = base_full if maybe_base is None else maybe_base
        if label is not None and cand.n < ctx.suite.min_slice_rows:
            pending.append(partial(_too_small, spec, label, cand.n, ctx))
            continue
        if d.name == "accuracy":
            pending.append(partial(_mcnemar_finding, spec, cand, base, bound, label, ctx))
            continue
        group = f"{spec.dataset}|{label or ''}"
        cm, bm = prepare_metric(d.name, cand), prepare_metric(d.name, base)
        if cm.influence is not None and bm.influence is not None:
            reps = ctx.boot.request(group, f"pair:{d.name}:delong", cand.n, _delong_pair(cm, bm))
            pending.append(
                partial(
                    _paired_auc_finding,
                    spec,
                    (cm, bm),
                    reps,
                    cand.y,
                    bound,
                    d.higher_is_better,
                    label,
                    ctx,
                )
            )
            continue
        c_reps = ctx.boot.request(group, f"cand:{d.name}", cand.n, cm.value)
        b_reps = ctx.boot.request(group, f"base:{d.name}", cand.n, bm.value)
        pending.append(
            partial(
                _paired_boot_finding,
                spec,
                (cm, bm),
                (c_reps, b_reps),
                cand.n,
                bound,
                d.higher_is_better,
                label,
                ctx,
            )
        )
    return lambda: _judge_family([p() for p in pending], ctx)


def _mcnemar_finding(
    spec: CheckSpec, cand: Outputs, base: Outputs, bound: float, label: str | None, ctx: Context
) -> _Finding:
    c_ok, b_ok = cand.y == cand.pred, base.y == base.pred
    diff = st.paired_accuracy_difference(c_ok, b_ok, -bound, ctx.suite.level)
    n = cand.n
    return _Finding(
        spec,
        "accuracy change (candidate - baseline)",
        diff.estimate,
        diff.interval,
        bound,
        True,
        diff.pvalue,
        n,
        "McNemar (paired, discordant rows; Wald interval for the difference)",
        ctx.suite.min_rows,
        label,
        extra={
            "candidate": float(c_ok.mean()),
            "candidate_interval": st.wilson_interval(float(c_ok.sum()), n, ctx.suite.level),
            "baseline": float(b_ok.mean()),
            "baseline_interval": st.wilson_interval(float(b_ok.sum()), n, ctx.suite.level),
            "details": {
                "candidate_only_right": diff.candidate_only,
                "baseline_only_right": diff.baseline_only,
            },
        },
    )


def _paired_aucs(
    cm: PreparedMetric, bm: PreparedMetric, y: np.ndarray, reps: np.ndarray
) -> tuple[st.AucInterval, st.AucInterval, float]:
    """Both models' AUC intervals and DeLong's correlation of the two AUCs (0 if undefined)."""
    point = _delong_pair(cm, bm)(np.ones((1, y.size)))
    cand = _auc_of(cm, y, point, reps, 0, 2)
    base = _auc_of(bm, y, point, reps, 1, 3)
    var_c, var_b, cov = point[0, 2:]
    corr = float(cov / np.sqrt(var_c * var_b)) if var_c > 0 and var_b > 0 else 0.0
    return cand, base, corr


def _paired_auc_finding(
    spec: CheckSpec,
    metrics: tuple[PreparedMetric, PreparedMetric],
    replicates: Callable[[], np.ndarray],
    y: np.ndarray,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    """Candidate - baseline AUC: MOVER from the two studentised intervals, DeLong's correlation."""
    cm, bm = metrics
    n = y.size
    cand, base, corr = _paired_aucs(cm, bm, y, replicates())
    alpha = ctx.alpha
    return _Finding(
        spec,
        f"{cm.name} change (candidate - baseline)",
        cand.estimate - base.estimate,
        st.auc_difference_interval(cand, base, corr, alpha),
        bound,
        higher,
        st.auc_difference_pvalue(cand, base, corr, bound, higher),
        n,
        f"MOVER for the paired difference (same rows for both; DeLong correlation {corr:.2f}) "
        f"from each model's {AUC_METHOD} ({ctx.suite.resamples:,} resamples)",
        ctx.suite.min_rows,
        label,
        extra={
            "candidate": cand.estimate,
            "candidate_interval": cand.limits(alpha),
            "baseline": base.estimate,
            "baseline_interval": base.limits(alpha),
        },
    )


def _paired_boot_finding(
    spec: CheckSpec,
    metrics: tuple[PreparedMetric, PreparedMetric],
    replicates: tuple[Callable[[], np.ndarray], Callable[[], np.ndarray]],
    n: int,
    bound: float,
    higher: bool,
    label: str | None,
    ctx: Context,
) -> _Finding:
    cm, bm = metrics
    c_reps, b_reps = replicates[0](), replicates[1]()
    c_loo, b_loo, name = cm.leave_one_out, bm.leave_one_out, cm.name
    both = None if c_loo is None or b_loo is None else (lambda: c_loo() - b_loo())
    diff = _bca(cm.point(n) - bm.point(n), c_reps - b_reps, both, name)
    cand, base = _bca(cm.point(n), c_reps, c_loo, name), _bca(bm.point(n), b_reps, b_loo, name)
    alpha = ctx.alpha
    return _Finding(
        spec,
        f"{cm.name} change (candidate - baseline)",
        diff.estimate,
        diff.limits(alpha),
        bound,
        higher,
        diff.pvalue(bound, higher),
        n,
        f"paired {_boot_words(name)} ({ctx.suite.resamples:,} resamples, same rows for both)",
        ctx.suite.min_rows,
        label,
        extra={
            "candidate": cand.estimate,
            "candidate_interval": cand.limits(alpha),
            "baseline": base.estimate,
            "baseline_interval": base.limits(alpha),
        },
    )


# -- pass rate over expectation cases ----------------------------------------------------------


def _cases_frame(spec: CheckSpec, ctx: Context) -> tuple[pd.DataFrame, str]:
    if spec.cases:
        return pd.DataFrame(list(spec.cases)), "inline cases"
    data = ctx.datasets[str(spec.dataset)]
    frame = data.frame.copy()
    if "expected" not in frame.columns and data.y is not None:
        frame["expected"] = data.y
    return frame, f"dataset '{data.name}'"


def _plan_pass_rate(spec: CheckSpec, ctx: Context) -> Finisher:
    frame, source = _cases_frame(spec, ctx)
    features = ctx.signature.feature_names
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InvalidInputError(f"{spec.where()}{source} lacks feature(s) {', '.join(missing)}")
    has_range = "expected_min" in frame.columns or "expected_max" in frame.columns
    if "expected" not in frame.columns and not has_range:
        raise InvalidInputError(
            f"{spec.where()}{source} needs an 'expected' value or 'expected_min'/'expected_max' per case"
        )
    ok, got = _case_outcomes(frame, ctx, has_range)
    n, passed = len(frame), float(ok.sum())
    bound = float(spec.at_least if spec.at_least is not None else spec.at_most)  # type: ignore[arg-type]
    higher = spec.at_least is not None
    failing = frame.loc[~ok].head(MAX_LISTED_CASES).assign(got=got[~ok][:MAX_LISTED_CASES])
    finding = _Finding(
        spec,
        "pass rate",
        passed / n,
        st.wilson_interval(passed, n, ctx.suite.level),
        bound,
        higher,
        st.wilson_pvalue(passed, n, bound, higher),
        n,
        f"Wilson score interval over {n} expectation cases ({source})",
        1,
        extra={
            "details": {
                "failing_cases": int(n - passed),
                "failing": json.loads(failing.to_json(orient="records")),
            }
        },
    )
    return lambda: [finding.judge(ctx.alpha, ctx.suite.level)]


def _case_outcomes(
    frame: pd.DataFrame, ctx: Context, has_range: bool
) -> tuple[np.ndarray, np.ndarray]:
    X = frame[ctx.signature.feature_names]
    if has_range:
        score = score_of(ctx.candidate, X, ctx.signature)
        lo = _column(frame, "expected_min", -np.inf)
        hi = _column(frame, "expected_max", np.inf)
        return (score >= lo) & (score <= hi), score
    pred, _ = predict_frame(ctx.candidate, X, ctx.signature)
    expected = frame["expected"].to_numpy()
    if ctx.signature.task == "regression":
        return np.isclose(pred.astype(float), expected.astype(float)), pred
    return np.array([_same(a, b) for a, b in zip(pred, expected, strict=True)]), pred


def _column(frame: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), default)
    values: np.ndarray = pd.to_numeric(frame[name], errors="coerce").fillna(default).to_numpy()
    return values


def _same(a: Any, b: Any) -> bool:
    """Labels equal as numbers when both are numbers (1 == 1.0), else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


# -- behaviour ---------------------------------------------------------------------------------


def _behaviour_rows(spec: CheckSpec, ctx: Context) -> pd.DataFrame:
    data = ctx.datasets[str(spec.dataset)]
    if spec.feature not in ctx.signature.feature_names:
        raise InvalidInputError(
            f"{spec.where()}feature '{spec.feature}' is not one the model takes "
            f"({', '.join(ctx.signature.feature_names)})"
        )
    X = data.X
    if len(X) > MAX_BEHAVIOUR_ROWS:
        X = X.sample(MAX_BEHAVIOUR_ROWS, random_state=ctx.suite.seed)
    return X.reset_index(drop=True)


def _share_finding(
    spec: CheckSpec, ctx: Context, bad: np.ndarray, what: str, method: str
) -> Finisher:
    n, k = bad.size, float(bad.sum())
    bound = float(spec.at_most)  # type: ignore[arg-type]
    finding = _Finding(
        spec,
        what,
        k / n,
        st.wilson_interval(k, n, ctx.suite.level),
        bound,
        False,
        st.wilson_pvalue(k, n, bound, higher_passes=False),
        n,
        method,
        ctx.suite.min_rows,
        extra={"details": {"rows_affected": int(k)}},
    )
    return lambda: [finding.judge(ctx.alpha, ctx.suite.level)]


def _plan_invariance(spec: CheckSpec, ctx: Context) -> Finisher:
    X = _behaviour_rows(spec, ctx)
    feature = str(spec.feature)
    if spec.values:
        variants = [X.assign(**{feature: v}) for v in spec.values]
        how = f"set to each of {', '.join(map(str, spec.values))}"
    else:
        delta = float(spec.delta)  # type: ignore[arg-type]
        variants = [
            X,
            X.assign(**{feature: X[feature] - delta}),
            X.assign(**{feature: X[feature] + delta}),
        ]
        how = f"moved by ±{delta:g}"
    preds = [predict_frame(ctx.candidate, v, ctx.signature)[0] for v in variants]
    if ctx.signature.task == "regression":
        stack = np.vstack([p.astype(float) for p in preds])
        changed = stack.max(axis=0) - stack.min(axis=0) > spec.tolerance
    else:
        changed = np.zeros(len(X), dtype=bool)
        for p in preds[1:]:
            changed |= p != preds[0]
    return _share_finding(
        spec,
        ctx,
        changed,
        f"share of rows whose prediction changes when {feature} is {how}",
        "Wilson score interval (CheckList-style invariance test)",
    )


def _plan_directional(spec: CheckSpec, ctx: Context) -> Finisher:
    X = _behaviour_rows(spec, ctx)
    feature = str(spec.feature)
    delta = float(spec.delta)  # type: ignore[arg-type]
    positive = ctx.outputs[str(spec.dataset)].positive
    before = score_of(ctx.candidate, X, ctx.signature, positive)
    after = score_of(
        ctx.candidate, X.assign(**{feature: X[feature] + delta}), ctx.signature, positive
    )
    if spec.direction == "increase":
        bad = after < before - spec.tolerance
        words = "lowers"
    else:
        bad = after > before + spec.tolerance
        words = "raises"
    return _share_finding(
        spec,
        ctx,
        bad,
        f"share of rows where adding {delta:g} to {feature} {words} the score",
        "Wilson score interval (CheckList-style directional expectation)",
    )


# -- operational -------------------------------------------------------------------------------


def _plan_latency(spec: CheckSpec, ctx: Context) -> Finisher:
    """p99 per single-row call on the chosen clock, against a budget or the baseline."""
    X = ctx.datasets[str(spec.dataset)].X
    rows = X.sample(min(spec.rows, len(X)), random_state=ctx.suite.seed, replace=len(X) < spec.rows)
    clock, clock_words = CLOCKS[spec.clock]
    level = ctx.suite.level
    if spec.at_most_ratio is None:
        bound = float(spec.at_most)  # type: ignore[arg-type]
        found = measure_budget(_predict_of(ctx.candidate), rows, clock, bound, level)
    else:
        if ctx.baseline is None:
            raise InvalidInputError(
                f"{spec.where()}at_most_ratio compares with the baseline's latency, but no "
                "baseline was given: pass --baseline production or set 'baseline:' in the suite"
            )
        bound = spec.at_most_ratio
        predicts = (_predict_of(ctx.candidate), _predict_of(ctx.baseline))
        found = measure_ratio(
            predicts, rows, clock, bound, level, ctx.suite.resamples, ctx.suite.seed
        )
    lo, hi = found.interval
    clock_name = "CPU time" if spec.clock == "cpu" else "wall time"
    result = CheckResult(
        name=spec.name,
        type=spec.type,
        status=found.status,
        message=f"{found.what} ({level:.0%} interval {_fmt(lo)} to {_fmt(hi)}{found.unit}, "
        f"{len(rows)} single-row calls, {clock_name}): {found.words}",
        method=f"{found.method}; one row per call after one warm-up call, native thread "
        f"pools held to one thread; clock: {clock_words}",
        n=len(rows),
        level=level,
        estimate=found.estimate,
        interval=found.interval,
        bound=bound,
        dataset=spec.dataset,
        **found.sides,
        details={"clock": spec.clock, "median_ms": found.median_ms},
    )
    return lambda: [result]


def _predict_of(model: Any) -> Callable[[pd.DataFrame], Any]:
    predict: Callable[[pd.DataFrame], Any] = getattr(model, "predict_proba", None) or model.predict
    return predict


def _plan_model_size(spec: CheckSpec, ctx: Context) -> Finisher:
    mb = ctx.artifact_size / 1_000_000
    budget = float(spec.at_most)  # type: ignore[arg-type]
    ok = mb <= budget
    result = CheckResult(
        name=spec.name,
        type=spec.type,
        status="PASS" if ok else "FAIL",
        message=f"model artifact {_fmt(mb)} MB {'<=' if ok else '>'} budget {_fmt(budget)} MB",
        method="size of the stored artifact (exact)",
        n=1,
        level=ctx.suite.level,
        estimate=mb,
        bound=budget,
    )
    return lambda: [result]


def judge_outputs(
    spec: CheckSpec,
    suite: Suite,
    candidate: Outputs,
    baseline: Outputs | None = None,
    frame: pd.DataFrame | None = None,
) -> list[CheckResult]:
    """Judge one metric or comparison check on outputs already computed (the gate's own path).

    For simulations and callers that hold predictions rather than models; ``frame`` holds the
    slice columns, one row per output row.
    """
    frame = pd.DataFrame(index=pd.RangeIndex(candidate.n)) if frame is None else frame
    data = Dataset(str(spec.dataset), frame, frame, candidate.y, "", 0)
    ctx = Context(
        suite=suite,
        signature=Signature((), "classification" if candidate.classes else "regression"),
        candidate=None,
        baseline=None if baseline is None else object(),
        baseline_ref=None,
        artifact_size=0,
        datasets={str(spec.dataset): data},
        outputs={str(spec.dataset): candidate},
        base_outputs={} if baseline is None else {str(spec.dataset): baseline},
    )
    finish = {
        "metric": _plan_metric,
        "non_inferiority": _plan_comparison,
        "superiority": _plan_comparison,
    }[spec.type](spec, ctx)
    ctx.boot.run()
    return finish()
