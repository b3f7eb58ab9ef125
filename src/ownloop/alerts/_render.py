"""Alerts rendered for each route, one alert or a model's group of them: an Alertmanager
webhook body, a Slack message, a mail, and the context a retrain trigger receives. Pure
functions of the alerts and the notification."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from ownloop.alerts._model import Alert, AlertState, Notification, NotificationKind, Severity

__all__ = [
    "alertmanager_body",
    "alertmanager_group_body",
    "email_group_message",
    "email_message",
    "group_key",
    "group_subject",
    "retrain_context",
    "slack_body",
    "slack_group_body",
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


def _common(maps: Sequence[dict[str, str]]) -> dict[str, str]:
    """The pairs every map shares, as Alertmanager computes commonLabels and commonAnnotations."""
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def group_key(alerts: Sequence[Alert], n: Notification) -> str:
    """Stable per model, owner team and receiver: one page's repeats share it, as in
    Alertmanager, so a receiver can deduplicate on it."""
    first = alerts[0]
    return f'{{}}/{{receiver="{n.team}",team="{first.team}"}}:{{model="{first.model}"}}'


def alertmanager_body(alert: Alert, n: Notification, external_url: str | None) -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) for one alert."""
    return alertmanager_group_body([alert], n, external_url)


def alertmanager_group_body(
    alerts: Sequence[Alert], n: Notification, external_url: str | None
) -> dict[str, Any]:
    """The body Alertmanager's webhook receiver sends (version 4) for one group: a model's
    alerts to one receiver, ``commonLabels`` and ``commonAnnotations`` computed over them."""
    status = _status(n)
    entries = [
        {
            "status": status,
            "labels": labels(alert, n),
            "annotations": annotations_of(alert, n),
            "startsAt": _rfc3339(alert.opened_at),
            "endsAt": _rfc3339(alert.resolved_at if status == "resolved" else None),
            "generatorURL": alert.link or external_url or "",
            "fingerprint": alert.fingerprint,
        }
        for alert in alerts
    ]
    return {
        "version": "4",
        "groupKey": group_key(alerts, n),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": n.team,
        "groupLabels": {"model": alerts[0].model},
        "commonLabels": _common([e["labels"] for e in entries]),  # type: ignore[misc]
        "commonAnnotations": _common([e["annotations"] for e in entries]),  # type: ignore[misc]
        "externalURL": external_url or "",
        "alerts": entries,
    }


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _tag(alerts: Sequence[Alert], n: Notification) -> str:
    """``PAGE``, ``WARNING REPEAT``, ``RESOLVED``: the loudest severity of the group."""
    if n.kind == NotificationKind.RESOLVED:
        tag = "RESOLVED"
    else:
        tag = max((a.severity for a in alerts), key=_SEVERITY_ORDER.index).value.upper()
    extra = {
        NotificationKind.REPEAT: " REPEAT",
        NotificationKind.ESCALATION: " ESCALATED",
    }.get(n.kind, "")
    return tag + extra


_SEVERITY_ORDER = [Severity.INFO, Severity.WARNING, Severity.PAGE]


def subject(alert: Alert, n: Notification) -> str:
    """``[PAGE] churn@3: estimated accuracy dropped 0.08 below reference``."""
    return group_subject([alert], n)


def group_subject(alerts: Sequence[Alert], n: Notification) -> str:
    """One alert: ``[PAGE] churn@3: <summary>``; several:
    ``[PAGE] churn@3: 3 alerts (dataset drift, top feature drift, prediction drift)``."""
    first = alerts[0]
    versions = {a.version for a in alerts}
    where = _model_at(first) if len(versions) == 1 else first.model
    if len(alerts) == 1:
        return f"[{_tag(alerts, n)}] {where}: {first.summary}"
    rules = ", ".join(a.rule.replace("_", " ") for a in alerts)
    return f"[{_tag(alerts, n)}] {where}: {len(alerts)} alerts ({rules})"


def slack_body(alert: Alert, n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body for one alert."""
    return slack_group_body([alert], n)


def slack_group_body(alerts: Sequence[Alert], n: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body: a plain fallback ``text`` and mrkdwn blocks, a section
    per alert of the group."""
    title = group_subject(alerts, n)
    head = [f"*{_mrkdwn(title)}*", f"team: {_mrkdwn(n.team)}"]
    why = _why(alerts[0], n)
    if why:
        head.append(f"_{_mrkdwn(why)}_")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(head)}}
    ]
    for alert in alerts:
        lines = [f"*{_mrkdwn(alert.summary)}*", f"rule: `{_mrkdwn(alert.rule)}` · alert {alert.id}"]
        if alert.next_step:
            lines.append(f"*next step:* {_mrkdwn(alert.next_step)}")
        if alert.details:
            lines.append("```" + _mrkdwn(description(alert)) + "```")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    links = sorted({a.link for a in alerts if a.link})
    if links:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{link}|dashboard>"} for link in links],
            }
        )
    return {"text": title, "blocks": blocks}


def email_message(alert: Alert, n: Notification, sender: str) -> EmailMessage:
    """A plain-text mail about one alert."""
    return email_group_message([alert], n, sender)


def email_group_message(alerts: Sequence[Alert], n: Notification, sender: str) -> EmailMessage:
    """A plain-text mail to the notification's address listing every alert of the group."""
    msg = EmailMessage()
    msg["Subject"] = group_subject(alerts, n).replace("\n", " ")
    msg["From"] = sender
    msg["To"] = n.target
    msg["X-Ownloop-Alert"] = ", ".join(str(a.id) for a in alerts)
    msg["X-Ownloop-Fingerprint"] = ", ".join(a.fingerprint for a in alerts)
    parts: list[str] = []
    if len(alerts) > 1:
        parts += [f"{len(alerts)} alerts on {alerts[0].model} for team {n.team}", ""]
    why = _why(alerts[0], n)
    if why:
        parts += [why, ""]
    for i, alert in enumerate(alerts):
        if len(alerts) > 1:
            parts += ["-" * 72 if i else "", f"alert {alert.id}: {alert.rule}"]
        parts += [alert.summary, ""]
        parts += _mail_section(alert, n)
    msg.set_content("\n".join(parts).strip("\n") + "\n")
    return msg


def _mail_section(alert: Alert, n: Notification) -> list[str]:
    parts = [
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
    parts += ["", f"acknowledge: ownloop ack {alert.id}", ""]
    return parts


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
