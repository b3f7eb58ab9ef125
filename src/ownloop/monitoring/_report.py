"""Report types of a monitor window, the figures computed from merged partials, and their storage rows."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from ownloop.errors import InvalidInputError
from ownloop.monitoring._drift import DriftReport
from ownloop.monitoring._partial import CONF_BINS, LATENCY_EDGES, WindowPartial
from ownloop.monitoring._performance import Estimate, Headline, Realised
from ownloop.predlog import ARMS
from ownloop.profile import ClassificationProfile, ReferenceProfile

__all__ = [
    "DEFAULT_ARMS",
    "FINDINGS",
    "Bins",
    "ConfidenceFigures",
    "FeatureWindow",
    "MonitorRun",
    "Point",
    "StoredResult",
    "SystemFigures",
    "WindowReport",
    "confidence_figures",
    "parse_duration",
    "result_rows",
    "select_arms",
    "summary",
    "system_figures",
]


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FINDINGS = ("drift", "estimated-drop")
ERROR_RATE_INCLUDES = "refused inputs (400) and model errors"
# Shadow answers are never returned to clients: by default they do not count in production figures.
DEFAULT_ARMS = ("stable", "canary")


def select_arms(arm: str | None) -> tuple[str, ...]:
    """The arms a window counts: ``arm`` alone, or every arm but ``shadow`` when None."""
    if arm is None:
        return DEFAULT_ARMS
    if arm not in ARMS:
        raise InvalidInputError(f"arm '{arm}' is not one of {', '.join(ARMS)}")
    return (arm,)


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """``90s``, ``5m``, ``1h``, ``7d``, ``2w``: a number and a unit (a bare number is refused);
    ``0s`` only with ``allow_zero``."""
    raw = text.strip().lower()
    unit = raw[-1:]
    if unit not in DURATION_UNITS:
        try:
            float(raw)
        except ValueError:
            pass
        else:
            raise InvalidInputError(
                f"duration '{text}' has no unit; add one of s, m, h, d, w (e.g. {raw}h or {raw}s)"
            )
        raise InvalidInputError(f"duration '{text}' is not understood; use e.g. 90s, 5m, 1h, 7d")
    try:
        value = float(raw[:-1])
    except ValueError:
        raise InvalidInputError(
            f"duration '{text}' is not understood; use e.g. 90s, 5m, 1h, 7d"
        ) from None
    seconds = value * DURATION_UNITS[unit]
    if not (value > 0 or (allow_zero and value == 0)) or seconds > 10 * 365 * 86400:
        least = "zero or more" if allow_zero else "positive"
        raise InvalidInputError(f"duration '{text}' must be {least} and under ten years")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class ConfidenceFigures:
    n: int
    mean: float | None
    reference_mean: float | None
    low_share: float | None
    reference_low_share: float | None
    threshold: float
    trend_per_hour: float | None = None  # slope of the mean over recent windows
    trend_p: float | None = None
    trend_windows: int = 0
    low_share_trend_per_hour: float | None = None  # slope of the low-confidence share
    low_share_trend_p: float | None = None
    trend_span_s: float | None = None  # time from the first to the last window of the trend
    trend_note: str | None = None  # why there is no trend (too few windows, too short a span)


@dataclass(frozen=True)
class SystemFigures:
    """Requests, errors, latency and cost of a window.

    ``requests`` counts every request the model's routes answered, refused ones included (as
    ``/metrics`` does); ``errors`` the requests answered with an error, ``refused_requests``
    (400: the input was refused) plus ``error_requests`` (the model failed).
    """

    predictions: int  # rows that reached the model
    requests: int
    errors: int
    error_rate: float | None  # errors / requests
    latency_p50_s: float | None
    latency_p99_s: float | None
    cpu_s: float
    cost_per_1k: float | None
    cpu_hour_price: float
    refused_requests: int = 0
    error_requests: int = 0
    error_rate_includes: str = ERROR_RATE_INCLUDES


@dataclass(frozen=True)
class WindowReport:
    """Everything monitored for one model version over ``[start, end)``."""

    model: str
    version: int
    start: datetime
    end: datetime
    rows: int
    drift: DriftReport | None
    confidence: ConfidenceFigures | None
    estimated: tuple[Estimate, ...]
    realised: tuple[Realised, ...]
    system: SystemFigures
    notes: tuple[str, ...] = ()
    run_id: int | None = None
    skipped_segments: tuple[str, ...] = ()  # log segments left out (unreadable or of another type)
    reference_accuracy: float | None = None  # the reference profile's accuracy, when it has one
    headline: Headline | None = None  # the accuracy to lead with: estimated, or realised and why
    arms: tuple[str, ...] = DEFAULT_ARMS  # the arms whose rows the window counts
    # the reference profile's performance figures by metric (accuracy; mae and rmse for regression)
    reference_metrics: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def estimate_warnings(self) -> tuple[str, ...]:
        """Why the label-free estimate may not hold in this window (empty when nothing is flagged)."""
        return next((e.warnings for e in self.estimated if e.warnings), ())

    def findings(self, kinds: Collection[str] = FINDINGS) -> list[str]:
        """What this window found of ``kinds`` (``drift``, ``estimated-drop``), one sentence each.

        ``estimated-drop``: the upper end of the headline accuracy's band (the estimate, or the
        realised figure when labelled rows contradict the estimate) lies below the reference's
        accuracy, so the drop is larger than the figure's own uncertainty.
        """
        unknown = set(kinds) - set(FINDINGS)
        if unknown:
            raise InvalidInputError(
                f"unknown finding {', '.join(sorted(unknown))}; use {', '.join(FINDINGS)}"
            )
        out = []
        who = f"{self.model}@{self.version}"
        if "drift" in kinds and self.drift is not None and self.drift.dataset_drift:
            out.append(f"drift: {who}: {self.drift.summary}")
        head = self.headline
        est = self.estimate("accuracy")
        ref = self.reference_accuracy
        value, lower, upper, source = (
            (head.value, head.lower, head.upper, head.source)
            if head is not None and head.source == "realised"
            else (None, None, None, "estimated")
            if est is None
            else (est.value, est.lower, est.upper, "estimated")
        )
        if (
            "estimated-drop" in kinds
            and value is not None
            and lower is not None
            and upper is not None
            and ref is not None
            and upper < ref
        ):
            out.append(
                f"estimated-drop: {who}: {source} accuracy {value:.3f} "
                f"[{lower:.3f}, {upper:.3f}] lies below the reference's {ref:.3f}"
            )
        return out

    def to_frame(self) -> pd.DataFrame:
        """Every figure of the window, one row each (the rows a monitor run stores)."""
        rows = result_rows(self)
        frame = pd.DataFrame(rows, columns=list(_RESULT_COLUMNS))
        frame.insert(0, "version", self.version)
        frame.insert(0, "model", self.model)
        frame["window_start"] = self.start
        frame["window_end"] = self.end
        return frame

    @property
    def summary(self) -> str:
        """One line: the version, the window, its rows and the drift verdict."""
        drift = self.drift.summary if self.drift is not None else "no drift verdict"
        return (
            f"{self.model}@{self.version}, {self.rows:,} predictions from {self.start:%Y-%m-%d %H:%M}"
            f" to {self.end:%Y-%m-%d %H:%M} UTC: {drift}"
        )

    def estimate(self, metric: str) -> Estimate | None:
        return next((e for e in self.estimated if e.metric == metric), None)

    def realised_figure(self, metric: str) -> Realised | None:
        return next((r for r in self.realised if r.metric == metric), None)


@dataclass(frozen=True)
class MonitorRun:
    id: int
    model: str
    version: int | None
    window_start: datetime
    window_end: datetime
    rows: int
    status: str
    summary: dict[str, Any]
    started_at: datetime
    run_by: str


@dataclass(frozen=True)
class StoredResult:
    """One stored figure of one window, with what it is compared with.

    ``compare`` says how to read it: ``'test'``: the verdict (``alert``) is a test's decision,
    ``p_value`` against the alpha in ``bound``; ``'above'``: worse when ``value`` is high, the
    verdict's bound in ``bound``; ``'below'``: worse when ``value`` is low; None: a figure with
    no direction (counts, system figures). ``reference`` is the reference figure the value came
    from. ``threshold`` is kept for older readers only (its meaning varies by kind); see the
    table in docs/alerts.md for each kind's exact verdict.
    """

    run_id: int
    model: str
    version: int | None
    window_end: datetime
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
    detail: str | None
    reference: float | None = None
    bound: float | None = None
    compare: str | None = None
    window_start: datetime | None = None  # the run's window start (None if the run is gone)
    bins: Bins | None = None  # drift rows: the window's histogram (None on older rows)


@dataclass(frozen=True)
class Bins:
    """A feature's histogram in one window, against its reference.

    ``kind`` ``"numeric"``: ``edges`` holds ``len(labels) + 1`` finite, ascending values, so a
    chart draws each bin at its real width (the outer edges are the reference's min and max,
    widened to the window's when it goes beyond). ``"categorical"``: ``edges`` is empty and
    ``labels`` names the categories. ``reference`` and ``current`` are shares per bin (each
    sums to 1, or all 0 when a side had no values).
    """

    kind: str
    labels: tuple[str, ...]
    edges: tuple[float, ...]
    reference: tuple[float, ...]
    current: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "edges": list(self.edges),
            "reference": list(self.reference),
            "current": list(self.current),
        }

    @classmethod
    def from_stored(cls, data: Any) -> Bins | None:
        """The stored JSON read back; None for rows stored without bins or in another shape."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(
                str(data["kind"]),
                tuple(str(x) for x in data["labels"]),
                tuple(float(x) for x in data.get("edges") or ()),
                tuple(float(x) for x in data["reference"]),
                tuple(float(x) for x in data["current"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Point:
    """One stored figure of one window (a point of a time series)."""

    window_start: datetime | None
    window_end: datetime
    version: int | None
    value: float | None
    lower: float | None
    upper: float | None
    n: int | None
    detail: str | None
    method: str | None


@dataclass(frozen=True)
class FeatureWindow:
    """One window's drift figures of one feature (or prediction output), with its histogram."""

    window_start: datetime | None
    window_end: datetime
    version: int | None
    kind: str  # "feature_drift" | "prediction_drift"
    name: str
    status: str
    method: str | None
    value: float | None  # the score (effect size or distance; the statistic for bare tests)
    p_value: float | None
    alert: bool | None  # drifted
    n: int | None
    bins: Bins | None


def _quantile(hist: np.ndarray, q: float) -> float | None:
    total = hist.sum()
    if total == 0:
        return None
    i = int(np.searchsorted(np.cumsum(hist), q * total, side="left"))
    if i == 0:
        return float(LATENCY_EDGES[0])
    if i >= LATENCY_EDGES.size:
        return float(LATENCY_EDGES[-1])
    return float(np.sqrt(LATENCY_EDGES[i - 1] * LATENCY_EDGES[i]))  # geometric bin centre


def system_figures(part: WindowPartial, price: float) -> SystemFigures:
    n = part.scored_rows
    cost = part.cpu_sum / 3600 * price / n * 1000 if n else None
    requests = part.requests
    return SystemFigures(
        predictions=n,
        requests=requests,
        errors=part.failed_requests,
        error_rate=part.failed_requests / requests if requests else None,
        refused_requests=part.refused_requests,
        error_requests=part.error_requests,
        latency_p50_s=_quantile(part.latency, 0.5),
        latency_p99_s=_quantile(part.latency, 0.99),
        cpu_s=part.cpu_sum,
        cost_per_1k=cost,
        cpu_hour_price=price,
    )


def confidence_figures(
    part: WindowPartial, profile: ReferenceProfile | None, threshold: float
) -> ConfidenceFigures | None:
    n = int(part.confidence.sum())
    pred = profile.prediction if profile is not None else None
    if not isinstance(pred, ClassificationProfile):
        return None
    cut = round(threshold * CONF_BINS)
    ref = pred.confidence
    ref_hist = np.asarray(ref.hist_counts, dtype=float)
    ref_low = None
    if ref_hist.sum() > 0:
        edges = np.asarray(ref.hist_edges)
        ref_low = float(
            ref_hist[: int(np.searchsorted(edges, threshold, side="left"))].sum() / ref_hist.sum()
        )
    return ConfidenceFigures(
        n=n,
        mean=part.confidence_sum / n if n else None,
        reference_mean=ref.mean,
        low_share=float(part.confidence[:cut].sum() / n) if n else None,
        reference_low_share=ref_low,
        threshold=threshold,
    )


def _f(v: Any) -> float | None:
    if v is None:
        return None
    x = float(v)
    return x if np.isfinite(x) else None


_RESULT_COLUMNS = (
    "kind",
    "name",
    "status",
    "method",
    "value",
    "lower",
    "upper",
    "threshold",
    "p_value",
    "alert",
    "n",
    "detail",
    "reference",
    "bound",
    "compare",
)
# Drift methods whose verdict is the test alone ('test'), and the rest: an effect or distance at
# least its threshold AND the test significant ('above'; 'share_off_constant' is strictly above).
TEST_METHODS = ("ks", "chi2", "identifier")
# performance metrics that are worse when higher (errors); the others are worse when lower
HIGHER_IS_WORSE = ("mae", "rmse")


def result_rows(rep: WindowReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(kind: str, name: str, status: str = "ok", **kw: Any) -> None:
        row: dict[str, Any] = dict.fromkeys((*_RESULT_COLUMNS, "bins"))
        row.update(kind=kind, name=name, status=status)
        row.update(kw)
        for k in ("value", "lower", "upper", "threshold", "p_value", "reference", "bound"):
            row[k] = _f(row[k])
        rows.append(row)

    if rep.drift is not None:
        d = rep.drift
        for f in (*d.features, *d.prediction):
            kind = "feature_drift" if f in d.features else "prediction_drift"
            add(
                kind,
                f.feature,
                f.status,
                method=f.method,
                value=f.score,
                threshold=f.threshold,
                p_value=f.p_adjusted if f.p_adjusted is not None else f.p_value,
                alert=f.drifted,
                n=f.n,
                detail=f.detail,
                bins=stored_bins(f.extra.get("bins")),
                **_drift_comparison(f.method, f.threshold, d.alpha, f.drifted),
            )
            if f.tail_share is not None:
                add(
                    "tail_share",
                    f.feature,
                    method="one-sided exceedance test per side, beyond the 0.5%-99.5% quantiles, "
                    f"material when a side's share doubles ({d.correction} at alpha {d.alpha})",
                    value=f.tail_share,
                    threshold=f.tail_reference_share,
                    p_value=f.tail_p_adjusted if f.tail_p_adjusted is not None else f.tail_p,
                    alert=f.tail_drifted,
                    reference=f.tail_reference_share,
                    bound=d.alpha if f.tail_drifted is not None else None,
                    compare="test" if f.tail_drifted is not None else None,
                    n=f.n,
                    detail=f.extra.get("tail", {}).get("text"),
                )
            if f.missing_share is not None:
                add(
                    "missing_share",
                    f.feature,
                    method=f"two-proportion z-test, material at +-{d.missing_delta:.0%}",
                    value=f.missing_share,
                    threshold=f.reference_missing_share,
                    p_value=f.missing_p,
                    alert=f.missing_drifted,
                    reference=f.reference_missing_share,
                    bound=d.alpha if f.missing_drifted is not None else None,
                    compare="test" if f.missing_drifted is not None else None,
                    n=f.n,
                )
        add(
            "dataset_drift",
            "share",
            "ok" if d.share is not None else "no_verdict",
            method=f"share of drifted features ({d.correction} at alpha {d.alpha})",
            value=d.share,
            threshold=d.share_threshold,
            alert=d.dataset_drift if d.verdict_by == "count" else None,
            n=d.tested,
            detail=d.summary,
            bound=d.share_threshold,
            compare="above" if d.share is not None else None,
        )
        if d.weighted_share is not None:
            add(
                "dataset_drift",
                "weighted_share",
                method=f"share of the model's importance on drifted features ({d.importance_method})",
                value=d.weighted_share,
                threshold=d.share_threshold,
                alert=d.dataset_drift,
                n=d.tested,
                detail="the dataset verdict's share",
                bound=d.share_threshold,
                compare="above",
            )
        if d.effective_rows is not None:
            add(
                "dataset_drift",
                "effective_rows",
                method="distinct rows, sketched on the columns that never repeat (HyperLogLog)",
                value=d.effective_rows,
                n=d.rows,
                detail=d.repeats_note,
            )
    c = rep.confidence
    if c is not None:
        add(
            "confidence",
            "mean",
            "ok" if c.mean is not None else "empty",
            method="mean max probability",
            value=c.mean,
            threshold=c.reference_mean,
            reference=c.reference_mean,
            compare="below",
            n=c.n,
            detail=c.trend_note
            if c.trend_per_hour is None
            else f"trend {c.trend_per_hour:+.4f}/h over {c.trend_windows} windows "
            f"spanning {_span(c.trend_span_s)} (p={c.trend_p})",
        )
        add(
            "confidence",
            "low_share",
            "ok" if c.low_share is not None else "empty",
            method=f"share with max probability < {c.threshold}",
            value=c.low_share,
            threshold=c.reference_low_share,
            reference=c.reference_low_share,
            compare="above",
            n=c.n,
        )
        if c.trend_per_hour is not None:
            add(
                "confidence",
                "trend_per_hour",
                method="least-squares slope of the mean",
                value=c.trend_per_hour,
                p_value=c.trend_p,
                n=c.trend_windows,
            )
        if c.low_share_trend_per_hour is not None:
            add(
                "confidence",
                "low_share_trend_per_hour",
                method="least-squares slope of the low-confidence share",
                value=c.low_share_trend_per_hour,
                p_value=c.low_share_trend_p,
                n=c.trend_windows,
            )
    for e in rep.estimated:
        add(
            "estimated_performance",
            e.metric,
            e.status,
            method=e.method,
            value=e.value,
            lower=e.lower,
            upper=e.upper,
            n=e.n,
            alert=bool(e.warnings) if e.value is not None else None,
            reference=rep.reference_metrics.get(e.metric),
            compare=_performance_direction(e.metric),
            detail="; ".join(x for x in (e.note, *(f"warning: {w}" for w in e.warnings)) if x)
            or None,
        )
    for r in rep.realised:
        add(
            "realised_performance",
            r.metric,
            "ok" if r.value is not None else "undefined",
            method=r.method,
            value=r.value,
            lower=r.lower,
            upper=r.upper,
            n=r.n_labelled,
            reference=rep.reference_metrics.get(r.metric),
            compare=_performance_direction(r.metric),
            detail=f"label coverage {r.coverage:.1%}" if r.coverage is not None else r.note,
        )
    h = rep.headline
    if h is not None:
        add(
            "headline",
            h.metric,
            h.source,
            method=f"{h.source} accuracy leads the report",
            value=h.value,
            lower=h.lower,
            upper=h.upper,
            p_value=h.p_value,
            alert=h.contradicted,
            detail=h.reason,
            reference=rep.reference_metrics.get(h.metric),
            compare=_performance_direction(h.metric),
        )
    sysf = rep.system
    for name, value in (
        ("predictions", sysf.predictions),
        ("requests", sysf.requests),
        ("errors", sysf.errors),
        ("refused_requests", sysf.refused_requests),
        ("error_requests", sysf.error_requests),
        ("error_rate", sysf.error_rate),
        ("latency_p50_s", sysf.latency_p50_s),
        ("latency_p99_s", sysf.latency_p99_s),
        ("cpu_s", sysf.cpu_s),
        ("cost_per_1k", sysf.cost_per_1k),
    ):
        add(
            "system",
            name,
            "ok" if value is not None else "empty",
            value=value,
            n=sysf.predictions,
            method=_system_method(name, sysf),
        )
    return rows


def stored_bins(data: Any) -> dict[str, Any] | None:
    """A drift row's histogram as stored (``Bins.to_dict()``), or None when it has none that a
    chart can draw (identifier checks keep two unrelated shares)."""
    found = Bins.from_stored(data)
    if found is None or found.kind not in ("numeric", "categorical"):
        return None
    return found.to_dict()


def _drift_comparison(
    method: str | None, threshold: float | None, alpha: float, drifted: bool | None
) -> dict[str, Any]:
    """A drift row's comparison: the test's alpha for bare tests, else the effect's threshold."""
    if method is None or drifted is None:
        return {"reference": None, "bound": None, "compare": None}
    if method in TEST_METHODS:
        return {"reference": None, "bound": alpha, "compare": "test"}
    return {"reference": None, "bound": threshold, "compare": "above"}


def _performance_direction(metric: str) -> str:
    """'above' for error metrics (worse when higher), 'below' for the rest (accuracy, f1...)."""
    return "above" if metric in HIGHER_IS_WORSE else "below"


def _system_method(name: str, sysf: SystemFigures) -> str | None:
    if name == "cost_per_1k":
        return f"cpu-hour price {sysf.cpu_hour_price}"
    if name in ("errors", "error_rate"):
        return f"requests answered with an error: {sysf.error_rate_includes}"
    return None


def _span(seconds: float | None) -> str:
    """A duration for people: 12 s, 45 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def summary(rep: WindowReport) -> dict[str, Any]:
    acc = rep.estimate("accuracy")
    real = rep.realised_figure("accuracy")
    return {
        "rows": rep.rows,
        "dataset_drift": None if rep.drift is None else rep.drift.dataset_drift,
        "drifted": [] if rep.drift is None else list(rep.drift.drifted_features),
        "drift_reasons": {} if rep.drift is None else dict(rep.drift.reasons),
        "drift_share": None if rep.drift is None else rep.drift.share,
        "drift_weighted_share": None if rep.drift is None else _f(rep.drift.weighted_share),
        "drift_verdict_by": None if rep.drift is None else rep.drift.verdict_by,
        # the alpha every drift test of the window is held to (the effect rows' second condition)
        "drift_alpha": None if rep.drift is None else rep.drift.alpha,
        "estimated_accuracy": None if acc is None else _f(acc.value),
        "realised_accuracy": None if real is None else _f(real.value),
        "accuracy": None if rep.headline is None else _f(rep.headline.value),
        "accuracy_source": None if rep.headline is None else rep.headline.source,
        "accuracy_reason": None if rep.headline is None else rep.headline.reason,
        "estimate_warnings": list(rep.estimate_warnings),
        "confidence_mean": None if rep.confidence is None else _f(rep.confidence.mean),
        "error_rate": _f(rep.system.error_rate),
        "refused_requests": rep.system.refused_requests,
        "error_requests": rep.system.error_requests,
        "skipped_segments": len(rep.skipped_segments),
        "notes": list(rep.notes),
        "arms": list(rep.arms),
    }
