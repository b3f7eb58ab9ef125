"""The model page (versions, aliases, rollout, charts over time, drift, alerts, rollback check)
and one feature's drift drill-down. Both draw stored monitoring results only."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup

from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.monitoring import Bins, FeatureWindow, Point, StoredResult
from ownloop.names import validate_name
from ownloop.registry import ModelVersion
from ownloop.ui import _charts
from ownloop.ui._view import View, render

__all__ = ["feature_page", "model_page"]

RANGES = {"1d": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
KINDS = ("feature_drift", "prediction_drift")
EST = ("estimated_performance", "accuracy")
REAL = ("realised_performance", "accuracy")
P50 = ("system", "latency_p50_s")
P99 = ("system", "latency_p99_s")
ERRORS = ("system", "error_rate")
COST = ("system", "cost_per_1k")
DRIFT = ("dataset_drift", "share")
CONFIDENCE = ("confidence", "mean")
SERIES_KEYS = (EST, REAL, P50, P99, ERRORS, COST, DRIFT, CONFIDENCE)
EARLIER = 3  # earlier windows' histograms on the feature page
# points per line: a chart is ~700 px wide, so more windows are bucketed (mean, min..max band)
MAX_POINTS = 300
# what the dashboard's actions report back (``?done=``), in words
DONE = {
    "acknowledged": "Alert acknowledged: it stays open, without repeats or escalation.",
    "resolved": "Alert resolved.",
    "promoted": "Rollout promoted: the candidate is the production version now.",
    "aborted": "Rollout aborted: the stable version answers all traffic.",
}


@dataclass(frozen=True)
class VersionRow:
    version: ModelVersion
    gate_id: int | None
    gate: str
    params: str


@dataclass(frozen=True)
class Chart:
    """One chart section: its heading, the SVG and a line on method and sample size."""

    title: str
    svg: Markup
    note: str


def _range(view: View) -> tuple[str, timedelta]:
    key = view.query.get("range") or "1d"
    if key not in RANGES:
        raise InvalidInputError(
            f"range '{key[:20]}' is not one of {', '.join(RANGES)}; e.g. ?range=7d"
        )
    return key, RANGES[key]


def _arm(view: View) -> str | None:
    arm = view.query.get("arm") or None
    if arm is not None and arm not in ("stable", "canary", "shadow"):
        raise InvalidInputError(f"arm '{arm[:20]}' is not one of stable, canary, shadow")
    return arm


def model_page(view: View, name: str) -> str:
    """Everything stored about model ``name`` over ``?range=`` (1d, 7d or 30d)."""
    ws = view.ws
    model = ws.registry.get_model(validate_name("model", name))
    range_key, span = _range(view)
    arm = _arm(view)
    since = view.now - span
    series = ws.monitor.series(name, SERIES_KEYS, since=since, arm=arm)
    latest = ws.monitor.latest_results(name, arm=arm)
    run, results = latest[0] if latest else (None, [])
    status = ws.deploy.status(name)
    alerts = ws.alerts.list(model=name, limit=50)
    return render(
        "model.html",
        view,
        model=model,
        range_key=range_key,
        ranges=list(RANGES),
        arm=arm,
        done=_done(view.query.get("done") or ""),
        versions=_versions(view, name),
        alias_history=list(reversed(ws.registry.alias_history(name)))[:30],
        status=status,
        charts=_charts_of(series),
        coverage=_coverage(series[REAL]),
        run=run,
        prediction=_prediction(results),
        features=sorted(
            (r for r in results if r.kind == "feature_drift"),
            key=lambda r: -(r.value if r.value is not None else float("-inf")),
        ),
        open_alerts=[a for a in alerts if str(a.state) != "resolved"],
        recent_alerts=[a for a in alerts if str(a.state) == "resolved"][:10],
        rollback=next(iter(ws.deploy.rollback_checks(name, limit=1)), None),
        fmt=_fmt,
        pct=_pct,
    )


def _done(word: str) -> str:
    """The message after an action (``?done=acknowledged``); unknown words are shown as text."""
    return DONE.get(word, word[:200])


def _versions(view: View, name: str) -> list[VersionRow]:
    rows = []
    for v in reversed(view.ws.registry.list_versions(name)):
        gate = view.ws.evaluations.latest(v.ref)
        rows.append(
            VersionRow(
                version=v,
                gate_id=None if gate is None else gate.id,
                gate=v.gate_status if gate is None else gate.verdict,
                params=json.dumps(v.params, sort_keys=True, default=str)[:300],
            )
        )
    return rows


def _series(label: str, points: Sequence[Point], scale: float = 1.0) -> _charts.Series:
    def scaled(x: float | None) -> float | None:
        return None if x is None else x * scale

    return _charts.Series(
        label=label,
        times=[p.window_end for p in points],
        values=[scaled(p.value) for p in points],
        lower=[scaled(p.lower) for p in points],
        upper=[scaled(p.upper) for p in points],
    )


def _note(points: Sequence[Point]) -> str:
    """The method and sample size of the newest window with a value, in words."""
    for p in reversed(points):
        if p.value is not None:
            parts = [p.method or "", f"n={p.n}" if p.n is not None else "", p.detail or ""]
            return "; ".join(x for x in parts if x)
    return ""


def _charts_of(series: Mapping[tuple[str, str], Sequence[Point]]) -> list[Chart]:
    return [
        _chart(series, "accuracy", [("estimated", EST, 1.0), ("realised", REAL, 1.0)]),
        _chart(series, "latency", [("p50", P50, 1000.0), ("p99", P99, 1000.0)], "ms"),
        _chart(series, "error rate", [("error rate", ERRORS, 1.0)]),
        _chart(series, "cost per 1,000 predictions", [("cost per 1k", COST, 1.0)]),
        _chart(series, "drift share", [("share of drifted features", DRIFT, 1.0)]),
        _chart(series, "confidence", [("mean max probability", CONFIDENCE, 1.0)]),
    ]


def _chart(
    series: Mapping[tuple[str, str], Sequence[Point]],
    title: str,
    lines: Sequence[tuple[str, tuple[str, str], float]],
    unit: str = "",
) -> Chart:
    """One time chart of the given (label, key, scale) lines; empty lines are left out."""
    drawn = [_series(label, series[key], scale) for label, key, scale in lines]
    kept = [s for s in drawn if any(v is not None for v in s.values)]
    notes = [f"{label}: {_note(series[key])}" for label, key, _ in lines if _note(series[key])]
    return Chart(
        title,
        _charts.time_chart(kept, title=title, unit=unit, max_points=MAX_POINTS),
        " | ".join(notes),
    )


def _coverage(points: Sequence[Point]) -> str:
    """The newest realised window's label coverage, as stored in its detail."""
    for p in reversed(points):
        if p.detail and "coverage" in p.detail:
            return f"{p.detail} (window ending {p.window_end:%Y-%m-%d %H:%M} UTC, n={p.n})"
    return ""


