"""The team page: the scorecard's four key figures with their counts, each model's quality
beside them, the weekly trend over the last twelve weeks, the team's models and open alerts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from markupsafe import Markup

from ownloop.scorecard import KeyMetrics, Scorecard
from ownloop.ui._charts import Series, time_chart
from ownloop.ui._view import View, render

__all__ = ["PERIODS", "team_page"]

PERIODS = 12
WEEK = timedelta(days=7)
HOUR = 3600.0


@dataclass(frozen=True)
class Trend:
    """One chart of the trend: a figure per week."""

    title: str
    chart: Markup


def team_page(view: View, team: str) -> str:
    ws = view.ws
    card = ws.scorecard.card(team=team, since=PERIODS * WEEK)
    weeks = ws.scorecard.trend(team=team, periods=PERIODS, period=WEEK)
    team_card = card.team(team)
    return render(
        "team.html",
        view,
        team=team,
        card=card,
        team_card=team_card,
        models=card.models,
        trends=_trends(team, weeks),
        alerts=ws.alerts.list(team=team, open_only=True, limit=100),
        periods=PERIODS,
        hours=hours,
        percent=percent,
        figure=figure,
    )


def _trends(team: str, weeks: Sequence[Scorecard]) -> list[Trend]:
    times = [w.until for w in weeks]
    keys = [w.team(team).key for w in weeks]
    quality = [w.team(team).quality for w in weeks]

    def key(fn: Callable[[KeyMetrics], float | None]) -> list[float | None]:
        return [fn(k) for k in keys]

    def mean(name: str) -> list[float | None]:
        return [q[name].mean if name in q else None for q in quality]

    def chart(title: str, series: list[Series], unit: str = "") -> Trend:
        return Trend(title, time_chart(series, title=title, unit=unit))

    rate = [k.change_failure_rate for k in keys]
    return [
        chart(
            "deploys per week",
            [Series("deploys", times, key(lambda k: float(k.deployment_frequency.count)))],
        ),
        chart(
            "lead time (median, hours)",
            [Series("lead time", times, key(lambda k: _per_hour(k.lead_time.median_s)))],
            "h",
        ),
        chart(
            "change failure rate",
            [
                Series(
                    "change failure rate",
                    times,
                    [r.rate for r in rate],
                    lower=[r.lower for r in rate],
                    upper=[r.upper for r in rate],
                )
            ],
            "%",
        ),
        chart(
            "time to restore (median, hours)",
            [
                Series(
                    "time to restore", times, key(lambda k: _per_hour(k.time_to_restore.median_s))
                )
            ],
            "h",
        ),
        chart(
            "accuracy (mean of the windows)",
            [
                Series("realised", times, mean("realised_accuracy")),
                Series("estimated", times, mean("estimated_accuracy")),
            ],
            "%",
        ),
        chart(
            "latency p99 (mean of the windows)", [Series("p99", times, mean("latency_p99_s"))], "s"
        ),
        chart("cost per 1,000 predictions", [Series("cost", times, mean("cost_per_1k"))]),
    ]


def _per_hour(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / HOUR


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def hours(seconds: float | None) -> str:
    """A duration for a person: minutes under two hours, hours under two days, else days."""
    s = _finite(seconds)
    if s is None:
        return "-"
    if s < 2 * HOUR:
        return f"{s / 60:.0f} min"
    if s < 48 * HOUR:
        return f"{s / HOUR:.1f} h"
    return f"{s / 86400:.1f} d"


def percent(x: float | None) -> str:
    v = _finite(x)
    return "-" if v is None else f"{100 * v:.1f}%"


def figure(x: float | None) -> str:
    v = _finite(x)
    return "-" if v is None else f"{v:.4g}"
