"""The click group, the shared workspace and printing helpers.

Everything a user or a data file supplied (names, slice values, ids, messages) is printed
literally: it goes through ``esc`` or into a table cell as plain ``Text``, never as rich markup.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ownloop import progress
from ownloop.errors import InvalidInputError, OwnloopError
from ownloop.workspace import Workspace

__all__ = [
    "cli",
    "console",
    "echo_json",
    "esc",
    "prepare_output",
    "table",
    "when",
    "workspace",
    "write_output",
]

# emoji=False: ':thumbs_up:' in a feature name stays text; markup is escaped per value (esc).
console = Console(highlight=False, soft_wrap=True, emoji=False)
if not console.is_terminal:  # piped or captured: do not wrap tables at 80 columns
    console = Console(highlight=False, soft_wrap=True, emoji=False, width=200)


def esc(value: object) -> str:
    """``value`` as text rich prints literally (``[home=mortgage]`` stays, ``[/bold]`` is no tag)."""
    return escape(str(value))


class _Bars:
    """A progress reporter drawing rich bars on stderr while at least one job runs."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False, emoji=False),
            transient=True,
        )
        self._running = 0

    def start(self, description: str, total: float | None) -> _Bar:
        if self._running == 0:
            self._progress.start()
        self._running += 1
        task = self._progress.add_task(esc(description), total=total)
        self._progress.refresh()  # drawn at once, however short the job
        return _Bar(self, task)

    def advance(self, task: TaskID, amount: float) -> None:
        self._progress.advance(task, amount)

    def finish(self, task: TaskID) -> None:
        self._progress.remove_task(task)
        self._running -= 1
        if self._running == 0:
            self._progress.stop()


class _Bar:
    def __init__(self, bars: _Bars, task: TaskID) -> None:
        self._bars, self._task = bars, task

    def advance(self, amount: float = 1) -> None:
        self._bars.advance(self._task, amount)

    def finish(self) -> None:
        self._bars.finish(self._task)


def _on_terminal() -> bool:
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("OWNLOOP_NO_PROGRESS")


@contextmanager
def _progress_bars() -> Iterator[None]:
    """Bars for long jobs on a terminal; nothing at all when output is piped or captured."""
    with ExitStack() as stack:
        if _on_terminal():
            stack.enter_context(progress.reporting(_Bars()))
        yield


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _progress_bars():
                return super().invoke(ctx)
        except OwnloopError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ownloop")
def cli() -> None:
    """ownloop: own your models in production.

    State lives in OWNLOOP_HOME (default ./.ownloop); OWNLOOP_DB_URL switches the metadata
    store to PostgreSQL. Long jobs draw a progress bar on a terminal (none when piped, or
    with OWNLOOP_NO_PROGRESS=1).
    """


def workspace(check_schema: bool = True) -> Workspace:
    """The workspace for this command, closed when the command ends."""
    ctx = click.get_current_context()
    return ctx.with_resource(Workspace(check_schema=check_schema))


def prepare_output(path: Path, option: str) -> Path:
    """Create the folder of an output file the user named; say which option's path is unusable."""
    try:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"{option} {path}: cannot create its folder ({exc.strerror or exc}); "
            "pass a path in a folder you can write to"
        ) from exc
    if path.is_dir():
        raise InvalidInputError(f"{option} {path} is a folder; pass a file name")
    return path


def write_output(path: Path, text: str, option: str) -> Path:
    """Write an output file the user asked for (temp name, then rename); failures name the path."""
    prepare_output(path, option)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidInputError(
            f"{option} {path}: cannot write it ({exc.strerror or exc}); "
            "pass a path in a folder you can write to"
        ) from exc
    return path


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
    """A table whose title and cells are printed literally (no markup, no emoji codes)."""
    t = Table(title=None if title is None else Text(title), title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    console.print(t)


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")
