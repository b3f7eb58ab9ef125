"""``ownloop export-evalset``: labelled production rows as an eval set, with a suite beside it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import click

from ownloop.cli._app import cli, console, echo_json, esc, when, workspace
from ownloop.cli._monitor import DURATION
from ownloop.errors import InvalidInputError
from ownloop.feedback import LOW_CONFIDENCE, EvalsetExport

_PATH = click.Path(path_type=Path, dir_okay=False)


@cli.command("export-evalset")
@click.argument("model")
@click.option("--out", type=_PATH, required=True, help="The eval set: FILE.parquet or FILE.csv.")
@click.option(
    "--since",
    type=DURATION,
    default="7d",
    show_default=True,
    help="Window: predictions from this long ago to now.",
)
@click.option("--version", "version", type=int, default=None, help="Only this version's rows.")
@click.option(
    "--arm",
    type=click.Choice(["stable", "canary", "shadow"]),
    default=None,
    help="Only the rows this arm answered. Default: stable and canary (shadow answers never "
    "reached a client).",
)
@click.option(
    "--suite-out",
    type=_PATH,
    default=None,
    help="Where to write the suite YAML. Default: --out with the suffix .yaml.",
)
@click.option("--force", is_flag=True, help="Replace the files if they exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def export_evalset(
    model: str,
    out: Path,
    since: timedelta,
    version: int | None,
    arm: str | None,
    suite_out: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write MODEL's labelled predictions of the last --since as a dataset for `ownloop eval`.

    Each row holds the logged inputs, the label (named as the model's target), the prediction and
    confidence, flags low_confidence and misclassified (abs_error for a regressor), the label's
    sampling weight (1 without one), the version, arm, prediction id and time. A suite beside it
    gates a candidate on these rows: `ownloop eval MODEL@N --suite FILE.yaml`.
    Exit code: 0 written, 1 error, 2 bad input (no labelled rows, a bad path).
    """
    try:
        done = workspace().feedback.export_evalset(
            model,
            out,
            since=since,
            version=version,
            arm=arm,
            suite_out=suite_out,
            force=force,
        )
    except InvalidInputError as exc:  # bad input: exit 2, like a usage error
        click.echo(f"error: {exc.message}", err=True)
        click.get_current_context().exit(2)
    if as_json:
        echo_json(done.to_dict())
        return
    _print(done)


def _print(done: EvalsetExport) -> None:
    share = done.rows / done.predictions if done.predictions else 0.0
    console.print(
        f"wrote {done.rows:,} labelled rows of {done.model} to {done.path} ({done.format}): "
        f"{share:.1%} of {done.predictions:,} answered predictions, {when(done.start)} to "
        f"{when(done.end)} UTC, {' and '.join(done.arms)}",
        markup=False,
    )
    console.print(
        "  versions: " + ", ".join(f"{done.model}@{v} {n:,}" for v, n in done.versions.items()),
        markup=False,
    )
    if done.task == "regression":
        mae = "n/a" if done.mean_abs_error is None else f"{done.mean_abs_error:.4g}"
        console.print(f"  mean absolute error of the logged predictions: {mae}", markup=False)
    else:
        console.print(
            f"  flagged: {done.low_confidence:,} low_confidence (max probability < "
            f"{LOW_CONFIDENCE}), {done.misclassified:,} misclassified",
            markup=False,
        )
    console.print(
        f"  weights: {done.weighted:,} rows carry the sampling weight of their label in "
        f"'{done.weight_column}', the others weigh 1 (suites count every row once)",
        markup=False,
    )
    console.print(
        f"suite: {esc(done.suite_path)}; gate a candidate with "
        f"[bold]ownloop eval {esc(done.model)}@N --suite {esc(done.suite_path)}[/] "
        f"(compared with {esc(done.model)}@{done.baseline})"
    )
