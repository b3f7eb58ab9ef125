"""The one place that decides what is live per model and arm, and the record it keeps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ownloop import needs
from ownloop.access import Acting, Actor, action, authorize
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.deploy import _rollback
from ownloop.deploy._analysis import analyse_rollout
from ownloop.deploy._model import Plan, Rollout, RolloutEvent, Route, State, StepAnalysis, Strategy
from ownloop.deploy._rollback import ROLLBACK_ROWS, RollbackCheck, StoredRollbackCheck
from ownloop.deploy._rollout import (
    DeployStatus,
    Move,
    check_plan,
    decide,
    describe_next,
    event_from_row,
    first_move,
    merge_plan,
    placed,
    rollout_from_row,
    stored_error,
)
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
from ownloop.registry import PRODUCTION, ModelVersion, Registry, version_number
from ownloop.store import Store
from ownloop.store import tables as t

__all__ = ["Analyser", "Deployments"]

log = logging.getLogger("ownloop.deploy")

# (rollout, now, looks) -> the step's analysis; tests script outcomes through one of these
Analyser = Callable[[Rollout, datetime, int], StepAnalysis]


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
        actor: Actor | Acting,
        analyser: Analyser | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.evaluations = evaluations
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.acting = Acting.of(actor)
        self.analyser: Analyser = analyser if analyser is not None else self._analyse

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    def _analyse(self, rollout: Rollout, now: datetime, looks: int) -> StepAnalysis:
        return analyse_rollout(
            self.registry, self.monitor, self.config, rollout, now=now, looks=looks
        )

    # -- what is live: read by every server process -----------------------------------------

    @action("deploy.read")
    def routes(self) -> dict[str, Route]:
        """Every deployed model's routing, by model name (one small query)."""
        self.acting.check("deploy.read", target="routes")
        with self.store.read() as conn:
            rows = conn.execute(sa.select(t.deployments)).all()
        return {r.model: _route(r) for r in rows}

    @action("deploy.read")
    def generations(self) -> dict[str, int]:
        """Each deployed model's generation: a server polls this and reloads only what changed."""
        self.acting.check("deploy.read", target="routes")
        with self.store.read() as conn:
            rows = conn.execute(sa.select(t.deployments.c.model, t.deployments.c.generation)).all()
        return {r.model: int(r.generation) for r in rows}

    @action("deploy.read")
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

    @action("deploy.start")
    def deploy(
        self,
        ref: str | VersionRef,
        *,
        strategy: Strategy | str | None = None,
        steps: Sequence[float] | str | None = None,
        min_samples: int | None = None,
        max_wait_s: float | None = None,
        routing_key: str | None = None,
        on_inconclusive: str | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> Rollout:
        """Start a rollout of ``ref`` (its gate must have passed); unset fields from the policy.

        A model with no production yet, or strategy ``direct``, moves production at once (the
        rollout is recorded as promoted). Otherwise the rollout starts ``pending`` and the next
        ``tick()`` moves it to shadowing or the first canary step.

        >>> ws.deploy.deploy("churn@4", steps=(5, 25, 50, 100))  # doctest: +SKIP
        """
        target = self.registry.get_version(ref)
        self.acting.check("deploy.start", target.owner, target=target.ref)
        if PRODUCTION in target.aliases:  # checked again in the transaction, against a race
            raise _already_production(target)
        plan = merge_plan(
            self.policy(target.model),
            strategy=strategy,
            steps=steps,
            min_samples=min_samples,
            max_wait_s=max_wait_s,
            routing_key=routing_key,
            on_inconclusive=on_inconclusive,
        )
        check_plan(plan, target.signature.feature_names)
        evidence = self._gate_evidence(target, force, reason)
        try:
            rollout_id = self._start(target, plan, reason, evidence)
        except ConcurrentChangeError as exc:
            # another deploy of this model committed first; the unique active_model_id stopped
            # this one: name the rollout that won
            with self.store.read() as conn:
                self.refuse_if_rolling_out(
                    conn, self.registry.require_model_row(conn, target.model)
                )
            raise exc
        return self.rollout(rollout_id)

    def _gate_evidence(
        self, target: ModelVersion, force: bool, reason: str | None
    ) -> dict[str, Any]:
        """The gate and the environment checks (``force`` skips both and needs a reason)."""
        evidence: dict[str, Any]
        if not force:
            evidence = {"gate_evaluation_id": self.check_gate(target).id}
        elif not reason or not reason.strip():
            raise InvalidInputError(
                "--force needs --reason TEXT: say why the gate is skipped (kept in the audit log)"
            )
        else:
            evidence = {"forced": True, "gate": target.gate_status}
        mismatches = needs.require_runnable(target, force=force)
        if mismatches:
            evidence["environment"] = [m.to_dict() for m in mismatches]
        return evidence

    def _start(
        self, target: ModelVersion, plan: Plan, reason: str | None, evidence: dict[str, Any]
    ) -> int:
        now = self.clock.now()
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, target.model)
            authorize(self.actor, "deploy.start", row.owner)  # the owner may have changed
            self.refuse_if_rolling_out(conn, row)
            stable = _production(conn, row.id)
            if stable == target.version:
                raise _already_production(target)
            direct = stable is None or plan.strategy == Strategy.DIRECT
            if direct:  # recorded as what happened, whatever the policy's default strategy
                plan = replace(plan, strategy=Strategy.DIRECT)
            state = State.PROMOTED if direct else State.PENDING
            rollout_id = self._insert_rollout(
                conn, row, target, plan, stable, state, reason, evidence, now
            )
            evidence = {**evidence, "rollout_id": rollout_id, "plan": plan.to_dict()}
            if direct:
                why = "first production version" if stable is None else "strategy direct"
                self.move_production(
                    conn,
                    row,
                    target.version,
                    now,
                    action="deploy.direct",
                    reason=reason,
                    evidence=evidence,
                )
            else:
                why = f"deploy started ({plan.strategy}); candidate preloaded at 0%"
                self.write_route(
                    conn,
                    row,
                    now,
                    stable=stable,
                    candidate=target.version,
                    candidate_arm="canary",
                    routing_key=plan.routing_key,
                    rollout_id=rollout_id,
                )
                self.store.audit(
                    conn,
                    at=now,
                    actor=self.actor.name,
                    action="deploy.start",
                    target=target.ref,
                    model=row.name,
                    before={"production": stable},
                    after={"rollout": rollout_id, "reason": reason, "evidence": evidence},
                )
            move = Move(state, -1, 100.0 if direct else 0.0, reason or why)
            self._event(conn, rollout_id, row.name, now, None, move, evidence)
        return rollout_id

    def _insert_rollout(
        self,
        conn: sa.Connection,
        row: sa.Row[Any],
        target: ModelVersion,
        plan: Plan,
        stable: int | None,
        state: State,
        reason: str | None,
        evidence: dict[str, Any],
        now: datetime,
    ) -> int:
        done = state == State.PROMOTED
        return int(
            conn.execute(
                t.rollouts.insert().values(
                    model_id=row.id,
                    # set while active: the unique column allows one active rollout per model
                    active_model_id=None if done else row.id,
                    model=row.name,
                    candidate_version=target.version,
                    stable_version=stable,
                    strategy=str(plan.strategy),
                    plan=plan.to_dict(),
                    state=str(state),
                    step=-1,
                    weight=100.0 if done else 0.0,
                    reason=reason,
                    gate_evaluation_id=evidence.get("gate_evaluation_id"),
                    started_at=now,
                    step_started_at=now,
                    updated_at=now,
                    finished_at=now if done else None,
                    created_by=self.actor.name,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )

    @action("deploy.tick")
    def tick(self) -> list[RolloutEvent]:
        """Analyse every active rollout once and take the transitions the evidence calls for.

        Paused rollouts wait for a person. An analysis that raises is recorded on its rollout
        (``status`` shows it) and leaves the rollout where it was; the others go on.
        """
        self.acting.check("deploy.tick", target="rollouts")
        now = self.clock.now()
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t.rollouts)
                .where(t.rollouts.c.active_model_id.is_not(None))
                .order_by(t.rollouts.c.id)
            ).all()
        events: list[RolloutEvent] = []
        for rollout in (rollout_from_row(r) for r in rows):
            if rollout.state == State.PAUSED:
                continue
            event = self._advance(rollout, now)
            if event is not None:
                events.append(event)
        return events

    def _advance(self, rollout: Rollout, now: datetime) -> RolloutEvent | None:
        if rollout.state == State.PENDING:
            return self._apply(rollout, first_move(rollout), now, evidence=None)
        looks = (rollout.analysis.looks if rollout.analysis is not None else 0) + 1
        try:
            analysis = self.analyser(rollout, now, looks)
        except Exception as exc:
            # One model's failing analysis must not stop every other rollout: the error is kept
            # on the rollout (status shows it), its state is untouched, the next tick tries again.
            log.warning("analysis of rollout %s (%s) failed: %s", rollout.id, rollout.ref, exc)
            self._keep_analysis(rollout, now, _with_error(rollout, exc, now))
            return None
        move = decide(rollout, analysis, now)
        if move is None:
            self._keep_analysis(rollout, now, analysis.to_dict())
            return None
        return self._apply(rollout, move, now, evidence=analysis.to_dict())

    def _keep_analysis(self, rollout: Rollout, now: datetime, analysis: dict[str, Any]) -> None:
        with self.store.write() as conn:
            conn.execute(
                _unchanged(rollout).values(analysis=analysis, updated_at=now)
            )  # a rollout that moved meanwhile keeps the analysis of its move

    def _apply(
        self,
        rollout: Rollout,
        move: Move,
        now: datetime,
        *,
        evidence: dict[str, Any] | None,
    ) -> RolloutEvent | None:
        """Take ``move`` if ``rollout`` is still where it was read (compare-and-set on state, step).

        None when another process moved it first: nothing is written twice.
        """
        values: dict[str, Any] = {"state": str(move.to), "step": move.step, "weight": move.weight}
        values.update(reason=move.reason, updated_at=now, step_started_at=now)
        if evidence is not None and "outcome" in evidence:
            values["analysis"] = evidence
        if move.to in (State.PROMOTED, State.ABORTED):
            values.update(active_model_id=None, finished_at=now)
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, rollout.model)
            authorize(self.actor, _action_of(move), row.owner)  # the owner may have changed
            if conn.execute(_unchanged(rollout).values(**values)).rowcount == 0:
                return None
            self._route_after(conn, row, rollout, move, now, evidence)
            return self._event(conn, rollout.id, rollout.model, now, rollout.state, move, evidence)

    def _route_after(
        self,
        conn: sa.Connection,
        row: sa.Row[Any],
        rollout: Rollout,
        move: Move,
        now: datetime,
        evidence: dict[str, Any] | None,
    ) -> None:
        """The route (and its audit row) after ``move``, in the transaction that takes it."""
        audited = {"rollout": rollout.id, "reason": move.reason, "evidence": evidence}
        if move.to == State.PROMOTED:
            self.move_production(
                conn,
                row,
                rollout.candidate,
                now,
                action="deploy.promote",
                reason=move.reason,
                evidence={**(evidence or {}), "rollout_id": rollout.id},
            )
            return
        if move.to == State.ABORTED:
            self.write_route(conn, row, now, stable=rollout.stable)
        elif move.to != State.PAUSED:  # paused holds the split where it is
            self.write_route(
                conn,
                row,
                now,
                stable=rollout.stable,
                candidate=rollout.candidate,
                candidate_arm=move.arm,
                weight=move.weight,
                routing_key=rollout.plan.routing_key,
                rollout_id=rollout.id,
            )
        action = {State.ABORTED: "deploy.abort", State.PAUSED: "deploy.pause"}.get(
            move.to, "deploy.resume" if rollout.state == State.PAUSED else "deploy.step"
        )
        self.store.audit(
            conn,
            at=now,
            actor=self.actor.name,
            action=action,
            target=rollout.ref,
            model=rollout.model,
            before={"state": str(rollout.state), "step": rollout.step, "weight": rollout.weight},
            after={"state": str(move.to), "step": move.step, "weight": move.weight, **audited},
        )

    def _event(
        self,
        conn: sa.Connection,
        rollout_id: int,
        model: str,
        now: datetime,
        before: State | None,
        move: Move,
        evidence: dict[str, Any] | None,
    ) -> RolloutEvent:
        event = RolloutEvent(
            rollout_id=rollout_id,
            model=model,
            at=now,
            from_state=before,
            to_state=move.to,
            step=move.step,
            weight=move.weight,
            reason=move.reason,
            evidence=evidence,
            by=self.actor.name,
        )
        conn.execute(
            t.rollout_events.insert().values(
                rollout_id=rollout_id,
                model=model,
                at=now,
                from_state=None if before is None else str(before),
                to_state=str(move.to),
                step=move.step,
                weight=move.weight,
                reason=move.reason,
                evidence=evidence,
                by=self.actor.name,
            )
        )
        return event

    # -- a person ends, holds or goes on with the active rollout ----------------------------

    @action("deploy.promote")
    def promote(self, model: str, *, reason: str | None = None) -> Rollout:
        """Promote the active rollout's candidate now, whatever step it is at."""
        rollout = self._active(model, "promote")
        why = f"promoted by {self.actor.name}" + (f": {reason}" if reason else "")
        return self._by_person(rollout, Move(State.PROMOTED, rollout.step, 100.0, why))

    @action("deploy.abort")
    def abort(self, model: str, *, reason: str) -> Rollout:
        """Abort the active rollout: the route goes back to stable only. ``reason`` is required."""
        if not reason or not reason.strip():
            raise InvalidInputError(
                f"aborting a rollout of '{model}' needs --reason TEXT (kept in the audit log)"
            )
        rollout = self._active(model, "abort")
        why = f"aborted by {self.actor.name}: {reason}"
        return self._by_person(rollout, Move(State.ABORTED, rollout.step, 0.0, why))

    @action("deploy.pause")
    def pause(self, model: str, *, reason: str | None = None) -> Rollout:
        """Hold the active rollout where it is (its traffic split stays) until resumed."""
        rollout = self._active(model, "pause")
        if rollout.state == State.PAUSED:
            raise ConflictError(
                f"rollout #{rollout.id} of {rollout.ref} is already paused; "
                f"'ownloop resume {rollout.model}' goes on"
            )
        why = f"paused by {self.actor.name}" + (f": {reason}" if reason else "")
        return self._by_person(rollout, Move(State.PAUSED, rollout.step, rollout.weight, why))

    @action("deploy.resume")
    def resume(self, model: str) -> Rollout:
        """Go on with a paused rollout from where it was paused; its wait starts again."""
        rollout = self._active(model, "resume")
        if rollout.state != State.PAUSED:
            raise ConflictError(
                f"rollout #{rollout.id} of {rollout.ref} is {rollout.state}, not paused; "
                "nothing to resume"
            )
        before = self._state_before_pause(rollout)
        why = f"resumed by {self.actor.name} {placed(rollout)}"
        return self._by_person(rollout, Move(before, rollout.step, rollout.weight, why))

    def _state_before_pause(self, rollout: Rollout) -> State:
        paused = [e for e in self.events(rollout.id) if e.to_state == State.PAUSED]
        if paused and paused[-1].from_state is not None:
            return paused[-1].from_state
        return State.CANARY if rollout.step >= 0 else State.PENDING

    def _active(self, model: str, verb: str) -> Rollout:
        with self.store.read() as conn:
            row = self.registry.require_model_row(conn, model)
            self.acting.check(f"deploy.{verb}", row.owner, target=f"model:{row.name}")
            found = conn.execute(
                sa.select(t.rollouts).where(t.rollouts.c.active_model_id == row.id)
            ).first()
        if found is None:
            raise ConflictError(
                f"model '{row.name}' has no active rollout to {verb}; start one with "
                f"'ownloop deploy {row.name}@VERSION' (see 'ownloop rollouts {row.name}')"
            )
        return rollout_from_row(found)

    def _by_person(self, rollout: Rollout, move: Move) -> Rollout:
        if self._apply(rollout, move, self.clock.now(), evidence=None) is None:
            raise ConcurrentChangeError(
                f"rollout #{rollout.id} of {rollout.ref} moved on while this ran; "
                f"see 'ownloop status {rollout.model}' and run it again if still needed"
            )
        return self.rollout(rollout.id)

    # -- reading: status, history, following --------------------------------------------------

    @action("deploy.read")
    def status(self, model: str) -> DeployStatus:
        """Where ``model`` stands: route, active (or last) rollout, latest analysis, what is next."""
        with self.store.read() as conn:
            row = self.registry.require_model_row(conn, model)
            self.acting.check("deploy.read", row.owner, target=f"model:{row.name}")
            route = conn.execute(
                sa.select(t.deployments).where(t.deployments.c.model_id == row.id)
            ).first()
            last = conn.execute(
                sa.select(t.rollouts)
                .where(t.rollouts.c.model_id == row.id)
                .order_by(t.rollouts.c.id.desc())
                .limit(1)
            ).first()
        rollout = None if last is None else rollout_from_row(last)
        analysis = None if rollout is None else rollout.analysis
        active = rollout is not None and rollout.active
        error = stored_error(last.analysis) if active and last is not None else None
        return DeployStatus(
            model=row.name,
            route=None if route is None else _route(route),
            rollout=rollout,
            analysis=analysis,
            error=error,
            next=describe_next(rollout, analysis, error, self.clock.now()),
        )

    @action("deploy.read")
    def statuses(self) -> list[DeployStatus]:
        """``status`` of every model that is deployed or has a rollout, by name."""
        self.acting.check("deploy.read", target="rollouts")
        with self.store.read() as conn:
            names = set(conn.execute(sa.select(t.deployments.c.model)).scalars())
            names |= set(conn.execute(sa.select(t.rollouts.c.model).distinct()).scalars())
        return [self.status(n) for n in sorted(names)]

    @action("deploy.read")
    def rollout(self, rollout_id: int) -> Rollout:
        """One rollout by id; NotFoundError when there is none."""
        self.acting.check("deploy.read", target=f"rollout:{rollout_id}")
        with self.store.read() as conn:
            found = conn.execute(sa.select(t.rollouts).where(t.rollouts.c.id == rollout_id)).first()
        if found is None:
            raise NotFoundError(f"there is no rollout #{rollout_id}; see 'ownloop rollouts MODEL'")
        return rollout_from_row(found)

    @action("deploy.read")
    def rollouts(self, model: str, limit: int = 20) -> list[Rollout]:
        """The model's rollouts, newest first."""
        with self.store.read() as conn:
            row = self.registry.require_model_row(conn, model)
            self.acting.check("deploy.read", row.owner, target=f"model:{row.name}")
            rows = conn.execute(
                sa.select(t.rollouts)
                .where(t.rollouts.c.model_id == row.id)
                .order_by(t.rollouts.c.id.desc())
                .limit(max(1, int(limit)))
            ).all()
        return [rollout_from_row(r) for r in rows]

    @action("deploy.read")
    def events(self, rollout_id: int) -> list[RolloutEvent]:
        """A rollout's transitions, oldest first, each with the evidence that drove it."""
        self.acting.check("deploy.read", target=f"rollout:{rollout_id}")
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(t.rollout_events)
                .where(t.rollout_events.c.rollout_id == rollout_id)
                .order_by(t.rollout_events.c.id)
            ).all()
        return [event_from_row(r) for r in rows]

    @action("deploy.read")
    def wait(
        self,
        rollout_id: int,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_event: Callable[[RolloutEvent], None] | None = None,
        quiet_s: float = 60.0,
        on_quiet: Callable[[float], None] | None = None,
    ) -> Rollout:
        """Follow a rollout in the store until it is promoted, aborted or paused (or time is up).

        ``on_event`` sees each transition once; ``on_quiet`` is told (once) when the rollout was
        not updated for ``quiet_s`` seconds: nothing is advancing it.
        """
        seen, told = 0, False
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            events = self.events(rollout_id)
            for event in events[seen:]:
                if on_event is not None:
                    on_event(event)
            seen = len(events)
            rollout = self.rollout(rollout_id)
            if rollout.state in (State.PROMOTED, State.ABORTED, State.PAUSED):
                return rollout
            idle = (self.clock.now() - rollout.updated_at).total_seconds()
            if idle > quiet_s and not told and on_quiet is not None:
                on_quiet(idle)
                told = True
            if deadline is not None and time.monotonic() >= deadline:
                return rollout
            time.sleep(poll_s)

    # -- each model's default plan ------------------------------------------------------------

    @action("deploy.read")
    def policy(self, model: str) -> Plan:
        """The model's default rollout plan (``Plan()`` when none was set)."""
        with self.store.read() as conn:
            row = self.registry.require_model_row(conn, model)
            self.acting.check("deploy.read", row.owner, target=f"model:{row.name}")
            stored = conn.execute(
                sa.select(t.deploy_policies.c.policy).where(t.deploy_policies.c.model_id == row.id)
            ).scalar()
        return Plan() if stored is None else Plan.from_dict(dict(stored))

    @action("deploy.policy")
    def set_policy(self, model: str, plan: Plan) -> Plan:
        """Set the model's default rollout plan (checked like a deploy's; audited)."""
        latest = self.registry.get_version(validate_name("model", model))
        self.acting.check("deploy.policy", latest.owner, target=f"model:{model}")
        features = latest.signature.feature_names
        check_plan(plan, features)
        now = self.clock.now()
        with self.store.write() as conn:
            row = self.registry.require_model_row(conn, model)
            authorize(self.actor, "deploy.policy", row.owner)  # the owner may have changed
            before = conn.execute(
                sa.select(t.deploy_policies.c.policy).where(t.deploy_policies.c.model_id == row.id)
            ).scalar()
            values = {"policy": plan.to_dict(), "updated_at": now, "updated_by": self.actor.name}
            if before is None:
                conn.execute(t.deploy_policies.insert().values(model_id=row.id, **values))
            else:
                conn.execute(
                    t.deploy_policies.update()
                    .where(t.deploy_policies.c.model_id == row.id)
                    .values(**values)
                )
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="deploy.policy",
                target=row.name,
                model=row.name,
                before=before,
                after=plan.to_dict(),
            )
        return plan

    # -- production, moved only here -------------------------------------------------------

    @action("evaluation.read")
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

    @action("deploy.promote")
    def set_production(
        self, model: str, version: int | str, *, force: bool = False, reason: str | None = None
    ) -> ModelVersion:
        """Make ``version`` production at once (no rollout): the gate must have passed, and this
        environment must have what the version needs to run (``needs.require_runnable``).

        ``force`` skips both checks and needs a ``reason``, kept in the audit row with every
        environment mismatch it overrode.
        """
        target = self.registry.get_version(
            VersionRef(validate_name("model", model), version=version_number(version))
        )
        self.acting.check("deploy.promote", target.owner, target=target.ref)
        evidence = {"strategy": "direct", **self._gate_evidence(target, force, reason)}
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
            authorize(self.actor, "deploy.promote", row.owner)  # the owner may have changed
            self.refuse_if_rolling_out(conn, row)
            self.move_production(
                conn, row, version, now, action="deploy.direct", reason=reason, evidence=evidence
            )

    @action("deploy.read")
    def refuse_if_rolling_out(self, conn: sa.Connection, model: sa.Row[Any]) -> None:
        self.acting.check("deploy.read", model.owner, target=f"model:{model.name}")
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

    @action("deploy.promote")
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
        self.acting.check("deploy.promote", model.owner, target=f"{model.name}@{PRODUCTION}")
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

    @action("deploy.promote")
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
        self.acting.check("deploy.promote", model.owner, target=f"model:{model.name}")
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

    @action("deploy.read")
    def check_rollback(
        self, model: str, *, to: int | str | None = None, rows: int = ROLLBACK_ROWS
    ) -> RollbackCheck:
        """Check the rollback target (``to`` or the previous production version) on today's data.

        >>> ws.deploy.check_rollback("churn").verdict  # doctest: +SKIP
        <RollbackVerdict.SAFE: 'SAFE'>
        """
        return _rollback.check_rollback(self, model, to=to, rows=rows)

    @action("deploy.read")
    def rollback_checks(self, model: str, *, limit: int = 10) -> list[StoredRollbackCheck]:
        """The stored rollback checks of ``model``, newest first (NotFoundError for no model)."""
        m = self.registry.get_model(model)
        self.acting.check("deploy.read", m.owner, target=f"model:{model}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InvalidInputError(f"limit {limit!r} must be a whole number from 1 to 1000")
        checks = t.rollback_checks
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(checks)
                .where(checks.c.model == m.name)
                .order_by(checks.c.id.desc())
                .limit(limit)
            ).all()
        return [_rollback.stored_check(r) for r in rows]

    @action("deploy.rollback")
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


