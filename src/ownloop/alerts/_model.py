"""The alert vocabulary: severities, states, rules, alerts, notifications and delivery attempts.

Stored in the tables of migration 7 (``alert_rules``, ``alerts``, ``alert_notifications``,
``alert_deliveries``). An alert is opened by the evaluator when a rule's comparison holds for
``for_windows`` consecutive windows (or when a deploy event happens), is deduplicated by its
fingerprint (model, rule, subject), and moves firing -> acknowledged -> resolved. Each message
to a team is one row of the outbox (``alert_notifications``), delivered by whoever holds the
evaluator lease, every attempt recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ownloop.store import aware

__all__ = [
    "Alert",
    "AlertState",
    "Channel",
    "Delivery",
    "DeliveryOutcome",
    "Notification",
    "NotificationKind",
    "NotificationState",
    "Rule",
    "RuleAction",
    "Severity",
    "alert_from_row",
]


class Severity(StrEnum):
    INFO = "info"  # recorded and listed; sent to no route
    WARNING = "warning"  # sent to the team's routes once, and on resolve
    PAGE = "page"  # sent, repeated every repeat interval, escalated when unacknowledged


class AlertState(StrEnum):
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class NotificationKind(StrEnum):
    FIRING = "firing"
    REPEAT = "repeat"
    ESCALATION = "escalation"
    RESOLVED = "resolved"
    RETRAIN = "retrain"  # the rule's retrain trigger (a command or a webhook)


class Channel(StrEnum):
    WEBHOOK = "webhook"  # Alertmanager-compatible JSON body
    SLACK = "slack"  # Slack-compatible incoming-webhook body
    EMAIL = "email"  # SMTP, OWNLOOP_SMTP_URL
    COMMAND = "command"  # a retrain trigger that runs a configured command
    RETRAIN_WEBHOOK = "retrain_webhook"  # a retrain trigger that posts the context to a URL


class NotificationState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the last retry
    REFUSED = "refused"  # never sent: a private address, a redirect, a route not configured


class DeliveryOutcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"  # will be retried (or not, when it was the last attempt)
    REFUSED = "refused"


@dataclass(frozen=True)
class RuleAction:
    """A retrain trigger: run ``command`` (argv, no shell) or post the context to ``webhook``."""

    command: tuple[str, ...] | None = None
    webhook: str | None = None
    timeout_s: float = 600.0


@dataclass(frozen=True)
class Rule:
    """One rule in force for a model: a stored figure, a comparison, how long, how loud.

    ``metric`` names what is compared (see ``ownloop.alerts.METRICS``); the rule fires when the
    figure is ``compare`` ('above' or 'below') ``threshold`` for ``for_windows`` consecutive
    monitor windows. Deploy-event rules (``canary_aborted`` ...) fire on the event itself.
    """

    name: str
    metric: str
    compare: str  # 'above' | 'below' | 'event'
    threshold: float | None
    for_windows: int
    severity: Severity
    enabled: bool
    reason: str  # why this default, in a sentence a user can argue with
    source: str  # 'default' | 'store' | 'file:<path>'
    action: RuleAction | None = None


@dataclass(frozen=True)
class Alert:
    id: int
    fingerprint: str
    model: str
    version: int | None
    team: str
    rule: str
    severity: Severity
    state: AlertState
    summary: str  # one line: what crossed which bound
    details: dict[str, Any]  # value, bound, compare, window start/end, method, n, run ids
    next_step: str | None
    link: str | None
    opened_at: datetime
    last_seen_at: datetime
    last_notified_at: datetime | None = None
    acked_at: datetime | None = None
    acked_by: str | None = None
    escalated_at: datetime | None = None
    escalated_to: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolve_note: str | None = None
    action: dict[str, Any] | None = None  # the retrain trigger's outcome


@dataclass(frozen=True)
class Notification:
    id: int
    alert_id: int
    kind: NotificationKind
    team: str
    channel: Channel
    target: str  # URL, address or command line (secrets in URLs are never printed whole)
    state: NotificationState
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one notification."""

    notification_id: int
    attempt: int
    at: datetime
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None
    duration_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def alert_from_row(r: Any) -> Alert:
    """An ``alerts`` table row as an Alert (SQLite's naive datetimes read as UTC)."""

    def ts(x: datetime | None) -> datetime | None:
        return None if x is None else aware(x)

    return Alert(
        id=int(r.id),
        fingerprint=r.fingerprint,
        model=r.model,
        version=r.version,
        team=r.team,
        rule=r.rule,
        severity=Severity(r.severity),
        state=AlertState(r.state),
        summary=r.summary,
        details=dict(r.details),
        next_step=r.next_step,
        link=r.link,
        opened_at=aware(r.opened_at),
        last_seen_at=aware(r.last_seen_at),
        last_notified_at=ts(r.last_notified_at),
        acked_at=ts(r.acked_at),
        acked_by=r.acked_by,
        escalated_at=ts(r.escalated_at),
        escalated_to=r.escalated_to,
        resolved_at=ts(r.resolved_at),
        resolved_by=r.resolved_by,
        resolve_note=r.resolve_note,
        action=None if r.action is None else dict(r.action),
    )