def _prediction(results: Sequence[StoredResult]) -> tuple[StoredResult, Markup] | None:
    """The newest window's prediction distribution against the reference, drawn."""
    for r in results:
        if r.kind == "prediction_drift" and r.bins is not None:
            return r, _draw_bins(r.bins, f"{r.name}: reference vs current")
    return None


def _draw_bins(bins: Bins, title: str) -> Markup:
    """Numeric bins at their real widths on a value axis; categories side by side."""
    return _charts.distribution(bins, title=title)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# -- one feature ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    window_end: datetime
    svg: Markup
    n: int | None


def feature_page(view: View, name: str) -> str:
    """One feature's drift over time (``?feature=``): reference vs current, its histograms."""
    ws = view.ws
    model = ws.registry.get_model(validate_name("model", name))
    feature = view.query.get("feature") or ""
    kind = view.query.get("kind") or "feature_drift"
    if kind not in KINDS:
        raise InvalidInputError(f"kind '{kind[:40]}' is not one of {', '.join(KINDS)}")
    if not feature:
        raise InvalidInputError(
            f"name the feature: /ui/models/{name}/drift?feature=NAME "
            f"(features: {', '.join(ws.monitor.known_features(name)) or 'none yet'})"
        )
    range_key, span = _range(view)
    history = ws.monitor.feature_history(name, feature, since=view.now - span, kind=kind)
    if not history:
        _require_known(view, name, feature, kind)
    with_bins = [w for w in history if w.bins is not None]
    latest = with_bins[-1] if with_bins else None
    return render(
        "feature.html",
        view,
        model=model,
        feature=feature,
        kind=kind,
        range_key=range_key,
        ranges=list(RANGES),
        history=history,
        last=history[-1] if history else None,
        score=_feature_chart(history, [w.value for w in history], "drift score", feature),
        p_value=_feature_chart(history, [w.p_value for w in history], "p-value", feature),
        latest=None if latest is None else _histogram(latest, feature),
        earlier=[_histogram(w, feature) for w in _earlier(with_bins[:-1])],
        fmt=_fmt,
    )


def _require_known(view: View, name: str, feature: str, kind: str) -> None:
    """NotFoundError naming the known features when ``feature`` is not one of them."""
    if kind == "feature_drift":
        known = view.ws.monitor.known_features(name)
    else:
        latest = view.ws.monitor.latest_results(name)
        known = sorted({r.name for _, rs in latest for r in rs if r.kind == kind})
    if feature not in known:
        what = "feature" if kind == "feature_drift" else "model output"
        raise NotFoundError(
            f"model '{name}' has no {what} '{feature[:100]}' "
            f"(known: {', '.join(known) or 'none yet'})"
        )


def _feature_chart(
    history: Sequence[FeatureWindow], values: Sequence[float | None], label: str, feature: str
) -> Markup:
    series = _charts.Series(label=label, times=[w.window_end for w in history], values=values)
    kept = [series] if any(v is not None for v in values) else []
    return _charts.time_chart(kept, title=f"{feature}: {label} per window", max_points=MAX_POINTS)


def _histogram(w: FeatureWindow, feature: str) -> Histogram:
    assert w.bins is not None
    return Histogram(w.window_end, _draw_bins(w.bins, f"{feature}: reference vs current"), w.n)


def _earlier(windows: Sequence[FeatureWindow]) -> list[FeatureWindow]:
    """Up to ``EARLIER`` earlier windows, spread over the range, newest first."""
    if len(windows) <= EARLIER:
        return list(reversed(windows))
    step = len(windows) / EARLIER
    return [windows[int(len(windows) - 1 - i * step)] for i in range(EARLIER)]
