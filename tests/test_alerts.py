"""Alerts over real monitor runs and stored windows: open once, route, repeat, escalate, resolve."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.alerts import AlertState, RuleAction
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data
from ownloop.errors import ConflictError, NotFoundError, PermissionDeniedError
from ownloop.store import tables as t

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def prod(ws: Workspace, churn_model: object, churn_data: pd.DataFrame) -> Workspace:
    """churn@1 in production, owned by 'risk' with a webhook, a Slack webhook and an email."""
    ws.registry.add_team(
        "risk",
        email="risk@example.com",
        webhook_url="https://alerts.example.com/hook",
        slack_webhook_url="https://hooks.example.com/risk",
        members=["tester"],
    )
    ws.registry.add_team("platform", webhook_url="https://platform.example.com/hook")
    ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    _clock(ws, T0)
    return ws


def _clock(ws: Workspace, at: datetime) -> FrozenClock:
    clock = FrozenClock(at)
    for part in (ws, ws.monitor, ws.alerts, ws.registry, ws.deploy):
        part.clock = clock
    ws.alerts.feedback.clock = clock
    return clock


def _window(ws: Workspace, end: datetime, **figures: float | None) -> int:
    """A stored stable-arm window of churn@1 with the given system figures."""
    with ws.store.write() as conn:
        run = conn.execute(
            t.monitor_runs.insert().values(
                model="churn",
                version=1,
                window_start=end - HOUR,
                window_end=end,
                rows=1000,
                status="ok",
                summary={"arms": ["stable", "canary"]},
                started_at=end,
                finished_at=end,
                run_by="test",
            )
        ).inserted_primary_key
        run_id = int(run[0]) if run is not None else 0
        for name, value in figures.items():
            conn.execute(
                t.monitor_results.insert().values(
                    run_id=run_id,
                    model="churn",
                    version=1,
                    window_end=end,
                    kind="system",
                    name=name,
                    status="ok",
                    value=value,
                    n=1000,
                )
            )
    return run_id


def _notes(ws: Workspace, alert_id: int | None = None) -> list[Any]:
    q = sa.select(t.alert_notifications).order_by(t.alert_notifications.c.id)
    if alert_id is not None:
        q = q.where(t.alert_notifications.c.alert_id == alert_id)
    with ws.store.read() as conn:
        return list(conn.execute(q).all())


def _audit(ws: Workspace, action: str) -> list[Any]:
    with ws.store.read() as conn:
        return list(conn.execute(sa.select(t.audit).where(t.audit.c.action == action)).all())


def _page(ws: Workspace) -> int:
    """Two windows with a 20% error rate (the page rule's default: above 0.05 for 2)."""
    _window(ws, T0 + HOUR, error_rate=0.2)
    _window(ws, T0 + 2 * HOUR, error_rate=0.2)
    opened = [a for a in ws.alerts.evaluate() if a.rule == "error_rate"]
    assert len(opened) == 1
    return opened[0].id


# -- real monitor runs over a real prediction log ---------------------------------------------


def _log_hours(ws: Workspace, start: datetime, hours: int, shift: float, seed: int) -> None:
    for h in range(hours):
        X = make_churn_data(1200, seed=seed + h, shift=shift).drop(columns="churned")
        log_predictions(ws, "churn@1", X, start + h * HOUR, step=timedelta(seconds=3), seed=seed)


def _monitor(ws: Workspace, end: datetime) -> None:
    ws.alerts.clock.current = end  # type: ignore[attr-defined]
    ws.monitor.run("churn", window=HOUR, end=end)


def test_drift_of_known_truth_opens_one_alert_per_rule_and_resolves_on_recovery(
    prod: Workspace,
) -> None:
    ws = prod
    _log_hours(ws, T0, 2, 0.0, seed=100)
    _log_hours(ws, T0 + 2 * HOUR, 2, 1.0, seed=200)
    _log_hours(ws, T0 + 4 * HOUR, 1, 0.0, seed=300)
    for h in (1, 2):  # like the reference: nothing opens
        _monitor(ws, T0 + h * HOUR)
        assert ws.alerts.evaluate() == []
    _monitor(ws, T0 + 3 * HOUR)  # one drifted window: dataset_drift needs two
    assert "dataset_drift" not in {a.rule for a in ws.alerts.evaluate()}
    _monitor(ws, T0 + 4 * HOUR)
    opened = {a.rule: a for a in ws.alerts.evaluate()}
    drift = opened["dataset_drift"]
    assert drift.state is AlertState.FIRING
    assert drift.team == "risk"
    assert drift.version == 1
    assert "churn@1 dataset_drift" in drift.summary
    assert drift.details["window_end"] == (T0 + 4 * HOUR).isoformat()
    assert len(drift.details["run_ids"]) == 2
    assert drift.next_step is not None and "ownloop rollback churn" in drift.next_step
    channels = sorted(n.channel for n in _notes(ws, drift.id))
    assert channels == ["email", "slack", "webhook"]
    assert {n.kind for n in _notes(ws, drift.id)} == {"firing"}
    # evaluating again opens nothing new and sends nothing new
    before = len(_notes(ws))
    assert ws.alerts.evaluate() == []
    assert len(_notes(ws)) == before
    assert len(ws.alerts.list(model="churn", open_only=True)) == len(opened)
    # the figures recover: resolved by ownloop, with a RESOLVED notification per channel
    _monitor(ws, T0 + 5 * HOUR)
    resolved = {a.rule: a for a in ws.alerts.evaluate()}
    assert resolved["dataset_drift"].state is AlertState.RESOLVED
    assert resolved["dataset_drift"].resolved_by == "ownloop"
    kinds = [n.kind for n in _notes(ws, drift.id)]
    assert kinds.count("resolved") == 3
    assert len(_audit(ws, "alert.open")) == len(opened)


# -- lifecycle over stored windows ------------------------------------------------------------


def test_for_windows_needs_every_window_to_cross(prod: Workspace) -> None:
    ws = prod
    _window(ws, T0 + HOUR, error_rate=0.2)
    assert ws.alerts.evaluate() == []
    _window(ws, T0 + 2 * HOUR, error_rate=0.01)
    _window(ws, T0 + 3 * HOUR, error_rate=0.3)
    assert ws.alerts.evaluate() == []
    ws.alerts.set_rule("churn", "error_rate", for_windows=1)
    assert [a.rule for a in ws.alerts.evaluate()] == ["error_rate"]


def test_a_window_without_a_verdict_neither_opens_nor_resolves(prod: Workspace) -> None:
    ws = prod
    alert_id = _page(ws)
    _window(ws, T0 + 3 * HOUR, error_rate=None)
    assert ws.alerts.evaluate() == []
    assert ws.alerts.get(alert_id).state is AlertState.FIRING


def test_page_repeats_after_the_interval_until_acknowledged(prod: Workspace) -> None:
    ws = prod
    alert_id = _page(ws)
    assert len(_notes(ws, alert_id)) == 3
    clock = ws.alerts.clock
    clock.advance(seconds=ws.config.alert_repeat_s - 60)  # type: ignore[attr-defined]
    ws.alerts.evaluate()
    assert len(_notes(ws, alert_id)) == 3
    clock.advance(seconds=120)  # type: ignore[attr-defined]
    assert [a.id for a in ws.alerts.evaluate()] == [alert_id]
    assert [n.kind for n in _notes(ws, alert_id)].count("repeat") == 3
    assert ws.alerts.get(alert_id).last_notified_at == clock.now()
    ws.alerts.ack(alert_id, note="looking")
    clock.advance(seconds=2 * ws.config.alert_repeat_s)  # type: ignore[attr-defined]
    assert ws.alerts.evaluate() == []
    assert [n.kind for n in _notes(ws, alert_id)].count("repeat") == 3
    assert len(_audit(ws, "alert.ack")) == 1


def _escalation(ws: Workspace, to: str = "platform", after: float = 1800.0) -> None:
    with ws.store.write() as conn:
        conn.execute(
            t.teams.update()
            .where(t.teams.c.name == "risk")
            .values(escalate_to=to, escalate_after_s=after)
        )


def test_unacknowledged_page_escalates_once_to_the_second_team(prod: Workspace) -> None:
    ws = prod
    _escalation(ws)
    alert_id = _page(ws)
    ws.alerts.clock.advance(minutes=29)  # type: ignore[attr-defined]
    assert ws.alerts.evaluate() == []
    ws.alerts.clock.advance(minutes=2)  # type: ignore[attr-defined]
    assert [a.escalated_to for a in ws.alerts.evaluate()] == ["platform"]
    esc = [n for n in _notes(ws, alert_id) if n.kind == "escalation"]
    assert [(n.team, n.channel, n.target) for n in esc] == [
        ("platform", "webhook", "https://platform.example.com/hook")
    ]
    ws.alerts.clock.advance(minutes=10)  # type: ignore[attr-defined]
    ws.alerts.evaluate()
    assert len([n for n in _notes(ws, alert_id) if n.kind == "escalation"]) == 1
    assert len(_audit(ws, "alert.escalate")) == 1


def test_acknowledged_page_does_not_escalate(prod: Workspace) -> None:
    ws = prod
    _escalation(ws)
    alert_id = _page(ws)
    ws.alerts.ack(alert_id)
    ws.alerts.clock.advance(hours=2)  # type: ignore[attr-defined]
    assert ws.alerts.evaluate() == []
    assert ws.alerts.get(alert_id).escalated_at is None


def test_warning_sends_firing_and_resolved_but_never_repeats(prod: Workspace) -> None:
    ws = prod
    ws.alerts.set_rule("churn", "latency_p99", for_windows=1)
    _window(ws, T0 + HOUR, latency_p99_s=3.0)
    (alert,) = ws.alerts.evaluate()
    ws.alerts.clock.advance(seconds=3 * ws.config.alert_repeat_s)  # type: ignore[attr-defined]
    assert ws.alerts.evaluate() == []
    _window(ws, T0 + 2 * HOUR, latency_p99_s=0.2)
    (resolved,) = ws.alerts.evaluate()
    assert resolved.state is AlertState.RESOLVED
    assert sorted(n.kind for n in _notes(ws, alert.id)) == ["firing"] * 3 + ["resolved"] * 3


def test_info_alerts_are_listed_but_sent_nowhere(prod: Workspace) -> None:
    ws = prod
    ws.alerts.set_rule("churn", "error_rate", severity="info")
    alert_id = _page(ws)
    assert _notes(ws, alert_id) == []
    assert ws.alerts.get(alert_id).last_notified_at is None


def test_resolve_by_hand_then_a_new_crossing_opens_a_new_alert(prod: Workspace) -> None:
    ws = prod
    alert_id = _page(ws)
    done = ws.alerts.resolve(alert_id, "restarted the pods")
    assert (done.state, done.resolved_by, done.resolve_note) == (
        AlertState.RESOLVED,
        "tester",
        "restarted the pods",
    )
    assert [n.kind for n in _notes(ws, alert_id)].count("resolved") == 3
    with pytest.raises(ConflictError, match="already resolved"):
        ws.alerts.resolve(alert_id, "again")
    with pytest.raises(ConflictError, match="resolved"):
        ws.alerts.ack(alert_id)
    (again,) = [a for a in ws.alerts.evaluate() if a.rule == "error_rate"]
    assert again.id != alert_id


def test_ack_and_resolve_refuse_unknown_ids_other_teams_and_empty_notes(
    prod: Workspace, config: Config
) -> None:
    ws = prod
    alert_id = _page(ws)
    with pytest.raises(NotFoundError, match="alert 999 does not exist"):
        ws.alerts.ack(999)
    with pytest.raises(NotFoundError, match="alert 999"):
        ws.alerts.resolve(999, "x")
    with pytest.raises(Exception, match="needs a note"):
        ws.alerts.resolve(alert_id, "  ")
    outsider = Actor("mallory", teams=frozenset({"platform"}))
    with Workspace(config, actor=outsider, clock=ws.alerts.clock) as other:
        with pytest.raises(PermissionDeniedError, match="alert.ack"):
            other.alerts.ack(alert_id)
        with pytest.raises(PermissionDeniedError, match="alert.resolve"):
            other.alerts.resolve(alert_id, "not mine")
    member = Actor("ann", teams=frozenset({"risk"}))
    with Workspace(config, actor=member, clock=ws.alerts.clock) as own:
        assert own.alerts.ack(alert_id).acked_by == "ann"
    with pytest.raises(ConflictError, match="already acknowledged by ann"):
        ws.alerts.ack(alert_id)
    assert ws.alerts.get(alert_id).state is AlertState.ACKNOWLEDGED


def test_list_filters_newest_first_and_mine(prod: Workspace, config: Config) -> None:
    ws = prod
    first = _page(ws)
    ws.alerts.set_rule("churn", "latency_p99", for_windows=1)
    _window(ws, T0 + 3 * HOUR, error_rate=0.2, latency_p99_s=5.0)
    (second,) = ws.alerts.evaluate()
    assert [a.id for a in ws.alerts.list()] == [second.id, first]
    assert [a.id for a in ws.alerts.list(mine=True)] == [second.id, first]
    assert ws.alerts.list(team="platform") == []
    with Workspace(config, actor=Actor("pat", teams=frozenset({"platform"}))) as other:
        assert other.alerts.list(mine=True) == []


def test_transfer_routes_new_alerts_to_the_new_team(prod: Workspace) -> None:
    ws = prod
    old = _page(ws)
    ws.registry.transfer("churn", "platform")
    ws.alerts.set_rule("churn", "latency_p99", for_windows=1)
    _window(ws, T0 + 3 * HOUR, error_rate=0.2, latency_p99_s=5.0)
    (new,) = ws.alerts.evaluate()
    assert new.team == "platform"
    assert {n.team for n in _notes(ws, new.id)} == {"platform"}
    assert ws.alerts.get(old).team == "risk"


def test_retrain_action_enqueues_one_retrain_row(prod: Workspace) -> None:
    ws = prod
    ws.alerts.set_rule(
        "churn", "error_rate", action=RuleAction(command=("python", "retrain.py", "--fast"))
    )
    alert_id = _page(ws)
    retrain = [n for n in _notes(ws, alert_id) if n.kind == "retrain"]
    assert [(n.channel, n.target) for n in retrain] == [("command", "python retrain.py --fast")]
    action = ws.alerts.get(alert_id).action
    assert action is not None
    assert action["command"] == ["python", "retrain.py", "--fast"]
    assert action["state"] == "pending"
    ws.alerts.clock.advance(seconds=ws.config.alert_repeat_s + 1)  # type: ignore[attr-defined]
    ws.alerts.evaluate()
    assert len([n for n in _notes(ws, alert_id) if n.kind == "retrain"]) == 1


def test_link_when_a_public_url_is_configured(
    prod: Workspace, config: Config, tmp_path: Any
) -> None:
    from dataclasses import replace

    with Workspace(replace(config, public_url="https://ownloop.example.com")) as ws:
        _clock(ws, T0)
        alert_id = _page(ws)
        assert ws.alerts.get(alert_id).link == "https://ownloop.example.com/models/churn"
    assert prod.alerts.get(alert_id).link is not None


# -- deploy events ------------------------------------------------------------------------------


def _rollback_check(ws: Workspace, at: datetime, verdict: str = "INSUFFICIENT") -> int:
    with ws.store.write() as conn:
        key = conn.execute(
            t.rollback_checks.insert().values(
                model="churn",
                current_version=1,
                target_version=1,
                verdict=verdict,
                acted=False,
                report={},
                at=at,
                by="test",
            )
        ).inserted_primary_key
    return int(key[0]) if key is not None else 0


def test_each_deploy_event_opens_one_alert_never_reopened(prod: Workspace) -> None:
    ws = prod
    _rollback_check(ws, T0 - timedelta(hours=30))  # history: not paged
    _rollback_check(ws, T0 - timedelta(hours=1), verdict="SAFE")
    check = _rollback_check(ws, T0 - timedelta(minutes=5))
    (alert,) = ws.alerts.evaluate()
    assert alert.rule == "rollback_insufficient"
    assert f"rollback_check:{check}" == alert.details["event"]
    assert "INSUFFICIENT" in alert.summary
    assert alert.next_step is not None and "retrain on recent data" in alert.next_step
    assert ws.alerts.evaluate() == []
    ws.alerts.resolve(alert.id, "retraining")
    assert ws.alerts.evaluate() == []
    _rollback_check(ws, T0)
    assert [a.rule for a in ws.alerts.evaluate()] == ["rollback_insufficient"]


def test_disabled_rule_opens_nothing(prod: Workspace) -> None:
    ws = prod
    ws.alerts.set_rule("churn", "rollback_insufficient", enabled=False)
    _rollback_check(ws, T0)
    assert ws.alerts.evaluate() == []


# -- concurrency ------------------------------------------------------------------------------


def test_two_evaluators_at_once_open_one_alert(prod: Workspace, config: Config) -> None:
    ws = prod
    _window(ws, T0 + HOUR, error_rate=0.2)
    _window(ws, T0 + 2 * HOUR, error_rate=0.2)
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        with Workspace(config, clock=FrozenClock(T0 + 2 * HOUR)) as mine:
            barrier.wait()
            try:
                results.append(mine.alerts.evaluate())
            except BaseException as exc:  # reported below, with the thread's traceback lost
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    assert sum(len(r) for r in results) == 1
    assert len(ws.alerts.list()) == 1
    assert len(_notes(ws)) == 3
    assert len(_audit(ws, "alert.open")) == 1


def _estimate(ws: Workspace, end: datetime, value: float, lower: float, upper: float) -> None:
    run_id = _window(ws, end)
    with ws.store.write() as conn:
        conn.execute(
            t.monitor_results.insert().values(
                run_id=run_id,
                model="churn",
                version=1,
                window_end=end,
                kind="estimated_performance",
                name="accuracy",
                status="ok",
                method="confidence-based",
                value=value,
                lower=lower,
                upper=upper,
                n=1000,
                reference=0.85,
            )
        )


def test_estimated_drop_counts_only_beyond_the_estimates_interval(prod: Workspace) -> None:
    """A point estimate 0.10 below the reference whose band reaches reference - 0.05 is no alert."""
    ws = prod
    _estimate(ws, T0 + HOUR, 0.75, 0.70, 0.81)
    _estimate(ws, T0 + 2 * HOUR, 0.75, 0.70, 0.81)
    assert ws.alerts.evaluate() == []
    _estimate(ws, T0 + 3 * HOUR, 0.75, 0.72, 0.78)
    assert ws.alerts.evaluate() == []  # one window of two
    _estimate(ws, T0 + 4 * HOUR, 0.74, 0.71, 0.77)
    (alert,) = ws.alerts.evaluate()
    assert alert.rule == "estimated_accuracy_drop"
    assert alert.severity == "page"
    assert alert.details["reference"] == 0.85
    assert alert.details["upper"] == 0.77
    assert "estimated accuracy 0.740 [0.710, 0.770]" in alert.summary
