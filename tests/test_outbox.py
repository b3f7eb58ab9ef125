"""Delivering the outbox to real receivers: each channel's body, retries with backoff, giving
up, refusals, SMTP trouble, claims that keep two deliverers from sending one row twice."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.alerts import DeliveryOutcome, NotificationState
from ownloop.alerts._outbox import MAX_ATTEMPTS
from ownloop.clock import FrozenClock
from ownloop.store import tables as t

if TYPE_CHECKING:
    from tests.receivers import SmtpReceiver, WebhookReceiver


def _workspace(db_url: str, home: Path, clock: FrozenClock, **settings: Any) -> Workspace:
    config = Config(
        home=home,
        db_url_override=db_url,
        user="tester",
        allow_private_webhooks=settings.pop("allow_private", True),
        public_url="https://ownloop.example.com",
        **settings,
    )
    return Workspace(config, clock=clock)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def box(db_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[Workspace]:
    with _workspace(db_url, tmp_path / "home", clock) as ws:
        yield ws


def add_alert(ws: Workspace, **over: Any) -> int:
    """An alert row as the engine writes it."""
    now = ws.clock.now()
    values: dict[str, Any] = {
        "fingerprint": "3f2a9c1d0b7e6a54",
        "open_fingerprint": over.pop("open_fingerprint", "3f2a9c1d0b7e6a54"),
        "model": "churn",
        "version": 3,
        "team": "risk",
        "rule": "estimated_accuracy_drop",
        "severity": "page",
        "state": "firing",
        "summary": "estimated accuracy dropped 0.08 below reference",
        "details": {"value": 0.81, "bound": 0.05, "reference": 0.89, "n": 1240},
        "next_step": "retrain on recent data: `ownloop export-evalset churn`",
        "link": "https://ownloop.example.com/models/churn",
        "opened_at": now,
        "last_seen_at": now,
        **over,
    }
    with ws.store.write() as conn:
        return int(conn.execute(t.alerts.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def queue(ws: Workspace, alert_id: int, channel: str, target: str, **over: Any) -> int:
    now = ws.clock.now()
    values: dict[str, Any] = {
        "alert_id": alert_id,
        "kind": "firing",
        "team": "risk",
        "channel": channel,
        "target": target,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        **over,
    }
    with ws.store.write() as conn:
        return int(
            conn.execute(t.alert_notifications.insert().values(**values)).inserted_primary_key[0]
        )  # type: ignore[index]


def state_of(ws: Workspace, notification_id: int) -> Any:
    with ws.store.read() as conn:
        return conn.execute(
            sa.select(t.alert_notifications).where(t.alert_notifications.c.id == notification_id)
        ).one()


def test_webhook_body_is_alertmanager_v4(box: Workspace, webhook_receiver: WebhookReceiver) -> None:
    alert = add_alert(box)
    nid = queue(box, alert, "webhook", webhook_receiver.url)
    [delivery] = box.outbox.deliver_due()
    assert delivery.outcome == DeliveryOutcome.DELIVERED and delivery.status_code == 200
    [body] = webhook_receiver.bodies()
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["status"] == "firing" and body["receiver"] == "risk"
    assert body["groupKey"] == '{}/{receiver="risk",team="risk"}:{model="churn"}'
    assert body["externalURL"] == "https://ownloop.example.com"
    [a] = body["alerts"]
    assert a["labels"] == {
        "alertname": "estimated_accuracy_drop",
        "model": "churn",
        "version": "3",
        "team": "risk",
        "severity": "page",
    }
    assert a["annotations"]["summary"] == "estimated accuracy dropped 0.08 below reference"
    assert "n: 1240" in a["annotations"]["description"]
    assert a["annotations"]["next_step"].startswith("retrain")
    assert a["endsAt"] == "0001-01-01T00:00:00Z" and a["startsAt"].endswith("Z")
    assert a["fingerprint"] == "3f2a9c1d0b7e6a54"
    assert a["generatorURL"] == "https://ownloop.example.com/models/churn"
    row = state_of(box, nid)
    assert (row.state, row.attempts, row.claimed_by) == ("delivered", 1, None)


def test_resolved_and_escalated_bodies(box: Workspace, webhook_receiver: WebhookReceiver) -> None:
    alert = add_alert(
        box, state="resolved", open_fingerprint=None, resolved_at=box.clock.now(), resolve_note="v5"
    )
    queue(box, alert, "webhook", webhook_receiver.url, kind="resolved")
    queue(box, alert, "webhook", webhook_receiver.url, kind="escalation", team="platform")
    box.outbox.deliver_due()
    resolved, escalated = webhook_receiver.bodies()
    assert (
        resolved["status"] == "resolved"
        and resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    )
    assert escalated["status"] == "firing" and escalated["receiver"] == "platform"
    assert "escalated from team risk" in escalated["alerts"][0]["annotations"]["notification"]


def test_slack_body(box: Workspace, webhook_receiver: WebhookReceiver) -> None:
    alert = add_alert(box, summary="p99 <1s> & rising")
    queue(box, alert, "slack", webhook_receiver.url)
    box.outbox.deliver_due()
    [body] = webhook_receiver.bodies()
    assert body["text"] == "[PAGE] churn@3: p99 <1s> & rising"
    first = body["blocks"][0]["text"]
    assert first["type"] == "mrkdwn" and "p99 &lt;1s&gt; &amp; rising" in first["text"]


def test_mail_reaches_the_smtp_server(
    db_url: str, tmp_path: Path, clock: FrozenClock, smtp_receiver: SmtpReceiver
) -> None:
    with _workspace(db_url, tmp_path / "h", clock, smtp_url=smtp_receiver.url) as ws:
        queue(ws, add_alert(ws), "email", "risk@example.com")
        [d] = ws.outbox.deliver_due()
    assert d.outcome == DeliveryOutcome.DELIVERED
    [msg] = smtp_receiver.messages
    assert msg["Subject"] == "[PAGE] churn@3: estimated accuracy dropped 0.08 below reference"
    assert msg["To"] == "risk@example.com" and msg["From"] == "ownloop@localhost"
    text = msg.get_payload(decode=True).decode()
    assert "next step: retrain" in text and "ownloop ack 1" in text
    assert smtp_receiver.envelopes == [("ownloop@localhost", ["risk@example.com"])]


def test_mail_refused_is_recorded_and_retried(
    db_url: str, tmp_path: Path, clock: FrozenClock, smtp_receiver: SmtpReceiver
) -> None:
    smtp_receiver.refuse = True
    with _workspace(db_url, tmp_path / "h", clock, smtp_url=smtp_receiver.url) as ws:
        nid = queue(ws, add_alert(ws), "email", "risk@example.com")
        [d] = ws.outbox.deliver_due()
        assert d.outcome == DeliveryOutcome.FAILED and "(SMTP 550)" in (d.error or "")
        assert ws.outbox.deliver_due() == []  # not due yet
        smtp_receiver.refuse = False
        clock.advance(minutes=2)
        [d2] = ws.outbox.deliver_due()
        assert d2.outcome == DeliveryOutcome.DELIVERED and d2.attempt == 2
        assert [x.outcome for x in ws.outbox.deliveries(nid)] == ["failed", "delivered"]


def test_mail_server_down_is_recorded_and_retried(
    db_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    from tests.servers import free_port

    url = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    with _workspace(db_url, tmp_path / "h", clock, smtp_url=url) as ws:
        nid = queue(ws, add_alert(ws), "email", "risk@example.com")
        [d] = ws.outbox.deliver_due()
        assert d.outcome == DeliveryOutcome.FAILED and "unreachable" in (d.error or "")
        assert state_of(ws, nid).state == "pending"


def test_mail_without_smtp_is_refused_and_audited(box: Workspace) -> None:
    nid = queue(box, add_alert(box), "email", "risk@example.com")
    [d] = box.outbox.deliver_due()
    assert d.outcome == DeliveryOutcome.REFUSED and "OWNLOOP_SMTP_URL" in (d.error or "")
    assert state_of(box, nid).state == "refused"
    [entry] = [e for e in box.registry.audit_log() if e.action == "alert.delivery_failed"]
    assert entry.target == "alert:1"


def test_retry_with_backoff_then_success(
    box: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.status = 500
    webhook_receiver.answer = b"secret-body-never-stored"
    nid = queue(box, add_alert(box), "webhook", webhook_receiver.url)
    waits = []
    for attempt in (1, 2, 3):
        [d] = box.outbox.deliver_due()
        assert (d.outcome, d.attempt, d.status_code) == ("failed", attempt, 500)
        row = state_of(box, nid)
        waits.append(
            (
                row.next_attempt_at.replace(tzinfo=None) - clock.now().replace(tzinfo=None)
            ).total_seconds()
        )
        assert box.outbox.deliver_due() == []
        clock.advance(seconds=waits[-1] + 1)
    assert 24 <= waits[0] <= 36 and 48 <= waits[1] <= 72 and 96 <= waits[2] <= 144
    webhook_receiver.status = 200
    [d] = box.outbox.deliver_due()
    assert d.outcome == "delivered" and d.attempt == 4
    assert len(webhook_receiver.requests) == 4
    row = state_of(box, nid)
    assert row.state == "delivered" and "secret" not in str(row.last_error)
    assert all("secret" not in (x.error or "") for x in box.outbox.deliveries(nid))


def test_gives_up_after_the_last_attempt(
    box: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.status = 503
    webhook_receiver.answer = b"secret-body"
    nid = queue(box, add_alert(box), "webhook", webhook_receiver.url)
    for _ in range(MAX_ATTEMPTS):
        box.outbox.deliver_due()
        clock.advance(hours=2)
    assert box.outbox.deliver_due() == []
    row = state_of(box, nid)
    assert (row.state, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert len(webhook_receiver.requests) == MAX_ATTEMPTS
    [entry] = [e for e in box.registry.audit_log() if e.action == "alert.delivery_failed"]
    assert entry.after["state"] == "failed" and "HTTP 503" in entry.after["error"]
    assert "secret" not in json.dumps(entry.after)


def test_private_url_refused_without_the_setting(
    db_url: str, tmp_path: Path, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    with _workspace(db_url, tmp_path / "h", clock, allow_private=False) as ws:
        nid = queue(ws, add_alert(ws), "webhook", webhook_receiver.url)
        [d] = ws.outbox.deliver_due()
        assert d.outcome == "refused" and "loopback" in (d.error or "")
        assert state_of(ws, nid).state == "refused"
    assert webhook_receiver.requests == []


def test_redirect_refused_not_followed(
    box: Workspace, webhook_receiver: WebhookReceiver, second_receiver: WebhookReceiver
) -> None:
    webhook_receiver.redirect_to = second_receiver.url
    nid = queue(box, add_alert(box), "webhook", webhook_receiver.url)
    [d] = box.outbox.deliver_due()
    assert d.outcome == "refused" and "redirect" in (d.error or "")
    assert len(webhook_receiver.requests) == 1 and second_receiver.requests == []
    assert state_of(box, nid).state == "refused"


def test_a_hanging_route_is_bounded(
    db_url: str, tmp_path: Path, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.hang_s = 60
    with _workspace(db_url, tmp_path / "h", clock, outbound_timeout_s=0.5) as ws:
        nid = queue(ws, add_alert(ws), "webhook", webhook_receiver.url)
        [d] = ws.outbox.deliver_due()
        assert d.outcome == "failed" and "no answer within" in (d.error or "")
        assert d.duration_s is not None and d.duration_s < 30
        assert state_of(ws, nid).state == "pending"


def test_a_dead_holders_claim_is_taken_over_after_it_expires(
    box: Workspace, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    until = clock.now() + timedelta(minutes=5)
    queue(
        box,
        add_alert(box),
        "webhook",
        webhook_receiver.url,
        claimed_by="dead:1",
        claimed_until=until,
    )
    assert box.outbox.deliver_due() == []
    clock.advance(minutes=6)
    [d] = box.outbox.deliver_due()
    assert d.outcome == "delivered" and len(webhook_receiver.requests) == 1


def test_two_deliverers_send_each_row_once(
    db_url: str, tmp_path: Path, clock: FrozenClock, webhook_receiver: WebhookReceiver
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("concurrent claims are a PostgreSQL case (SQLite has a single writer)")
    with (
        _workspace(db_url, tmp_path / "a", clock) as a,
        _workspace(db_url, tmp_path / "b", clock) as b,
    ):
        alert = add_alert(a)
        ids = [queue(a, alert, "webhook", f"{webhook_receiver.url}?n={i}") for i in range(30)]
        results: dict[str, list[Any]] = {}
        barrier = threading.Barrier(2)

        def run(name: str, ws: Workspace) -> None:
            barrier.wait()
            results[name] = ws.outbox.deliver_due(limit=100)

        threads = [threading.Thread(target=run, args=(n, w)) for n, w in (("a", a), ("b", b))]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        sent = sorted(d.notification_id for r in results.values() for d in r)
        assert sent == ids
        paths = sorted(r.path for r in webhook_receiver.requests)
        assert len(paths) == 30 and len(set(paths)) == 30
        assert all(a.outbox.notifications(alert)[i].state == "delivered" for i in range(30))


def test_retrain_command_outcome_on_the_alert(box: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "ctx.json"
    script = (
        "import json,os,sys; ctx=json.load(sys.stdin); "
        f"open({str(out)!r},'w').write(json.dumps([ctx, os.environ['OWNLOOP_ALERT_MODEL']])); "
        "sys.stderr.write('training...\\nfailed: no data\\n'); sys.exit(3)"
    )
    alert = add_alert(box)
    nid = queue(box, alert, "command", json.dumps([sys.executable, "-c", script]), kind="retrain")
    [d] = box.outbox.deliver_due()
    assert d.outcome == "failed" and "exited with code 3" in (d.error or "")
    ctx, model = json.loads(out.read_text())
    assert model == "churn" and ctx["model"] == "churn" and ctx["version"] == 3
    assert "ownloop export-evalset churn" in ctx["export"]["command"]
    with box.store.read() as conn:
        action = conn.execute(
            sa.select(t.alerts.c.action).where(t.alerts.c.id == alert)
        ).scalar_one()
    assert action["exit_code"] == 3 and action["stderr_tail"] == "training...\nfailed: no data"
    assert state_of(box, nid).state == "pending"


def test_retrain_command_timeout_and_bad_target(box: Workspace) -> None:
    alert = add_alert(box)
    slow = json.dumps(
        {"argv": [sys.executable, "-c", "import time; time.sleep(60)"], "timeout_s": 0.5}
    )
    queue(box, alert, "command", slow, kind="retrain")
    queue(box, alert, "command", "python retrain.py", kind="retrain")
    first, second = box.outbox.deliver_due()
    assert first.outcome == "failed" and "timeout" in (first.error or "")
    assert second.outcome == "refused" and "JSON list" in (second.error or "")


def test_retrain_webhook_posts_the_context(
    box: Workspace, webhook_receiver: WebhookReceiver
) -> None:
    alert = add_alert(box, details={"window_start": "2026-11-01", "window_end": "2026-11-02"})
    queue(box, alert, "retrain_webhook", webhook_receiver.url + "?token=abc", kind="retrain")
    [d] = box.outbox.deliver_due()
    assert d.outcome == "delivered"
    [body] = webhook_receiver.bodies()
    assert body["model"] == "churn" and body["window"] == {
        "start": "2026-11-01",
        "end": "2026-11-02",
    }
    with box.store.read() as conn:
        action = conn.execute(
            sa.select(t.alerts.c.action).where(t.alerts.c.id == alert)
        ).scalar_one()
    assert action["outcome"] == "delivered" and "abc" not in json.dumps(action)


def test_listing(box: Workspace, webhook_receiver: WebhookReceiver) -> None:
    alert = add_alert(box)
    first = queue(box, alert, "webhook", webhook_receiver.url)
    queue(
        box,
        alert,
        "slack",
        webhook_receiver.url,
        next_attempt_at=box.clock.now() + timedelta(hours=1),
    )
    assert [n.id for n in box.outbox.pending()] == [first, first + 1]
    box.outbox.deliver_due()
    assert [n.state for n in box.outbox.notifications(alert)] == [
        NotificationState.DELIVERED,
        NotificationState.PENDING,
    ]
    [d] = box.outbox.deliveries(first)
    assert d.attempt == 1 and d.extra["by"] == box.outbox.holder
