"""``ownloop serve`` and ``ownloop label import``."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import click

from ownloop.cli._app import cli, console, echo_json, esc, workspace
from ownloop.cli._monitor import DURATION
from ownloop.datasets import read_frame
from ownloop.errors import InvalidInputError
from ownloop.labels import LabelReport, frame_rows, labels_table, record_label_batches


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
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
def serve(
    host: str,
    port: int,
    no_log: bool,
    allow_env_mismatch: bool,
    monitor_every: timedelta | None,
) -> None:
    """Serve what deploy routes (v2 + simple JSON, labels, /metrics), following every change.

    Routing changes (deploy, promote, abort) are picked up within a second, no restart; SIGHUP
    reloads every model at once. Each serve process also takes its turn running the rollout
    controller and the alert evaluator (each by one process at a time, under a lease in the
    store): rules over the stored monitor figures and deploy events, routed to the owning team.
    """
    from ownloop.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if not _loopback(host):
        console.print(
            f"[yellow]warning:[/] binding {esc(host)}: inference is open to anyone who can reach it"
        )
    ws = workspace()
    if allow_env_mismatch:
        ws.config = replace(ws.config, allow_env_mismatch=True)
    if monitor_every is not None:
        ws.config = replace(ws.config, serve_monitor_every_s=monitor_every.total_seconds())
    run(ws, host, port, log_predictions=not no_log)


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
    return record_label_batches(
        ws.registry, ws.config.predictions_dir, tables, max_rows=ws.config.max_label_rows
    )


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
