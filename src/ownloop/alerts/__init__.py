"""Alerts routed to the owning team: rules over stored figures and deploy events, an outbox of
notifications (webhook, Slack, email), escalation, acknowledge and resolve."""

from ownloop.alerts._loop import ALERTS_LEASE, AlertLoop, Round
from ownloop.alerts._model import (
    Alert,
    AlertState,
    Channel,
    Delivery,
    DeliveryOutcome,
    Notification,
    NotificationKind,
    NotificationState,
    Rule,
    RuleAction,
    Severity,
)
from ownloop.alerts._outbox import Outbox
from ownloop.alerts._rules import METRICS, Metric
from ownloop.alerts._service import Alerts

__all__ = [
    "ALERTS_LEASE",
    "METRICS",
    "Alert",
    "AlertLoop",
    "AlertState",
    "Alerts",
    "Channel",
    "Delivery",
    "DeliveryOutcome",
    "Metric",
    "Notification",
    "NotificationKind",
    "NotificationState",
    "Outbox",
    "Round",
    "Rule",
    "RuleAction",
    "Severity",
]
