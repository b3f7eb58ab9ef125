"""The rollout state machine: which plan is valid, what the evidence moves a rollout to, in words.

Pure functions over ``Rollout``, ``Plan`` and ``StepAnalysis``; the service applies the decisions
in the store (one transaction per transition, compare-and-set on state and step).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from ownloop.deploy._model import (
    Outcome,
    Plan,
    Rollout,
    RolloutEvent,
    Route,
    State,
    StepAnalysis,
    Strategy,
)
from ownloop.errors import InvalidInputError
from ownloop.store import aware

__all__ = [
    "INCONCLUSIVE_ACTIONS",
    "DeployStatus",
    "Move",
    "check_plan",
    "decide",
    "describe_next",
    "event_from_row",
    "first_move",
    "merge_plan",
    "placed",
    "position",
    "rollout_from_row",
    "span",
    "stored_analysis",
    "stored_error",
]

INCONCLUSIVE_ACTIONS = ("abort", "pause")
_HEADER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True)
class Move:
    """One transition the evidence (or a person) calls for: the state, step and share after it."""

    to: State
    step: int
    weight: float
    reason: str

    @property
    def arm(self) -> str | None:
        """The candidate's arm on the route after the move (None: stable only)."""
        if self.to == State.SHADOWING:
            return "shadow"
        if self.to in (State.CANARY, State.PENDING):
            return "canary"
        return None


@dataclass(frozen=True)
class DeployStatus:
    """Where a model's deployment stands: its route, its active (or last) rollout, what is next."""

    model: str
    route: Route | None
    rollout: Rollout | None
    analysis: StepAnalysis | None
    error: str | None
    next: str

    @property
    def active(self) -> bool:
        return self.rollout is not None and self.rollout.active


# -- plans --------------------------------------------------------------------------------


def merge_plan(base: Plan, **given: Any) -> Plan:
    """``base`` with every field the caller gave (not None) replaced; strings made typed."""
    fields = {k: v for k, v in given.items() if v is not None}
    if "strategy" in fields:
        fields["strategy"] = _strategy(fields["strategy"])
    if "steps" in fields:
        fields["steps"] = _steps(fields["steps"])
    return replace(base, **fields)


def _strategy(value: Any) -> Strategy:
    try:
        return Strategy(str(value))
    except ValueError:
        known = ", ".join(s.value for s in Strategy)
        raise InvalidInputError(f"strategy {value!r} is not one of {known}") from None


def _steps(value: Any) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(str(s).strip().rstrip("%")) for s in items)
    except ValueError:
        raise InvalidInputError(
            f"steps {value!r} are not numbers; give the candidate's shares in percent, "
            "e.g. 5,25,50,100"
        ) from None


def check_plan(plan: Plan, features: Sequence[str]) -> Plan:
    """``plan`` when every field is usable, else InvalidInputError naming the field and the fix."""
    _check_steps(plan.steps)
    if isinstance(plan.min_samples, bool) or plan.min_samples < 1:
        raise InvalidInputError(
            f"min samples {plan.min_samples} must be at least 1 row per arm (e.g. 500)"
        )
    if not plan.max_wait_s > 0:
        raise InvalidInputError(
            f"max wait {plan.max_wait_s} s must be positive: how long a step may stay "
            "INCONCLUSIVE (e.g. 30m)"
        )
    if plan.on_inconclusive not in INCONCLUSIVE_ACTIONS:
        raise InvalidInputError(
            f"on inconclusive {plan.on_inconclusive!r} must be 'abort' or 'pause'"
        )
    _check_routing_key(plan.routing_key, features)
    return plan


def _check_steps(steps: tuple[float, ...]) -> None:
    shown = ",".join(f"{s:g}" for s in steps)
    if not steps:
        raise InvalidInputError("steps are empty; give the candidate's shares, e.g. 5,25,50,100")
    if any(not 0 < s <= 100 for s in steps):
        raise InvalidInputError(
            f"steps {shown}: every share must be above 0 and at most 100 (percent)"
        )
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise InvalidInputError(f"steps {shown} must be strictly increasing, e.g. 5,25,50,100")
    if steps[-1] != 100:
        raise InvalidInputError(
            f"steps {shown} must end at 100 (the step that promotes), e.g. {shown},100"
        )


