"""Rules and alerts: which rules are in force per model, evaluating them over the stored monitor
figures and deploy events, and the alert lifecycle (open, repeat, escalate, ack, resolve).

Nothing here sends anything: each transition writes its notifications into the outbox
(``alert_notifications``) in the same transaction as the alert row and its audit row, and the
outbox delivers them. Two evaluators racing are stopped by the unique ``open_fingerprint`` (one
open alert per model, rule and subject) and by compare-and-set updates for repeats,
escalations and resolves.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from ownloop.access import Acting, Actor, action, authorize
from ownloop.alerts._evaluate import Context, Figure, Reading, Window, read
from ownloop.alerts._model import (
    Alert,
    AlertState,
    Channel,
    NotificationKind,
    Rule,
    RuleAction,
    Severity,
    alert_from_row,
)
from ownloop.alerts._rules import METRICS, action_to_json, check_settings, known_metric, merge
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.errors import ConcurrentChangeError, ConflictError, InvalidInputError, NotFoundError
from ownloop.feedback import Feedback
from ownloop.monitoring import Monitor
from ownloop.names import validate_name
from ownloop.registry import PRODUCTION, Registry
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["Alerts", "fingerprint"]

EVENT_LOOKBACK = timedelta(hours=24)  # deploy events older than this are history, not pages
RUN_LOOKBACK = 200  # stored runs read per model and evaluation
_UNSET: Any = object()


def fingerprint(model: str, rule: str, subject: str = "") -> str:
    """The identity of an alert: the same model, rule and subject is the same alert."""
    return hashlib.sha256(f"{model}\x00{rule}\x00{subject}".encode()).hexdigest()


class Alerts:
    """Rules per model and the alerts they open.

    >>> ws.alerts.set_rule("churn", "estimated_accuracy_drop", above=0.05, for_windows=2)  # doctest: +SKIP
    >>> ws.alerts.evaluate()  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        monitor: Monitor,
        config: Config,
        clock: Clock,
        actor: Actor | Acting,
        feedback: Feedback,
    ) -> None:
        self.store = store
        self.registry = registry
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.acting = Acting.of(actor)
        self.feedback = feedback  # how many labelled rows the next step can point at

    # -- rules ----------------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("alert.read")
    def rules(self, model: str) -> builtins.list[Rule]:
        """Every rule in force for ``model``: the defaults with their overrides, and where from."""
        with self.store.read() as conn:
            row = self.registry.require_model_row(conn, model)
            self.acting.check("alert.read", row.owner, target=f"model:{row.name}")
            stored = self._stored_rules(conn, row.id)
        return [merge(name, *stored.get(name, (None, "default"))) for name in METRICS]

    @action("alert.read")
    def rule(self, model: str, name: str) -> Rule:
        known_metric(name)
        return next(r for r in self.rules(model) if r.name == name)

    def _stored_rules(self, conn: sa.Connection, model_id: int) -> dict[str, tuple[Any, str]]:
        rows = conn.execute(
            sa.select(t.alert_rules.c.rule, t.alert_rules.c.settings).where(
                t.alert_rules.c.model_id == model_id
            )
        )
        out: dict[str, tuple[Any, str]] = {}
        for r in rows:
            settings = dict(r.settings)
            out[r.rule] = (settings, str(settings.get("source", "store")))
        return out

    @action("alert.rules")
    def set_rule(
        self,
        model: str,
        name: str,
        *,
        above: float | None = None,
        below: float | None = None,
        for_windows: int | None = None,
        severity: Severity | str | None = None,
        enabled: bool | None = None,
        action: RuleAction | None = _UNSET,
    ) -> Rule:
        """Override rule ``name`` of ``model`` (only what is given changes); audited."""
        given: dict[str, Any] = {
            k: v
            for k, v in (
                ("above", above),
                ("below", below),
                ("for_windows", for_windows),
                ("severity", severity),
                ("enabled", enabled),
            )
            if v is not None
        }
        if action is not _UNSET:
            given["action"] = action
        if not given:
            raise InvalidInputError(
                f"nothing to set on rule '{name}'; give --above/--below, --for, --severity, "
                "--enable/--disable, --command or --retrain-webhook"
            )
        self._check_rules(model)
        settings = check_settings(name, given)
        self._write_rules(model, {name: settings}, source="store", merge_existing=True)
        return self.rule(model, name)

    @action("alert.rules")
    def reset_rule(self, model: str, name: str) -> Rule:
        """Drop the override of rule ``name``: the default is in force again; audited."""
        known_metric(name)
        self._check_rules(model)
        now = self.clock.now()
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, model)
            authorize(self.actor, "alert.rules", row.owner)  # the owner may have changed
            before = self._stored_rules(conn, row.id).get(name, (None, ""))[0]
            if before is None:
                raise NotFoundError(
                    f"rule '{name}' of model '{model}' has no override to reset; "
                    f"see 'ownloop rules {model}'"
                )
            conn.execute(
                t.alert_rules.delete().where(
                    t.alert_rules.c.model_id == row.id, t.alert_rules.c.rule == name
                )
            )
            self._audit(conn, now, "alert.rules", f"rule:{model}/{name}", model, before, None)
        return self.rule(model, name)

    @action("alert.rules")
    def load_rules(self, model: str, path: str | Path) -> builtins.list[Rule]:
        """Load the rule overrides of ``model`` from a YAML file (source ``file:<path>``).

        The file holds ``rules: {name: {above|below: X, for: N, severity: S, enabled: B,
        command: [argv...] | retrain_webhook: URL}}``; overrides loaded earlier from the same
        file and no longer in it are dropped. All or nothing: one bad rule loads none.
        """
        self._check_rules(model)
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInputError(f"cannot read rules file {p}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"rules file {p} is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), Mapping):
            raise InvalidInputError(
                f"rules file {p} needs a 'rules:' mapping of rule name to settings, e.g. "
                "rules: {estimated_accuracy_drop: {above: 0.05, for: 2, severity: page}}"
            )
        parsed: dict[str, dict[str, Any]] = {}
        for name, raw in data["rules"].items():
            parsed[str(name)] = check_settings(str(name), _file_settings(str(name), raw))
        source = f"file:{p}"
        self._write_rules(model, parsed, source=source, merge_existing=False)
        return self.rules(model)

    def _check_rules(self, model: str) -> None:
        """May the actor change ``model``'s rules (checked before the write transaction opens)?"""
        owner = self.registry.get_model(model).owner
        self.acting.check("alert.rules", owner, target=f"model:{model}")

    def _write_rules(
        self, model: str, rules: Mapping[str, dict[str, Any]], *, source: str, merge_existing: bool
    ) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, model)
            authorize(self.actor, "alert.rules", row.owner)  # the owner may have changed
            stored = self._stored_rules(conn, row.id)
            if not merge_existing:  # a file replaces what it loaded before
                for name, (settings, src) in stored.items():
                    if src == source and name not in rules:
                        self._replace_rule(conn, row.id, name, None)
                        self._audit(
                            conn, now, "alert.rules", f"rule:{model}/{name}", model, settings, None
                        )
            for name, settings in rules.items():
                before = stored.get(name, (None, ""))[0]
                base = {k: v for k, v in (before or {}).items() if k != "source"}
                after = {**(base if merge_existing else {}), **settings, "source": source}
                self._replace_rule(conn, row.id, name, after, now)
                self._audit(conn, now, "alert.rules", f"rule:{model}/{name}", model, before, after)

    def _replace_rule(
        self,
        conn: sa.Connection,
        model_id: int,
        name: str,
        settings: dict[str, Any] | None,
        now: datetime | None = None,
    ) -> None:
        conn.execute(
            t.alert_rules.delete().where(
                t.alert_rules.c.model_id == model_id, t.alert_rules.c.rule == name
            )
        )
        if settings is not None and now is not None:
            conn.execute(
                t.alert_rules.insert().values(
                    model_id=model_id,
                    rule=name,
                    settings=settings,
                    updated_at=now,
                    updated_by=self.actor.name,
                )
            )

    # -- evaluation -----------------------------------------------------------------------

    @action("alert.evaluate")
    def evaluate(self, models: Sequence[str] | None = None) -> builtins.list[Alert]:
        """Apply every enabled rule to the models in production; what changed this call.

        Opens alerts whose rule holds in its last ``for_windows`` windows (or on a deploy
        event), resolves those whose latest window no longer crosses, and repeats and
        escalates open pages. Safe to run from two processes at once.
        """
        self.acting.check("alert.evaluate", target="alerts")
        names = list(models) if models is not None else self.monitor.monitored_models()
        changed: builtins.list[Alert] = []
        for name in names:
            validate_name("model", name)
            model = self.registry.get_model(name)
            version = model.aliases.get(PRODUCTION)
            if version is None:
                continue
            changed += self._evaluate_windows(name, version)
            changed += self._evaluate_events(name, version)
        changed += self._follow_up(names)
        return changed

    def _windows(self, model: str, version: int) -> builtins.list[Window]:
        """The production version's stored stable-arm windows, newest first, one per end."""
        with self.store.read() as conn:
            runs = conn.execute(
                sa.select(t.monitor_runs)
                .where(t.monitor_runs.c.model == model, t.monitor_runs.c.version == version)
                .order_by(t.monitor_runs.c.window_end.desc(), t.monitor_runs.c.id.desc())
                .limit(RUN_LOOKBACK)
            ).all()
            seen: set[datetime] = set()
            kept = []
            for r in runs:
                arms = set((r.summary or {}).get("arms") or ("stable", "canary"))
                end = aware(r.window_end)
                if "stable" not in arms or "shadow" in arms or end in seen:
                    continue
                seen.add(end)
                kept.append(r)
            ids = [r.id for r in kept]
            figures: dict[int, list[Figure]] = {i: [] for i in ids}
            if ids:
                for f in conn.execute(
                    sa.select(t.monitor_results).where(t.monitor_results.c.run_id.in_(ids))
                ):
                    figures[f.run_id].append(_figure(f))
        return [
            Window(
                r.id,
                r.version,
                aware(r.window_start),
                aware(r.window_end),
                r.rows,
                r.status,
                tuple(figures[r.id]),
            )
            for r in kept
        ]

    def _context(self, model: str, version: int) -> Context:
        try:
            profile = self.registry.load_profile(f"{model}@{version}")
        except NotFoundError:
            return Context()
        perf = getattr(profile.prediction, "performance", None)
        accuracy = None if perf is None else perf.metrics.get("accuracy")
        return Context(reference_accuracy=accuracy, importance=profile.importance)

    def _evaluate_windows(self, model: str, version: int) -> builtins.list[Alert]:
        windows = self._windows(model, version)
        if not windows:
            return []
        base = self._context(model, version)
        changed: builtins.list[Alert] = []
        for rule in self.rules(model):
            if not rule.enabled or METRICS[rule.metric].is_event:
                continue
            readings = [
                read(
                    rule,
                    w,
                    Context(base.reference_accuracy, base.importance, tuple(windows[i + 1 :])),
                )
                for i, w in enumerate(windows[: rule.for_windows])
            ]
            fp = fingerprint(model, rule.name)
            latest = readings[0]
            held = len(readings) >= rule.for_windows and all(r.crossed for r in readings)
            if held:
                opened = self._open(
                    model, version, rule, fp, latest, windows[: rule.for_windows], readings
                )
                if opened is not None:
                    changed.append(opened)
                else:
                    self._touch(fp, latest)
            elif latest.crossed is False:
                resolved = self._resolve_open(fp, "ownloop", "the latest window no longer crosses")
                if resolved is not None:
                    changed.append(resolved)
        return changed

    # -- deploy events -----------------------------------------------------------------------

    def _events(
        self, model: str, since: datetime
    ) -> builtins.list[tuple[str, str, datetime, str, int]]:
        """(rule, subject, at, what happened, version) of each deploy event since ``since``."""
        with self.store.read() as conn:
            aborted = conn.execute(
                sa.select(t.rollout_events, t.rollouts.c.candidate_version)
                .join(t.rollouts, t.rollouts.c.id == t.rollout_events.c.rollout_id)
                .where(
                    t.rollout_events.c.model == model,
                    t.rollout_events.c.to_state == "aborted",
                    t.rollout_events.c.at >= since,
                )
            ).all()
            failed = conn.execute(
                sa.select(t.evaluations).where(
                    t.evaluations.c.model == model,
                    t.evaluations.c.verdict == "failed",
                    t.evaluations.c.created_at >= since,
                )
            ).all()
            checks = conn.execute(
                sa.select(t.rollback_checks).where(
                    t.rollback_checks.c.model == model,
                    t.rollback_checks.c.verdict == "INSUFFICIENT",
                    t.rollback_checks.c.at >= since,
                )
            ).all()
        out = [
            (
                "canary_aborted",
                f"rollout_event:{e.id}",
                aware(e.at),
                f"rollout {e.rollout_id} of {model}@{e.candidate_version} aborted at step "
                f"{e.step} ({e.weight:.0%} of traffic): {e.reason or 'no reason given'}",
                int(e.candidate_version),
            )
            for e in aborted
        ]
        out += [
            (
                "gate_failed",
                f"evaluation:{e.id}",
                aware(e.created_at),
                f"{model}@{e.version} failed its evaluation gate (evaluation {e.id})",
                int(e.version),
            )
            for e in failed
        ]
        out += [
            (
                "rollback_insufficient",
                f"rollback_check:{c.id}",
                aware(c.at),
                f"rollback check of {model}@{c.current_version} -> @{c.target_version}: "
                "INSUFFICIENT (the previous version is degraded too)",
                int(c.current_version),
            )
            for c in checks
        ]
        return out

    def _evaluate_events(self, model: str, version: int) -> builtins.list[Alert]:
        rules = {r.name: r for r in self.rules(model) if r.enabled}
        changed: builtins.list[Alert] = []
        for name, subject, at, what, v in self._events(model, self.clock.now() - EVENT_LOOKBACK):
            rule = rules.get(name)
            if rule is None:
                continue
            fp = fingerprint(model, name, subject)
            if self._ever(fp):
                continue  # each event opens one alert, never reopened once resolved
            reading = Reading(True, text=what, extra={"event": subject, "at": at.isoformat()})
            opened = self._open(model, v, rule, fp, reading, (), (reading,), event=True)
            if opened is not None:
                changed.append(opened)
        return changed

    def _ever(self, fp: str) -> bool:
        with self.store.read() as conn:
            return (
                conn.execute(
                    sa.select(t.alerts.c.id).where(t.alerts.c.fingerprint == fp).limit(1)
                ).first()
                is not None
            )

    # -- transitions ------------------------------------------------------------------------

    def _open(
        self,
        model: str,
        version: int,
        rule: Rule,
        fp: str,
        latest: Reading,
        windows: Sequence[Window],
        readings: Sequence[Reading],
        *,
        event: bool = False,
    ) -> Alert | None:
        """Open the alert ``fp`` unless it is open already (by us or a racing evaluator)."""
        with self.store.read() as conn:  # the usual case on every round: open since earlier
            if _open_row(conn, fp) is not None:
                return None  # before the next step, which reads a week of the log
        now = self.clock.now()
        details = _details(rule, latest, windows, readings)
        summary = _summary(model, version, rule, latest, windows, event=event)
        next_step = self._next_step(model, rule)
        link = f"{self.config.public_url}/models/{model}" if self.config.public_url else None
        try:
            with self.store.write() as conn:
                if _open_row(conn, fp) is not None:
                    return None
                if (
                    event
                    and conn.execute(
                        sa.select(t.alerts.c.id).where(t.alerts.c.fingerprint == fp)
                    ).first()
                ):
                    return None
                team = self.registry.require_model_row(conn, model).owner
                action = _pending_action(rule.action)
                key = conn.execute(
                    t.alerts.insert().values(
                        fingerprint=fp,
                        open_fingerprint=fp,
                        model=model,
                        version=version,
                        team=team,
                        rule=rule.name,
                        severity=str(rule.severity),
                        state=str(AlertState.FIRING),
                        summary=summary,
                        details=details,
                        next_step=next_step,
                        link=link,
                        opened_at=now,
                        last_seen_at=now,
                        action=action,
                    )
                ).inserted_primary_key
                alert_id = int(key[0]) if key is not None else 0
                sent = self._enqueue_team(
                    conn, alert_id, NotificationKind.FIRING, team, rule.severity
                )
                if rule.action is not None:
                    self._enqueue_retrain(conn, alert_id, team, rule.action, now)
                if sent:
                    _set(conn, alert_id, last_notified_at=now)
                self._audit(
                    conn,
                    now,
                    "alert.open",
                    f"alert:{alert_id}",
                    model,
                    None,
                    {
                        "rule": rule.name,
                        "severity": str(rule.severity),
                        "team": team,
                        "summary": summary,
                        "notifications": sent,
                    },
                )
        except ConcurrentChangeError:
            return None  # another evaluator opened it at the same moment
        return self.get(alert_id, check=False)

    def _touch(self, fp: str, latest: Reading) -> None:
        with self.store.write() as conn:
            conn.execute(
                t.alerts.update()
                .where(t.alerts.c.open_fingerprint == fp)
                .values(last_seen_at=self.clock.now())
            )

    def _resolve_open(self, fp: str, by: str, note: str) -> Alert | None:
        with self.store.read() as conn:
            row = _open_row(conn, fp)
        if row is None:
            return None
        return self._resolve(int(row.id), by=by, note=note, recovered=True)

    def _resolve(self, alert_id: int, *, by: str, note: str, recovered: bool) -> Alert | None:
        """Resolve an open alert, its RESOLVED notifications and audit row in one transaction."""
        now = self.clock.now()
        with self.store.write() as conn:
            row = _row(conn, alert_id)
            if row is None or row.state == AlertState.RESOLVED:
                return None
            done = conn.execute(
                t.alerts.update()
                .where(t.alerts.c.id == alert_id, t.alerts.c.state != str(AlertState.RESOLVED))
                .values(
                    state=str(AlertState.RESOLVED),
                    open_fingerprint=None,
                    resolved_at=now,
                    resolved_by=by,
                    resolve_note=note,
                )
            ).rowcount
            if not done:
                return None  # resolved by someone else in between
            severity = Severity(row.severity)
            sent = self._enqueue_team(conn, alert_id, NotificationKind.RESOLVED, row.team, severity)
            if row.escalated_to:
                sent += self._enqueue_team(
                    conn, alert_id, NotificationKind.RESOLVED, row.escalated_to, severity
                )
            if sent:
                _set(conn, alert_id, last_notified_at=now)
            self._audit(
                conn,
                now,
                "alert.resolve",
                f"alert:{alert_id}",
                row.model,
                {"state": row.state},
                {
                    "state": "resolved",
                    "by": by,
                    "note": note,
                    "recovered": recovered,
                    "notifications": sent,
                },
            )
        return self.get(alert_id, check=False)

    def _follow_up(self, models: Sequence[str]) -> builtins.list[Alert]:
        """Repeat unacknowledged pages every repeat interval; escalate them once, when due."""
        now = self.clock.now()
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t.alerts).where(
                    t.alerts.c.state == str(AlertState.FIRING),
                    t.alerts.c.severity == str(Severity.PAGE),
                    t.alerts.c.model.in_(list(models)),
                )
            ).all()
        changed = []
        for row in rows:
            team = self._team(row.team)
            after = team.get("escalate_after_s") if team else None
            if (
                row.escalated_at is None
                and team is not None
                and team.get("escalate_to")
                and after is not None
                and now - aware(row.opened_at) >= timedelta(seconds=after)
                and self._escalate(int(row.id), str(team["escalate_to"]))
            ):
                changed.append(self.get(int(row.id), check=False))
                continue
            last = aware(row.last_notified_at or row.opened_at)
            if now - last >= timedelta(seconds=self.config.alert_repeat_s) and self._repeat(
                int(row.id), row.last_notified_at
            ):
                changed.append(self.get(int(row.id), check=False))
        return changed

    def _repeat(self, alert_id: int, last: datetime | None) -> bool:
        now = self.clock.now()
        with self.store.write() as conn:
            row = _row(conn, alert_id)
            if row is None or row.state != AlertState.FIRING:
                return False
            same = (
                t.alerts.c.last_notified_at.is_(None)
                if last is None
                else t.alerts.c.last_notified_at == last
            )
            done = conn.execute(
                t.alerts.update()
                .where(t.alerts.c.id == alert_id, t.alerts.c.state == "firing", same)
                .values(last_notified_at=now)
            ).rowcount
            if not done:
                return False  # another evaluator repeated it, or it was acknowledged
            sent = self._enqueue_team(
                conn, alert_id, NotificationKind.REPEAT, row.team, Severity.PAGE
            )
            if row.escalated_to:
                sent += self._enqueue_team(
                    conn, alert_id, NotificationKind.REPEAT, row.escalated_to, Severity.PAGE
                )
            self._audit(
                conn,
                now,
                "alert.repeat",
                f"alert:{alert_id}",
                row.model,
                None,
                {"notifications": sent},
            )
        return True

    def _escalate(self, alert_id: int, to: str) -> bool:
        now = self.clock.now()
        with self.store.write() as conn:
            row = _row(conn, alert_id)
            if row is None:
                return False
            done = conn.execute(
                t.alerts.update()
                .where(
                    t.alerts.c.id == alert_id,
                    t.alerts.c.state == "firing",
                    t.alerts.c.escalated_at.is_(None),
                )
                .values(escalated_at=now, escalated_to=to, last_notified_at=now)
            ).rowcount
            if not done:
                return False
            sent = self._enqueue_team(
                conn, alert_id, NotificationKind.ESCALATION, to, Severity.PAGE
            )
            self._audit(
                conn,
                now,
                "alert.escalate",
                f"alert:{alert_id}",
                row.model,
                None,
                {"to": to, "from": row.team, "notifications": sent},
            )
        return True

    # -- outbox rows ---------------------------------------------------------------------------

    def _team(self, name: str) -> dict[str, Any] | None:
        with self.store.read() as conn:
            row = conn.execute(sa.select(t.teams).where(t.teams.c.name == name)).first()
        return None if row is None else dict(row._mapping)

    def _enqueue_team(
        self,
        conn: sa.Connection,
        alert_id: int,
        kind: NotificationKind,
        team: str,
        severity: Severity,
    ) -> int:
        """One outbox row per configured channel of ``team``; none for info. How many."""
        if severity is Severity.INFO:
            return 0
        row = conn.execute(sa.select(t.teams).where(t.teams.c.name == team)).first()
        if row is None:
            return 0
        routes = [
            (Channel.WEBHOOK, row.webhook_url),
            (Channel.SLACK, row.slack_webhook_url),
            (Channel.EMAIL, row.email),
        ]
        n = 0
        for channel, target in routes:
            if target:
                self._insert_notification(conn, alert_id, kind, team, channel, target)
                n += 1
        return n

    def _enqueue_retrain(
        self, conn: sa.Connection, alert_id: int, team: str, action: RuleAction, now: datetime
    ) -> None:
        if action.command is not None:
            self._insert_notification(
                conn,
                alert_id,
                NotificationKind.RETRAIN,
                team,
                Channel.COMMAND,
                shlex.join(action.command),
            )
        elif action.webhook is not None:
            self._insert_notification(
                conn,
                alert_id,
                NotificationKind.RETRAIN,
                team,
                Channel.RETRAIN_WEBHOOK,
                action.webhook,
            )

    def _insert_notification(
        self,
        conn: sa.Connection,
        alert_id: int,
        kind: NotificationKind,
        team: str,
        channel: Channel,
        target: str,
    ) -> None:
        now = self.clock.now()
        conn.execute(
            t.alert_notifications.insert().values(
                alert_id=alert_id,
                kind=str(kind),
                team=team,
                channel=str(channel),
                target=target,
                state="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )

    # -- next step ----------------------------------------------------------------------------

    def _next_step(self, model: str, rule: Rule) -> str | None:
        with self.store.read() as conn:
            check = conn.execute(
                sa.select(t.rollback_checks)
                .where(t.rollback_checks.c.model == model)
                .order_by(t.rollback_checks.c.id.desc())
                .limit(1)
            ).first()
        parts: builtins.list[str] = []
        if check is not None:
            verdict = check.verdict
            if verdict == "SAFE":
                parts.append(
                    f"rollback check: SAFE, roll back to @{check.target_version}: "
                    f"`ownloop rollback {model}`"
                )
            else:
                parts.append(f"rollback check: {verdict}, retrain on recent data")
        elif rule.metric in ("canary_aborted", "gate_failed"):
            parts.append(f"see `ownloop rollouts {model}` and the evaluation report")
        else:
            parts.append(f"check the previous version on today's data: `ownloop rollback {model}`")
        n = self.feedback.labelled_count(model, since=timedelta(days=7))
        if n:
            parts.append(f"{n:,} labelled rows available: `ownloop export-evalset {model}`")
        return "; ".join(parts)

    # -- reading, ack, resolve -----------------------------------------------------------------

    @action("alert.read")
    def get(self, alert_id: int, *, check: bool = True) -> Alert:
        """One alert by id."""
        with self.store.read() as conn:
            row = _row(conn, alert_id)
        if row is None:
            raise NotFoundError(f"alert {alert_id} does not exist; see 'ownloop alerts'")
        if check:
            self.acting.check("alert.read", target=f"alert:{alert_id}")
        return alert_from_row(row)

    @action("alert.read")
    def list(
        self,
        *,
        model: str | None = None,
        team: str | None = None,
        mine: bool = False,
        open_only: bool = False,
        limit: int = 100,
    ) -> builtins.list[Alert]:
        """Alerts newest first; ``mine``: of the teams the actor belongs to."""
        self.acting.check("alert.read", target="alerts")
        if not 1 <= limit <= 10_000:
            raise InvalidInputError(f"limit {limit} must lie between 1 and 10000")
        q = sa.select(t.alerts)
        if model is not None:
            q = q.where(t.alerts.c.model == validate_name("model", model))
        if team is not None:
            q = q.where(t.alerts.c.team == validate_name("team", team))
        if open_only:
            q = q.where(t.alerts.c.state != str(AlertState.RESOLVED))
        with self.store.read() as conn:
            if mine:
                q = q.where(t.alerts.c.team.in_(sorted(self._my_teams(conn))))
            rows = conn.execute(q.order_by(t.alerts.c.id.desc()).limit(limit)).all()
        return [alert_from_row(r) for r in rows]

    def _my_teams(self, conn: sa.Connection) -> set[str]:
        member = conn.execute(
            sa.select(t.teams.c.name)
            .join(t.team_members, t.team_members.c.team_id == t.teams.c.id)
            .where(t.team_members.c.member == self.actor.name)
        ).scalars()
        return set(member) | set(self.actor.teams)

    @action("alert.ack")
    def ack(self, alert_id: int, note: str | None = None) -> Alert:
        """Acknowledge an open alert: no more repeats or escalation; audited."""
        with self.store.read() as conn:  # checked before the write transaction opens
            self._require(conn, alert_id, "alert.ack")
        now = self.clock.now()
        with self.store.write() as conn:
            row = self._require(conn, alert_id, "alert.ack", audited=False)
            if row.state == AlertState.RESOLVED:
                raise ConflictError(
                    f"alert {alert_id} was resolved at {aware(row.resolved_at):%Y-%m-%d %H:%M} "
                    f"by {row.resolved_by}; there is nothing to acknowledge"
                )
            if row.state == AlertState.ACKNOWLEDGED:
                raise ConflictError(
                    f"alert {alert_id} was already acknowledged by {row.acked_by} at "
                    f"{aware(row.acked_at):%Y-%m-%d %H:%M}"
                )
            conn.execute(
                t.alerts.update()
                .where(t.alerts.c.id == alert_id)
                .values(state=str(AlertState.ACKNOWLEDGED), acked_at=now, acked_by=self.actor.name)
            )
            self._audit(
                conn,
                now,
                "alert.ack",
                f"alert:{alert_id}",
                row.model,
                {"state": row.state},
                {"state": "acknowledged", "note": note},
            )
        return self.get(alert_id, check=False)

    @action("alert.resolve")
    def resolve(self, alert_id: int, note: str) -> Alert:
        """Resolve an open alert by hand (with a note saying what was done); audited."""
        if not note or not note.strip():
            raise InvalidInputError("resolving an alert needs a note saying what was done")
        with self.store.read() as conn:
            row = self._require(conn, alert_id, "alert.resolve")
        if row.state == AlertState.RESOLVED:
            raise ConflictError(
                f"alert {alert_id} is already resolved (by {row.resolved_by}); nothing to do"
            )
        done = self._resolve(alert_id, by=self.actor.name, note=note.strip(), recovered=False)
        if done is None:
            raise ConflictError(f"alert {alert_id} was resolved by someone else just now")
        return done

    def _require(
        self, conn: sa.Connection, alert_id: int, action: str, *, audited: bool = True
    ) -> sa.Row[Any]:
        row = _row(conn, alert_id)
        if row is None:
            raise NotFoundError(f"alert {alert_id} does not exist; see 'ownloop alerts'")
        team = _owner_now(conn, row)
        if audited:
            self.acting.check(action, team, target=f"alert:{alert_id}")
        else:  # inside a write transaction, after the audited check: a denial here is a race
            authorize(self.actor, action, team)
        return row

    def _audit(
        self,
        conn: sa.Connection,
        at: datetime,
        action: str,
        target: str,
        model: str | None,
        before: Any,
        after: Any,
    ) -> None:
        self.store.audit(
            conn,
            at=at,
            actor=self.actor.name,
            action=action,
            target=target,
            model=model,
            before=before,
            after=after,
        )


# -- rows -------------------------------------------------------------------------------------


def _file_settings(name: str, raw: Any) -> dict[str, Any]:
    """A rule's settings as written in a YAML file, in the names ``check_settings`` takes."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"rule '{name}' in the rules file needs a mapping, e.g. {{above: 0.05, for: 2}}"
        )
    out = {("for_windows" if k == "for" else str(k)): v for k, v in raw.items()}
    command, webhook = out.pop("command", None), out.pop("retrain_webhook", None)
    timeout = out.pop("timeout_s", 600.0)
    if command is not None or webhook is not None:
        if isinstance(command, str):
            command = shlex.split(command)
        if command is not None and not isinstance(command, list):
            raise InvalidInputError(f"rule '{name}': command must be a list of words or a string")
        out["action"] = RuleAction(
            command=None if command is None else tuple(str(c) for c in command),
            webhook=webhook,
            timeout_s=float(timeout),
        )
    return out


def _figure(r: Any) -> Figure:
    return Figure(
        r.kind,
        r.name,
        r.status,
        r.method,
        r.value,
        r.lower,
        r.upper,
        r.threshold,
        r.p_value,
        r.alert,
        r.n,
        r.reference,
        r.bound,
        r.compare,
    )


def _open_row(conn: sa.Connection, fp: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(t.alerts).where(t.alerts.c.open_fingerprint == fp)).first()


def _row(conn: sa.Connection, alert_id: int) -> sa.Row[Any] | None:
    return conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()


def _owner_now(conn: sa.Connection, row: sa.Row[Any]) -> str:
    """The team owning the alert's model now (permission follows ownership), else the alert's."""
    owner = conn.execute(
        sa.select(t.teams.c.name)
        .join(t.models, t.models.c.team_id == t.teams.c.id)
        .where(t.models.c.name == row.model)
    ).scalar()
    return str(owner) if owner is not None else str(row.team)


def _set(conn: sa.Connection, alert_id: int, **values: Any) -> None:
    conn.execute(t.alerts.update().where(t.alerts.c.id == alert_id).values(**values))


def _pending_action(action: RuleAction | None) -> dict[str, Any] | None:
    data = action_to_json(action)
    return None if data is None else {**data, "state": "pending"}


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _details(
    rule: Rule, latest: Reading, windows: Sequence[Window], readings: Sequence[Reading]
) -> dict[str, Any]:
    w = windows[0] if windows else None
    return {
        "rule": rule.name,
        "metric": rule.metric,
        "value": _num(latest.value),
        "bound": _num(latest.bound),
        "compare": latest.compare,
        "threshold": rule.threshold,
        "reference": _num(latest.reference),
        "lower": _num(latest.lower),
        "upper": _num(latest.upper),
        "method": latest.method,
        "n": latest.n,
        "for_windows": rule.for_windows,
        "window_start": None if w is None else w.start.isoformat(),
        "window_end": None if w is None else w.end.isoformat(),
        "run_ids": [x.run_id for x in windows],
        "values": [_num(r.value) for r in readings],
        **{k: v for k, v in latest.extra.items()},
    }


def _summary(
    model: str,
    version: int,
    rule: Rule,
    latest: Reading,
    windows: Sequence[Window],
    *,
    event: bool,
) -> str:
    if event:  # the event's text names the model and version already
        return latest.text
    w = windows[0]
    bound = (
        "the monitor's own verdict"
        if rule.threshold is None
        else f"{rule.compare} {rule.threshold:g}"
    )
    span = f"{len(windows)} window{'s' if len(windows) > 1 else ''}"
    n = "" if latest.n is None else f", n={latest.n:,}"
    method = "" if not latest.method else f", {latest.method}"
    return (
        f"{model}@{version} {rule.name}: {latest.text} ({bound} for {span}); window "
        f"{w.start:%Y-%m-%d %H:%M}-{w.end:%H:%M} UTC, {w.rows:,} rows{n}{method}"
    )
