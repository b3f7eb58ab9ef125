"""Monitor runs on a real ``dask.distributed`` LocalCluster of 2 worker processes.

The same window through the in-process engine and through Dask must store the same figures; the
partial cache keeps working when workers compute the partials; a worker that dies holding a task
is replaced and the task run again, with the same result.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from ownloop import Workspace
from ownloop.cli import cli
from ownloop.errors import InvalidInputError
from ownloop.monitoring import DaskEngine, EngineUnavailableError, open_engine
from tests.conftest import env_for
from tests.test_monitor import T0, logged

__all__ = ["logged"]  # churn@1: one quiet hour, then one drifted hour (two log segments)

pytestmark = pytest.mark.slow
T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")


def _need_dask() -> None:
    try:
        import cloudpickle
        import distributed  # noqa: F401
    except ImportError:
        reason = (
            "Dask tests skipped: dask[distributed] is not installed (pip install 'ownloop[dask]')"
        )
        if os.environ.get("OWNLOOP_TEST_REQUIRE_DASK"):
            pytest.fail(reason)
        pytest.skip(reason)
    # the workers cannot import this test module: send its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskEngine]:
    """A local cluster of 2 worker processes (1 thread each), closed after the module."""
    _need_dask()
    engine = DaskEngine(workers=2)
    try:
        yield engine
    finally:
        engine.close()


def _figures(ws: Workspace, run_id: int | None) -> list[tuple[Any, ...]]:
    """A run's stored figures without their row and run ids."""
    assert run_id is not None
    keep = ("version", "window_start", "window_end", "kind", "name", "status", "method", "value")
    keep += ("lower", "upper", "threshold", "p_value", "alert", "n", "detail", "bins")
    return [tuple(getattr(r, k) for k in keep) for r in ws.monitor.results("churn", run_id=run_id)]


def _clear_cache(ws: Workspace) -> int:
    files = list(ws.monitor.cache.root.rglob("*.partial"))
    for f in files:
        f.unlink()
    return len(files)


def test_dask_run_stores_the_same_figures_as_in_process(
    logged: Workspace, cluster: DaskEngine
) -> None:
    ws, cache = logged, logged.monitor.cache
    assert len(cluster.worker_pids()) == 2
    for hours, end in ((3, None), (1, T0 + timedelta(minutes=30))):  # whole and cut segments
        at = end or ws.clock.now()
        _clear_cache(ws)
        misses = cache.misses
        on_dask = ws.monitor.run("churn", window=timedelta(hours=hours), end=at, engine=cluster)
        computed = cache.misses - misses
        _clear_cache(ws)
        here = ws.monitor.run("churn", window=timedelta(hours=hours), end=at, engine="local")
        assert [r.rows for r in on_dask] == [r.rows for r in here]
        assert on_dask[0].rows == (2400 if hours == 3 else 600)
        assert _figures(ws, on_dask[0].run_id) == _figures(ws, here[0].run_id)
        assert len(_figures(ws, here[0].run_id)) > 20
        assert computed == (2 if hours == 3 else 0)  # a cut segment is read, never cached


def test_partials_computed_on_workers_are_cached(logged: Workspace, cluster: DaskEngine) -> None:
    ws, cache = logged, logged.monitor.cache
    before = (cache.hits, cache.misses, cache.writes)
    first = ws.monitor.run("churn", window=timedelta(hours=3), engine=cluster)
    assert (cache.hits, cache.misses, cache.writes) == (before[0], before[1] + 2, before[2] + 2)
    assert _clear_cache(ws) == 2
    ws.monitor.run("churn", window=timedelta(hours=3), engine=cluster)  # writes them again
    again = ws.monitor.run("churn", window=timedelta(hours=3), engine=cluster)
    assert cache.hits == before[0] + 2  # the last run read both segments from the cache
    assert cache.misses == before[1] + 4
    assert _figures(ws, again[0].run_id) == _figures(ws, first[0].run_id)