def _check_routing_key(key: str | None, features: Sequence[str]) -> None:
    if key is None:
        return
    kind, _, name = key.partition(":")
    if kind == "header" and _HEADER.match(name):
        return
    if kind == "feature" and name in features:
        return
    if kind == "feature":
        raise InvalidInputError(
            f"routing key {key!r}: the model has no feature '{name}' (it takes: "
            f"{', '.join(features)}); use feature:NAME with one of them, or header:NAME"
        )
    raise InvalidInputError(
        f"routing key {key!r} is not understood; use header:NAME (e.g. header:x-customer-id) "
        "or feature:NAME (a feature of the model)"
    )


# -- transitions --------------------------------------------------------------------------


def first_move(rollout: Rollout) -> Move:
    """A pending rollout's start: shadowing, or canary step 1 (promote when that step is 100%)."""
    if rollout.plan.strategy == Strategy.SHADOW:
        return Move(State.SHADOWING, -1, 0.0, "started: candidate scores mirrored traffic")
    return _canary_step(rollout.plan, 0, "started")


def _canary_step(plan: Plan, step: int, why: str) -> Move:
    share = plan.steps[step]
    if share >= 100:
        return Move(State.PROMOTED, step, 100.0, f"{why}: the plan's last step promotes")
    return Move(
        State.CANARY,
        step,
        share,
        f"{why}: canary step {step + 1} of {len(plan.steps)} ({share:g}% of traffic)",
    )


def decide(rollout: Rollout, analysis: StepAnalysis, now: datetime) -> Move | None:
    """The move ``analysis`` calls for in ``rollout``'s current state; None to keep waiting."""
    label = position(rollout)
    if analysis.outcome == Outcome.FAIL:
        decided = ", ".join(analysis.decided_by) or "the analysis"
        return Move(State.ABORTED, rollout.step, 0.0, f"{label} FAILED on {decided}")
    if analysis.outcome == Outcome.PASS:
        return _canary_step(rollout.plan, rollout.step + 1, f"{label} passed")
    waited = (now - rollout.step_started_at).total_seconds()
    if waited < rollout.plan.max_wait_s:
        return None
    why = (
        f"{label} still INCONCLUSIVE after {span(waited)} "
        f"(max wait {span(rollout.plan.max_wait_s)})"
    )
    if rollout.plan.on_inconclusive == "pause":
        return Move(State.PAUSED, rollout.step, rollout.weight, why)
    return Move(State.ABORTED, rollout.step, 0.0, why)


def position(rollout: Rollout) -> str:
    """The rollout's place in words: 'shadow', 'step 2 of 4 (25%)', 'before the first step'."""
    if rollout.plan.strategy == Strategy.DIRECT:
        return "released directly"
    if rollout.step < 0:
        shadow = rollout.state == State.SHADOWING or (
            rollout.state == State.PAUSED and rollout.plan.strategy == Strategy.SHADOW
        )
        return "shadow" if shadow else "before the first step"
    steps = rollout.plan.steps
    return f"step {rollout.step + 1} of {len(steps)} ({steps[rollout.step]:g}%)"


def placed(rollout: Rollout) -> str:
    """``position`` for a sentence: 'at step 2 of 4 (25%)', 'in shadow', 'before the first step'."""
    where = position(rollout)
    return {"shadow": "in shadow", "before the first step": where}.get(where, f"at {where}")


# -- in words -----------------------------------------------------------------------------


def span(seconds: float) -> str:
    """A duration as the command line takes it: 90s, 30m, 2h, 1h30m."""
    whole = round(seconds)
    if whole < 120 and whole % 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60 or (minutes % 60 and minutes < 180):
        hours, rest = divmod(minutes, 60)
        return f"{hours}h{rest}m" if hours else f"{minutes}m"
    return f"{minutes / 60:g}h" if minutes % 60 == 0 else f"{minutes / 60:.1f}h"


