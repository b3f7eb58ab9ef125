"""Reading one rule's figure from one stored monitor window: crossed, not crossed, or no verdict.

Each metric reads the stored figure it names, with one meaning: the explicit comparison columns
(``reference``, ``bound``, ``compare``) when the monitor filled them, else the figures the
monitor has always stored (``value``, ``lower``, ``upper``, ``alert``) and the reference
profile. A window with no data, or a figure the monitor could not compute, gives no verdict.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ownloop.alerts._model import Rule
from ownloop.alerts._rules import MIN_LABELLED

__all__ = ["Context", "Figure", "Reading", "Window", "read"]

COST_HISTORY = 24  # previous windows whose median cost is the model's own baseline
COST_MIN_HISTORY = 3


@dataclass(frozen=True)
class Figure:
    """One stored ``monitor_results`` row."""

    kind: str
    name: str
    status: str
    method: str | None
    value: float | None
    lower: float | None
    upper: float | None
    threshold: float | None
    p_value: float | None
    alert: bool | None
    n: int | None
    reference: float | None = None
    bound: float | None = None
    compare: str | None = None


@dataclass(frozen=True)
class Window:
    """One stored monitor run of the production version's stable arm(s)."""

    run_id: int
    version: int | None
    start: datetime
    end: datetime
    rows: int
    status: str
    figures: tuple[Figure, ...]

    def figure(self, kind: str, name: str) -> Figure | None:
        return next((f for f in self.figures if f.kind == kind and f.name == name), None)

    def of_kind(self, kind: str) -> list[Figure]:
        return [f for f in self.figures if f.kind == kind]


@dataclass(frozen=True)
class Context:
    """What a window alone does not hold: the reference profile's figures, earlier windows."""

    reference_accuracy: float | None = None
    importance: Mapping[str, float] | None = None
    earlier: Sequence[Window] = ()  # windows before the one being read, newest first


@dataclass(frozen=True)
class Reading:
    """A rule's figure in one window; ``crossed`` None means no verdict."""

    crossed: bool | None
    value: float | None = None
    bound: float | None = None
    compare: str | None = None
    reference: float | None = None
    lower: float | None = None
    upper: float | None = None
    method: str | None = None
    n: int | None = None
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_NONE = Reading(None, text="no figure in this window")


def read(rule: Rule, window: Window, ctx: Context) -> Reading:
    """The reading of ``rule`` in ``window`` (no verdict for a window without data)."""
    if window.status == "no_data" or window.rows == 0:
        return Reading(None, text="no predictions in this window")
    return _READERS[rule.metric](rule, window, ctx)


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3f}{unit}" if abs(x) < 1000 else f"{x:,.0f}{unit}"


def _dataset_drift(rule: Rule, w: Window, ctx: Context) -> Reading:
    f = w.figure("dataset_drift", "weighted_share") or w.figure("dataset_drift", "share")
    if f is None or f.value is None:
        return _NONE
    what = "of the model's importance" if f.name == "weighted_share" else "of the features"
    if rule.threshold is None:
        bound = f.bound if f.bound is not None else f.threshold
        crossed = f.alert
        rule_text = "the monitor's drift share"
    else:
        bound, crossed = rule.threshold, f.value > rule.threshold
        rule_text = "the rule's threshold"
    return Reading(
        crossed,
        value=f.value,
        bound=bound,
        compare="above",
        method=f.method,
        n=f.n,
        text=f"{f.value:.0%} {what} drifted ({rule_text} {_fmt(bound)})",
    )


def _top_feature_drift(rule: Rule, w: Window, ctx: Context) -> Reading:
    judged = [f for f in w.of_kind("feature_drift") if f.alert is not None]
    if not judged or rule.threshold is None:
        return _NONE
    names = [f.name for f in judged]
    if ctx.importance:
        total = sum(max(ctx.importance.get(n, 0.0), 0.0) for n in names) or 1.0
        weight = {n: max(ctx.importance.get(n, 0.0), 0.0) / total for n in names}
        how = "importance from the reference profile"
    else:
        weight = {n: 1 / len(names) for n in names}
        how = "uniform importance (the profile has none)"
    drifted = sorted((f for f in judged if f.alert), key=lambda f: -weight[f.name])
    value = weight[drifted[0].name] if drifted else 0.0
    top = drifted[0] if drifted else None
    text = (
        f"'{top.name}' drifted ({top.method}), carrying {value:.0%} of the model's importance"
        if top is not None
        else "no feature drifted"
    )
    return Reading(
        value > rule.threshold,
        value=value,
        bound=rule.threshold,
        compare="above",
        method=how,
        n=top.n if top is not None else judged[0].n,
        text=text,
        extra={"drifted": [f.name for f in drifted]},
    )


