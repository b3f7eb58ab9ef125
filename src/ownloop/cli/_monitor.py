"""``ownloop monitor``, ``ownloop drift``, ``ownloop sample``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ownloop.alerts import AlertLoop, DeliveryOutcome, Round
from ownloop.cli._app import (
    cli,
    console,
    echo_json,
    esc,
    prepare_output,
    table,
    when,
    workspace,
    write_output,
)
from ownloop.errors import InvalidInputError, NotFoundError, OwnloopError
from ownloop.monitoring import (
    ENGINES,
    FINDINGS,
    DriftSettings,
    Engine,
    FeatureDrift,
    MonitorRun,
    WindowReport,
    open_engine,
    parse_duration,
    write_sample,
)
from ownloop.workspace import Workspace


class _Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def __init__(self, *, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero)
        except InvalidInputError as exc:
            self.fail(exc.message, param, ctx)


DURATION = _Duration()
AGE = _Duration(allow_zero=True)  # a duration that may be zero (``0s``: no wait)


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _print_report(rep: WindowReport) -> None:
    s = rep.system
    refused = f" and {s.refused_requests:,} refused requests" if s.refused_requests else ""
    head = (
        f"[bold]{escape(rep.model)}@{rep.version}[/] {rep.start:%Y-%m-%d %H:%M} to "
        f"{rep.end:%H:%M} UTC: {s.predictions:,} predictions{refused}"
        f" ({'arm' if len(rep.arms) == 1 else 'arms'} {escape(' and '.join(rep.arms))})"
    )
    console.print(head + (f" (run {rep.run_id})" if rep.run_id else ""))
    for note in rep.notes:
        console.print(f"  note: {escape(note)}")
    if rep.drift is not None:
        colour = "red" if rep.drift.dataset_drift else "green"
        console.print(f"  [{colour}]{escape(rep.drift.summary)}[/]")
        for f in (*rep.drift.features, *rep.drift.prediction):
            if f.drifted or f.status != "ok" or f.missing_drifted or f.tail_drifted:
                console.print(f"    {escape(f.feature)}: {f.status}; {escape(f.detail)}")
    _print_confidence(rep)
    if rep.estimated:
        parts = [
            f"{e.metric} {_fmt(e.value)} [{_fmt(e.lower)}, {_fmt(e.upper)}]" for e in rep.estimated
        ]
        console.print(
            "  estimated (CBPE, no labels; assumes no concept drift): " + "; ".join(parts),
            markup=False,
        )
        for w in rep.estimate_warnings:
            console.print(f"    warning: {w}", markup=False)
    if rep.realised:
        parts = [
            f"{r.metric} {_fmt(r.value)} [{_fmt(r.lower)}, {_fmt(r.upper)}]" for r in rep.realised
        ]
        cov = rep.realised[0].coverage
        console.print(
            f"  realised on {rep.realised[0].n_labelled} labels (coverage {_fmt(cov, '.1%')}): "
            + "; ".join(parts),
            markup=False,
        )
    h = rep.headline
    if h is not None and h.value is not None:
        console.print(f"  accuracy {h.value:.3f} ({h.source}): {h.reason}", markup=False)
    console.print(
        f"  system: {s.requests:,} requests, errors {_fmt(s.error_rate, '.2%')} "
        f"({s.errors:,} requests: {s.refused_requests:,} refused inputs, {s.error_requests:,} "
        f"model errors; the rate counts {s.error_rate_includes}), latency p50 "
        f"{_fmt(s.latency_p50_s and s.latency_p50_s * 1000, '.3g')} ms "
        f"p99 {_fmt(s.latency_p99_s and s.latency_p99_s * 1000, '.3g')} ms, CPU {s.cpu_s:.2f} s, "
        f"cost per 1k {_fmt(s.cost_per_1k, '.6f')} (at {s.cpu_hour_price}/CPU-hour)",
        markup=False,
    )


def _print_confidence(rep: WindowReport) -> None:
    c = rep.confidence
    if c is None or c.mean is None:
        return
    if c.trend_per_hour is not None:
        span = (c.trend_span_s or 0.0) / 3600
        trend = f", trend {c.trend_per_hour:+.4f}/h over {c.trend_windows} windows spanning {span:.1f} h"
        if c.low_share_trend_per_hour is not None:
            trend += f" (low share {c.low_share_trend_per_hour:+.2%}/h)"
    else:
        trend = f"; {c.trend_note}" if c.trend_note else ""
    console.print(
        f"  confidence: mean {_fmt(c.mean)} (reference {_fmt(c.reference_mean)}), "
        f"share below {c.threshold}: {_fmt(c.low_share, '.1%')} "
        f"(reference {_fmt(c.reference_low_share, '.1%')}){trend}"
    )


class _FailOn(click.ParamType):  # type: ignore[type-arg]
    name = "condition"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        allowed = (*FINDINGS, "any")
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            self.fail(
                f"'{value}' is not a condition; use {', '.join(allowed)} (repeat or comma-separate)",
                param,
                ctx,
            )
        return tuple(FINDINGS) if "any" in items else tuple(items)


def _settings(
    alpha: float | None, share: float | None, thresholds: tuple[str, ...], base: DriftSettings
) -> DriftSettings:
    values = dict(base.__dict__)
    if alpha is not None:
        values["alpha"] = alpha
    if share is not None:
        values["drift_share"] = share
    per = dict(base.feature_thresholds)
    for item in thresholds:
        name, sep, raw = item.partition("=")
        try:
            per[name] = float(raw)
        except ValueError:
            raise InvalidInputError(f"--threshold '{item}' must look like FEATURE=0.2") from None
        if not sep:
            raise InvalidInputError(f"--threshold '{item}' must look like FEATURE=0.2")
    values["feature_thresholds"] = per
    return DriftSettings(**values)


def _found(reports: list[WindowReport], kinds: set[str], as_json: bool) -> list[str]:
    """Print what the --fail-on conditions found (to stderr under --json, keeping stdout JSON)."""
    found = [f for rep in reports for f in rep.findings(kinds)]
    for line in found:
        click.echo(f"found: {line}", err=as_json)
    return found


class _MonitorCommand(click.Command):
    """``ownloop monitor [MODEL]``, and ``ownloop monitor runs ...`` (the stored runs).

    A model named ``runs`` is monitored with ``ownloop monitor -- runs``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args[:1] == ["runs"]:
            ctx.meta["monitor.runs"] = args[1:]
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        rest = ctx.meta.pop("monitor.runs", None)
        if rest is None:
            return super().invoke(ctx)
        with monitor_runs.make_context("ownloop monitor runs", list(rest), parent=ctx) as sub:
            return monitor_runs.invoke(sub)


