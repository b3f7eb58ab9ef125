"""Every public method of every Python service names its action in ``ownloop.access.POLICY``, and
an exact matrix of who may call what: anonymous, a viewer, an owner of each team and an admin,
on one real SQLite store where team 'risk' owns 'churn' and team 'growth' owns 'upsell'.

A new public method without ``@action`` fails the enumeration; a method without a row in the
matrix, or whose check was dropped, fails the matrix.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, PermissionDeniedError, Workspace
from ownloop.access import POLICY, Actor, Role, action_of
from ownloop.alerts import Alerts, Outbox
from ownloop.demo import log_predictions, make_churn_data
from ownloop.deploy import Deployments, Plan
from ownloop.errors import GateFailedError
from ownloop.evaluation import Evaluations
from ownloop.feedback import Feedback
from ownloop.labels import labels_table, record_labels
from ownloop.monitoring import DriftSettings, Monitor, WindowReport
from ownloop.registry import Registry
from ownloop.scorecard import Scorecards
from ownloop.store import tables as t
from ownloop.tokens import Tokens

SERVICES: tuple[type, ...] = (
    Registry,
    Evaluations,
    Monitor,
    Deployments,
    Feedback,
    Alerts,
    Outbox,
    Scorecards,
)

# Tokens' bodies are written elsewhere; the actions its methods must check are fixed here.
TOKEN_ACTIONS = {
    "create": ("token.create", Role.ADMIN),
    "list": ("token.read", Role.ADMIN),
    "revoke": ("token.revoke", Role.ADMIN),
    "verify": ("token.verify", Role.ANYONE),
    "any_active": ("token.verify", Role.ANYONE),
    "open_session": ("ui.login", Role.ANYONE),
    "session": ("token.verify", Role.ANYONE),
    "close_session": ("ui.login", Role.ANYONE),
}

ROOT = Actor("root", admin=True)  # sets the store up and undoes allowed changes
ROLES = {
    "anonymous": Actor("anonymous", viewer=False),
    "viewer": Actor("vera"),
    "risk": Actor("rita", teams=frozenset({"risk"})),
    "growth": Actor("gus", teams=frozenset({"growth"})),
    "admin": Actor("ada", admin=True),
}
A, D = "allow", "deny"


def public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: fn
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_every_public_service_method_names_an_action_in_policy() -> None:
    missing = [
        f"{cls.__name__}.{name}"
        for cls in SERVICES
        for name, fn in public_methods(cls).items()
        if action_of(fn) not in POLICY
    ]
    assert missing == [], f"public service methods without @action(...): {missing}"


def test_tokens_methods_have_their_actions() -> None:
    assert set(public_methods(Tokens)) == set(TOKEN_ACTIONS)
    for name, (act, role) in TOKEN_ACTIONS.items():
        assert POLICY[act] is role, name
        marked = action_of(public_methods(Tokens)[name])
        assert marked in (None, act), f"Tokens.{name} is marked {marked}, expected {act}"


# -- the store --------------------------------------------------------------------------------


@dataclass
class World:
    ws: Workspace
    rollout_id: int
    report: WindowReport
    rules_file: Path
    out: Path
    count: Iterator[int]

    def as_root(self, call: Callable[[], Any]) -> Any:
        with self.ws.acting_as(ROOT):
            return call()

    def row(self, model: str = "churn") -> Any:
        def read() -> Any:
            with self.ws.store.read() as conn:
                return self.ws.registry.require_model_row(conn, model)

        return self.as_root(read)


def _error_windows(ws: Workspace, end: datetime) -> None:
    """Two stored stable-arm windows of churn@1 with a 20% error rate: the page rule holds."""
    for at in (end - timedelta(hours=1), end):
        with ws.store.write() as conn:
            run = conn.execute(
                t.monitor_runs.insert().values(
                    model="churn",
                    version=1,
                    window_start=at - timedelta(hours=1),
                    window_end=at,
                    rows=1000,
                    status="ok",
                    summary={"arms": ["stable", "canary"]},
                    started_at=at,
                    finished_at=at,
                    run_by="root",
                )
            ).inserted_primary_key
            conn.execute(
                t.monitor_results.insert().values(
                    run_id=int(run[0]) if run is not None else 0,
                    model="churn",
                    version=1,
                    window_end=at,
                    kind="system",
                    name="error_rate",
                    status="ok",
                    value=0.2,
                    n=1000,
                )
            )


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, churn_model: object, churn_data: pd.DataFrame
) -> Iterator[World]:
    home = tmp_path_factory.mktemp("matrix")
    config = Config(home=home / "home", db_url_override=f"sqlite:///{home / 'o.db'}", user="root")
    with Workspace(config, actor=ROOT) as ws:
        reg = ws.registry
        reg.add_team("risk", members=["rita"])
        reg.add_team("growth", members=["gus"])
        for _ in range(2):
            reg.register(
                churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
            )
        reg.register(
            churn_model, name="upsell", owner="growth", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", 2, force=True, reason="set up")
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
        ws.evaluations.evaluate("churn@2", data=churn_data.iloc[:300], label="churned")
        rollout = ws.deploy.deploy("churn@2", strategy="canary", force=True, reason="set up")
        ws.deploy.abort("churn", reason="set up")
        now = datetime.now(UTC)
        frame = make_churn_data(120, seed=3)
        logged = log_predictions(
            ws, "churn@1", frame.drop(columns="churned"), now - timedelta(hours=1), seed=1
        )
        ids = logged["prediction_id"].to_pylist()
        rows = [
            {"prediction_id": i, "label": int(y)}
            for i, y in zip(ids, frame["churned"], strict=True)
        ]
        record_labels(
            reg, config.predictions_dir, "churn", labels_table(rows, at=now, source="test")
        )
        report = ws.monitor.window_reports("churn", now - timedelta(hours=2), now)[0]
        _error_windows(ws, now + timedelta(days=1))
        (home / "evals").mkdir()
        rules_file = home / "rules.yaml"
        rules_file.write_text("rules:\n  error_rate: {above: 0.05, for: 2, severity: page}\n")
        yield World(
            ws, rollout.id, report, rules_file, home / "evals" / "prod.parquet", itertools.count()
        )


# -- calls: each one repeatable, whatever role made the one before --------------------------------


def _fresh_alert(w: World) -> int:
    """An open error_rate alert of churn (any earlier one resolved first), opened by root."""

    def open_one() -> int:
        for alert in w.ws.alerts.list(model="churn", open_only=True):
            w.ws.alerts.resolve(alert.id, "matrix reset")
        (opened,) = [a for a in w.ws.alerts.evaluate(["churn"]) if a.rule == "error_rate"]
        return opened.id

    return int(w.as_root(open_one))


def _rolling(w: World, act: Callable[[], Any]) -> Any:
    """``act`` on an active canary rollout of churn@2, which is ended again (as root) after."""
    ws = w.ws
    w.as_root(lambda: ws.deploy.deploy("churn@2", strategy="canary", force=True, reason="m"))
    try:
        return act()
    finally:

        def end() -> None:
            if ws.deploy.status("churn").rollout.active:  # type: ignore[union-attr]
                ws.deploy.abort("churn", reason="matrix reset")
            if ws.registry.get_model("churn").aliases["production"] != 1:
                ws.deploy.set_production("churn", 1, force=True, reason="matrix reset")

        w.as_root(end)


def _in_read(w: World, call: Callable[[sa.Connection], Any]) -> Any:
    # a read transaction: a denial is audited from another connection without waiting on a lock
    with w.ws.store.read() as conn:
        return call(conn)


def _transfer(w: World) -> None:
    w.ws.registry.transfer("churn", "growth")
    w.as_root(lambda: w.ws.registry.transfer("churn", "risk"))


def _delete_alias(w: World) -> None:
    w.as_root(lambda: w.ws.registry.set_alias("churn", "spare", 1))
    w.ws.registry.delete_alias("churn", "spare")


def _remove_member(w: World) -> None:
    name = f"m{next(w.count)}"
    w.as_root(lambda: w.ws.registry.add_member("risk", name))
    w.ws.registry.remove_member("risk", name)


def _reset_rule(w: World) -> None:
    w.as_root(lambda: w.ws.alerts.set_rule("churn", "error_rate", above=0.05))
    w.ws.alerts.reset_rule("churn", "error_rate")


def _check_gate(w: World) -> None:
    version = w.as_root(lambda: w.ws.registry.get_version("churn@2"))
    with suppress(GateFailedError):  # raised after the permission check passed
        w.ws.deploy.check_gate(version)


def _register(w: World, model: object) -> None:
    w.ws.registry.register(model, name="churn")


NOW = datetime.now(UTC)
DAY = timedelta(days=1)

CALLS: dict[str, Callable[[World, object], Any]] = {
    # registry
    "Registry.add_team": lambda w, m: w.ws.registry.add_team(f"t{next(w.count)}"),
    "Registry.update_team": lambda w, m: w.ws.registry.update_team("risk", email="r@example.com"),
    "Registry.add_member": lambda w, m: w.ws.registry.add_member("risk", f"m{next(w.count)}"),
    "Registry.remove_member": lambda w, m: _remove_member(w),
    "Registry.get_team": lambda w, m: w.ws.registry.get_team("risk"),
    "Registry.list_teams": lambda w, m: w.ws.registry.list_teams(),
    "Registry.register": lambda w, m: _register(w, m),
    "Registry.require_model_row": lambda w, m: _in_read(
        w, lambda c: w.ws.registry.require_model_row(c, "churn")
    ),
    "Registry.get_model": lambda w, m: w.ws.registry.get_model("churn"),
    "Registry.list_models": lambda w, m: w.ws.registry.list_models(),
    "Registry.list_versions": lambda w, m: w.ws.registry.list_versions("churn"),
    "Registry.resolve": lambda w, m: w.ws.registry.resolve("churn@production"),
    "Registry.get_version": lambda w, m: w.ws.registry.get_version("churn@1"),
    "Registry.load": lambda w, m: w.ws.registry.load("churn@1"),
    "Registry.load_profile": lambda w, m: w.ws.registry.load_profile("churn@1"),
    "Registry.transfer": lambda w, m: _transfer(w),
    "Registry.set_alias": lambda w, m: w.ws.registry.set_alias("churn", "champion", 1),
    "Registry.move_alias": lambda w, m: _in_read(
        w, lambda c: w.ws.registry.move_alias(c, w.row(), "champion", 1, NOW)
    ),
    "Registry.delete_alias": lambda w, m: _delete_alias(w),
    "Registry.alias_history": lambda w, m: w.ws.registry.alias_history("churn"),
    "Registry.audit_log": lambda w, m: w.ws.registry.audit_log(limit=5),
    # evaluations
    "Evaluations.evaluate": lambda w, m: w.ws.evaluations.evaluate(
        "churn@2", data=make_churn_data(200, seed=5), label="churned"
    ),
    "Evaluations.history": lambda w, m: w.ws.evaluations.history("churn@2"),
    "Evaluations.latest": lambda w, m: w.ws.evaluations.latest("churn@2"),
    "Evaluations.get": lambda w, m: w.ws.evaluations.get(
        w.as_root(lambda: w.ws.evaluations.history("churn@2")[-1].id)
    ),
    "Evaluations.latest_verdict": lambda w, m: w.ws.evaluations.latest_verdict("churn@2"),
    "Evaluations.gate_passed": lambda w, m: w.ws.evaluations.gate_passed("churn@2"),
    # monitor
    "Monitor.settings": lambda w, m: w.ws.monitor.settings("churn"),
    "Monitor.known_features": lambda w, m: w.ws.monitor.known_features("churn"),
    "Monitor.check_settings": lambda w, m: w.ws.monitor.check_settings("churn", DriftSettings()),
    "Monitor.configure": lambda w, m: w.ws.monitor.configure("churn", DriftSettings()),
    "Monitor.monitored_models": lambda w, m: w.ws.monitor.monitored_models(),
    "Monitor.run": lambda w, m: w.ws.monitor.run("churn", end=NOW, arm="shadow"),
    "Monitor.row_window_start": lambda w, m: w.ws.monitor.row_window_start("churn", 10, NOW),
    "Monitor.row_window": lambda w, m: w.ws.monitor.row_window("churn", 10, NOW),
    "Monitor.window_reports": lambda w, m: w.ws.monitor.window_reports(
        "churn", NOW - timedelta(hours=2), NOW
    ),
    "Monitor.sample": lambda w, m: w.ws.monitor.sample("churn", 5, end=NOW, seed=1),
    "Monitor.drift_html": lambda w, m: w.ws.monitor.drift_html(w.report),
    "Monitor.runs": lambda w, m: w.ws.monitor.runs("churn"),
    "Monitor.results": lambda w, m: w.ws.monitor.results("churn"),
    "Monitor.latest_results": lambda w, m: w.ws.monitor.latest_results("churn"),
    "Monitor.series": lambda w, m: w.ws.monitor.series(
        "churn", [("system", "error_rate")], since=NOW - timedelta(days=30)
    ),
    "Monitor.feature_history": lambda w, m: w.ws.monitor.feature_history(
        "churn", "tenure", since=NOW - timedelta(days=30)
    ),
    # deployments
    "Deployments.routes": lambda w, m: w.ws.deploy.routes(),
    "Deployments.generations": lambda w, m: w.ws.deploy.generations(),
    "Deployments.route": lambda w, m: w.ws.deploy.route("churn"),
    "Deployments.deploy": lambda w, m: _rolling_deploy(w),
    "Deployments.tick": lambda w, m: w.ws.deploy.tick(),
    "Deployments.promote": lambda w, m: _rolling(w, lambda: w.ws.deploy.promote("churn")),
    "Deployments.abort": lambda w, m: _rolling(w, lambda: w.ws.deploy.abort("churn", reason="x")),
    "Deployments.pause": lambda w, m: _rolling(w, lambda: w.ws.deploy.pause("churn")),
    "Deployments.resume": lambda w, m: _rolling(w, lambda: _pause_resume(w)),
    "Deployments.status": lambda w, m: w.ws.deploy.status("churn"),
    "Deployments.statuses": lambda w, m: w.ws.deploy.statuses(),
    "Deployments.rollout": lambda w, m: w.ws.deploy.rollout(w.rollout_id),
    "Deployments.rollouts": lambda w, m: w.ws.deploy.rollouts("churn"),
    "Deployments.rollback_checks": lambda w, m: w.ws.deploy.rollback_checks("churn"),
    "Deployments.events": lambda w, m: w.ws.deploy.events(w.rollout_id),
    "Deployments.wait": lambda w, m: w.ws.deploy.wait(w.rollout_id, timeout_s=0),
    "Deployments.policy": lambda w, m: w.ws.deploy.policy("churn"),
    "Deployments.set_policy": lambda w, m: w.ws.deploy.set_policy("churn", Plan()),
    "Deployments.check_gate": lambda w, m: _check_gate(w),
    "Deployments.set_production": lambda w, m: w.ws.deploy.set_production(
        "churn", 1, force=True, reason="matrix"
    ),
    "Deployments.refuse_if_rolling_out": lambda w, m: _in_read(
        w, lambda c: w.ws.deploy.refuse_if_rolling_out(c, w.row())
    ),
    "Deployments.move_production": lambda w, m: _in_read(
        w,
        lambda c: w.ws.deploy.move_production(
            c, w.row(), 1, NOW, action="deploy.direct", reason="matrix", evidence=None
        ),
    ),
    "Deployments.write_route": lambda w, m: _in_read(
        w, lambda c: w.ws.deploy.write_route(c, w.row(), NOW, stable=1)
    ),
    "Deployments.check_rollback": lambda w, m: w.ws.deploy.check_rollback("churn", rows=100),
    "Deployments.rollback": lambda w, m: w.ws.deploy.rollback("churn", check_only=True, rows=100),
    # feedback
    "Feedback.labelled_count": lambda w, m: w.ws.feedback.labelled_count("churn", end=NOW + DAY),
    "Feedback.export_evalset": lambda w, m: w.ws.feedback.export_evalset(
        "churn", w.out, end=NOW + DAY, force=True
    ),
    # alerts
    "Alerts.rules": lambda w, m: w.ws.alerts.rules("churn"),
    "Alerts.rule": lambda w, m: w.ws.alerts.rule("churn", "error_rate"),
    "Alerts.set_rule": lambda w, m: w.ws.alerts.set_rule("churn", "error_rate", above=0.05),
    "Alerts.reset_rule": lambda w, m: _reset_rule(w),
    "Alerts.load_rules": lambda w, m: w.ws.alerts.load_rules("churn", w.rules_file),
    "Alerts.evaluate": lambda w, m: w.ws.alerts.evaluate(["churn"]),
    "Alerts.get": lambda w, m: w.ws.alerts.get(_fresh_alert(w)),
    "Alerts.list": lambda w, m: w.ws.alerts.list(),
    "Alerts.ack": lambda w, m: w.ws.alerts.ack(_fresh_alert(w)),
    "Alerts.resolve": lambda w, m: w.ws.alerts.resolve(_fresh_alert(w), "fixed"),
    # outbox
    "Outbox.deliver_due": lambda w, m: w.ws.outbox.deliver_due(limit=1),
    "Outbox.pending": lambda w, m: w.ws.outbox.pending(),
    "Outbox.notifications": lambda w, m: w.ws.outbox.notifications(1),
    "Outbox.deliveries": lambda w, m: w.ws.outbox.deliveries(1),
    # scorecards
    "Scorecards.card": lambda w, m: w.ws.scorecard.card(model="churn"),
    "Scorecards.trend": lambda w, m: w.ws.scorecard.trend(model="churn", periods=2),
}


def _rolling_deploy(w: World) -> None:
    w.ws.deploy.deploy("churn@2", strategy="canary", force=True, reason="matrix")
    w.as_root(lambda: w.ws.deploy.abort("churn", reason="matrix reset"))


def _pause_resume(w: World) -> None:
    w.as_root(lambda: w.ws.deploy.pause("churn"))
    w.ws.deploy.resume("churn")


# The expected outcome per role, written out:   anonymous viewer risk growth admin
MATRIX: dict[str, tuple[str, str, str, str, str]] = {
    "Registry.add_team": (D, D, D, D, A),
    "Registry.update_team": (D, D, A, D, A),
    "Registry.add_member": (D, D, A, D, A),
    "Registry.remove_member": (D, D, A, D, A),
    "Registry.get_team": (D, A, A, A, A),
    "Registry.list_teams": (D, A, A, A, A),
    "Registry.register": (D, D, A, D, A),
    "Registry.require_model_row": (D, A, A, A, A),
    "Registry.get_model": (D, A, A, A, A),
    "Registry.list_models": (D, A, A, A, A),
    "Registry.list_versions": (D, A, A, A, A),
    "Registry.resolve": (D, A, A, A, A),
    "Registry.get_version": (D, A, A, A, A),
    "Registry.load": (D, A, A, A, A),
    "Registry.load_profile": (D, A, A, A, A),
    "Registry.transfer": (D, D, A, D, A),
    "Registry.set_alias": (D, D, A, D, A),
    "Registry.move_alias": (D, D, A, D, A),
    "Registry.delete_alias": (D, D, A, D, A),
    "Registry.alias_history": (D, A, A, A, A),
    "Registry.audit_log": (D, A, A, A, A),
    "Evaluations.evaluate": (D, D, A, D, A),
    "Evaluations.history": (D, A, A, A, A),
    "Evaluations.get": (D, A, A, A, A),
    "Evaluations.latest": (D, A, A, A, A),
    "Evaluations.latest_verdict": (D, A, A, A, A),
    "Evaluations.gate_passed": (D, A, A, A, A),
    "Monitor.settings": (D, A, A, A, A),
    "Monitor.known_features": (D, A, A, A, A),
    "Monitor.check_settings": (D, A, A, A, A),
    "Monitor.configure": (D, D, A, D, A),
    "Monitor.monitored_models": (D, A, A, A, A),
    "Monitor.run": (D, D, A, D, A),
    "Monitor.row_window_start": (D, A, A, A, A),
    "Monitor.row_window": (D, A, A, A, A),
    "Monitor.window_reports": (D, A, A, A, A),
    "Monitor.sample": (D, A, A, A, A),
    "Monitor.drift_html": (D, A, A, A, A),
    "Monitor.runs": (D, A, A, A, A),
    "Monitor.results": (D, A, A, A, A),
    "Monitor.latest_results": (D, A, A, A, A),
    "Monitor.series": (D, A, A, A, A),
    "Monitor.feature_history": (D, A, A, A, A),
    "Deployments.routes": (D, A, A, A, A),
    "Deployments.generations": (D, A, A, A, A),
    "Deployments.route": (D, A, A, A, A),
    "Deployments.deploy": (D, D, A, D, A),
    "Deployments.tick": (D, D, D, D, A),
    "Deployments.promote": (D, D, A, D, A),
    "Deployments.abort": (D, D, A, D, A),
    "Deployments.pause": (D, D, A, D, A),
    "Deployments.resume": (D, D, A, D, A),
    "Deployments.status": (D, A, A, A, A),
    "Deployments.statuses": (D, A, A, A, A),
    "Deployments.rollout": (D, A, A, A, A),
    "Deployments.rollouts": (D, A, A, A, A),
    "Deployments.rollback_checks": (D, A, A, A, A),
    "Deployments.events": (D, A, A, A, A),
    "Deployments.wait": (D, A, A, A, A),
    "Deployments.policy": (D, A, A, A, A),
    "Deployments.set_policy": (D, D, A, D, A),
    "Deployments.check_gate": (D, A, A, A, A),
    "Deployments.set_production": (D, D, A, D, A),
    "Deployments.refuse_if_rolling_out": (D, A, A, A, A),
    "Deployments.move_production": (D, D, A, D, A),
    "Deployments.write_route": (D, D, A, D, A),
    "Deployments.check_rollback": (D, A, A, A, A),
    "Deployments.rollback": (D, D, A, D, A),
    "Feedback.labelled_count": (D, A, A, A, A),
    "Feedback.export_evalset": (D, D, A, D, A),
    "Alerts.rules": (D, A, A, A, A),
    "Alerts.rule": (D, A, A, A, A),
    "Alerts.set_rule": (D, D, A, D, A),
    "Alerts.reset_rule": (D, D, A, D, A),
    "Alerts.load_rules": (D, D, A, D, A),
    "Alerts.evaluate": (D, D, D, D, A),
    "Alerts.get": (D, A, A, A, A),
    "Alerts.list": (D, A, A, A, A),
    "Alerts.ack": (D, D, A, D, A),
    "Alerts.resolve": (D, D, A, D, A),
    "Outbox.deliver_due": (D, D, D, D, A),
    "Outbox.pending": (D, A, A, A, A),
    "Outbox.notifications": (D, A, A, A, A),
    "Outbox.deliveries": (D, A, A, A, A),
    "Scorecards.card": (D, A, A, A, A),
    "Scorecards.trend": (D, A, A, A, A),
}

# allowed calls that change something, so write an audit row naming who acted
AUDITED = {
    "Registry.add_team",
    "Registry.update_team",
    "Registry.add_member",
    "Registry.remove_member",
    "Registry.register",
    "Registry.transfer",
    "Registry.set_alias",
    "Registry.move_alias",
    "Registry.delete_alias",
    "Evaluations.evaluate",
    "Monitor.configure",
    "Deployments.deploy",
    "Deployments.promote",
    "Deployments.abort",
    "Deployments.pause",
    "Deployments.resume",
    "Deployments.set_policy",
    "Deployments.set_production",
    "Deployments.move_production",
    "Deployments.rollback",
    "Alerts.set_rule",
    "Alerts.reset_rule",
    "Alerts.load_rules",
    "Alerts.ack",
    "Alerts.resolve",
}


def test_the_matrix_covers_every_public_method() -> None:
    methods = {f"{cls.__name__}.{name}" for cls in SERVICES for name in public_methods(cls)}
    assert set(MATRIX) == methods
    assert set(CALLS) == methods
    assert methods >= AUDITED


def _audit_since(ws: Workspace, last: int) -> list[Any]:
    with ws.store.read() as conn:
        return list(conn.execute(sa.select(t.audit).where(t.audit.c.id > last)).all())


def _last_audit_id(ws: Workspace) -> int:
    with ws.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.max(t.audit.c.id))).scalar() or 0)


def _outcome(w: World, method: str, actor: Actor, model: object) -> str:
    with w.ws.acting_as(actor):
        try:
            CALLS[method](w, model)
        except PermissionDeniedError:
            return D
    return A


@pytest.mark.parametrize("method", sorted(MATRIX))
def test_matrix(world: World, churn_model: object, method: str) -> None:
    got: dict[str, str] = {}
    for (role, actor), expected in zip(ROLES.items(), MATRIX[method], strict=True):
        last = _last_audit_id(world.ws)
        got[role] = _outcome(world, method, actor, churn_model)
        rows = _audit_since(world.ws, last)
        denials = [r for r in rows if r.action == "access.denied"]
        if got[role] == D:
            assert [r.actor for r in denials] == [actor.name], (method, role)
            assert denials[0].after["action"] in POLICY
        else:
            assert denials == [], (method, role)
            if method in AUDITED:
                assert actor.name in {r.actor for r in rows}, (method, role)
            assert {r.actor for r in rows} <= {actor.name, ROOT.name}, (method, role)
        if got[role] != expected:
            break  # say which role first differs, with the state still as that call left it
    assert got == dict(zip(ROLES, MATRIX[method], strict=False)), method


def test_permission_follows_ownership_at_the_time_of_the_call(world: World) -> None:
    ws, risk, growth = world.ws, ROLES["risk"], ROLES["growth"]
    alert_id = _fresh_alert(world)  # opened for team 'risk'
    with ws.acting_as(ROOT):
        ws.registry.transfer("churn", "growth")
    try:
        with ws.acting_as(growth):
            assert ws.registry.set_alias("churn", "champion", 1).model == "churn"
        with ws.acting_as(risk), pytest.raises(PermissionDeniedError, match="team 'growth'"):
            ws.registry.set_alias("churn", "champion", 1)
        (denial,) = [r for r in _audit_since(ws, _last_audit_id(ws) - 1)]
        assert (denial.actor, denial.action, denial.after) == (
            "rita",
            "access.denied",
            {"action": "alias.set", "owner_team": "growth"},
        )
        with ws.acting_as(risk), pytest.raises(PermissionDeniedError, match="team 'growth'"):
            ws.alerts.ack(alert_id)
        with ws.acting_as(growth):
            assert ws.alerts.ack(alert_id).acked_by == "gus"
    finally:
        with ws.acting_as(ROOT):
            ws.registry.transfer("churn", "risk")
