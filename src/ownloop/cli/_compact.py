"""``ownloop compact``: merge a closed period's log segments into larger files."""

from __future__ import annotations

from datetime import timedelta

import click

from ownloop import objectstore
from ownloop.cli._app import cli, echo_json, table, workspace
from ownloop.cli._monitor import AGE
from ownloop.compaction import ModelLock, compact, lease_lock
from ownloop.config import Config

__all__ = ["compact_command"]


@cli.command("compact")
@click.argument("model", required=False)
@click.option(
    "--older-than",
    type=AGE,
    default="1h",
    show_default=True,
    help="Merge only segments written at least this long ago (the open period is left alone).",
)
@click.option(
    "--keep-sources",
    type=AGE,
    default="10m",
    show_default=True,
    help="Keep merged segments on disk this long for reads already under way (readers skip "
    "them at once); a later run deletes them. 0s deletes them now.",
)
@click.option("--no-labels", is_flag=True, help="Compact predictions only, not labels.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def compact_command(
    model: str | None,
    older_than: timedelta,
    keep_sources: timedelta,
    no_labels: bool,
    as_json: bool,
) -> None:
    """Merge the prediction log's (and labels') old segments of MODEL (default: every model)
    into larger files sorted by time. Safe while servers write and monitors read; on a log in
    object storage a lease per model in the store keeps runs on several hosts apart."""
    config = Config.from_env()
    lock: ModelLock | None = None
    if objectstore.is_object(config.predictions_dir):  # hosts are kept apart by the store's lease
        ws = workspace()
        lock = lease_lock(ws.store, ws.clock)
    results = compact(
        config.predictions_dir,
        model,
        older_than=older_than,
        keep_sources=keep_sources,
        labels=not no_labels,
        lock=lock,
    )
    if as_json:
        echo_json([r.to_json() for r in results])
        return
    rows = [
        [r.model, r.kind, r.sources, r.files, f"{r.rows:,}", r.removed, f"{r.seconds:.2f}s"]
        for r in results
    ]
    table(
        "compaction",
        ["model", "kind", "segments merged", "files written", "rows", "removed", "time"],
        rows,
    )
    for r in results:
        if r.busy:
            click.echo(f"note: {r.model} {r.kind}: left alone, {r.busy}", err=True)
        for s in r.skipped:
            click.echo(f"note: {r.model} {r.kind}: left out {s}", err=True)