def describe_next(
    rollout: Rollout | None, analysis: StepAnalysis | None, error: str | None, now: datetime
) -> str:
    """What decides next and when, for ``ownloop status``."""
    if rollout is None:
        return "nothing is rolling out; start one with 'ownloop deploy MODEL@VERSION'"
    if not rollout.active:
        ended = "" if rollout.finished_at is None else f" at {rollout.finished_at:%H:%M} UTC"
        why = f": {rollout.reason}" if rollout.reason else ""
        return (
            f"nothing is rolling out; the last rollout ({rollout.ref}) was "
            f"{rollout.state}{ended}{why}"
        )
    m = rollout.model
    if rollout.state == State.PAUSED:
        return (
            f"paused {placed(rollout)}: {rollout.reason or 'no reason given'}; "
            f"'ownloop resume {m}' goes on, 'ownloop promote {m}' or 'ownloop abort {m} "
            "--reason TEXT' ends it"
        )
    if rollout.state == State.PENDING:
        return (
            f"pending: starts at the next tick ({_start_words(rollout)}); a running "
            "'ownloop serve' advances rollouts"
        )
    text = _waiting_words(rollout, analysis)
    if error:
        text = f"{text}; the last analysis failed: {error}"
    return text


def _start_words(rollout: Rollout) -> str:
    if rollout.plan.strategy == Strategy.SHADOW:
        return "shadow first"
    return f"canary step 1 of {len(rollout.plan.steps)} at {rollout.plan.steps[0]:g}%"


def _waiting_words(rollout: Rollout, analysis: StepAnalysis | None) -> str:
    plan = rollout.plan
    arm = "shadow" if rollout.state == State.SHADOWING else "canary"
    if analysis is None:
        counts = "no analysis yet"
    else:
        counts = f"{arm} {analysis.n_candidate:,}, stable {analysis.n_stable:,}"
    deadline = rollout.step_started_at + timedelta(seconds=plan.max_wait_s)
    outcome = "INCONCLUSIVE" if analysis is None else str(analysis.outcome)
    verb = "aborts" if plan.on_inconclusive == "abort" else "pauses"
    return (
        f"{position(rollout)}: needs {plan.min_samples:,} rows per arm ({counts}); {outcome} "
        f"until then; {verb} at {deadline:%H:%M} UTC (max wait {span(plan.max_wait_s)}) if "
        "still inconclusive"
    )


# -- rows ---------------------------------------------------------------------------------


def stored_analysis(data: Any) -> StepAnalysis | None:
    """The StepAnalysis kept on a rollout row (None before the first, or when only an error is)."""
    if not isinstance(data, dict) or "outcome" not in data:
        return None
    return StepAnalysis.from_dict(data)


def stored_error(data: Any) -> str | None:
    """The error of the last analysis attempt kept on a rollout row, when it failed."""
    if not isinstance(data, dict) or not isinstance(data.get("error"), dict):
        return None
    return str(data["error"].get("message"))


def rollout_from_row(r: Any) -> Rollout:
    return Rollout(
        id=int(r.id),
        model=r.model,
        candidate=int(r.candidate_version),
        stable=r.stable_version,
        plan=Plan.from_dict(dict(r.plan)),
        state=State(r.state),
        step=int(r.step),
        weight=float(r.weight),
        analysis=stored_analysis(r.analysis),
        reason=r.reason,
        gate_evaluation_id=r.gate_evaluation_id,
        started_at=aware(r.started_at),
        step_started_at=aware(r.step_started_at),
        updated_at=aware(r.updated_at),
        finished_at=None if r.finished_at is None else aware(r.finished_at),
        created_by=r.created_by,
    )


def event_from_row(r: Any) -> RolloutEvent:
    return RolloutEvent(
        rollout_id=int(r.rollout_id),
        model=r.model,
        at=aware(r.at),
        from_state=None if r.from_state is None else State(r.from_state),
        to_state=State(r.to_state),
        step=int(r.step),
        weight=float(r.weight),
        reason=r.reason,
        evidence=None if r.evidence is None else dict(r.evidence),
        by=r.by,
    )
