"""Delivering the outbox: pending notifications grouped per model and route, rendered for the
channel and sent as one message, every attempt recorded per notification, retried with backoff;
a slow or failing route never blocks the caller.

A group is claimed with a compare-and-set (pending, due, and not claimed or its claim expired ->
claimed by this holder until a bound), so two processes never send the same row at once. A
process that dies mid-send leaves its claim until ``claimed_until`` passes; the next deliverer
then sends the row again: delivery is at least once, never silently lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ownloop.access import Acting, Actor, action
from ownloop.alerts._mail import SmtpSettings, send_mail
from ownloop.alerts._model import (
    Alert,
    Channel,
    Delivery,
    DeliveryOutcome,
    Notification,
    NotificationKind,
    NotificationState,
    alert_from_row,
)
from ownloop.alerts._render import (
    alertmanager_group_body,
    email_group_message,
    retrain_context,
    slack_group_body,
)
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.outbound import Outbound, OutboundError, OutboundRefused, redact_url
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["MAX_ATTEMPTS", "Outbox", "backoff_s"]

MAX_ATTEMPTS = 8  # the 8th failure gives up: about four hours of retries in all
_FIRST_RETRY_S = 30.0
_LONGEST_RETRY_S = 3600.0
_COMMAND_TIMEOUT_S = 600.0  # a retrain command without its own timeout
_STDERR_TAIL = 20  # lines of a command's stderr kept on the alert
_STDERR_CHARS = 2000
_MAX_GROUP = 100  # alerts in one grouped message; the rest go in the next one
# a retrain trigger runs once per alert, with that alert's context: never grouped
_UNGROUPED = (Channel.COMMAND.value, Channel.RETRAIN_WEBHOOK.value)


def backoff_s(attempt: int) -> float:
    """Seconds before the next try after ``attempt`` failures: 30 s doubling to 1 h, +-20 %."""
    base = min(_FIRST_RETRY_S * 2.0 ** (attempt - 1), _LONGEST_RETRY_S)
    return base * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class _Attempt:
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None
    action: dict[str, Any] | None = None  # a retrain trigger's outcome, kept on the alert


class Outbox:
    """Sends what the alert engine queued in ``alert_notifications``.

    >>> delivered = ws.outbox.deliver_due()  # doctest: +SKIP
    """

    def __init__(
        self, store: Store, config: Config, clock: Clock, actor: Actor | Acting, outbound: Outbound
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.acting = Acting.of(actor)
        self.outbound = outbound
        # who holds a claim: distinct per Outbox, so two in one process do not share claims
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- delivering -------------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("notification.deliver")
    def deliver_due(self, *, limit: int = 50) -> list[Delivery]:
        """Claim and send due notifications, a group at a time, until about ``limit`` attempts
        are made; the attempts made (one per notification of each group sent)."""
        self.acting.check("notification.deliver", target="notifications")
        done: list[Delivery] = []
        seen: set[int] = set()
        while len(done) < limit:
            rows = self._claim_next(seen)
            if not rows:
                break
            seen.update(r.id for r in rows)
            done.extend(self._deliver(rows))
        return done

    def _claim_next(self, seen: set[int]) -> list[sa.Row[Any]]:
        """The next due group, claimed by this holder: one row, or a model's rows to one route.

        Like Alertmanager's ``group_by: [model]``: the due pending rows with the same team,
        channel, target and kind whose alerts are on the same model go out as one message.
        The whole group is claimed by one compare-and-set; a row another deliverer claimed
        first is simply left out. Retrain triggers are never grouped.
        """
        n = t.alert_notifications
        now = self.clock.now()
        free = sa.or_(n.c.claimed_until.is_(None), n.c.claimed_until < now)
        due = sa.and_(n.c.state == NotificationState.PENDING.value, n.c.next_attempt_at <= now)
        with self.store.write() as conn:
            query = sa.select(n).where(due, free).order_by(n.c.next_attempt_at, n.c.id).limit(20)
            if seen:
                query = query.where(n.c.id.not_in(seen))
            for row in conn.execute(query).all():
                ids = self._group_of(conn, row, due, free, seen)
                until = now + timedelta(seconds=self._claim_s(row.channel, row.target))
                claimed = conn.execute(
                    n.update()
                    .where(n.c.id.in_(ids), due, free)
                    .values(claimed_by=self.holder, claimed_until=until)
                ).rowcount
                if claimed:  # the compare-and-set held for these rows: ours until `until`
                    mine = (
                        sa.select(n)
                        .where(n.c.id.in_(ids), n.c.claimed_by == self.holder, due)
                        .order_by(n.c.id)
                    )
                    return list(conn.execute(mine).all())
        return []

    def _group_of(
        self,
        conn: sa.Connection,
        row: sa.Row[Any],
        due: sa.ColumnElement[bool],
        free: sa.ColumnElement[bool],
        seen: set[int],
    ) -> list[int]:
        """The ids of ``row``'s group: due free rows to the same route about the same model."""
        if row.channel in _UNGROUPED:
            return [row.id]
        n, a = t.alert_notifications, t.alerts
        model = sa.select(a.c.model).where(a.c.id == row.alert_id).scalar_subquery()
        query = (
            sa.select(n.c.id)
            .join(a, a.c.id == n.c.alert_id)
            .where(
                due,
                free,
                n.c.team == row.team,
                n.c.channel == row.channel,
                n.c.target == row.target,
                n.c.kind == row.kind,
                a.c.model == model,
            )
            .order_by(n.c.id)
            .limit(_MAX_GROUP)
        )
        if seen:
            query = query.where(n.c.id.not_in(seen))
        ids = [int(i) for i in conn.execute(query).scalars()]
        return ids if row.id in ids else [row.id, *ids[: _MAX_GROUP - 1]]

    def _claim_s(self, channel: str, target: str) -> float:
        """How long a claim lasts: longer than the send itself can take."""
        if channel == Channel.COMMAND.value:
            return _command_spec(target)[1] + 60.0 if _is_command(target) else 60.0
        return 6 * self.config.outbound_timeout_s + 60.0

    def _deliver(self, rows: list[sa.Row[Any]]) -> list[Delivery]:
        """Send one group as one message; every row gets its own attempt and the same outcome."""
        notes = [_notification(r) for r in rows]
        alerts = [self._alert(note.alert_id) for note in notes]
        started = time.monotonic()
        found = [a for a in alerts if a is not None]
        if not found:
            result = _Attempt(DeliveryOutcome.REFUSED, error=f"alert {notes[0].alert_id} is gone")
        else:
            result = self._send(found, notes[0])
        return self._record(rows, notes, alerts, result, time.monotonic() - started)

    def _send(self, alerts: list[Alert], note: Notification) -> _Attempt:
        """One message for the group (``note`` is its first row: they share the route)."""
        try:
            if note.channel == Channel.WEBHOOK:
                body = alertmanager_group_body(alerts, note, self.config.public_url)
                return _sent(self.outbound.post_json(note.target, body).status_code)
            if note.channel == Channel.SLACK:
                body = slack_group_body(alerts, note)
                return _sent(self.outbound.post_json(note.target, body).status_code)
            if note.channel == Channel.EMAIL:
                return self._mail(alerts, note)
            if note.channel == Channel.RETRAIN_WEBHOOK:
                return self._retrain_webhook(alerts[0], note)
            if note.channel == Channel.COMMAND:
                return self._command(alerts[0], note)
        except OutboundRefused as exc:
            return _Attempt(DeliveryOutcome.REFUSED, exc.status_code, exc.message)
        except OutboundError as exc:
            return _Attempt(DeliveryOutcome.FAILED, exc.status_code, exc.message)
        return _Attempt(DeliveryOutcome.REFUSED, error=f"unknown channel '{note.channel}'")

    def _mail(self, alerts: list[Alert], note: Notification) -> _Attempt:
        if not self.config.smtp_url:
            return _Attempt(
                DeliveryOutcome.REFUSED,
                error="no SMTP server is configured; set OWNLOOP_SMTP_URL=smtp://host:port",
            )
        settings = SmtpSettings.parse(self.config.smtp_url)
        message = email_group_message(alerts, note, self.config.smtp_from)
        send_mail(settings, message, self.config.outbound_timeout_s)
        return _Attempt(DeliveryOutcome.DELIVERED)

    def _retrain_webhook(self, alert: Alert, note: Notification) -> _Attempt:
        action: dict[str, Any] = {
            "channel": note.channel.value,
            "target": redact_url(note.target),
            "at": self.clock.now().isoformat(),
        }
        try:
            result = self.outbound.post_json(note.target, retrain_context(alert))
        except OutboundError as exc:
            outcome = (
                DeliveryOutcome.REFUSED
                if isinstance(exc, OutboundRefused)
                else DeliveryOutcome.FAILED
            )
            action.update(outcome=outcome.value, status_code=exc.status_code, error=exc.message)
            return _Attempt(outcome, exc.status_code, exc.message, action)
        action.update(outcome="delivered", status_code=result.status_code)
        return _Attempt(DeliveryOutcome.DELIVERED, result.status_code, action=action)

    def _command(self, alert: Alert, note: Notification) -> _Attempt:
        if not _is_command(note.target):
            return _Attempt(
                DeliveryOutcome.REFUSED,
                error="the retrain command is not a JSON list of arguments, e.g. "
                '["python", "retrain.py"]; fix the rule\'s action',
            )
        argv, timeout_s = _command_spec(note.target)
        action: dict[str, Any] = {
            "channel": note.channel.value,
            "argv": argv,
            "at": self.clock.now().isoformat(),
        }
        outcome, error, extra = _run(argv, timeout_s, alert)
        action.update(outcome=outcome.value, **extra)
        if error:
            action["error"] = error
        return _Attempt(outcome, error=error, action=action)

    def _record(
        self,
        rows: list[sa.Row[Any]],
        notes: list[Notification],
        alerts: list[Alert | None],
        result: _Attempt,
        duration_s: float,
    ) -> list[Delivery]:
        """One transaction for the group: each row's attempt and new state, the retrain
        trigger's action on its alert, the audit of a row given up."""
        n = t.alert_notifications
        now = self.clock.now()
        retry_in = backoff_s(max(r.attempts for r in rows) + 1)  # the group retries together
        done: list[Delivery] = []
        with self.store.write() as conn:
            for row, note, alert in zip(rows, notes, alerts, strict=True):
                attempt = row.attempts + 1
                values: dict[str, Any] = {
                    "attempts": attempt,
                    "claimed_by": None,
                    "claimed_until": None,
                    "last_error": result.error,
                }
                if result.outcome == DeliveryOutcome.DELIVERED:
                    values.update(state=NotificationState.DELIVERED.value, delivered_at=now)
                elif result.outcome == DeliveryOutcome.REFUSED:
                    values["state"] = NotificationState.REFUSED.value
                elif attempt >= MAX_ATTEMPTS:
                    values["state"] = NotificationState.FAILED.value
                else:
                    values["next_attempt_at"] = now + timedelta(seconds=retry_in)
                conn.execute(
                    t.alert_deliveries.insert().values(
                        notification_id=note.id,
                        attempt=attempt,
                        at=now,
                        outcome=result.outcome.value,
                        status_code=result.status_code,
                        error=result.error,
                        duration_s=duration_s,
                        by=self.holder,
                    )
                )
                conn.execute(
                    n.update()
                    .where(n.c.id == note.id, n.c.claimed_by == self.holder)
                    .values(**values)
                )
                if result.action is not None and alert is not None:
                    conn.execute(
                        t.alerts.update()
                        .where(t.alerts.c.id == alert.id)
                        .values(action=result.action)
                    )
                if values.get("state") in (NotificationState.FAILED, NotificationState.REFUSED):
                    self._audit_failure(conn, now, note, alert, values["state"], attempt, result)
                done.append(
                    Delivery(
                        notification_id=note.id,
                        attempt=attempt,
                        at=now,
                        outcome=result.outcome,
                        status_code=result.status_code,
                        error=result.error,
                        duration_s=duration_s,
                        extra={
                            "by": self.holder,
                            "state": values.get("state", "pending"),
                            "group": [r.id for r in rows],
                        },
                    )
                )
        return done

    def _audit_failure(
        self,
        conn: sa.Connection,
        now: datetime,
        note: Notification,
        alert: Alert | None,
        state: str,
        attempts: int,
        result: _Attempt,
    ) -> None:
        shown = note.target if note.channel in (Channel.EMAIL, Channel.COMMAND) else None
        self.store.audit(
            conn,
            at=now,
            actor=self.actor.name,
            action="alert.delivery_failed",
            target=f"alert:{note.alert_id}",
            model=alert.model if alert is not None else None,
            after={
                "notification": note.id,
                "kind": note.kind.value,
                "team": note.team,
                "channel": note.channel.value,
                "target": shown if shown is not None else redact_url(note.target),
                "state": state,
                "attempts": attempts,
                "error": result.error,
            },
        )

    # -- reading ----------------------------------------------------------------------------

    @action("notification.read")
    def pending(self) -> list[Notification]:
        """Notifications still to be sent, the next due first."""
        self.acting.check("notification.read", target="notifications")
        n = t.alert_notifications
        query = (
            sa.select(n)
            .where(n.c.state == NotificationState.PENDING.value)
            .order_by(n.c.next_attempt_at, n.c.id)
        )
        with self.store.read() as conn:
            return [_notification(r) for r in conn.execute(query)]

    @action("notification.read")
    def notifications(self, alert_id: int) -> list[Notification]:
        """Every notification of one alert, oldest first."""
        self.acting.check("notification.read", target=f"alert:{alert_id}")
        n = t.alert_notifications
        query = sa.select(n).where(n.c.alert_id == alert_id).order_by(n.c.id)
        with self.store.read() as conn:
            return [_notification(r) for r in conn.execute(query)]

    @action("notification.read")
    def deliveries(self, notification_id: int) -> list[Delivery]:
        """Every attempt to deliver one notification, in order."""
        self.acting.check("notification.read", target=f"notification:{notification_id}")
        d = t.alert_deliveries
        query = (
            sa.select(d).where(d.c.notification_id == notification_id).order_by(d.c.attempt, d.c.id)
        )
        with self.store.read() as conn:
            return [
                Delivery(
                    notification_id=r.notification_id,
                    attempt=r.attempt,
                    at=aware(r.at),
                    outcome=DeliveryOutcome(r.outcome),
                    status_code=r.status_code,
                    error=r.error,
                    duration_s=r.duration_s,
                    extra={"by": r.by},
                )
                for r in conn.execute(query)
            ]

    def _alert(self, alert_id: int) -> Alert | None:
        with self.store.read() as conn:
            row = conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()
        return None if row is None else alert_from_row(row)


