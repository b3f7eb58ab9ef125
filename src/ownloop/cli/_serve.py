"""``ownloop serve`` and ``ownloop label import``."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import click

from ownloop.cli._app import cli, console, echo_json, esc, workspace
from ownloop.cli._monitor import DURATION
from ownloop.datasets import read_frame
from ownloop.errors import InvalidInputError
from ownloop.labels import LabelReport, frame_rows, labels_table, record_label_batches


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    envvar="OWNLOOP_WORKERS",
    help="Serve processes on the one port (each with its own log writer; one /metrics for all). "
    "Also OWNLOOP_WORKERS.",
)
@click.option(
    "--no-log", is_flag=True, help="Do not write the prediction log (for benchmarks only)."
)
@click.option(
    "--allow-env-mismatch",
    is_flag=True,
    help="Serve versions whose recorded needs this environment does not meet (logged, audited). "
    "Also OWNLOOP_ALLOW_ENV_MISMATCH=1.",
)
@click.option(
    "--monitor-every",
    type=DURATION,
    default=None,
    help="Also run the monitors this often (over a window of the same length), in the process "
    "that holds the alert evaluator's turn. Default: another process runs 'ownloop monitor'.",
)
@click.option(
    "--auth",
    is_flag=True,
    help="Require a token on loopback too (always required off loopback). Also OWNLOOP_AUTH=1.",
)
@click.option(
    "--public-inference",
    is_flag=True,
    help="Answer inference without a token; every other route but health still needs one. "
    "Also OWNLOOP_PUBLIC_INFERENCE=1.",
)
def serve(
    host: str,
    port: int,
    workers: int,
    no_log: bool,
    allow_env_mismatch: bool,
    monitor_every: timedelta | None,
    auth: bool,
    public_inference: bool,
) -> None:
    """Serve what deploy routes (v2 + simple JSON, labels, /metrics), following every change.

    Routing changes (deploy, promote, abort) are picked up within a second, no restart; SIGHUP
    reloads every model at once. Each serve process also takes its turn running the rollout
    controller and the alert evaluator (each by one process at a time, under a lease in the
    store): rules over the stored monitor figures and deploy events, routed to the owning team.

    Off loopback (or with --auth) every route but health needs 'Authorization: Bearer <token>'
    (see 'ownloop token create'), and serve refuses to start until an active token exists.

    With --workers N, N processes answer on the one port; a worker that dies is restarted, and
    SIGTERM/SIGINT stops every worker after it has written its prediction log.
    """
    from ownloop.server import check_exposure, loopback
    from ownloop.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    ws = workspace()
    try:
        check_exposure(ws, host)
    except InvalidInputError as exc:  # nothing is bound yet: a usage error, exit 2
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    if auth or public_inference:
        ws.config = replace(
            ws.config,
            auth=ws.config.auth or auth,
            public_inference=ws.config.public_inference or public_inference,
        )
    if ws.config.auth or not loopback(host):
        where = "" if loopback(host) else f"binding {esc(host)}: "
        inference = (
            "inference is open to anyone who can reach it"
            if ws.config.public_inference
            else "inference needs one too"
        )
        console.print(
            f"[yellow]auth is on:[/] {where}every route but health needs a token; {inference}"
        )
    if allow_env_mismatch:
        ws.config = replace(ws.config, allow_env_mismatch=True)
    if monitor_every is not None:
        ws.config = replace(ws.config, serve_monitor_every_s=monitor_every.total_seconds())
    console.print(f"dashboard: {esc(dashboard_url(host, port))}")
    run(ws, host, port, log_predictions=not no_log, workers=workers)


def dashboard_url(host: str, port: int) -> str:
    """The address a browser opens for a server bound to ``host``:``port``."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


@cli.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Loopback address to bind (127.0.0.1, ::1 or localhost); use 'ownloop serve' off loopback.",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--no-open", is_flag=True, help="Print the dashboard's address; open no browser.")
def ui(host: str, port: int, no_open: bool) -> None:
    """Open the dashboard: serve on loopback and open it in the browser, until Ctrl-C.

    The same server as 'ownloop serve' (models, inference, labels, metrics), bound to this
    machine only. Without tokens no sign-in is needed on loopback; with OWNLOOP_AUTH=1 the
    dashboard asks for a token once and keeps a session cookie.
    """
    import threading
    import webbrowser

    import uvicorn

    from ownloop.server import loopback, uvicorn_config

    if not loopback(host):
        click.echo(
            f"error: 'ownloop ui' serves on loopback only, not {host}; use 'ownloop serve "
            f"--host {host}' (with tokens) to serve others",
            err=True,
        )
        click.get_current_context().exit(2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    ws = workspace()
    server = uvicorn.Server(uvicorn_config(ws, host, port))

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        url = dashboard_url(host, int(bound))
        console.print(f"dashboard: {esc(url)}  (Ctrl-C stops it)")
        if not no_open:
            webbrowser.open(url)

    threading.Thread(target=announce, name="ownloop-ui-open", daemon=True).start()
    server.run()


def _import_labels(file: Path, model: str | None, source: str) -> list[LabelReport]:
    frame = read_frame(file)
    frame_rows(frame.head(0), where=str(file))  # the columns, before anything is read further
    if model is None and "model" not in frame.columns:
        raise InvalidInputError(f"{file} has no 'model' column; pass --model NAME")
    groups = [(model, frame)] if model is not None else list(frame.groupby("model"))
    ws = workspace()
    now = ws.clock.now()
    tables = [
        (str(name), labels_table(frame_rows(part, where=str(file)), at=now, source=source))
        for name, part in groups
    ]
    # a file is the local user's own input: it is recorded in batches of the batch limit (all
    # checked before any is stored), one report per model
    limit = ws.config.max_label_rows
    batches = [
        (name, table.slice(start, limit))
        for name, table in tables
        for start in range(0, max(table.num_rows, 1), limit)
    ]
    reports = record_label_batches(ws.registry, ws.config.predictions_dir, batches, max_rows=limit)
    merged: dict[str, LabelReport] = {}
    for r in reports:
        seen = merged.get(r.model)
        merged[r.model] = (
            r
            if seen is None
            else LabelReport(
                model=r.model,
                received=seen.received + r.received,
                stored=seen.stored + r.stored,
                replaced=seen.replaced + r.replaced,
                unknown=seen.unknown + r.unknown,
            )
        )
    return list(merged.values())


@cli.group()
def label() -> None:
    """Labels for logged predictions."""


@label.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", help="Model the predictions belong to (else a 'model' column).")
@click.option("--source", default="import", show_default=True, help="Where the labels came from.")
@click.option("--json", "as_json", is_flag=True)
def label_import(file: Path, model: str | None, source: str, as_json: bool) -> None:
    """Import a CSV/Parquet file with prediction_id,label[,weight] columns.

    Unknown prediction ids are reported and not stored; a later label for an id replaces the
    earlier one (audited).
    """
    try:
        reports = _import_labels(file, model, source)
    except InvalidInputError as exc:  # bad input: exit 2, like a usage error
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    if as_json:
        echo_json([r.to_dict() for r in reports])
        return
    for r in reports:
        console.print(
            f"{r.model}: {r.stored} labels stored ({r.replaced} replaced an earlier label), "
            f"{len(r.unknown)} unknown prediction ids not stored",
            markup=False,
        )
        for pid in r.unknown[:10]:
            console.print(f"  unknown: {pid}", markup=False)
