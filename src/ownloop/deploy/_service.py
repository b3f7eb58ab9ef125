"""The one place that decides what is live per model and arm, and the record it keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ownloop.access import Actor, authorize
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.deploy import _rollback
from ownloop.deploy._model import RolloutEvent, Route
from ownloop.deploy._rollback import ROLLBACK_ROWS, RollbackCheck
from ownloop.errors import (
    ConcurrentChangeError,
    ConflictError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from ownloop.evaluation import Evaluations, StoredEvaluation
from ownloop.monitoring import Monitor
from ownloop.names import VersionRef, validate_name
from ownloop.registry import PRODUCTION, ModelVersion, Registry
from ownloop.store import Store
from ownloop.store import tables as t

__all__ = ["Deployments"]


class Deployments:
    """Deploys, rollouts and rollbacks of every model in one store.

    >>> ws.deploy.set_production("churn", 4)  # doctest: +SKIP  (gate must have passed)
    >>> ws.deploy.routes()["churn"]  # doctest: +SKIP
    Route(model='churn', stable=4, candidate=None, ...)
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        evaluations: Evaluations,
        monitor: Monitor,
        config: Config,
        clock: Clock,
        actor: Actor,
    ) -> None:
        self.store = store
        self.registry = registry
        self.evaluations = evaluations
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.actor = actor

    # -- what is live: read by every server process -----------------------------------------

    def routes(self) -> dict[str, Route]:
        """Every deployed model's routing, by model name (one small query)."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(t.deployments)).all()
        return {r.model: _route(r) for r in rows}

    def generations(self) -> dict[str, int]:
        """Each deployed model's generation: a server polls this and reloads only what changed."""
        with self.store.read() as conn:
            rows = conn.execute(sa.select(t.deployments.c.model, t.deployments.c.generation)).all()
        return {r.model: int(r.generation) for r in rows}

    def route(self, model: str) -> Route:
        """The routing of one model; NotFoundError when nothing of it is deployed."""
        found = self.routes().get(validate_name("model", model))
        if found is None:
            self.registry.get_model(model)  # a model that does not exist says so
            raise NotFoundError(
                f"model '{model}' is not deployed; deploy a version with 'ownloop deploy {model}@N'"
            )
        return found

    # -- rollouts: started by a user, advanced by the serve process holding the lease --------

    def tick(self) -> list[RolloutEvent]:
        """Analyse every active rollout once and take the transitions the evidence calls for."""
        return []

    # -- production, moved only here -------------------------------------------------------

    def check_gate(self, version: ModelVersion) -> StoredEvaluation:
        """The passed gate run of ``version``; GateFailedError naming the run when it did not pass."""
        latest = self.evaluations.latest(version.ref)
        if latest is None:
            raise GateFailedError(
                f"{version.ref} has no gate run, and deploy needs a passed one: run "
                f"'ownloop eval {version.ref} --suite SUITE.yaml' first (or override with "
                "--force --reason TEXT, audited)"
            )
        if latest.verdict != "passed":
            raise GateFailedError(
                f"{version.ref}'s gate is {latest.verdict.upper()} (evaluation {latest.id} of "
                f"{latest.created_at:%Y-%m-%d %H:%M} UTC by {latest.created_by}); deploy needs a "
                f"passed gate: see 'ownloop evals {version.ref}', fix and evaluate again "
                "(or override with --force --reason TEXT, audited)"
            )
        return latest

    def set_production(
        self, model: str, version: int | str, *, force: bool = False, reason: str | None = None
    ) -> ModelVersion:
        """Make ``version`` production at once (no rollout): the gate must have passed.

        ``force`` skips the gate and needs a ``reason``, kept in the audit row.
        """
        target = self.registry.get_version(
            VersionRef(validate_name("model", model), version=_number(version))
        )
        evidence: dict[str, Any] = {"strategy": "direct"}
        if force:
            if not reason or not reason.strip():
                raise InvalidInputError(
                    "--force needs --reason TEXT: say why the gate is skipped (kept in the audit log)"
                )
            evidence.update(forced=True, gate=target.gate_status)
        else:
            evidence["gate_evaluation_id"] = self.check_gate(target).id
        try:
            self._direct(model, target.version, reason, evidence)
        except ConcurrentChangeError:
            # another process deployed this model's first version at the same moment: move on it
            self._direct(model, target.version, reason, evidence)
        return self.registry.get_version(VersionRef(model, version=target.version))

    def _direct(
        self, model: str, version: int, reason: str | None, evidence: dict[str, Any]
    ) -> None:
        now = self.clock.now()
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, model)
            authorize(self.actor, "deploy.promote", row.owner)
            self.refuse_if_rolling_out(conn, row)
            self.move_production(
                conn, row, version, now, action="deploy.direct", reason=reason, evidence=evidence
            )

    def refuse_if_rolling_out(self, conn: sa.Connection, model: sa.Row[Any]) -> None:
        active = conn.execute(
            sa.select(t.rollouts.c.id, t.rollouts.c.candidate_version, t.rollouts.c.state).where(
                t.rollouts.c.active_model_id == model.id
            )
        ).first()
        if active is not None:
            raise ConflictError(
                f"model '{model.name}' has an active rollout (#{active.id}: version "
                f"{active.candidate_version}, {active.state}); wait for it, or end it with "
                f"'ownloop promote {model.name}' or 'ownloop abort {model.name} --reason TEXT'"
            )

    def move_production(
        self,
        conn: sa.Connection,
        model: sa.Row[Any],
        version: int,
        now: datetime,
        *,
        action: str,
        reason: str | None,
        evidence: dict[str, Any] | None,
    ) -> None:
        """Inside the caller's transaction: ``production`` -> ``version``, stable arm only, audited."""
        previous = self.registry.move_alias(conn, model, PRODUCTION, version, now, audit=False)
        self.write_route(conn, model, now, stable=version)
        self.store.audit(
            conn,
            at=now,
            actor=self.actor.name,
            action=action,
            target=f"{model.name}@{PRODUCTION}",
            model=model.name,
            before=None if previous is None else {"version": previous},
            after={"version": version, "reason": reason, "evidence": evidence},
        )

    def write_route(
        self,
        conn: sa.Connection,
        model: sa.Row[Any],
        now: datetime,
        *,
        stable: int | None,
        candidate: int | None = None,
        candidate_arm: str | None = None,
        weight: float = 0.0,
        routing_key: str | None = None,
        rollout_id: int | None = None,
    ) -> None:
        """Inside the caller's transaction: the model's routing, with its generation moved on."""
        values = {
            "stable_version": stable,
            "candidate_version": candidate,
            "candidate_arm": candidate_arm,
            "weight": float(weight),
            "routing_key": routing_key,
            "rollout_id": rollout_id,
            "updated_at": now,
            "updated_by": self.actor.name,
        }
        updated = conn.execute(
            t.deployments.update()
            .where(t.deployments.c.model_id == model.id)
            .values(generation=t.deployments.c.generation + 1, **values)
        )
        if updated.rowcount == 0:
            conn.execute(
                t.deployments.insert().values(
                    model_id=model.id, model=model.name, generation=1, **values
                )
            )

    # -- drift-aware rollback (logic in _rollback.py) -----------------------------------------

    def check_rollback(
        self, model: str, *, to: int | str | None = None, rows: int = ROLLBACK_ROWS
    ) -> RollbackCheck:
        """Check the rollback target (``to`` or the previous production version) on today's data.

        >>> ws.deploy.check_rollback("churn").verdict  # doctest: +SKIP
        <RollbackVerdict.SAFE: 'SAFE'>
        """
        return _rollback.check_rollback(self, model, to=to, rows=rows)

    def rollback(
        self,
        model: str,
        *,
        to: int | str | None = None,
        force: bool = False,
        check_only: bool = False,
        reason: str | None = None,
        rows: int = ROLLBACK_ROWS,
    ) -> RollbackCheck:
        """Check the target, store the check and (unless ``check_only``) move production to it.

        A WORSE verdict is refused (ConflictError naming the figures) unless ``force``, which
        needs a ``reason``; the move and the check commit in one transaction, audited.

        >>> ws.deploy.rollback("churn", to=3)  # doctest: +SKIP
        """
        return _rollback.rollback(
            self, model, to=to, force=force, check_only=check_only, reason=reason, rows=rows
        )


def _route(r: Any) -> Route:
    return Route(
        model=r.model,
        stable=r.stable_version,
        candidate=r.candidate_version,
        candidate_arm=r.candidate_arm,
        weight=float(r.weight),
        routing_key=r.routing_key,
        rollout_id=r.rollout_id,
        generation=int(r.generation),
    )


def _number(version: int | str) -> int:
    text = str(version)
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"version must be a positive whole number, got {str(version)!r}")
    return int(text)