def _action_of(move: Move) -> str:
    """The action a rollout move performs (what its actor must be allowed)."""
    return {
        State.ABORTED: "deploy.abort",
        State.PAUSED: "deploy.pause",
    }.get(move.to, "deploy.promote")


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


def _production(conn: sa.Connection, model_id: int) -> int | None:
    found = conn.execute(
        sa.select(t.versions.c.version)
        .join(t.aliases, t.aliases.c.version_id == t.versions.c.id)
        .where(t.aliases.c.model_id == model_id, t.aliases.c.alias == PRODUCTION)
    ).scalar()
    return None if found is None else int(found)


def _already_production(target: ModelVersion) -> ConflictError:
    return ConflictError(
        f"{target.ref} is already production; nothing to deploy "
        f"(see 'ownloop status {target.model}')"
    )


def _unchanged(rollout: Rollout) -> sa.Update:
    """An update of ``rollout``'s row that applies only while it is still as it was read."""
    return t.rollouts.update().where(
        t.rollouts.c.id == rollout.id,
        t.rollouts.c.state == str(rollout.state),
        t.rollouts.c.step == rollout.step,
    )


def _with_error(rollout: Rollout, exc: Exception, now: datetime) -> dict[str, Any]:
    """The rollout's last analysis (kept for status) with the failed attempt's error beside it."""
    kept = {} if rollout.analysis is None else rollout.analysis.to_dict()
    message = f"{type(exc).__name__}: {exc}"
    return {**kept, "error": {"message": message, "at": now.isoformat()}}