def _die_once(marker: str, fn: Callable[[T, S], R], item: T, shared: S) -> R:
    """``fn(item, shared)``, except that the first call anywhere kills its own worker process."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return fn(item, shared)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the worker was killed")


class _KillingEngine:
    """The Dask engine, with one worker killed while it runs the run's first task."""

    name = "dask"

    def __init__(self, engine: DaskEngine, marker: Path) -> None:
        self.engine, self.marker = engine, str(marker)

    def map(self, fn: Callable[[T, S], R], items: Sequence[T], shared: S) -> Iterator[R]:
        return self.engine.map(functools.partial(_die_once, self.marker, fn), items, shared)


def test_a_worker_killed_mid_run_is_replaced_and_the_result_is_the_same(
    logged: Workspace, tmp_path: Path
) -> None:
    _need_dask()
    ws = logged
    here = ws.monitor.run("churn", window=timedelta(hours=3), engine="local")
    _clear_cache(ws)
    marker = tmp_path / "killed"
    with DaskEngine(workers=2) as engine:
        pids = set(engine.worker_pids().values())
        killing = _KillingEngine(engine, marker)
        on_dask = ws.monitor.run("churn", window=timedelta(hours=3), engine=killing)
        assert marker.exists()  # a worker did die holding a task
        engine.client.wait_for_workers(2, timeout=60)
        after = set(engine.worker_pids().values())
    assert len(pids - after) == 1  # exactly one worker process was replaced
    assert _figures(ws, on_dask[0].run_id) == _figures(ws, here[0].run_id)


def test_cli_engine_dask_prints_the_same_json(logged: Workspace) -> None:
    _need_dask()
    env = env_for(logged.config)
    args = ["monitor", "churn", "--window", "1000d", "--json", "--no-alerts"]
    local = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    _clear_cache(logged)
    dask = CliRunner().invoke(cli, [*args, "--engine", "dask"], env=env, catch_exceptions=False)
    assert local.exit_code == 0, local.output
    assert dask.exit_code == 0, dask.output
    a, b = json.loads(local.stdout), json.loads(dask.stdout)
    for rep in (*a, *b):  # the window moves with the clock; the second run's trend sees the first
        for key in ("run_id", "start", "end"):
            rep.pop(key, None)
        for key in [k for k in rep.get("confidence") or {} if "trend" in k]:
            del rep["confidence"][key]
    diff = [k for k in a[0] if a[0][k] != b[0].get(k)]
    assert a == b, diff
    assert a[0]["rows"] == 2400


def test_engine_dask_without_dask_says_how_to_install(
    logged: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    with pytest.raises(InvalidInputError, match=r"pip install 'ownloop\[dask\]'"):
        logged.monitor.run("churn", window=timedelta(hours=3), engine="dask")
    res = CliRunner().invoke(
        cli, ["monitor", "churn", "--engine", "dask"], env=env_for(logged.config)
    )
    assert res.exit_code == 2
    assert "pip install 'ownloop[dask]'" in res.output


def test_engine_and_scheduler_are_checked(logged: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="not one of local, dask"):
        logged.monitor.run("churn", engine="spark")
    with (
        pytest.raises(InvalidInputError, match="needs the dask engine"),
        open_engine("local", "tcp://127.0.0.1:8786"),
    ):
        pass
    res = CliRunner().invoke(
        cli,
        ["monitor", "churn", "--scheduler", "tcp://127.0.0.1:1"],
        env=env_for(logged.config),
    )
    assert res.exit_code == 2
    assert "add --engine dask" in res.output


def test_a_scheduler_that_does_not_answer_is_named() -> None:
    _need_dask()
    with pytest.raises(EngineUnavailableError, match=r"tcp://127\.0\.0\.1:1 .*run without"):
        DaskEngine("tcp://127.0.0.1:1", timeout_s=2)  # port 1: nothing listens there
