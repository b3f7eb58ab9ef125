"""``ownloop demo``: the whole loop on simulated data, in a fresh folder."""

from __future__ import annotations

from pathlib import Path

import click

from ownloop.cli._app import cli, console
from ownloop.demo import run_demo


@cli.command()
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=Path("ownloop-demo"),
    show_default=True,
    help="Folder for the demo's workspace (recreated on every run).",
)
def demo(home: Path) -> None:
    """Run the loop end to end on bundled, simulated data."""
    home = home.absolute()
    console.print(f"[bold]ownloop demo[/] in {home}")
    run_demo(home, say=console.print)
    console.print(
        f"\ndone. Explore it:  OWNLOOP_HOME={home} ownloop models | versions churn | show churn@production | audit"
    )
