"""The alert evaluator loop in one process: the lease, its threads, errors, and ``ownloop monitor``.

A real store (SQLite and PostgreSQL), a real loopback webhook receiver, a frozen clock for the
lease's expiry. Waits are on conditions with generous deadlines, never on how fast a round runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.alerts import AlertLoop
from ownloop.alerts._loop import ALERTS_LEASE
from ownloop.cli import cli
from ownloop.clock import FrozenClock
from ownloop.store import tables as t
from ownloop.store.lease import Lease
from tests.conftest import env_for
from tests.receivers import WebhookReceiver, webhook_receiver

__all__ = ["webhook_receiver"]  # the fixture, used by name


T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEADLINE_S = 60.0


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def degrade(ws: Workspace, end: datetime, n: int = 2) -> None:
    """``n`` stored stable-arm windows of churn@1 ending at ``end`` with a 20% error rate: the
    error_rate page rule (above 0.05 for 2 windows) holds over them."""
    with ws.store.write() as conn:
        for i in range(n):
            at = end - i * HOUR
            run = conn.execute(
                t.monitor_runs.insert().values(
                    model="churn",
                    version=1,
                    window_start=at - HOUR,
                    window_end=at,
                    rows=1000,
                    status="ok",
                    summary={"arms": ["stable", "canary"]},
                    started_at=at,
                    finished_at=at,
                    run_by="test",
                )
            ).inserted_primary_key
            assert run is not None
            conn.execute(
                t.monitor_results.insert().values(
                    run_id=int(run[0]),
                    model="churn",
                    version=1,
                    window_end=at,
                    kind="system",
                    name="error_rate",
                    status="ok",
                    value=0.2,
                    n=1000,
                )
            )


def set_up(ws: Workspace, hook: str, churn_model: object, churn_data: pd.DataFrame) -> None:
    """churn@1 in production, owned by 'risk' whose webhook is ``hook``."""
    ws.registry.add_team("risk", webhook_url=hook, members=["tester"])
    ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")


def alert_count(ws: Workspace) -> int:
    with ws.store.read() as conn:
        return len(conn.execute(sa.select(t.alerts.c.id)).all())


@pytest.fixture
def lconfig(config: Config) -> Config:
    return replace(config, allow_private_webhooks=True, outbound_timeout_s=10.0)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0 + 2 * HOUR)


@pytest.fixture
def prod(
    lconfig: Config,
    clock: FrozenClock,
    webhook_receiver: WebhookReceiver,
    churn_model: object,
    churn_data: pd.DataFrame,
) -> Iterator[Workspace]:
    with Workspace(lconfig, clock=clock) as ws:
        set_up(ws, webhook_receiver.url, churn_model, churn_data)
        yield ws


@pytest.fixture
def loops(prod: Workspace) -> Iterator[Callable[..., AlertLoop]]:
    """AlertLoops on ``prod``'s store; every one is stopped (threads joined) in teardown."""
    made: list[AlertLoop] = []

    def make(**kw: Any) -> AlertLoop:
        loop = AlertLoop(prod.alerts, prod.outbox, tick_s=kw.pop("tick_s", 3600.0), **kw)
        made.append(loop)
        return loop

    yield make
    for loop in made:
        loop.stop()


# -- the lease --------------------------------------------------------------------------------


def test_run_once_holds_the_lease_evaluates_and_delivers(
    prod: Workspace, loops: Callable[..., AlertLoop], webhook_receiver: WebhookReceiver
) -> None:
    degrade(prod, T0 + 2 * HOUR)
    loop = loops()
    done = loop.run_once()
    assert done.holding and done.errors == ()
    (alert,) = done.alerts
    assert (alert.rule, alert.team) == ("error_rate", "risk")
    assert [d.outcome.value for d in done.deliveries] == ["delivered"]
    assert len(webhook_receiver.requests) == 1
    held = Lease(prod.store, prod.clock, ALERTS_LEASE, ttl_s=1).current()
    assert held is not None and held.holder == loop.lease.holder
    assert loop.run_once().alerts == ()  # the alert is open: nothing new, nothing resent


