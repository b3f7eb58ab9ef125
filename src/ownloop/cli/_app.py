"""The click group, the shared workspace and printing helpers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ownloop.errors import OwnloopError
from ownloop.workspace import Workspace

__all__ = ["cli", "console", "echo_json", "table", "workspace"]

console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:  # piped or captured: do not wrap tables at 80 columns
    console = Console(highlight=False, soft_wrap=True, width=200)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OwnloopError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ownloop")
def cli() -> None:
    """ownloop: own your models in production.

    State lives in OWNLOOP_HOME (default ./.ownloop); OWNLOOP_DB_URL switches the metadata
    store to PostgreSQL.
    """


def workspace(check_schema: bool = True) -> Workspace:
    """The workspace for this command, closed when the command ends."""
    ctx = click.get_current_context()
    return ctx.with_resource(Workspace(check_schema=check_schema))


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    return value


def echo_json(value: Any) -> None:
    click.echo(json.dumps(_plain(value), indent=2, default=str))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")
