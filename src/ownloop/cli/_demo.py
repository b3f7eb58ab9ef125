"""``ownloop demo``: the whole loop on simulated data, in a fresh folder."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from ownloop.cli._alerts import _alerts_table
from ownloop.cli._app import cli, console, esc
from ownloop.cli._deploy import _print_status
from ownloop.cli._feedback import _print as _print_export
from ownloop.cli._rollback import _print as _print_rollback
from ownloop.cli._scorecard import _print as _print_scorecard
from ownloop.demo import Views, run_demo, serve_dashboard


@cli.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=Path("ownloop-demo"),
    show_default=True,
    help="Folder for the demo's workspace (recreated on every run).",
)
@click.option(
    "--keep-serving",
    is_flag=True,
    help="Afterwards keep a server on the demo's store running for the dashboard, until Ctrl-C.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port of the server --keep-serving runs (0: any free port).",
)
def demo(home: Path, keep_serving: bool, port: int) -> None:
    """Run the loop end to end on bundled, simulated data."""
    home = home.absolute()
    console.print(f"[bold]ownloop demo[/] in {esc(home)}")
    # the status table, the rollback check, the alerts, the export and the scorecard as the
    # commands 'ownloop status', 'rollback', 'alerts', 'export-evalset' and 'scorecard' print them
    views = Views(
        status=_print_status,
        rollback=_print_rollback,
        alerts=_alerts_table,
        export=_print_export,
        scorecard=_print_scorecard,
    )
    run_demo(home, say=_say, views=views)
    exe = _how_to_call()
    console.print("\ndone. Explore it (OWNLOOP_HOME points ownloop at the demo's workspace):")
    for args in (
        "models",
        "versions churn",
        "status churn",
        "rollouts churn",
        "rollback churn --check-only --rows 3000",
        "rules churn",
        "alerts --model churn",
        "scorecard --team risk",
        "token list",
        "audit",
    ):
        _say(f"  OWNLOOP_HOME={home} {exe} {args}")
    if keep_serving:
        serve_dashboard(home, port, say=_say)


def _say(line: str) -> None:
    """The demo's lines carry paths and server answers: print them literally."""
    console.print(line, markup=False)


def _how_to_call() -> str:
    """How the user can run ownloop again from this shell."""
    script = Path(sys.argv[0])
    if script.name == "ownloop" and script.exists():
        on_path = shutil.which("ownloop")
        if on_path and Path(on_path).resolve() == script.resolve():
            return "ownloop"
        return os.path.relpath(script)
    return f"{os.path.relpath(sys.executable)} -m ownloop"