def test_a_second_loop_does_nothing_while_the_first_holds_and_takes_over_after(
    prod: Workspace,
    clock: FrozenClock,
    loops: Callable[..., AlertLoop],
    webhook_receiver: WebhookReceiver,
) -> None:
    first, second = loops(), loops()
    assert first.run_once().holding
    degrade(prod, T0 + 2 * HOUR)
    assert second.run_once() == type(second.run_once())(holding=False)
    assert alert_count(prod) == 0 and webhook_receiver.requests == []

    first.stop()  # a graceful stop lets the lease go at once
    taken = second.run_once()
    assert taken.holding and [a.rule for a in taken.alerts] == ["error_rate"]
    assert not first.run_once().holding

    third = loops()  # the holder dies (no release, no renewal): the lease expires
    assert not third.run_once().holding
    clock.advance(seconds=second.lease.ttl.total_seconds() + 1)
    assert third.run_once().holding
    assert not second.run_once().holding
    assert len(webhook_receiver.requests) == 1


def test_stop_joins_the_threads_and_releases_the_lease(
    prod: Workspace, loops: Callable[..., AlertLoop]
) -> None:
    loop = loops()
    loop.start()
    wait_for(lambda: loop.holding, "the loop to take the lease")
    threads = list(loop._threads)
    assert len(threads) == 3 and all(th.is_alive() for th in threads)
    loop.stop()
    assert not any(th.is_alive() for th in threads)
    assert not loop.holding
    held = loop.lease.current()
    assert held is not None and held.expires_at < prod.clock.now()
    assert loops().run_once().holding  # no wait for the ttl


# -- errors and slow routes -------------------------------------------------------------------


def test_an_error_in_evaluate_is_logged_and_the_loop_goes_on(
    prod: Workspace, loops: Callable[..., AlertLoop], caplog: pytest.LogCaptureFixture
) -> None:
    rounds: list[int] = []
    broken = loops(models=["nosuch"], before_evaluate=lambda: rounds.append(1))
    with caplog.at_level(logging.ERROR, logger="ownloop.alerts"):
        failed = broken.run_once()
    assert failed.holding and len(failed.errors) == 1
    assert failed.errors[0].startswith("evaluate: ") and "nosuch" in failed.errors[0]
    assert "alerts evaluate failed" in caplog.text
    broken.stop()

    threaded = loops(models=["nosuch"], before_evaluate=lambda: rounds.append(1))
    threaded.start()
    wait_for(lambda: threaded.holding, "the lease")
    for n in (2, 3):  # every round fails; the evaluating thread survives and runs the next
        threaded.wake()
        wait_for(lambda n=n: len(rounds) >= n, f"round {n}")  # type: ignore[misc]
    assert all(th.is_alive() for th in threaded._threads)


def test_a_failing_monitor_run_does_not_silence_the_rules(
    prod: Workspace, loops: Callable[..., AlertLoop]
) -> None:
    def monitors() -> None:
        raise RuntimeError("prediction log unreadable")

    degrade(prod, T0 + 2 * HOUR)
    done = loops(before_evaluate=monitors).run_once()
    assert done.errors == ("monitor: RuntimeError",)
    assert [a.rule for a in done.alerts] == ["error_rate"]


class _FlakyLease(Lease):
    """The store's lease, whose renewal fails unexpectedly once ``fail`` is set."""

    fail = threading.Event()

    def acquire(self) -> bool:
        if self.fail.is_set():
            raise RuntimeError("driver bug")
        return super().acquire()


def test_an_unexpected_renewal_failure_counts_as_lost(
    prod: Workspace, loops: Callable[..., AlertLoop]
) -> None:
    loop = loops(tick_s=0.1)
    loop.lease = _FlakyLease(prod.store, prod.clock, ALERTS_LEASE, ttl_s=15)
    loop.start()
    wait_for(lambda: loop.holding, "the lease")
    _FlakyLease.fail.set()
    try:
        wait_for(lambda: not loop.holding, "the loop to stop counting itself the holder")
        assert loop._threads[0].is_alive()
    finally:
        _FlakyLease.fail.clear()
    wait_for(lambda: loop.holding, "the lease again once renewals work")


