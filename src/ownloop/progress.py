"""Progress of long jobs, told to whoever listens; nobody listens unless an interface asks.

Library code marks its long loops; it never draws anything itself (the domain imports no
terminal library). The CLI installs a reporter that draws a bar on a terminal; from Python,
and whenever output is piped, nothing is installed and every call here is a cheap no-op.

>>> from ownloop import progress
>>> with progress.task("scoring", total=3) as t:
...     for _ in range(3):
...         t.advance()
>>> [x for x in progress.track(range(2), "chunks")]
[0, 1]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

__all__ = ["Reporter", "Task", "current", "reporting", "task", "track"]

T = TypeVar("T")


class Task(Protocol):
    """One running job as a reporter sees it."""

    def advance(self, amount: float = 1) -> None:
        """``amount`` more units of the total are done."""

    def finish(self) -> None:
        """The job ended (normally or not); called exactly once."""


class Reporter(Protocol):
    """Receives the jobs library code starts (a progress bar, a log, a test's recorder)."""

    def start(self, description: str, total: float | None) -> Task:
        """A job named ``description`` of ``total`` units (None: unknown) has started."""


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def finish(self) -> None:
        pass


_SILENT = _Silent()
_reporter: ContextVar[Reporter | None] = ContextVar("ownloop_progress_reporter", default=None)


def current() -> Reporter | None:
    """The reporter installed in this context, if any."""
    return _reporter.get()


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Send the progress of every job started inside the block to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield reporter
    finally:
        _reporter.reset(token)


@contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """Mark a long job; ``advance`` it as units complete. A no-op without a reporter."""
    reporter = _reporter.get()
    if reporter is None:
        yield _SILENT
        return
    handle = reporter.start(description, total)
    try:
        yield handle
    finally:
        handle.finish()


def track(items: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Yield ``items``, advancing a task by one per item (its total taken from ``len`` if it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with task(description, total) as t:
        for item in items:
            yield item
            t.advance()
