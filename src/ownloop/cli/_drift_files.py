"""``ownloop drift-files``: drift between two Parquet files or folders, streamed."""

from __future__ import annotations

from pathlib import Path

import click

from ownloop.cli._app import cli, console, echo_json, esc
from ownloop.cli._monitor import drift_table
from ownloop.errors import InvalidInputError
from ownloop.monitoring import drift


@cli.command("drift-files")
@click.argument("reference", type=click.Path(path_type=Path))
@click.argument("current", type=click.Path(path_type=Path))
@click.option(
    "--columns",
    default=None,
    help="Comma-separated columns to compare (default: every column of REFERENCE).",
)
@click.option("--chunk-size", type=click.IntRange(1), default=None, help="Rows per chunk.")
@click.option("--chunk-number", type=click.IntRange(1), default=None, help="Number of chunks.")
@click.option("--json", "as_json", is_flag=True, help="Print the chunks' reports as JSON.")
def drift_files(
    reference: Path,
    current: Path,
    columns: str | None,
    chunk_size: int | None,
    chunk_number: int | None,
    as_json: bool,
) -> None:
    """Feature drift of CURRENT against REFERENCE, each a Parquet file or a folder of them.

    Both are read in batches, so memory stays bounded whatever their size; without
    --chunk-size or --chunk-number, CURRENT is one chunk.
    """
    cols = None if columns is None else [c.strip() for c in columns.split(",") if c.strip()]
    try:
        res = drift(
            str(reference),
            str(current),
            columns=cols,
            chunk_size=chunk_size,
            chunk_number=chunk_number,
        )
    except InvalidInputError as exc:  # a file or column the user named: a usage error
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    if as_json:
        echo_json(
            [{"chunk": c.index, "start": c.start, "end": c.end, "report": c.report} for c in res]
        )
        return
    for c in res:
        console.print(esc(c.summary))
        drift_table(c.report.features, tail=False)