@cli.command(cls=_MonitorCommand)
@click.argument("model", required=False)
@click.option(
    "--window",
    type=DURATION,
    default="1h",
    show_default=True,
    help="Window length, e.g. 15m, 1h, 1d.",
)
@click.option(
    "--rows",
    "last_rows",
    type=click.IntRange(1),
    default=None,
    help="Row-count window: the last N predictions (instead of --window).",
)
@click.option(
    "--every", type=DURATION, default=None, help="Keep running, once per interval (Ctrl-C stops)."
)
@click.option(
    "--runs", type=click.IntRange(1), default=None, help="With --every: stop after this many runs."
)
@click.option("--version", "version", type=int, default=None, help="Only this version.")
@click.option(
    "--arm",
    type=click.Choice(["stable", "canary", "shadow"]),
    default=None,
    help="Only the rows this arm answered. Default: stable and canary; shadow rows are never "
    "returned to clients, so they count only when asked for.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Significance level across features.",
)
@click.option(
    "--drift-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Share of drifted features that means dataset drift.",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    metavar="FEATURE=VALUE",
    help="Minimum effect (standard deviations moved) for one feature, or its distance threshold under a chosen method (repeatable).",
)
@click.option(
    "--save", is_flag=True, help="Store --alpha/--drift-share/--threshold as MODEL's settings."
)
@click.option(
    "--fail-on",
    "fail_on",
    type=_FailOn(),
    multiple=True,
    help="Exit 1 when a window finds this: drift, estimated-drop or any (repeat or comma-separate).",
)
@click.option(
    "--no-alerts",
    is_flag=True,
    help="Store the figures only: evaluate no alert rules and deliver nothing (--fail-on still "
    "sets the exit code).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="local",
    show_default=True,
    help="Where the per-segment partials are computed: in this process, or on a Dask cluster "
    "(needs pip install 'ownloop[dask]'; workers must read the log at the same paths).",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="With --engine dask: the scheduler to use, e.g. tcp://host:8786. Default: a local "
    "cluster of 2 worker processes, started and stopped by the run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
def monitor(
    model: str | None,
    window: timedelta,
    last_rows: int | None,
    every: timedelta | None,
    runs: int | None,
    version: int | None,
    arm: str | None,
    alpha: float | None,
    drift_share: float | None,
    thresholds: tuple[str, ...],
    save: bool,
    fail_on: tuple[tuple[str, ...], ...],
    no_alerts: bool,
    engine: str,
    scheduler: str | None,
    as_json: bool,
) -> None:
    """Monitor MODEL (default: every model with a production alias) over the last window; store the results.

    'ownloop monitor runs [MODEL]' lists the stored runs instead (see its --help); a model
    named 'runs' is monitored with 'ownloop monitor -- runs'.

    The window counts the stable and canary arms' rows; shadow rows (scored, never answered to
    clients) count only with --arm shadow. --arm picks one arm; each stored run records its arms.

    After each run the alert rules are evaluated over the stored figures and alerts are routed to
    the owning team (see 'ownloop rules' and 'ownloop alerts'), by one process per store at a
    time: when an 'ownloop serve' or another monitor holds that turn, it does this instead.

    \b
    Exit codes:
      0  nothing a --fail-on condition names was found
      1  a --fail-on condition was found (each printed as a 'found:' line)
      2  usage or input error (bad option, unknown model, version or feature)
      3  the monitor could not run (e.g. the metadata store is unavailable)
    """
    kinds = {k for group in fail_on for k in group}
    try:
        found = _monitor(
            model,
            window,
            last_rows,
            every,
            runs,
            version,
            arm,
            alpha,
            drift_share,
            thresholds,
            save,
            kinds,
            no_alerts,
            as_json,
            engine,
            scheduler,
        )
    except (InvalidInputError, NotFoundError) as exc:
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    except OwnloopError as exc:
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(3)
    if found:
        # only now: ctx.exit closes the workspace, which the alert loop used until it stopped
        click.get_current_context().exit(1)


def _monitor(
    model: str | None,
    window: timedelta,
    last_rows: int | None,
    every: timedelta | None,
    runs: int | None,
    version: int | None,
    arm: str | None,
    alpha: float | None,
    drift_share: float | None,
    thresholds: tuple[str, ...],
    save: bool,
    kinds: set[str],
    no_alerts: bool,
    as_json: bool,
    engine: str = "local",
    scheduler: str | None = None,
) -> bool:
    """Monitor (once, or every interval); True when a --fail-on condition was found."""
    ws = workspace()
    if model is not None:
        ws.registry.get_model(model)  # an unknown model is named before a cluster starts
    with open_engine(engine, scheduler) as eng:
        return _monitor_with(
            ws,
            eng,
            model,
            window,
            last_rows,
            every,
            runs,
            version,
            arm,
            alpha,
            drift_share,
            thresholds,
            save,
            kinds,
            no_alerts,
            as_json,
        )


def _monitor_with(
    ws: Workspace,
    engine: Engine,
    model: str | None,
    window: timedelta,
    last_rows: int | None,
    every: timedelta | None,
    runs: int | None,
    version: int | None,
    arm: str | None,
    alpha: float | None,
    drift_share: float | None,
    thresholds: tuple[str, ...],
    save: bool,
    kinds: set[str],
    no_alerts: bool,
    as_json: bool,
) -> bool:
    settings = None
    if alpha is not None or drift_share is not None or thresholds:
        if model is None:
            raise InvalidInputError("--alpha, --drift-share and --threshold need a MODEL")
        settings = ws.monitor.check_settings(
            model, _settings(alpha, drift_share, thresholds, ws.monitor.settings(model))
        )
        if save:
            ws.monitor.configure(model, settings)
            console.print(f"saved drift settings for {escape(model)}")
    loop = None if no_alerts else AlertLoop(ws.alerts, ws.outbox, tick_s=ws.config.alert_tick_s)
    if loop is not None and every is not None:
        loop.start()  # evaluates and delivers in threads of its own: a slow route never waits here
    try:
        done = 0
        while True:
            reports = ws.monitor.run(
                model,
                window=window,
                version=version,
                settings=settings,
                rows=last_rows,
                arm=arm,
                engine=engine,
            )
            if as_json:
                echo_json(reports)
            else:
                if not reports:
                    console.print(
                        "no model has a production alias; pass MODEL or set one with "
                        "'ownloop deploy'"
                    )
                for rep in reports:
                    _print_report(rep)
            if loop is not None:
                if every is None:
                    _print_round(loop.run_once(), as_json)
                else:
                    loop.wake()
            if kinds and _found(reports, kinds, as_json):
                return True
            done += 1
            if every is None or (runs is not None and done >= runs):
                return False
            time.sleep(every.total_seconds())
    finally:
        if loop is not None:
            loop.stop()  # joins the threads and lets the lease go, so the next run need not wait


class _Moment(click.ParamType):  # type: ignore[type-arg]
    """A point in time: a duration back from now (``24h``, ``7d``) or an ISO 8601 time (UTC when
    it names no zone)."""

    name = "time"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime | timedelta:
        if isinstance(value, datetime | timedelta):
            return value
        text = str(value).strip()
        try:
            return parse_duration(text)
        except InvalidInputError:
            pass
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"'{value}' is neither a duration back from now (e.g. 24h, 7d) nor an ISO time "
                "(e.g. 2026-01-31T12:00:00Z)",
                param,
                ctx,
            )
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


