"""A real ``ownloop serve --workers 2``: one port, two processes, one /metrics, one log, one lease.

Each test runs on one SQLite file and, when reachable, on PostgreSQL. The serve process is
stopped with SIGTERM by the test (or killed in teardown, whatever happened) and every worker it
started is checked gone; waits are on conditions with generous deadlines, never on speed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from ownloop import Config, Workspace, predlog
from ownloop.cli import cli
from ownloop.deploy import CONTROLLER_LEASE, Lease
from tests.conftest import env_for
from tests.servers import free_port
from tests.test_server_live import route, rows, two_versions

pytestmark = pytest.mark.slow

DEADLINE_S = 120.0


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def store(config: Config, churn_model: Any, churn_data: pd.DataFrame) -> Config:
    with Workspace(config) as ws:
        two_versions(ws, churn_model, churn_data)
    return config


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a child that exited but is not reaped yet is gone too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@contextmanager
def serving(config: Config, tmp: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``ownloop serve --workers 2`` on a free port, yielded once it answers; killed in teardown
    (the supervisor and any worker it left), whatever happened."""
    port = free_port()
    (tmp / "tmp").mkdir(exist_ok=True)
    log = (tmp / f"serve-{port}.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "ownloop"), "serve", "--port", str(port)],
        env={**env_for(config), "OWNLOOP_WORKERS": "2", "TMPDIR": str(tmp / "tmp"), **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for(lambda: _live(port) or proc.poll() is not None, "the server to answer")
        assert proc.poll() is None, (tmp / f"serve-{port}.log").read_text()
        yield proc, port
    finally:
        children = _children(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for pid in children:  # a worker the supervisor could not stop (a failed test)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200
    except httpx.TransportError:
        return False


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return set()
    return {int(p) for p in text.split()}


def _predict_many(port: int, data: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    """``n`` requests from 8 concurrent clients, a new connection each (so either worker may
    accept it); every answer is returned."""

    def one(i: int) -> dict[str, Any]:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            r = client.post("/models/churn/predict", json={"instances": rows(data, 1, i % 50)})
            assert r.status_code == 200, r.text
            answer: dict[str, Any] = r.json()
            return answer

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def _metrics(port: int) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    samples = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def _total(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
    return sum(v for n, _, v in samples if n == name)


def _per_worker(port: int) -> dict[int, float]:
    return {
        int(labels["pid"]): v for n, labels, v in _metrics(port) if n == "ownloop_worker_requests"
    }


def _workers(proc: subprocess.Popen[bytes]) -> set[int]:
    """The worker processes of the supervisor (not its multiprocessing resource tracker)."""
    found = set()
    for pid in _children(proc.pid):
        try:
            spawned = b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if spawned and _alive(pid):
            found.add(pid)
    return found


def _logged_ids(config: Config) -> Counter[str]:
    files = predlog.list_segments(config.predictions_dir, "churn")
    table = predlog.read_segments(files, columns=["prediction_id"]).table
    return Counter(table["prediction_id"].to_pylist())


def test_two_workers_share_the_port_the_metrics_the_log_and_the_deploy_state(
    store: Config, tmp_path: Path, churn_data: pd.DataFrame
) -> None:
    # a flush once a minute: the rows answered last wait for the shutdown flush, which is tested
    with serving(store, tmp_path, OWNLOOP_PREDLOG_FLUSH_S="60") as (proc, port):
        wait_for(lambda: len(_workers(proc)) >= 2, "two worker processes")
        workers = _workers(proc)
        answers = _predict_many(port, churn_data, 100)
        ids = [a["prediction_ids"][0] for a in answers]
        assert {a["version"] for a in answers} == {1}

        samples = _metrics(port)
        # requests by outcome, latency observations and confidences sum over both workers
        assert _total(samples, "ownloop_requests_total") == 100
        assert _total(samples, "ownloop_request_duration_seconds_count") == 100
        assert _total(samples, "ownloop_prediction_confidence_count") == 100
        assert _total(samples, "ownloop_predictions_total") == 100
        per_worker = _per_worker(port)
        assert set(per_worker) == workers  # both answered, and only they
        assert all(v > 0 for v in per_worker.values()) and sum(per_worker.values()) == 100
        assert [v for n, _, v in samples if n == "ownloop_model_ready"] == [1.0]
        assert _total(samples, "ownloop_cost_per_1k_predictions") > 0

        # a deploy while serving: every worker follows it (each answers version 2 from then on)
        with Workspace(store) as ws:
            route(ws, candidate=2, arm="canary", weight=100)
        wait_for(
            lambda: all(a["version"] == 2 for a in _predict_many(port, churn_data, 16)),
            "the canary in both workers",
        )
        before = _per_worker(port)
        after_deploy = _predict_many(port, churn_data, 100)
        assert {a["version"] for a in after_deploy} == {2}
        gained = {pid: v - before.get(pid, 0.0) for pid, v in _per_worker(port).items()}
        assert set(gained) == workers and all(v > 0 for v in gained.values()), gained
        ids += [a["prediction_ids"][0] for a in after_deploy]

        # the rollout controller: one worker holds the lease; the other never took it
        with Workspace(store) as ws:
            held = Lease(ws.store, ws.clock, CONTROLLER_LEASE, ttl_s=1).current()
        assert held is not None and int(held.holder.split(":")[-2]) in workers
        serve_log = tmp_path / f"serve-{port}.log"
        # both workers tried it at their start (the first round of each is immediate)
        assert serve_log.read_text().count("took the deploy controller lease") == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    # every worker stopped, the metrics folder removed, and every answered row logged once
    assert not any(_alive(pid) for pid in workers)
    assert list((tmp_path / "tmp").iterdir()) == []
    logged = _logged_ids(store)
    assert sum(logged[i] for i in ids) == len(ids) == len(set(ids))
    assert all(logged[i] == 1 for i in ids)
    assert "prediction log closed: " in serve_log.read_text()


def test_a_worker_that_dies_is_replaced_and_its_written_rows_and_counts_stay(
    store: Config, tmp_path: Path, churn_data: pd.DataFrame
) -> None:
    with serving(store, tmp_path, OWNLOOP_PREDLOG_FLUSH_S="0.05") as (proc, port):
        wait_for(lambda: len(_workers(proc)) >= 2, "two worker processes")
        ids = [a["prediction_ids"][0] for a in _predict_many(port, churn_data, 100)]
        wait_for(
            lambda: _total(_metrics(port), "ownloop_predlog_flushed_records_total") == 100,
            "every row written",
        )
        first = _workers(proc)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(_workers(proc) - first) == 1, "a new worker in place of the dead one")
        wait_for(lambda: len(_workers(proc)) == 2, "two workers again")
        more = _predict_many(port, churn_data, 100)
        ids += [a["prediction_ids"][0] for a in more]
        samples = _metrics(port)
        # the dead worker's counts stay in the totals; its live-only gauges are gone
        assert _total(samples, "ownloop_requests_total") == 200
        assert [v for n, _, v in samples if n == "ownloop_model_ready"] == [1.0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    logged = _logged_ids(store)
    assert all(logged[i] == 1 for i in ids)


def test_workers_must_be_a_positive_count(store: Config) -> None:
    result = CliRunner().invoke(cli, ["serve", "--workers", "0"], env=env_for(store))
    assert result.exit_code == 2
    assert "--workers" in result.output
