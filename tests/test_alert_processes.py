"""Real ``ownloop monitor --every`` and ``ownloop serve`` processes evaluating alerts on one store.

One store per test: PostgreSQL when reachable, else a SQLite file. A real webhook receiver on
127.0.0.1. Every process is killed and reaped in teardown, by PID; waits are on conditions with
generous deadlines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.alerts._loop import ALERTS_LEASE
from ownloop.store import tables as t
from ownloop.store.lease import Lease
from tests.conftest import env_for
from tests.receivers import WebhookReceiver, webhook_receiver

__all__ = ["webhook_receiver"]  # the fixture, used by name
from tests.servers import free_port, start_process
from tests.test_alert_loop import degrade, set_up, wait_for
from tests.test_deploy import _gate

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL when reachable (one backend keeps the file short), else SQLite."""
    try:
        url: str = request.getfixturevalue("pg_url")
    except pytest.skip.Exception:
        return f"sqlite:///{tmp_path / 'store.db'}"
    return url


@pytest.fixture
def store(
    config: Config, webhook_receiver: WebhookReceiver, churn_model: object, churn_data: pd.DataFrame
) -> Config:
    with Workspace(config) as ws:
        set_up(ws, webhook_receiver.url, churn_model, churn_data)
    return config


def _degrade(config: Config) -> None:
    """Two error-rate windows ending tomorrow: newer than any window the monitors store now."""
    with Workspace(config) as ws:
        degrade(ws, datetime.now(UTC) + timedelta(days=1))


Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def procs(store: Config, tmp_path: Path) -> Iterator[tuple[Start, Start]]:
    """Start ``ownloop monitor`` / ``ownloop serve`` processes; each killed and reaped by PID."""
    base = {
        **env_for(store),
        "OWNLOOP_ALLOW_PRIVATE_WEBHOOKS": "1",
        "OWNLOOP_ALERT_TICK_S": "0.5",
    }
    started: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:

        def monitor(*args: str, **env: str) -> subprocess.Popen[bytes]:
            log = tmp_path / f"monitor-{len(started)}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "ownloop"), "monitor", *args],
                    env={**base, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            stack.callback(_reap, proc)
            started.append(proc)
            return proc

        def serve(**env: str) -> subprocess.Popen[bytes]:
            port = free_port()
            return stack.enter_context(
                start_process({**base, **env}, port, log=tmp_path / f"serve-{port}.log")
            )

        yield monitor, serve


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)


def _count(config: Config, table: sa.Table) -> int:
    with Workspace(config) as ws, ws.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _fingerprints(config: Config, rule: str) -> list[str]:
    with Workspace(config) as ws, ws.store.read() as conn:
        return [
            r.fingerprint
            for r in conn.execute(sa.select(t.alerts).where(t.alerts.c.rule == rule)).all()
        ]


def _holder(config: Config) -> tuple[str, datetime] | None:
    with Workspace(config) as ws:
        held = Lease(ws.store, ws.clock, ALERTS_LEASE, ttl_s=1).current()
    return None if held is None else (held.holder, held.acquired_at)


def _pages(receiver: WebhookReceiver, fp: str) -> int:
    return sum(1 for r in receiver.requests if fp.encode() in r.body)


def test_two_monitors_on_one_store_send_one_page(
    store: Config, procs: tuple[Start, Start], webhook_receiver: WebhookReceiver
) -> None:
    monitor, _ = procs
    _degrade(store)
    runs_before = _count(store, t.monitor_runs)
    first = monitor("churn", "--every", "2s")
    second = monitor("churn", "--every", "2s")
    holders: set[tuple[str, datetime]] = set()

    def rounds(n: int) -> Callable[[], bool]:
        def done() -> bool:
            held = _holder(store)
            if held is not None:
                holders.add(held)
            return _count(store, t.monitor_runs) >= runs_before + n

        return done

    wait_for(lambda: len(webhook_receiver.requests) >= 1, "the page")
    # both keep running rounds (each stores a run per interval) well after the page went out
    wait_for(rounds(8), "several rounds each")
    assert first.poll() is None and second.poll() is None
    # one evaluator all along: one holder, renewing (acquired_at unchanged), never handed over
    assert len(holders) == 1, f"the evaluator lease changed hands or was never taken: {holders}"
    ((holder, _),) = holders
    assert int(holder.split(":")[1]) in (first.pid, second.pid)
    (fp,) = _fingerprints(store, "error_rate")
    assert _pages(webhook_receiver, fp) == 1
    assert len(webhook_receiver.requests) == 1


def test_a_pending_notification_is_delivered_by_the_next_evaluator(
    store: Config, procs: tuple[Start, Start], webhook_receiver: WebhookReceiver
) -> None:
    monitor, _ = procs
    _degrade(store)
    with Workspace(store) as ws:  # an evaluator that opened the alert and died before sending
        (opened,) = ws.alerts.evaluate()
        assert len(ws.outbox.pending()) == 1
    monitor("churn", "--every", "2s")
    wait_for(lambda: len(webhook_receiver.requests) >= 1, "the pending page")
    assert _pages(webhook_receiver, opened.fingerprint) == 1
    with Workspace(store) as ws:
        wait_for(lambda: ws.outbox.pending() == [], "the outbox to record the delivery")


def test_a_hanging_route_does_not_delay_the_monitor(
    store: Config, procs: tuple[Start, Start], webhook_receiver: WebhookReceiver
) -> None:
    monitor, _ = procs
    webhook_receiver.hang_s = 300.0  # released in teardown
    _degrade(store)
    monitor("churn", "--every", "1s", OWNLOOP_OUTBOUND_TIMEOUT_S="120")
    wait_for(lambda: len(webhook_receiver.requests) == 1, "the page to reach the hanging hook")
    hanging_since = _count(store, t.monitor_runs)
    wait_for(lambda: _count(store, t.monitor_runs) >= hanging_since + 3, "three more monitor runs")
    assert not webhook_receiver.release.is_set()
    with Workspace(store) as ws:  # still hanging: no attempt recorded
        (note,) = ws.outbox.pending()
        assert ws.outbox.deliveries(note.id) == []


def test_serve_routes_a_failed_gate_to_the_owner(
    store: Config,
    procs: tuple[Start, Start],
    webhook_receiver: WebhookReceiver,
    churn_data: pd.DataFrame,
    tmp_path: Path,
) -> None:
    _, serve = procs
    proc = serve()
    with Workspace(store) as ws:
        _gate(ws, "churn@1", tmp_path, churn_data, passed=False)
    wait_for(lambda: len(webhook_receiver.requests) >= 1, "the gate_failed page")
    (fp,) = _fingerprints(store, "gate_failed")
    assert _pages(webhook_receiver, fp) == 1
    body: Any = webhook_receiver.requests[0].json()
    assert "churn" in str(body) and "gate" in str(body)
    assert proc.poll() is None
