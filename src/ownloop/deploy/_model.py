"""What deploy records: the live routing of a model, a rollout's plan and state, step analyses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "ACTIVE_STATES",
    "Guardrail",
    "Outcome",
    "Plan",
    "Rollout",
    "RolloutEvent",
    "Route",
    "State",
    "StepAnalysis",
    "Strategy",
]


class State(StrEnum):
    PENDING = "pending"
    SHADOWING = "shadowing"
    CANARY = "canary"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ABORTED = "aborted"


ACTIVE_STATES = frozenset({State.PENDING, State.SHADOWING, State.CANARY, State.PAUSED})


class Strategy(StrEnum):
    DIRECT = "direct"  # the gate passed: production moves at once
    CANARY = "canary"  # canary steps, each judged against stable
    SHADOW = "shadow"  # mirrored traffic first, then the canary steps


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class Plan:
    """How a rollout proceeds; from the command line, else the model's policy, else defaults.

    ``steps`` are the candidate's traffic shares in percent, strictly increasing, ending at 100
    (100 means promote). ``routing_key`` is ``header:NAME`` or ``feature:NAME`` (sticky canary
    assignment) or None (each request drawn at random). ``on_inconclusive`` says what happens
    when a step is still INCONCLUSIVE after ``max_wait_s``: ``abort`` or ``pause``.
    """

    strategy: Strategy = Strategy.CANARY
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    min_samples: int = 500
    max_wait_s: float = 1800.0
    routing_key: str | None = None
    on_inconclusive: str = "abort"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategy"] = str(self.strategy)
        data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            strategy=Strategy(data.get("strategy", Strategy.CANARY)),
            steps=tuple(float(s) for s in data.get("steps", cls.steps)),
            min_samples=int(data.get("min_samples", cls.min_samples)),
            max_wait_s=float(data.get("max_wait_s", cls.max_wait_s)),
            routing_key=data.get("routing_key"),
            on_inconclusive=str(data.get("on_inconclusive", "abort")),
        )


@dataclass(frozen=True)
class Route:
    """What a server routes for one model: the one record every server process reads.

    ``candidate_arm`` is ``canary`` (``weight`` percent of traffic answered by the candidate)
    or ``shadow`` (every request also scored by the candidate, its answer never returned),
    or None. ``generation`` grows by one on every change, so a server reloads only on change.
    """

    model: str
    stable: int | None
    candidate: int | None = None
    candidate_arm: str | None = None
    weight: float = 0.0
    routing_key: str | None = None
    rollout_id: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class Guardrail:
    """One figure compared between canary (or shadow) and stable on the same window.

    ``bound`` is the allowed difference in the direction that hurts; ``text`` says the numbers and
    the bound in words, e.g. "error rate canary 0.4% vs stable 0.3%, difference +0.1 pt
    (95% sequential upper bound +0.6 pt) within the allowed +1.0 pt".
    """

    name: str
    outcome: Outcome
    stable: float | None
    candidate: float | None
    difference: float | None
    lower: float | None
    upper: float | None
    bound: float
    n_stable: int
    n_candidate: int
    min_samples: int
    method: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Guardrail:
        return cls(**{**data, "outcome": Outcome(data["outcome"])})


@dataclass(frozen=True)
class StepAnalysis:
    """Canary (or shadow) against stable on one window: each guardrail and the step's outcome.

    FAIL when any guardrail fails; PASS when every guardrail with enough samples passes and the
    step has its minimum sample; else INCONCLUSIVE. ``decided_by`` names the guardrail(s) that
    decided, ``looks`` counts the analyses so far in this rollout (for the sequential method).
    """

    outcome: Outcome
    at: datetime
    window_start: datetime
    window_end: datetime
    arm: str
    n_stable: int
    n_candidate: int
    guardrails: tuple[Guardrail, ...]
    decided_by: tuple[str, ...]
    summary: str
    looks: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome),
            "at": self.at.isoformat(),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "arm": self.arm,
            "n_stable": self.n_stable,
            "n_candidate": self.n_candidate,
            "guardrails": [g.to_dict() for g in self.guardrails],
            "decided_by": list(self.decided_by),
            "summary": self.summary,
            "looks": self.looks,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepAnalysis:
        return cls(
            outcome=Outcome(data["outcome"]),
            at=datetime.fromisoformat(data["at"]),
            window_start=datetime.fromisoformat(data["window_start"]),
            window_end=datetime.fromisoformat(data["window_end"]),
            arm=data["arm"],
            n_stable=int(data["n_stable"]),
            n_candidate=int(data["n_candidate"]),
            guardrails=tuple(Guardrail.from_dict(g) for g in data["guardrails"]),
            decided_by=tuple(data["decided_by"]),
            summary=data["summary"],
            looks=int(data.get("looks", 1)),
            notes=tuple(data.get("notes", ())),
        )


@dataclass(frozen=True)
class Rollout:
    """One attempt to make ``candidate`` the production version of ``model``."""

    id: int
    model: str
    candidate: int
    stable: int | None
    plan: Plan
    state: State
    step: int  # index into plan.steps while in canary; -1 while pending or shadowing
    weight: float  # the candidate's share of traffic now, percent
    analysis: StepAnalysis | None
    reason: str | None
    gate_evaluation_id: int | None
    started_at: datetime
    step_started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    created_by: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.candidate}"


@dataclass(frozen=True)
class RolloutEvent:
    """One transition of a rollout, with the evidence that drove it."""

    rollout_id: int
    model: str
    at: datetime
    from_state: State | None
    to_state: State
    step: int
    weight: float
    reason: str | None
    evidence: dict[str, Any] | None
    by: str