def test_a_hanging_webhook_does_not_delay_the_next_evaluation(
    prod: Workspace, loops: Callable[..., AlertLoop], webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.hang_s = 120.0  # until released below (or the outbound timeout, 10 s)
    rounds: list[threading.Event] = [threading.Event() for _ in range(3)]
    count = [0]

    def seen() -> None:
        rounds[min(count[0], 2)].set()
        count[0] += 1

    degrade(prod, T0 + 2 * HOUR)
    loop = loops(before_evaluate=seen)
    loop.start()
    wait_for(lambda: loop.holding, "the lease")
    loop.wake()
    wait_for(lambda: len(webhook_receiver.requests) == 1, "the page to reach the hanging hook")
    loop.wake()
    assert rounds[1].wait(DEADLINE_S), "the next round did not evaluate"
    # evaluated while the send still hangs: no attempt recorded yet, the receiver not released
    (note,) = prod.outbox.pending()
    assert prod.outbox.deliveries(note.id) == []
    assert not webhook_receiver.release.is_set()
    webhook_receiver.release.set()
    wait_for(lambda: prod.outbox.pending() == [], "the delivery to finish")
    (sent,) = prod.outbox.deliveries(note.id)
    assert sent.outcome.value == "delivered"


# -- ownloop monitor --------------------------------------------------------------------------


def _run(config: Config, *args: str, **env: str) -> Result:
    return CliRunner().invoke(
        cli,
        list(args),
        env={**env_for(config), "OWNLOOP_ALLOW_PRIVATE_WEBHOOKS": "1", **env},
    )


@pytest.fixture
def real_clock_prod(
    lconfig: Config,
    webhook_receiver: WebhookReceiver,
    churn_model: object,
    churn_data: pd.DataFrame,
) -> Iterator[Workspace]:
    """churn@1 in production with two degraded windows ending tomorrow, so the monitor's own
    (empty) windows, ending now, never push them out of the rule's last two."""
    with Workspace(lconfig) as ws:
        set_up(ws, webhook_receiver.url, churn_model, churn_data)
        degrade(ws, datetime.now(UTC) + timedelta(days=1))
        yield ws


def test_monitor_prints_the_alert_round_and_releases_the_lease(
    real_clock_prod: Workspace, webhook_receiver: WebhookReceiver
) -> None:
    ws = real_clock_prod
    res = _run(ws.config, "monitor", "churn")
    assert res.exit_code == 0, res.output
    assert "alert #1 firing: churn error_rate (page) -> team risk" in res.output
    assert "alerts: 1 notification(s) delivered" in res.output
    assert len(webhook_receiver.requests) == 1
    held = Lease(ws.store, ws.clock, ALERTS_LEASE, ttl_s=1).current()
    assert held is not None and held.expires_at <= datetime.now(UTC)  # let go on exit
    again = _run(ws.config, "monitor", "churn")  # the next cron run takes the turn at once
    assert "another ownloop process" not in again.output
    assert len(webhook_receiver.requests) == 1


def test_monitor_json_keeps_stdout_one_document(
    real_clock_prod: Workspace, webhook_receiver: WebhookReceiver
) -> None:
    res = _run(real_clock_prod.config, "monitor", "churn", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["model"] == "churn"
    assert "alert #1 firing" in res.stderr and "delivered" in res.stderr
    assert len(webhook_receiver.requests) == 1


def test_monitor_no_alerts_evaluates_nothing(
    real_clock_prod: Workspace, webhook_receiver: WebhookReceiver
) -> None:
    res = _run(real_clock_prod.config, "monitor", "churn", "--no-alerts")
    assert res.exit_code == 0, res.output
    assert "alert" not in res.output
    assert alert_count(real_clock_prod) == 0 and webhook_receiver.requests == []
    assert (
        Lease(real_clock_prod.store, real_clock_prod.clock, ALERTS_LEASE, ttl_s=1).current() is None
    )


def test_monitor_says_when_another_process_holds_the_turn(
    real_clock_prod: Workspace, webhook_receiver: WebhookReceiver
) -> None:
    other = Lease(real_clock_prod.store, real_clock_prod.clock, ALERTS_LEASE, ttl_s=3600)
    assert other.acquire()
    res = _run(real_clock_prod.config, "monitor", "churn", "--fail-on", "drift")
    assert res.exit_code == 0, res.output  # --fail-on decides the exit code, not the alerts
    assert "another ownloop process evaluates the rules" in res.output
    assert alert_count(real_clock_prod) == 0 and webhook_receiver.requests == []
