"""``ownloop rules``, ``ownloop alerts`` (and ``alerts show``), ``ownloop ack`` and
``ownloop resolve``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from ownloop.alerts import Alert, Channel, Notification, NotificationState, Rule, RuleAction
from ownloop.cli._app import cli, console, echo_json, esc, table, when, workspace
from ownloop.errors import InvalidInputError
from ownloop.outbound import redact_url


def _threshold(r: Rule) -> str:
    if r.compare == "event":
        return "on the event"
    return "monitor's verdict" if r.threshold is None else f"{r.threshold:g}"


def _rules_table(model: str, rules: list[Rule]) -> None:
    table(
        f"rules of {model}",
        [
            "rule",
            "metric",
            "compare",
            "threshold",
            "for",
            "severity",
            "enabled",
            "source",
            "reason",
        ],
        [
            [
                r.name,
                r.metric,
                r.compare,
                _threshold(r),
                r.for_windows,
                r.severity,
                "yes" if r.enabled else "no",
                r.source + ("" if r.action is None else " +retrain"),
                r.reason,
            ]
            for r in rules
        ],
    )


@cli.group("rules", invoke_without_command=True)
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
@click.pass_context
def rules_cmd(ctx: click.Context, model: str, as_json: bool) -> None:
    """The alert rules in force for MODEL: defaults and overrides, with thresholds and why."""
    ctx.obj = model
    if ctx.invoked_subcommand is None:
        rules = workspace().alerts.rules(model)
        if as_json:
            echo_json(rules)
        else:
            _rules_table(model, rules)


@rules_cmd.command("set")
@click.argument("rule")
@click.option("--above", type=float, help="Fire when the figure is above this.")
@click.option("--below", type=float, help="Fire when the figure is below this.")
@click.option("--for", "for_windows", type=int, help="Consecutive windows it must hold.")
@click.option("--severity", help="info, warning or page.")
@click.option("--enable/--disable", "enabled", default=None, help="Switch the rule on or off.")
@click.option("--command", help="Retrain command run when the alert opens (no shell).")
@click.option("--retrain-webhook", help="URL posted the context when the alert opens.")
@click.pass_obj
def rules_set(
    model: str,
    rule: str,
    above: float | None,
    below: float | None,
    for_windows: int | None,
    severity: str | None,
    enabled: bool | None,
    command: str | None,
    retrain_webhook: str | None,
) -> None:
    """Override RULE of the model (only what is given changes)."""
    kwargs: dict[str, Any] = {}
    if command is not None and retrain_webhook is not None:
        raise InvalidInputError("give --command or --retrain-webhook, not both")
    if command is not None:
        try:
            kwargs["action"] = RuleAction(command=tuple(shlex.split(command)))
        except ValueError as exc:
            raise InvalidInputError(f"--command {command!r}: {exc}") from exc
    if retrain_webhook is not None:
        kwargs["action"] = RuleAction(webhook=retrain_webhook)
    r = workspace().alerts.set_rule(
        model,
        rule,
        above=above,
        below=below,
        for_windows=for_windows,
        severity=severity,
        enabled=enabled,
        **kwargs,
    )
    _rules_table(model, [r])


@rules_cmd.command("reset")
@click.argument("rule")
@click.pass_obj
def rules_reset(model: str, rule: str) -> None:
    """Drop the override of RULE: the default is in force again."""
    _rules_table(model, [workspace().alerts.reset_rule(model, rule)])


@rules_cmd.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def rules_load(model: str, file: Path) -> None:
    """Load the model's rule overrides from a YAML file kept beside its code."""
    _rules_table(model, workspace().alerts.load_rules(model, file))


def _alerts_table(alerts: list[Alert]) -> None:
    table(
        None,
        ["id", "opened", "model", "rule", "severity", "state", "team", "summary"],
        [
            [
                a.id,
                f"{a.opened_at:%Y-%m-%d %H:%M}",
                f"{a.model}@{a.version}" if a.version is not None else a.model,
                a.rule,
                a.severity,
                a.state,
                a.team + (f" -> {a.escalated_to}" if a.escalated_to else ""),
                a.summary,
            ]
            for a in alerts
        ],
    )


