"""``ownloop scorecard``: DevOps' four key metrics per team and model, beside model quality."""

from __future__ import annotations

from datetime import timedelta

import click

from ownloop.cli._app import cli, console, echo_json, table, workspace
from ownloop.cli._monitor import DURATION
from ownloop.errors import NotFoundError
from ownloop.scorecard import Durations, FailureRate, KeyMetrics, Quality, Scorecard

__all__ = ["scorecard"]


def _span(seconds: float | None, none: str) -> str:
    """A duration for people: 45 min, 3.5 h, 2.0 d (``none`` when there is no value)."""
    if seconds is None:
        return none
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _durations(d: Durations, none: str) -> str:
    return none if d.median_s is None else f"{_span(d.median_s, none)} (n={d.count})"


def _rate(r: FailureRate) -> str:
    if r.rate is None:
        return "no changes"
    return f"{r.rate:.0%} [{r.lower:.0%}, {r.upper:.0%}] {r.failed}/{r.changes}"


def _key_cells(k: KeyMetrics) -> list[str]:
    f = k.deployment_frequency
    return [
        f"{f.per_week:.2f}/wk ({f.count})",
        _durations(k.lead_time, "no promotions"),
        _rate(k.change_failure_rate),
        _durations(k.time_to_restore, "no alerts resolved"),
    ]


def _quality(q: Quality, spec: str) -> str:
    if q.windows == 0:
        return "no data"
    mean = format(q.mean, spec) if q.mean is not None else "-"
    if q.latest is None:
        return f"mean {mean} ({_windows(q.windows)})"
    return f"{format(q.latest, spec)} (mean {mean}, {_windows(q.windows)})"


def _windows(n: int) -> str:
    return f"{n} window" if n == 1 else f"{n} windows"


QUALITY_COLUMNS = (
    ("realised acc", "realised_accuracy", ".3f"),
    ("estimated acc", "estimated_accuracy", ".3f"),
    ("latency p99 s", "latency_p99_s", ".3f"),
    ("error rate", "error_rate", ".2%"),
    ("cost / 1k", "cost_per_1k", ".4f"),
)


def _print(card: Scorecard) -> None:
    console.print(
        f"Scorecard from {card.since:%Y-%m-%d %H:%M} to {card.until:%Y-%m-%d %H:%M} UTC "
        f"({_span((card.until - card.since).total_seconds(), '-')})"
    )
    heads = ["deploys", "lead time (median)", "change failure rate", "time to restore"]
    rows = [["team " + tc.team, *_key_cells(tc.key)] for tc in card.teams]
    rows += [[f"{m.model} ({m.team})", *_key_cells(m.key)] for m in card.models]
    table("Four key metrics", ["", *heads], rows)
    quality = [
        [
            f"{m.model} ({m.team})",
            *(_quality(m.quality[key], spec) for _, key, spec in QUALITY_COLUMNS),
        ]
        for m in card.models
    ]
    table("Model quality (served windows)", ["", *(c for c, _, _ in QUALITY_COLUMNS)], quality)


@cli.command("scorecard")
@click.option("--team", help="One team's models (the current owners).")
@click.option("--model", help="One model.")
@click.option(
    "--since",
    type=DURATION,
    default="90d",
    show_default=True,
    help="The period, ending now, e.g. 30d, 12w.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with the weekly trends).")
def scorecard(team: str | None, model: str | None, since: timedelta, as_json: bool) -> None:
    """Deployment frequency, lead time, change failure rate and time to restore per team and
    model, beside realised and estimated accuracy, latency, error rate and cost."""
    ws = workspace()
    try:
        card = ws.scorecard.card(team=team, model=model, since=since)
    except NotFoundError as exc:
        hint = "--model" if model is not None and f"'{model}'" in exc.message else "--team"
        raise click.BadParameter(exc.message, param_hint=hint) from None
    if as_json:
        echo_json(card.to_dict())
    else:
        _print(card)
