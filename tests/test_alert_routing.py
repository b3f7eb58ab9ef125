"""Alerts routed to the owning team, end to end with real receivers: a degraded model (real
monitor runs over a real prediction log with simulated drift) sends ONE grouped page to its
owner's webhook and mail, repeats at the interval, escalates, stops on ack, resolves on recovery;
failing and hanging receivers; a transfer moves new alerts to the new owner."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest
from click.testing import CliRunner

from ownloop import Config, Workspace
from ownloop.alerts import AlertState, DeliveryOutcome, NotificationState
from ownloop.alerts._outbox import Outbox
from ownloop.cli import cli
from ownloop.clock import FrozenClock
from ownloop.outbound import redact_url
from tests.conftest import env_for
from tests.test_alerts import _log_hours, _window
from tests.test_outbox import add_alert, queue, state_of

if TYPE_CHECKING:
    from tests.receivers import SmtpReceiver, WebhookReceiver


T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DRIFT_RULES = ("dataset_drift", "top_feature_drift", "prediction_drift")


def _workspace(db_url: str, home: Path, clock: FrozenClock, **settings: Any) -> Workspace:
    config = Config(
        home=home,
        db_url_override=db_url,
        user="tester",
        allow_private_webhooks=True,
        public_url="https://ownloop.example.com",
        **settings,
    )
    return Workspace(config, clock=clock)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def routed(
    db_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    churn_model: object,
    churn_data: pd.DataFrame,
    webhook_receiver: WebhookReceiver,
    second_receiver: WebhookReceiver,
    smtp_receiver: SmtpReceiver,
) -> Iterator[Workspace]:
    """churn@1 in production, owned by 'risk' (webhook + mail), escalating to 'platform'."""
    with _workspace(db_url, tmp_path / "home", clock, smtp_url=smtp_receiver.url) as ws:
        ws.registry.add_team("platform", webhook_url=second_receiver.url)
        ws.registry.add_team(
            "risk", email="risk@example.com", webhook_url=webhook_receiver.url, members=["tester"]
        )
        ws.registry.update_team("risk", escalate_to="platform", escalate_after_s=6 * 3600)
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
        yield ws


def _tick(ws: Workspace, clock: FrozenClock, at: datetime | None = None) -> list[Any]:
    """What the evaluator loop does each tick: monitor (when a window ends), evaluate, deliver."""
    if at is not None:
        clock.current = at
        ws.monitor.run("churn", window=HOUR, end=at)
    ws.alerts.evaluate()
    return ws.outbox.deliver_due()


def _subjects(smtp: SmtpReceiver) -> list[str]:
    """Each mail's subject, unfolded (a long header arrives folded over lines)."""
    return [" ".join(str(m["Subject"]).split()) for m in smtp.messages]


def _valid_v4(body: dict[str, Any]) -> None:
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["groupLabels"] == {"model": "churn"}
    for a in body["alerts"]:
        assert set(a) == {
            "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint",
        }  # fmt: skip
        assert a["status"] == body["status"]
        assert a["startsAt"].endswith("Z") and a["endsAt"].endswith("Z")
        assert {"alertname", "model", "version", "team", "severity"} <= set(a["labels"])
        assert a["annotations"]["summary"]
    # commonLabels: exactly the label pairs every alert shares
    shared = {
        k: v
        for k, v in body["alerts"][0]["labels"].items()
        if all(x["labels"].get(k) == v for x in body["alerts"])
    }
    assert body["commonLabels"] == shared