@cli.group("alerts", invoke_without_command=True)
@click.option("--mine", is_flag=True, help="Only alerts of the teams you belong to.")
@click.option("--model", help="Only this model's alerts.")
@click.option("--team", help="Only this team's alerts.")
@click.option("--open", "open_only", is_flag=True, help="Only open alerts.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the alerts as JSON.")
@click.pass_context
def alerts_cmd(
    ctx: click.Context,
    mine: bool,
    model: str | None,
    team: str | None,
    open_only: bool,
    limit: int,
    as_json: bool,
) -> None:
    """Alerts, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    alerts = workspace().alerts.list(
        model=model, team=team, mine=mine, open_only=open_only, limit=limit
    )
    if as_json:
        echo_json(alerts)
    elif not alerts:
        console.print("no alerts")
    else:
        _alerts_table(alerts)


def _evaluate(model: str | None, as_json: bool) -> None:
    changed = workspace().alerts.evaluate([model] if model else None)
    if as_json:
        echo_json(changed)
    elif not changed:
        console.print("nothing opened, repeated, escalated or resolved")
    else:
        _alerts_table(changed)


@alerts_cmd.command("evaluate")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def alerts_evaluate(model: str | None, as_json: bool) -> None:
    """Evaluate the rules once (over the stored monitor runs) and print what changed."""
    _evaluate(model, as_json)


@alerts_cmd.command("check")
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True)
def alerts_check(model: str | None, as_json: bool) -> None:
    """The same as ``ownloop alerts evaluate``."""
    _evaluate(model, as_json)


def _show(a: Alert) -> None:
    console.print(f"alert {a.id} ({esc(a.model)}, {esc(a.rule)}): {esc(a.state)}")
    console.print(f"  {esc(a.summary)}")
    if a.next_step:
        console.print(f"  next: {esc(a.next_step)}")


@cli.command("ack")
@click.argument("alert_id", type=int)
@click.option("--note", help="What you are doing about it (kept in the audit log).")
def ack_cmd(alert_id: int, note: str | None) -> None:
    """Acknowledge alert ALERT_ID: no more repeats or escalation."""
    _show(workspace().alerts.ack(alert_id, note))


@cli.command("resolve")
@click.argument("alert_id", type=int)
@click.option("--note", required=True, help="What was done (e.g. 'retrained as v5').")
def resolve_cmd(alert_id: int, note: str) -> None:
    """Resolve alert ALERT_ID by hand; the team gets a RESOLVED notification."""
    _show(workspace().alerts.resolve(alert_id, note))


def _shown_target(n: Notification) -> str:
    """Where a notification goes; a URL's secrets (path tokens, credentials) never printed."""
    if n.channel in (Channel.EMAIL, Channel.COMMAND):
        return n.target
    return redact_url(n.target)


@alerts_cmd.command("show")
@click.argument("alert_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the alert and its delivery as JSON.")
def alerts_show(alert_id: int, as_json: bool) -> None:
    """Alert ALERT_ID: its figures and next step, each notification and every delivery attempt."""
    ws = workspace()
    alert = ws.alerts.get(alert_id)
    notes = ws.outbox.notifications(alert.id)
    attempts = {n.id: ws.outbox.deliveries(n.id) for n in notes}
    if as_json:
        echo_json(
            {
                "alert": alert,
                "notifications": [
                    {
                        **_plain_note(n),
                        "deliveries": [
                            {
                                "attempt": d.attempt,
                                "at": d.at,
                                "outcome": d.outcome,
                                "status_code": d.status_code,
                                "error": d.error,
                                "duration_s": d.duration_s,
                            }
                            for d in attempts[n.id]
                        ],
                    }
                    for n in notes
                ],
            }
        )
        return
    a = alert
    console.print(
        f"alert {a.id}: {esc(a.model)}"
        + ("" if a.version is None else f"@{a.version}")
        + f" {esc(a.rule)} ({esc(a.severity)}), {esc(a.state)}, team {esc(a.team)}"
        + (f" -> {esc(a.escalated_to)}" if a.escalated_to else "")
    )
    console.print(f"  {esc(a.summary)}")
    console.print(f"  opened {when(a.opened_at)}, last seen {when(a.last_seen_at)}")
    if a.acked_at:
        console.print(f"  acknowledged {when(a.acked_at)} by {esc(a.acked_by or '?')}")
    if a.resolved_at:
        note = f": {esc(a.resolve_note)}" if a.resolve_note else ""
        console.print(f"  resolved {when(a.resolved_at)} by {esc(a.resolved_by or '?')}{note}")
    if a.next_step:
        console.print(f"  next step: {esc(a.next_step)}")
    if a.link:
        console.print(f"  dashboard: {esc(a.link)}")
    if a.details:
        table(
            "details",
            ["figure", "value"],
            [[k, a.details[k]] for k in sorted(a.details)],
        )
    if a.action:
        console.print(f"  retrain trigger: {esc(str(a.action))}")
    if not notes:
        console.print("no notifications (an info alert, or no routes on the team)")
        return
    table(
        "notifications",
        ["id", "kind", "team", "channel", "target", "state", "attempts", "next attempt"],
        [
            [
                n.id,
                n.kind,
                n.team,
                n.channel,
                _shown_target(n),
                n.state,
                n.attempts,
                when(n.next_attempt_at) if n.state == NotificationState.PENDING else "",
            ]
            for n in notes
        ],
    )
    rows = [
        [n.id, d.attempt, when(d.at), d.outcome, d.status_code, d.error or ""]
        for n in notes
        for d in attempts[n.id]
    ]
    if rows:
        table(
            "delivery attempts",
            ["notification", "attempt", "at", "outcome", "status", "error"],
            rows,
        )
    else:
        console.print("no delivery attempts yet")


def _plain_note(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "team": n.team,
        "channel": n.channel,
        "target": _shown_target(n),
        "state": n.state,
        "attempts": n.attempts,
        "next_attempt_at": n.next_attempt_at if n.state == NotificationState.PENDING else None,
        "created_at": n.created_at,
        "delivered_at": n.delivered_at,
        "last_error": n.last_error,
    }
