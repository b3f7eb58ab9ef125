"""Engines that map the per-segment partial over log segments: in this process, or on Dask.

A monitor run turns each log segment of its window into one partial per version with
:func:`segment_partials`, a pure function of a :class:`SegmentTask` (the segment's path, the
window's row conditions) and the versions' :class:`VersionInputs` (the partial spec from the
reference profile and the log column types). Both are picklable, so an engine may run the function
anywhere the segment's path can be read: :class:`InProcessEngine` runs it here, one segment after
another (the default); :class:`DaskEngine` runs it on a ``dask.distributed`` cluster, a given
scheduler or a local cluster it starts and closes. Workers read segments from the same paths as
this process: the log must be on a disk (or mount) every worker sees.

Results come back in the segments' order, so merging gives the same sums, bit for bit, whichever
engine computed them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from ownloop import objectstore, predlog
from ownloop.errors import InvalidInputError, OwnloopError
from ownloop.monitoring._partial import PartialSpec, WindowPartial, compute_partial

__all__ = [
    "ENGINES",
    "DaskEngine",
    "Engine",
    "EngineUnavailableError",
    "InProcessEngine",
    "SegmentResult",
    "SegmentTask",
    "VersionInputs",
    "of_arms",
    "open_engine",
    "segment_partials",
]

ENGINES = ("local", "dask")
DASK_INSTALL = "pip install 'ownloop[dask]'"
_READ_ERRORS = (OSError, pa.ArrowException)
T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


class EngineUnavailableError(OwnloopError):
    """The engine cannot run now (e.g. its scheduler does not answer)."""

    http_status = 503
    code = "engine_unavailable"


@dataclass(frozen=True)
class VersionInputs:
    """What the partial of one version's rows needs: its spec (None: no reference profile) and
    the log column types from its signature (None: as logged)."""

    spec: PartialSpec | None
    schema: pa.Schema | None


@dataclass(frozen=True)
class SegmentTask:
    """One segment of a window: rows meeting ``conditions`` (none when the whole segment lies
    inside the window) of ``arms``; ``version`` keeps one version unless ``inside``, where every
    version is computed so the segment's entry can be cached."""

    path: Path  # a local file or an object (objectstore.ObjectPath; both pickle)
    conditions: Mapping[str, Any]
    arms: tuple[str, ...]
    version: int | None
    inside: bool


@dataclass(frozen=True)
class SegmentResult:
    """The partials of one segment by version, and why rows were left out (empty: none were)."""

    partials: dict[int, WindowPartial]
    skipped: tuple[str, ...] = ()


_EMPTY_SPEC = PartialSpec({}, (), "regression")


def of_arms(table: pa.Table, arms: Sequence[str]) -> pa.Table:
    """The rows of ``table`` logged by ``arms`` (a row without an arm is stable)."""
    if "arm" not in table.column_names:
        return table if "stable" in arms else table.slice(0, 0)
    if set(arms) >= set(predlog.ARMS):
        return table
    arm = pc.fill_null(table.column("arm").cast(pa.string()), "stable")
    return table.filter(pc.fill_null(pc.is_in(arm, pa.array(list(arms), pa.string())), False))


def segment_partials(task: SegmentTask, versions: Mapping[int, VersionInputs]) -> SegmentResult:
    """The partial per version of one segment's rows in the task's window and arms.

    A pure function of the segment's bytes and its arguments. A version missing from
    ``versions`` (not in the registry) is counted without a reference. A segment that cannot be
    read, or a version's rows that cannot be cast to its types, are left out with the reason.
    """
    try:
        table = objectstore.read_table(task.path)
        if task.conditions:
            table = predlog.select_rows(table, task.conditions)
        table = of_arms(table, task.arms)
    except (*_READ_ERRORS, predlog.SegmentReadError) as exc:
        return SegmentResult({}, (str(exc).splitlines()[0],))
    out: dict[int, WindowPartial] = {}
    skipped: list[str] = []
    found = pc.unique(table.column("version")).to_pylist() if table.num_rows else []
    for v in found:
        if v is None or (task.version is not None and v != task.version and not task.inside):
            continue
        inputs = versions.get(int(v), VersionInputs(None, None))
        rows = table.filter(pc.equal(table.column("version"), v))
        try:
            if inputs.schema is not None:
                rows = predlog.conform(rows, inputs.schema)
            out[int(v)] = compute_partial(rows, inputs.spec or _EMPTY_SPEC)
        except (predlog.SegmentReadError, pa.ArrowException) as exc:
            skipped.append(f"rows of version {v}: {str(exc).splitlines()[0]}")
    return SegmentResult(out, tuple(skipped))