def test_a_degraded_model_pages_its_owner_once_repeats_escalates_and_resolves(
    routed: Workspace,
    clock: FrozenClock,
    webhook_receiver: WebhookReceiver,
    second_receiver: WebhookReceiver,
    smtp_receiver: SmtpReceiver,
) -> None:
    ws = routed
    for rule in DRIFT_RULES:  # the drift of this model pages (the defaults only warn)
        ws.alerts.set_rule("churn", rule, severity="page")
    _log_hours(ws, T0, 2, 0.0, seed=100)
    _log_hours(ws, T0 + 2 * HOUR, 2, 1.0, seed=200)
    for h in (1, 2, 3):
        _tick(ws, clock, T0 + h * HOUR)
    assert webhook_receiver.requests == [] and smtp_receiver.messages == []
    sent = _tick(ws, clock, T0 + 4 * HOUR)
    opened = ws.alerts.list(model="churn", open_only=True)
    rules = {a.rule for a in opened}
    assert {"dataset_drift", "prediction_drift"} <= rules and len(opened) >= 2
    # every notification of the group got its own attempt, all delivered
    assert len(sent) == 2 * len(opened)
    assert {d.outcome for d in sent} == {DeliveryOutcome.DELIVERED}

    # exactly ONE grouped page to the owner's webhook, with every opened alert
    [body] = webhook_receiver.bodies()
    _valid_v4(body)
    assert body["status"] == "firing" and body["receiver"] == "risk"
    assert sorted(a["fingerprint"] for a in body["alerts"]) == sorted(a.fingerprint for a in opened)
    assert {a["labels"]["alertname"] for a in body["alerts"]} == rules
    assert body["commonLabels"]["model"] == "churn" and body["commonLabels"]["team"] == "risk"
    assert body["commonLabels"]["severity"] == "page"
    assert "alertname" not in body["commonLabels"]  # differs between the alerts
    group_key = body["groupKey"]
    # and exactly ONE mail listing them, its subject counting them
    [mail] = smtp_receiver.messages
    assert smtp_receiver.envelopes[0][1] == ["risk@example.com"]
    assert _subjects(smtp_receiver)[0].startswith(f"[PAGE] churn@1: {len(opened)} alerts (")
    text = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    for a in opened:
        assert f"ownloop ack {a.id}" in text and a.summary in text
    # evaluating again without new windows sends nothing
    assert _tick(ws, clock) == []

    # not repeated before the repeat interval, repeated (one group again) after it
    clock.advance(seconds=ws.config.alert_repeat_s - 60)
    assert _tick(ws, clock) == []
    clock.advance(seconds=120)
    assert len(_tick(ws, clock)) == 2 * len(opened)
    assert len(webhook_receiver.requests) == 2 and len(smtp_receiver.messages) == 2
    repeat = webhook_receiver.bodies()[1]
    assert repeat["groupKey"] == group_key and len(repeat["alerts"]) == len(opened)
    assert repeat["commonAnnotations"]["notification"].startswith("repeat")
    assert "REPEAT" in _subjects(smtp_receiver)[1]

    # unacknowledged past escalate_after: one grouped page to the escalation team
    assert second_receiver.requests == []
    clock.advance(hours=2.1)  # 6 h after opening
    _tick(ws, clock)
    [escalated] = second_receiver.bodies()
    _valid_v4(escalated)
    assert escalated["receiver"] == "platform" and len(escalated["alerts"]) == len(opened)
    assert escalated["commonLabels"]["team"] == "platform"
    assert all(a.escalated_to == "platform" for a in ws.alerts.list(model="churn"))

    # acknowledged: no more repeats, no more escalation
    for a in opened:
        ws.alerts.ack(a.id, note="looking")
    owner_before, platform_before = len(webhook_receiver.requests), len(second_receiver.requests)
    clock.advance(seconds=3 * ws.config.alert_repeat_s)
    _tick(ws, clock)
    assert len(webhook_receiver.requests) == owner_before
    assert len(second_receiver.requests) == platform_before

    # the figures recover: resolved, one 'resolved' webhook and one mail to the owner
    mails_before = len(smtp_receiver.messages)
    recovered = clock.now().replace(minute=0, second=0, microsecond=0) + HOUR
    _log_hours(ws, recovered - HOUR, 1, 0.0, seed=300)
    _tick(ws, clock, recovered)
    now_resolved = [a for a in ws.alerts.list(model="churn") if a.state is AlertState.RESOLVED]
    assert "dataset_drift" in {a.rule for a in now_resolved}  # the data is like the reference
    resolved = webhook_receiver.bodies()[owner_before:]
    assert [b["status"] for b in resolved] == ["resolved"]  # one grouped 'resolved' message
    _valid_v4(resolved[0])
    assert sorted(a["fingerprint"] for a in resolved[0]["alerts"]) == sorted(
        a.fingerprint for a in now_resolved
    )
    assert all(a["endsAt"] != "0001-01-01T00:00:00Z" for a in resolved[0]["alerts"])
    assert len(smtp_receiver.messages) == mails_before + 1
    assert _subjects(smtp_receiver)[-1].startswith("[RESOLVED] churn@1")