def _prediction_drift(rule: Rule, w: Window, ctx: Context) -> Reading:
    judged = [f for f in w.of_kind("prediction_drift") if f.alert is not None]
    if not judged:
        return _NONE
    ps = [f.p_value for f in judged if f.p_value is not None]
    p = min(ps) if ps else None
    worst = min(judged, key=lambda f: f.p_value if f.p_value is not None else 2.0)
    if rule.threshold is None:
        crossed: bool | None = any(bool(f.alert) for f in judged)
        bound = worst.bound
        how = "the monitor's test decision"
    else:
        crossed = None if p is None else p < rule.threshold
        bound = rule.threshold
        how = f"smallest corrected p-value below {rule.threshold:g}"
    drifted = [f.name for f in judged if f.alert]
    return Reading(
        crossed,
        value=p,
        bound=bound,
        compare="below",
        method=worst.method,
        n=worst.n,
        text=f"prediction drift in {', '.join(drifted) or 'no check'} (p={_fmt(p)}; {how})",
        extra={"drifted": drifted},
    )


def _confidence_drop(rule: Rule, w: Window, ctx: Context) -> Reading:
    f = w.figure("confidence", "mean")
    if f is None or f.value is None or rule.threshold is None:
        return _NONE
    ref = f.reference if f.reference is not None else f.threshold
    if ref is None:
        return _NONE
    drop = ref - f.value
    return Reading(
        drop > rule.threshold,
        value=drop,
        bound=rule.threshold,
        compare="above",
        reference=ref,
        method=f.method,
        n=f.n,
        text=f"mean confidence {f.value:.3f}, {drop:+.3f} below the reference's {ref:.3f}",
    )


def _accuracy_drop(kind: str, min_n: int) -> Callable[[Rule, Window, Context], Reading]:
    label = "estimated" if kind == "estimated_performance" else "realised"

    def reader(rule: Rule, w: Window, ctx: Context) -> Reading:
        f = w.figure(kind, "accuracy")
        if f is None or f.value is None or f.upper is None or rule.threshold is None:
            return _NONE
        if f.n is None or f.n < min_n:
            return Reading(None, text=f"{f.n or 0} labelled rows, fewer than {min_n}")
        ref = f.reference if f.reference is not None else ctx.reference_accuracy
        if ref is None:
            return Reading(None, text="no reference accuracy to compare with")
        drop = ref - f.value
        # the drop counts only when the figure's whole interval lies below reference - threshold
        crossed = f.upper < ref - rule.threshold
        return Reading(
            crossed,
            value=drop,
            bound=rule.threshold,
            compare="above",
            reference=ref,
            lower=f.lower,
            upper=f.upper,
            method=f.method,
            n=f.n,
            text=f"{label} accuracy {f.value:.3f} [{_fmt(f.lower)}, {_fmt(f.upper)}], "
            f"{drop:.3f} below the reference's {ref:.3f}",
        )

    return reader


def _system(name: str, unit: str, label: str) -> Callable[[Rule, Window, Context], Reading]:
    def reader(rule: Rule, w: Window, ctx: Context) -> Reading:
        f = w.figure("system", name)
        if f is None or f.value is None or rule.threshold is None:
            return _NONE
        return Reading(
            f.value > rule.threshold,
            value=f.value,
            bound=rule.threshold,
            compare="above",
            method=f.method,
            n=f.n,
            text=f"{label} {_fmt(f.value, unit)}",
        )

    return reader


def _cost_per_1k(rule: Rule, w: Window, ctx: Context) -> Reading:
    f = w.figure("system", "cost_per_1k")
    if f is None or f.value is None or rule.threshold is None:
        return _NONE
    history = [
        e.value
        for x in ctx.earlier[:COST_HISTORY]
        if (e := x.figure("system", "cost_per_1k")) is not None and e.value is not None
    ]
    if len(history) < COST_MIN_HISTORY:
        return Reading(None, text=f"{len(history)} earlier windows, fewer than {COST_MIN_HISTORY}")
    median = statistics.median(history)
    if median <= 0:
        return Reading(None, text="the model's median cost is 0")
    rise = f.value / median - 1
    return Reading(
        rise > rule.threshold,
        value=rise,
        bound=rule.threshold,
        compare="above",
        reference=median,
        method=f"relative to the median of {len(history)} earlier windows ({f.method})",
        n=f.n,
        text=f"cost per 1,000 predictions {f.value:.4g}, {rise:+.0%} against the model's "
        f"median {median:.4g}",
    )


_READERS: dict[str, Callable[[Rule, Window, Context], Reading]] = {
    "dataset_drift": _dataset_drift,
    "top_feature_drift": _top_feature_drift,
    "prediction_drift": _prediction_drift,
    "confidence_drop": _confidence_drop,
    "estimated_accuracy_drop": _accuracy_drop("estimated_performance", 1),
    "realised_accuracy_drop": _accuracy_drop("realised_performance", MIN_LABELLED),
    "latency_p99": _system("latency_p99_s", " s", "latency p99"),
    "error_rate": _system("error_rate", "", "error rate"),
    "cost_per_1k": _cost_per_1k,
}
