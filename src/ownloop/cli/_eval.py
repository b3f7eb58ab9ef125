"""``ownloop eval``: run an evaluation gate; exit 0 passed, 1 failed or inconclusive, 2 bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from ownloop.cli._app import cli, console, esc, prepare_output, table, workspace, write_output
from ownloop.errors import OwnloopError
from ownloop.evaluation import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    EvalResult,
    to_html,
    to_json,
    to_junit,
    to_markdown,
)

_STYLE = {PASS: "green", FAIL: "red", INCONCLUSIVE: "yellow"}
_PATH = click.Path(path_type=Path, dir_okay=False)


@cli.command("eval")
@click.argument("ref")
@click.option("--suite", type=_PATH, help="Suite YAML (see docs/eval-suite.md).")
@click.option("--baseline", help="Alias or version to compare against, e.g. production or 3.")
@click.option("--data", type=_PATH, help="Held-out data for the default suite (no --suite).")
@click.option("--label", help="Label column of --data (default: the model's target).")
@click.option("--junit", type=_PATH, help="Write a JUnit XML report here.")
@click.option("--markdown", type=_PATH, help="Write a Markdown report (pull-request comment).")
@click.option("--html", type=_PATH, help="Write a self-contained HTML report with plots.")
@click.option("--json", "json_path", type=_PATH, help="Write the full result as JSON.")
@click.option("--no-store", is_flag=True, help="Do not store the verdict on the version.")
def eval_command(
    ref: str,
    suite: Path | None,
    baseline: str | None,
    data: Path | None,
    label: str | None,
    junit: Path | None,
    markdown: Path | None,
    html: Path | None,
    json_path: Path | None,
    no_store: bool,
) -> None:
    """Evaluate REF (name@version or name@alias) and store the gate verdict on it.

    Exit code: 0 passed, 1 failed or inconclusive, 2 usage or input error.
    """
    ctx = click.get_current_context()
    reports: list[tuple[Path, str, Callable[[EvalResult], str]]] = [
        (p, option, render)
        for p, option, render in (
            (junit, "--junit", to_junit),
            (markdown, "--markdown", to_markdown),
            (html, "--html", to_html),
            (json_path, "--json", to_json),
        )
        if p is not None
    ]
    try:
        for (
            path,
            option,
            _,
        ) in reports:  # an unusable report path fails before any verdict is stored
            prepare_output(path, option)
        result = workspace().evaluations.evaluate(
            ref, suite, baseline=baseline, data=data, label=label, store=not no_store
        )
        for path, option, render in reports:
            write_output(path, render(result), option)
    except OwnloopError as exc:
        click.echo(f"error: {' '.join(exc.message.split())}", err=True)
        ctx.exit(2)
    _print(result, [path for path, _, _ in reports])
    ctx.exit(0 if result.passed else 1)


def _print(result: EvalResult, reports: list[Path]) -> None:
    for note in result.notes:
        console.print(f"[dim]{esc(note)}[/]")
    table(
        None,
        ["status", "check", "actual vs bound", "method"],
        [[c.status, c.name, c.message, c.method] for c in result.checks],
    )
    style = _STYLE.get(result.verdict, "bold")
    console.print(f"[bold {style}]{esc(result.summary)}[/] ({result.seconds:.2f} s)")
    if result.evaluation_id is not None:
        console.print(
            f"gate status of {esc(result.ref)}: {result.gate_status} (evaluation {result.evaluation_id})"
        )
    for path in reports:
        console.print(f"report: {esc(path)}")