# -- quicker setups over stored windows --------------------------------------------------------


def _two_pages(ws: Workspace, clock: FrozenClock) -> list[Any]:
    """error_rate and latency_p99 both paging on churn@1, opened by one evaluation."""
    ws.alerts.set_rule("churn", "latency_p99", severity="page", for_windows=1)
    ws.alerts.set_rule("churn", "error_rate", for_windows=1)
    clock.current = T0 + HOUR
    _window(ws, T0 + HOUR, error_rate=0.2, latency_p99_s=3.0)
    opened = ws.alerts.evaluate()
    assert sorted(a.rule for a in opened) == ["error_rate", "latency_p99"]
    return opened


def test_a_failing_receiver_is_retried_then_delivered_every_attempt_stored(
    routed: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    ws = routed
    opened = _two_pages(ws, clock)
    webhook_receiver.status = 500
    first = [d for d in ws.outbox.deliver_due() if d.outcome != DeliveryOutcome.DELIVERED]
    assert len(webhook_receiver.requests) == 1  # one grouped attempt for both alerts
    assert len(first) == 2 and {d.status_code for d in first} == {500}
    webhook_receiver.status = 200
    assert ws.outbox.deliver_due() == []  # not due before its backoff
    clock.advance(seconds=60)  # past the first backoff (30 s +- 20 %)
    again = ws.outbox.deliver_due()
    assert len(again) == 2 and {d.outcome for d in again} == {DeliveryOutcome.DELIVERED}
    assert len(webhook_receiver.requests) == 2
    for a in opened:
        [hook] = [n for n in ws.outbox.notifications(a.id) if n.channel == "webhook"]
        assert hook.state is NotificationState.DELIVERED and hook.attempts == 2
        tries = ws.outbox.deliveries(hook.id)
        assert [(d.outcome, d.status_code) for d in tries] == [
            (DeliveryOutcome.FAILED, 500),
            (DeliveryOutcome.DELIVERED, 200),
        ]


def test_a_hanging_receiver_is_abandoned_and_recorded(
    db_url: str,
    tmp_path: Path,
    churn_model: object,
    churn_data: pd.DataFrame,
    webhook_receiver: WebhookReceiver,
) -> None:
    clock = FrozenClock(T0)
    webhook_receiver.hang_s = 60.0
    with _workspace(db_url, tmp_path / "home", clock, outbound_timeout_s=1.0) as ws:
        ws.registry.add_team("risk", webhook_url=webhook_receiver.url)
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
        opened = _two_pages(ws, clock)
        started = time.monotonic()
        attempts = ws.outbox.deliver_due()
        took = time.monotonic() - started
        assert took < 20.0  # the timeout is 1 s; generous for a loaded machine
        assert len(attempts) == 2 and {d.outcome for d in attempts} == {DeliveryOutcome.FAILED}
        assert len(webhook_receiver.requests) == 1
        for a in opened:
            [hook] = ws.outbox.notifications(a.id)
            assert hook.state is NotificationState.PENDING and hook.last_error
            [tried] = ws.outbox.deliveries(hook.id)
            assert tried.outcome is DeliveryOutcome.FAILED and tried.error


def test_after_a_transfer_new_alerts_go_to_the_new_owner(
    routed: Workspace,
    clock: FrozenClock,
    webhook_receiver: WebhookReceiver,
    second_receiver: WebhookReceiver,
) -> None:
    ws = routed
    ws.registry.transfer("churn", "platform")
    _two_pages(ws, clock)
    ws.outbox.deliver_due()
    assert webhook_receiver.requests == []
    [body] = second_receiver.bodies()
    assert body["receiver"] == "platform" and len(body["alerts"]) == 2
    assert {a["labels"]["team"] for a in body["alerts"]} == {"platform"}


def test_two_deliverers_claim_groups_without_sending_a_row_twice(
    routed: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    ws = routed
    opened = _two_pages(ws, clock)
    webhook_receiver.hang_s = 0.3  # keep the first send in flight while the other claims
    other = Outbox(ws.store, ws.config, clock, ws.outbox.actor, ws.outbound)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda box=box: results.extend(box.deliver_due()))
        for box in (ws.outbox, other)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert len(results) == 2 * len(opened)  # each row attempted once, by one of the two
    assert len({d.notification_id for d in results}) == len(results)
    sent = [a["fingerprint"] for b in webhook_receiver.bodies() for a in b["alerts"]]
    assert sorted(sent) == sorted(a.fingerprint for a in opened)


def test_alerts_show_lists_notifications_and_every_attempt(
    routed: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    ws = routed
    webhook_receiver.status = 503
    alert = _two_pages(ws, clock)[0]
    ws.outbox.deliver_due()
    env = {**env_for(ws.config), "OWNLOOP_NO_PROGRESS": "1", "COLUMNS": "250"}
    out = CliRunner().invoke(cli, ["alerts", "show", str(alert.id)], env=env)
    assert out.exit_code == 0, out.output
    assert alert.summary in out.output and "next step:" in out.output
    assert "notifications" in out.output and "delivery attempts" in out.output
    assert "503" in out.output and "pending" in out.output
    out = CliRunner().invoke(cli, ["alerts", "show", str(alert.id), "--json"], env=env)
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["alert"]["id"] == alert.id and shown["alert"]["next_step"]
    notes = {n["channel"]: n for n in shown["notifications"]}
    assert set(notes) == {"webhook", "email"}
    hook = notes["webhook"]
    assert hook["state"] == "pending" and hook["attempts"] == 1 and hook["next_attempt_at"]
    assert hook["target"] == redact_url(webhook_receiver.url)  # secrets never printed whole
    [tried] = hook["deliveries"]
    assert (tried["outcome"], tried["status_code"]) == ("failed", 503)
    assert notes["email"]["deliveries"][0]["outcome"] == "delivered"
    missing = CliRunner().invoke(cli, ["alerts", "show", "9999"], env=env)
    assert missing.exit_code != 0 and "does not exist" in missing.output


def test_groups_are_per_model_route_and_kind_retrain_triggers_and_claimed_rows_apart(
    db_url: str,
    tmp_path: Path,
    webhook_receiver: WebhookReceiver,
    second_receiver: WebhookReceiver,
) -> None:
    clock = FrozenClock(T0)
    with _workspace(db_url, tmp_path / "home", clock) as ws:
        hook, other = webhook_receiver.url, second_receiver.url
        a1 = add_alert(ws, fingerprint="a1", open_fingerprint="a1", rule="dataset_drift")
        a2 = add_alert(ws, fingerprint="a2", open_fingerprint="a2", rule="prediction_drift")
        a3 = add_alert(ws, fingerprint="a3", open_fingerprint="a3", rule="error_rate")
        f1 = add_alert(ws, fingerprint="f1", open_fingerprint="f1", model="fraud")
        for a in (a1, a2, f1):
            queue(ws, a, "webhook", hook)
        queue(ws, a1, "webhook", hook, kind="repeat")  # another kind: its own message
        queue(ws, a2, "webhook", other)  # another route: its own message
        for a in (a1, a2):  # a retrain trigger runs once per alert
            queue(ws, a, "retrain_webhook", other, kind="retrain")
        held = queue(  # claimed by another deliverer: left out of the group
            ws, a3, "webhook", hook, claimed_by="dead:1", claimed_until=T0 + HOUR
        )
        attempts = ws.outbox.deliver_due()
        assert len(attempts) == 7 and {d.outcome for d in attempts} == {DeliveryOutcome.DELIVERED}
        firing = sorted(
            sorted(a["fingerprint"] for a in b["alerts"])
            for b in webhook_receiver.bodies()
            if "alerts" in b
        )
        assert firing == [["a1"], ["a1", "a2"], ["f1"]]  # repeat a1 | firing a1+a2 | fraud
        kinds = [
            b["alerts"][0]["annotations"].get("notification") for b in webhook_receiver.bodies()
        ]
        assert sum(1 for k in kinds if k and k.startswith("repeat")) == 1
        to_other = second_receiver.bodies()
        assert sorted(len(b["alerts"]) for b in to_other if "alerts" in b) == [1]
        assert sorted(b["alert_id"] for b in to_other if "alert_id" in b) == [a1, a2]
        assert state_of(ws, held).state == "pending"  # still the other deliverer's