MOMENT = _Moment()


def _at(value: datetime | timedelta | None, now: datetime) -> datetime | None:
    return now - value if isinstance(value, timedelta) else value


def _run_row(run: MonitorRun) -> list[str]:
    s = run.summary
    arms = s.get("arms")
    return [
        str(run.id),
        run.model,
        "-" if run.version is None else str(run.version),
        f"{when(run.window_start)} to {when(run.window_end)}",
        ",".join(arms) if isinstance(arms, list) else "stable,canary",
        f"{run.rows:,}",
        run.status,
        _fmt(_num(s.get("drift_share")), ".0%"),
        _fmt(_num(s.get("accuracy")))
        + (f" ({s['accuracy_source']})" if s.get("accuracy_source") else ""),
        _fmt(_num(s.get("error_rate")), ".2%"),
    ]


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _stored_runs(
    model: str | None,
    version: int | None,
    arm: str | None,
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    status: str | None,
    limit: int,
) -> list[MonitorRun]:
    ws = workspace()
    now = ws.clock.now()
    if version is not None and model is None:
        raise InvalidInputError("--version needs a MODEL: 'ownloop monitor runs MODEL --version N'")
    if model is not None:
        ws.registry.get_model(model)  # an unknown name says so, with the close ones
    return ws.monitor.runs(
        model,
        version=version,
        arm=arm,
        since=_at(since, now),
        until=_at(until, now),
        status=status,
        limit=limit,
    )


