"""The models page: every model with its owner, what is live, open alerts and a day of trends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from markupsafe import Markup

from ownloop.alerts import Alert
from ownloop.deploy import DeployStatus
from ownloop.errors import InvalidInputError
from ownloop.monitoring import Point
from ownloop.names import validate_name
from ownloop.registry import PRODUCTION, Model
from ownloop.ui import _charts
from ownloop.ui._view import View, render

__all__ = ["models_page"]

TREND = timedelta(days=1)
# (kind, name) as stored; the headline is estimated or realised accuracy, its method says which
HEADLINE = ("headline", "accuracy")
TREND_KEYS: tuple[tuple[str, str], ...] = (
    HEADLINE,
    ("system", "latency_p99_s"),
    ("system", "cost_per_1k"),
    ("dataset_drift", "share"),
)
_SEVERITY_RANK = {"info": 0, "warning": 1, "page": 2}


@dataclass(frozen=True)
class Trend:
    """One sparkline cell: the chart, the latest value as text and what it is."""

    chart: Markup
    latest: str
    note: str


@dataclass(frozen=True)
class ModelRow:
    model: Model
    production: int | None
    rollout: str | None
    alerts: int
    worst: str | None
    trends: tuple[Trend, ...]


def models_page(view: View) -> str:
    """Every model (or the caller's teams' with ``?mine=1``, one team's with ``?team=``)."""
    ws = view.ws
    team = view.query.get("team") or None
    mine = view.query.get("mine") == "1"
    if team is not None:
        ws.registry.get_team(validate_name("team", team))  # NotFoundError naming the teams
    if team is not None and mine:
        raise InvalidInputError("pick one filter: 'mine=1' or 'team=NAME', not both")
    models = ws.registry.list_models(owner=team)
    total = len(models) if team is not None or mine else None
    my_teams: list[str] = []
    if mine:
        my_teams = _my_teams(view)
        models = [m for m in models if m.owner in my_teams]
    alerts = _open_alerts(view, models)
    rows = [_row(view, m, alerts.get(m.name, [])) for m in models]
    return render(
        "models.html",
        view,
        rows=rows,
        mine=mine,
        team=team,
        my_teams=my_teams,
        total=total,
    )


def _my_teams(view: View) -> list[str]:
    """The caller's teams: those a token names and those listing the caller as a member."""
    names = set(view.actor.teams)
    names |= {t.name for t in view.ws.registry.list_teams() if view.actor.name in t.members}
    return sorted(names)


def _open_alerts(view: View, models: Sequence[Model]) -> dict[str, list[Alert]]:
    """Open alerts by model, in one query."""
    if not models:
        return {}
    found: dict[str, list[Alert]] = {}
    for alert in view.ws.alerts.list(open_only=True, limit=10_000):
        found.setdefault(alert.model, []).append(alert)
    return found


def _row(view: View, model: Model, alerts: Sequence[Alert]) -> ModelRow:
    ws = view.ws
    series = ws.monitor.series(model.name, TREND_KEYS, since=view.now - TREND)
    worst = max((str(a.severity) for a in alerts), key=_SEVERITY_RANK.__getitem__, default=None)
    return ModelRow(
        model=model,
        production=model.aliases.get(PRODUCTION),
        rollout=_rollout_text(ws.deploy.status(model.name)),
        alerts=len(alerts),
        worst=worst,
        trends=(
            _trend(series[HEADLINE], "accuracy", _headline_note(series[HEADLINE]), pct=True),
            _trend(
                series[("system", "latency_p99_s")], "p99 latency", "ms", scale=1000.0, unit="ms"
            ),
            _trend(series[("system", "cost_per_1k")], "cost per 1,000 predictions", "", money=True),
            _trend(series[("dataset_drift", "share")], "drift share", "drifted", pct=True),
        ),
    )


def _rollout_text(status: DeployStatus) -> str | None:
    """'canary step 2/4, candidate v3 at 25%' for an active rollout; None otherwise."""
    r = status.rollout
    if r is None or not r.active:
        return None
    text = f"v{r.candidate} {r.state}"
    if r.step >= 0:
        text += f", step {r.step + 1}/{len(r.plan.steps)}"
    return f"{text}, {r.weight:g}% of traffic"


def _plain(value: float) -> str:
    """A small number in plain decimals with two significant digits: 0.000030."""
    return str(np.format_float_positional(value, precision=2, fractional=False, unique=False))


def _headline_note(points: Sequence[Point]) -> str:
    """Which accuracy the newest headline value is: 'estimated' or 'realised' (its method says)."""
    for p in reversed(points):
        if p.value is not None and p.method:
            return p.method.split(" ", 1)[0]
    return ""


def _trend(
    points: Sequence[Point],
    what: str,
    note: str,
    *,
    pct: bool = False,
    money: bool = False,
    scale: float = 1.0,
    unit: str = "",
) -> Trend:
    values = [None if p.value is None else p.value * scale for p in points]
    last = next((v for v in reversed(values) if v is not None), None)
    if last is None:
        latest = "-"
    elif pct:
        latest = f"{last:.1%}"
    elif money:  # a cost of $0.00003 reads as money, not as 3e-05
        latest = f"${last:,.2f}" if abs(last) >= 0.01 else f"${_plain(last)}"
    else:
        latest = f"{last:.3g}"
    title = f"{what} over the last day, {len(points)} windows"
    chart = _charts.sparkline(values, title=title, unit=unit) if points else Markup("")
    return Trend(chart=chart, latest=latest, note=note)