class Engine(Protocol):
    """Maps a pure function over items; results come back in the items' order."""

    name: str

    def map(self, fn: Callable[[T, S], R], items: Sequence[T], shared: S) -> Iterator[R]:
        """``fn(item, shared)`` for each item, in order; ``shared`` is sent once per worker."""
        ...


class InProcessEngine:
    """Runs each item in this process, one after another (the default engine)."""

    name = "local"

    def map(self, fn: Callable[[T, S], R], items: Sequence[T], shared: S) -> Iterator[R]:
        for item in items:
            yield fn(item, shared)


class DaskEngine:
    """Runs the items on a ``dask.distributed`` cluster (``pip install 'ownloop[dask]'``).

    With ``scheduler`` (``tcp://host:8786``) it connects to that cluster; without, it starts a
    local cluster of ``workers`` processes of one thread each, listening on the loopback
    interface only, without a dashboard, and closes it in :meth:`close`. A worker that dies
    mid-run has its tasks run again on another (Dask retries each task up to its
    ``allowed-failures``, 3 by default).
    """

    name = "dask"

    def __init__(
        self, scheduler: str | None = None, *, workers: int = 2, timeout_s: float = 60.0
    ) -> None:
        try:
            import distributed
        except ImportError as exc:
            raise InvalidInputError(
                f"the dask engine needs Dask's distributed scheduler: {DASK_INSTALL}"
            ) from exc
        if workers < 1:
            raise InvalidInputError(f"a local Dask cluster needs 1 worker or more, not {workers}")
        self.scheduler = scheduler
        self.cluster: Any = None
        try:
            if scheduler is None:
                self.cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    # no dashboard; its health routes on a free loopback port, never :8787
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                )
                self.client: Any = distributed.Client(  # type: ignore[no-untyped-call]
                    self.cluster, timeout=timeout_s
                )
            else:
                self.client = distributed.Client(  # type: ignore[no-untyped-call]
                    scheduler, timeout=timeout_s
                )
        except (OSError, TimeoutError) as exc:
            self.close()
            where = scheduler or "a local cluster"
            raise EngineUnavailableError(
                f"could not reach the Dask scheduler at {where} ({exc}); check that it runs "
                "and this machine can reach it, or run without --engine dask"
            ) from exc

    def worker_pids(self) -> dict[str, int]:
        """The process id of each worker, by its address."""
        found: dict[str, int] = self.client.run(_pid)
        return found

    def map(self, fn: Callable[[T, S], R], items: Sequence[T], shared: S) -> Iterator[R]:
        if not items:
            return
        from distributed import KilledWorker

        [sent] = self.client.scatter([shared], broadcast=True, hash=False)
        futures = self.client.map(fn, list(items), [sent] * len(items), pure=False)
        try:
            for future in futures:
                try:
                    yield future.result()
                except KilledWorker as exc:
                    raise EngineUnavailableError(
                        f"Dask workers kept dying while computing a log segment's partial "
                        f"({exc}); check the workers' memory and logs, or run without "
                        "--engine dask"
                    ) from exc
                future.release()
        finally:
            self.client.cancel([f for f in futures if not f.done()])
            sent.release()

    def close(self) -> None:
        """Disconnect; stop the local cluster this engine started."""
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pid() -> int:
    import os

    return os.getpid()


@contextlib.contextmanager
def open_engine(engine: str | Engine | None, scheduler: str | None = None) -> Iterator[Engine]:
    """The engine named ``engine`` (``local`` or ``dask``; None: local), or the one given.

    A Dask engine opened here (a local cluster, or a connection to ``scheduler``) is closed on
    leaving; an engine object passed in is left open for its owner.
    """
    if engine is not None and not isinstance(engine, str):
        yield engine
        return
    name = engine or "local"
    if name not in ENGINES:
        raise InvalidInputError(f"engine '{name}' is not one of {', '.join(ENGINES)}")
    if name == "local":
        if scheduler is not None:
            raise InvalidInputError("a scheduler needs the dask engine: add --engine dask")
        yield InProcessEngine()
        return
    dask = DaskEngine(scheduler)
    try:
        yield dask
    finally:
        dask.close()