@click.command("runs")
@click.argument("model", required=False)
@click.option(
    "--version", "version", type=click.IntRange(1), default=None, help="Only this version."
)
@click.option(
    "--arm",
    type=click.Choice(["stable", "canary", "shadow", "default"]),
    default=None,
    help="Only runs that counted exactly this arm ('default': stable and canary). Default: any.",
)
@click.option(
    "--since",
    type=MOMENT,
    default=None,
    help="Windows ending at or after this: a duration back from now (24h, 7d) or an ISO time.",
)
@click.option(
    "--until",
    type=MOMENT,
    default=None,
    help="Windows ending at or before this: an ISO time (UTC when no zone) or a duration back.",
)
@click.option(
    "--status",
    type=click.Choice(["ok", "no_data"]),
    default=None,
    help="Only runs with this status.",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="At most this many.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def monitor_runs(
    model: str | None,
    version: int | None,
    arm: str | None,
    since: datetime | timedelta | None,
    until: datetime | timedelta | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """The stored monitor runs of MODEL (default: every model), newest window first.

    Each row: the window, the version, the arms it counted, its rows, status, the share of
    drifted features, the headline accuracy (estimated or realised) and the error rate.
    """
    try:
        runs = _stored_runs(model, version, arm, since, until, status, limit)
    except (InvalidInputError, NotFoundError) as exc:
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    if as_json:
        echo_json(runs)
        return
    if not runs:
        what = f"model '{model}'" if model is not None else "any model"
        console.print(
            f"no stored monitor runs of {esc(what)} match; store one with 'ownloop monitor "
            f"{esc(model or 'MODEL')}' or widen the filters"
        )
        return
    table(
        f"{len(runs)} monitor run(s), newest first (times UTC)",
        [
            "run",
            "model",
            "version",
            "window",
            "arms",
            "rows",
            "status",
            "drift",
            "accuracy",
            "errors",
        ],
        [_run_row(r) for r in runs],
    )


def _print_round(done: Round, as_json: bool) -> None:
    """What the alert round did, on stderr under --json so stdout stays one JSON document."""
    if not done.holding:
        click.echo(
            "alerts: another ownloop process evaluates the rules for this store; it routes them",
            err=as_json,
        )
        return
    for a in done.alerts:
        click.echo(
            f"alert #{a.id} {a.state.value}: {a.model} {a.rule} ({a.severity.value}) -> "
            f"team {a.team}: {a.summary}",
            err=as_json,
        )
    sent = sum(1 for d in done.deliveries if d.outcome is DeliveryOutcome.DELIVERED)
    failed = len(done.deliveries) - sent
    if done.deliveries:
        click.echo(
            f"alerts: {sent} notification(s) delivered"
            + (f", {failed} not (retried later; see 'ownloop alerts')" if failed else ""),
            err=as_json,
        )
    for e in done.errors:
        click.echo(f"alerts: {e}", err=True)


def drift_table(features: Sequence[FeatureDrift], *, tail: bool) -> None:
    """One row per feature's drift verdict (``tail``: with the tail check's column)."""
    heads = ["feature", "status", "method", "score", "threshold", "p (adj.)", "drifted", "missing"]
    rows = [
        [
            f.feature,
            f.status,
            f.method or "",
            _fmt(f.score, ".4g"),
            _fmt(f.threshold, ".4g"),
            _fmt(f.p_adjusted if f.p_adjusted is not None else f.p_value, ".3g"),
            "-" if f.drifted is None else ("YES" if f.drifted else "no"),
            _fmt(f.missing_share, ".1%"),
        ]
        + (["-" if f.tail_drifted is None else ("YES" if f.tail_drifted else "no")] if tail else [])
        for f in features
    ]
    table(None, heads + (["tail"] if tail else []), rows)


@cli.command()
@click.argument("model")
@click.option(
    "--since",
    type=DURATION,
    default="24h",
    show_default=True,
    help="Window: from this long ago to now.",
)
@click.option("--version", "version", type=int, default=None)
@click.option(
    "--html",
    "html",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write an HTML report with per-feature plots.",
)
@click.option("--json", "as_json", is_flag=True)
def drift(
    model: str, since: timedelta, version: int | None, html: Path | None, as_json: bool
) -> None:
    """Feature and prediction drift of MODEL over the last --since (computed, not stored)."""
    if html is not None:
        prepare_output(html, "--html")
    ws = workspace()
    end = ws.clock.now()
    reports = ws.monitor.window_reports(model, end - since, end, version=version)
    if as_json:
        echo_json([r.drift for r in reports])
    for rep in reports:
        if rep.drift is None:
            console.print(f"{model}@{rep.version}: no drift ({'; '.join(rep.notes)})", markup=False)
            continue
        if not as_json:
            console.print(
                f"[bold]{esc(model)}@{rep.version}[/], {rep.rows:,} rows: {esc(rep.drift.summary)}"
            )
            drift_table((*rep.drift.features, *rep.drift.prediction), tail=True)
        if html is not None:
            target = (
                html
                if len(reports) == 1
                else html.with_name(f"{html.stem}-v{rep.version}{html.suffix}")
            )
            write_output(target, ws.monitor.drift_html(rep), "--html")
            console.print(f"wrote {esc(str(target))}")


@cli.command()
@click.argument("model")
@click.option("--n", "n", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="review.csv or review.parquet",
)
@click.option("--since", type=DURATION, default="24h", show_default=True)
@click.option("--version", "version", type=int, default=None)
@click.option(
    "--low-confidence",
    type=click.FloatRange(0, 1),
    default=0.6,
    show_default=True,
    help="Max probability below this is 'low confidence'.",
)
@click.option(
    "--low-share",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of the sample drawn from low-confidence rows.",
)
@click.option("--seed", type=int, default=None)
def sample(
    model: str,
    n: int,
    out: Path,
    since: timedelta,
    version: int | None,
    low_confidence: float,
    low_share: float,
    seed: int | None,
) -> None:
    """A labelling queue: uniform rows plus oversampled low-confidence rows, with sampling weights."""
    prepare_output(out, "--out")
    ws = workspace()
    s = ws.monitor.sample(
        model,
        n,
        since=since,
        version=version,
        low_confidence=low_confidence,
        low_share=low_share,
        seed=seed,
    )
    try:
        write_sample(s, out)
    except OSError as exc:
        raise InvalidInputError(
            f"--out {out}: cannot write it ({exc.strerror or exc}); pass a path you can write to"
        ) from exc
    console.print(
        f"wrote {s.table.num_rows} rows to {out}: {s.picked_low} of {s.low_rows} low-confidence rows "
        f"(max probability < {s.threshold}) and {s.picked_rest} of {s.window_rows - s.low_rows} others; "
        "fill in 'label' and import it with 'ownloop label import'",
        markup=False,
    )