def _sent(status_code: int) -> _Attempt:
    return _Attempt(DeliveryOutcome.DELIVERED, status_code)


def _when(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


def _notification(r: sa.Row[Any]) -> Notification:
    return Notification(
        id=r.id,
        alert_id=r.alert_id,
        kind=NotificationKind(r.kind),
        team=r.team,
        channel=Channel(r.channel),
        target=r.target,
        state=NotificationState(r.state),
        attempts=r.attempts,
        next_attempt_at=aware(r.next_attempt_at),
        created_at=aware(r.created_at),
        delivered_at=_when(r.delivered_at),
        last_error=r.last_error,
    )


# -- the retrain command ------------------------------------------------------------------


def _is_command(target: str) -> bool:
    try:
        _command_spec(target)
    except ValueError:
        return False
    return True


def _command_spec(target: str) -> tuple[list[str], float]:
    """``["argv", ...]`` or ``{"argv": [...], "timeout_s": 60}``; ValueError when neither."""
    spec = json.loads(target)  # JSONDecodeError is a ValueError
    timeout_s = _COMMAND_TIMEOUT_S
    if isinstance(spec, dict):
        timeout_s = float(spec.get("timeout_s", _COMMAND_TIMEOUT_S))
        spec = spec.get("argv")
    if not isinstance(spec, list) or not spec or not all(isinstance(a, str) for a in spec):
        raise ValueError("not a list of strings")
    if not 0 < timeout_s <= 86400:
        raise ValueError("timeout out of range")
    return spec, timeout_s


def _run(
    argv: list[str], timeout_s: float, alert: Alert
) -> tuple[DeliveryOutcome, str | None, dict[str, Any]]:
    """Run the command without a shell, the context on stdin; its exit code and stderr's tail."""
    env = {
        **os.environ,
        "OWNLOOP_ALERT_ID": str(alert.id),
        "OWNLOOP_ALERT_MODEL": alert.model,
        "OWNLOOP_ALERT_VERSION": "" if alert.version is None else str(alert.version),
        "OWNLOOP_ALERT_TEAM": alert.team,
        "OWNLOOP_ALERT_RULE": alert.rule,
        "OWNLOOP_ALERT_SEVERITY": alert.severity.value,
        "OWNLOOP_ALERT_SUMMARY": alert.summary,
    }
    context = json.dumps(retrain_context(alert), default=str).encode()
    started = time.monotonic()
    # stderr goes to a file, not a pipe: memory stays bounded and a grandchild holding the pipe
    # open cannot make the wait hang past the timeout
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as stdin:
        stdin.write(context)
        stdin.seek(0)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return DeliveryOutcome.REFUSED, f"cannot run '{argv[0]}': {exc.strerror or exc}", {}
        try:
            code: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        extra = {
            "exit_code": code,
            "duration_s": round(time.monotonic() - started, 3),
            "stderr_tail": _tail(err),
        }
    if code is None:
        return DeliveryOutcome.FAILED, f"'{argv[0]}' ran past its {timeout_s:g}s timeout", extra
    if code != 0:
        return DeliveryOutcome.FAILED, f"'{argv[0]}' exited with code {code}", extra
    return DeliveryOutcome.DELIVERED, None, extra


def _tail(err: Any) -> str:
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - 8 * _STDERR_CHARS))
    text = err.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-_STDERR_TAIL:])[-_STDERR_CHARS:]
