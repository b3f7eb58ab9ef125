"""Real ``ownloop serve`` processes on one store: live routing, SIGHUP, the controller lease.

Each test runs on one SQLite file and, when reachable, on PostgreSQL. Every process is killed and
reaped in teardown (``start_process``); waits are on conditions with generous deadlines.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.deploy import CONTROLLER_LEASE, Lease, arm_for
from tests.conftest import env_for
from tests.servers import free_port, start_process
from tests.test_server_live import route, rows, two_versions

pytestmark = pytest.mark.slow

DEADLINE_S = 60.0


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


Servers = Callable[..., list[tuple["Any", httpx.Client]]]


@pytest.fixture
def servers(store: Config, tmp_path: Path) -> Iterator[Servers]:
    """Start ``n`` serve processes on the store; all are killed and reaped in teardown."""
    with ExitStack() as stack:

        def start(n: int, **env: str) -> list[tuple[Any, httpx.Client]]:
            started = []
            for _ in range(n):
                port = free_port()
                proc = stack.enter_context(
                    start_process(
                        {**env_for(store), **env}, port, log=tmp_path / f"serve-{port}.log"
                    )
                )
                client = stack.enter_context(
                    httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
                )
                started.append((proc, client))
            return started

        yield start


def predict(client: httpx.Client, data: pd.DataFrame, **headers: str) -> httpx.Response:
    return client.post("/models/churn/predict", json={"instances": rows(data, 1)}, headers=headers)


def test_two_servers_agree_on_routing_and_pick_up_every_change(
    store: Config, servers: Servers, churn_data: pd.DataFrame
) -> None:
    clients = [c for _, c in servers(2)]
    with Workspace(store) as ws:
        route(ws, candidate=2, arm="canary", weight=50, key="header:x-customer")
        wanted = ws.deploy.route("churn")
        for c in clients:
            wait_for(lambda c=c: _candidate(c) == 2, "the canary in every server")
        for i in range(40):
            key = f"customer-{i}"
            versions = {
                predict(c, churn_data, **{"x-customer": key}).json()["version"] for c in clients
            }
            assert versions == {2 if arm_for(wanted, key) == "canary" else 1}, key
        route(ws, candidate=2, arm="canary", weight=0)
        generation = ws.deploy.generations()["churn"]
        for c in clients:
            wait_for(lambda c=c: _generation(c) >= generation, "weight 0 in every server")
            answered = Counter(predict(c, churn_data).json()["version"] for _ in range(200))
            assert answered == {1: 200}
        ws.deploy.set_production("churn", 2, force=True, reason="test")
    for c in clients:
        wait_for(lambda c=c: predict(c, churn_data).json()["version"] == 2, "the promotion")


def _models(client: httpx.Client) -> dict[str, Any]:
    models: list[dict[str, Any]] = client.get("/models").json()["models"]
    return models[0] if models else {}


def _candidate(client: httpx.Client) -> int | None:
    candidate = _models(client).get("candidate")
    return None if candidate is None else int(candidate["version"])


def _generation(client: httpx.Client) -> int:
    return int(_models(client).get("generation", 0))


def test_sighup_reloads_and_the_process_keeps_serving(
    store: Config, servers: Servers, churn_data: pd.DataFrame
) -> None:
    with Workspace(store) as ws:
        path = ws.artifacts.path(ws.registry.get_version("churn@2").artifact_digest)
        good = path.read_bytes()
        path.write_bytes(good + b"tampered")
        ((proc, client),) = servers(1)
        route(ws, candidate=2, arm="canary", weight=100)
    wait_for(lambda: "altered on disk" in (_models(client).get("problem") or ""), "the report")
    assert predict(client, churn_data).json()["version"] == 1
    path.write_bytes(good)  # the artifact is restored: SIGHUP loads it again, no restart
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: _candidate(client) == 2, "the reload")
    assert proc.poll() is None
    assert _models(client)["problem"] is None
    assert predict(client, churn_data).json()["version"] == 2


def test_one_process_holds_the_lease_and_another_takes_over_when_it_dies(
    store: Config, servers: Servers
) -> None:
    started = servers(2, OWNLOOP_DEPLOY_TICK_S="0.2")
    pids = {proc.pid: proc for proc, _ in started}
    with Workspace(store) as ws:
        lease = Lease(ws.store, ws.clock, CONTROLLER_LEASE, ttl_s=1)

        def holder_pid() -> int | None:
            held = lease.current()
            if held is None or held.expires_at < ws.clock.now():
                return None
            return int(held.holder.split(":")[-2])

        wait_for(lambda: holder_pid() in pids, "a serve process to take the lease")
        first = holder_pid()
        first_lease = lease.current()
        assert first is not None and first_lease is not None
        # renewed by the same holder, never taken by the other while it lives
        wait_for(
            lambda: (lease.current() or first_lease).expires_at > first_lease.expires_at,
            "a renewal",
        )
        assert holder_pid() == first
        os.kill(first, signal.SIGKILL)
        pids[first].wait(timeout=60)
        (other,) = set(pids) - {first}
        wait_for(lambda: holder_pid() == other, "the other process to take the lease over")
        assert pids[other].poll() is None
