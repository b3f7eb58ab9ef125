"""One alert, rendered for each route: an Alertmanager webhook body, a Slack message, a mail, and
the context a retrain trigger receives. Pure functions of the alert and the notification."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from ownloop.alerts._model import Alert, AlertState, Notification, NotificationKind

__all__ = [
    "alertmanager_body",
    "email_message",
    "retrain_context",
    "slack_body",
    "subject",
]

_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt for an alert still firing


def _rfc3339(value: datetime | None) -> str:
    if value is None:
        return _ZERO_TIME
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _model_at(alert: Alert) -> str:
    return alert.model if alert.version is None else f"{alert.model}@{alert.version}"


def _status(n: Notification) -> str:
    return "resolved" if n.kind == NotificationKind.RESOLVED else "firing"


def _why(alert: Alert, n: Notification) -> str | None:
    """What this message is, when it is not the first page: a repeat, an escalation."""
    if n.kind == NotificationKind.REPEAT:
        return "repeat: still firing and not acknowledged"
    if n.kind == NotificationKind.ESCALATION:
        return (
            f"escalated from team {alert.team} to team {n.team}: "
            "the page was not acknowledged in time"
        )
    return None


def description(alert: Alert) -> str:
    """The figures behind the alert, one ``key: value`` per line, in a stable order."""
    lines = []
    for key in sorted(alert.details):
        value = alert.details[key]
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"{key}: {text}")
    return "\n".join(lines)


def labels(alert: Alert, n: Notification) -> dict[str, str]:
    return {
        "alertname": alert.rule,
        "model": alert.model,
        "version": "" if alert.version is None else str(alert.version),
        "team": n.team,
        "severity": alert.severity.value,
    }


def annotations_of(alert: Alert, n: Notification) -> dict[str, str]:
    notes = {"summary": alert.summary, "description": description(alert)}
    if alert.next_step:
        notes["next_step"] = alert.next_step
    runbook = alert.details.get("runbook")
    if isinstance(runbook, str):
        notes["runbook"] = runbook
    why = _why(alert, n)
    if why:
        notes["notification"] = why
    if alert.state == AlertState.ACKNOWLEDGED and alert.acked_by:
        notes["acknowledged_by"] = alert.acked_by
    if n.kind == NotificationKind.RESOLVED and alert.resolve_note:
        notes["resolve_note"] = alert.resolve_note
    return notes


def alertmanager_body(alert: Alert, n: Notification, external_url: str | None) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver sends (version 4), one alert per group."""
    status = _status(n)
    tags = labels(alert, n)
    notes = annotations_of(alert, n)
    group = {"alertname": alert.rule, "model": alert.model}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group.items()) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": n.team,
        "groupLabels": group,
        "commonLabels": tags,
        "commonAnnotations": notes,
        "externalURL": external_url or "",
        "alerts": [
            {
                "status": status,
                "labels": tags,
                "annotations": notes,
                "startsAt": _rfc3339(alert.opened_at),
                "endsAt": _rfc3339(alert.resolved_at if status == "resolved" else None),
                "generatorURL": alert.link or external_url or "",
                "fingerprint": alert.fingerprint,
            }
        ],
    }


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def subject(alert: Alert, n: Notification) -> str:
    """``[PAGE] churn@3: estimated accuracy dropped 0.08 below reference``."""
    tag = "RESOLVED" if n.kind == NotificationKind.RESOLVED else alert.severity.value.upper()
    extra = {
        NotificationKind.REPEAT: " REPEAT",
        NotificationKind.ESCALATION: " ESCALATED",
    }.get(n.kind, "")
    return f"[{tag}{extra}] {_model_at(alert)}: {alert.summary}"


def slack_body(alert: Alert, n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body: a plain fallback ``text`` and mrkdwn blocks."""
    head = _mrkdwn(subject(alert, n))
    lines = [f"*{head}*", f"team: {_mrkdwn(n.team)} · rule: `{_mrkdwn(alert.rule)}`"]
    why = _why(alert, n)
    if why:
        lines.append(f"_{_mrkdwn(why)}_")
    if alert.next_step:
        lines.append(f"*next step:* {_mrkdwn(alert.next_step)}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}
    ]
    if alert.details:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "```" + _mrkdwn(description(alert)) + "```"},
            }
        )
    if alert.link:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{alert.link}|dashboard>"}],
            }
        )
    return {"text": subject(alert, n), "blocks": blocks}


def email_message(alert: Alert, n: Notification, sender: str) -> EmailMessage:
    """A plain-text mail to the notification's address."""
    msg = EmailMessage()
    msg["Subject"] = subject(alert, n).replace("\n", " ")
    msg["From"] = sender
    msg["To"] = n.target
    msg["X-Ownloop-Alert"] = str(alert.id)
    msg["X-Ownloop-Fingerprint"] = alert.fingerprint
    parts = [alert.summary, ""]
    why = _why(alert, n)
    if why:
        parts += [why, ""]
    parts += [
        f"model: {_model_at(alert)}",
        f"team: {n.team}",
        f"rule: {alert.rule} ({alert.severity.value})",
        f"state: {alert.state.value}",
        f"opened: {_rfc3339(alert.opened_at)}",
    ]
    if n.kind == NotificationKind.RESOLVED:
        parts.append(f"resolved: {_rfc3339(alert.resolved_at)}")
        if alert.resolve_note:
            parts.append(f"note: {alert.resolve_note}")
    if alert.next_step:
        parts += ["", f"next step: {alert.next_step}"]
    if alert.details:
        parts += ["", description(alert)]
    if alert.link:
        parts += ["", f"dashboard: {alert.link}"]
    parts += ["", f"acknowledge: ownloop ack {alert.id}"]
    msg.set_content("\n".join(parts) + "\n")
    return msg


def retrain_context(alert: Alert) -> dict[str, Any]:
    """What a retrain trigger is told: the model, the window, the drift, where the data is."""
    details = alert.details
    export = details.get("export_path")
    command = f"ownloop export-evalset {alert.model} --since 7d" + (
        f" --out {export}" if isinstance(export, str) else ""
    )
    return {
        "alert_id": alert.id,
        "model": alert.model,
        "version": alert.version,
        "team": alert.team,
        "rule": alert.rule,
        "severity": alert.severity.value,
        "summary": alert.summary,
        "window": {
            "start": details.get("window_start"),
            "end": details.get("window_end"),
        },
        "drift": details,
        "next_step": alert.next_step,
        "export": {"command": command, "path": export},
        "link": alert.link,
        "opened_at": _rfc3339(alert.opened_at),
    }
