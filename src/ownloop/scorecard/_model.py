"""The scorecard's figures: each carries its count, so an empty period reads "no data", never 0."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "DeployFrequency",
    "Durations",
    "FailureRate",
    "KeyMetrics",
    "ModelCard",
    "Quality",
    "Scorecard",
    "TeamCard",
    "TeamTrend",
    "Week",
]


@dataclass(frozen=True)
class DeployFrequency:
    """Promotions to production in the period (rollbacks excluded), and per week."""

    count: int
    per_week: float  # count over the period's length in weeks: 0.0 is a true "none deployed"
    weeks: float

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "per_week": self.per_week, "weeks": self.weeks}


@dataclass(frozen=True)
class Durations:
    """The median of ``count`` durations in seconds (None when there are none)."""

    median_s: float | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "count": self.count}


@dataclass(frozen=True)
class FailureRate:
    """``failed`` of ``changes`` changes failed, with a Wilson interval at ``level``."""

    failed: int
    changes: int
    rate: float | None
    lower: float | None
    upper: float | None
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "failed": self.failed,
            "changes": self.changes,
            "rate": self.rate,
            "lower": self.lower,
            "upper": self.upper,
            "level": self.level,
            "method": "Wilson score interval",
        }


@dataclass(frozen=True)
class KeyMetrics:
    """DevOps' four key metrics for models over one period (see docs/alerts.md)."""

    deployment_frequency: DeployFrequency
    lead_time: Durations  # registration of a version -> its first time in production
    change_failure_rate: FailureRate
    time_to_restore: Durations  # alert opened -> resolved, for alerts resolved in the period

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_frequency": self.deployment_frequency.to_dict(),
            "lead_time": self.lead_time.to_dict(),
            "change_failure_rate": self.change_failure_rate.to_dict(),
            "time_to_restore": self.time_to_restore.to_dict(),
        }


@dataclass(frozen=True)
class Quality:
    """One stored monitor figure over the period's windows (those counting stable and canary)."""

    latest: float | None  # the most recent window's value (per model; None for a team)
    latest_at: datetime | None
    mean: float | None  # the mean over the windows
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "latest": self.latest,
            "latest_at": None if self.latest_at is None else self.latest_at.isoformat(),
            "mean": self.mean,
            "windows": self.windows,
        }


QUALITY_FIGURES = (
    "realised_accuracy",
    "estimated_accuracy",
    "latency_p99_s",
    "error_rate",
    "cost_per_1k",
)


@dataclass(frozen=True)
class ModelCard:
    model: str
    team: str  # the current owner
    key: KeyMetrics
    quality: dict[str, Quality]  # by QUALITY_FIGURES name

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "team": self.team,
            **self.key.to_dict(),
            "quality": {k: v.to_dict() for k, v in self.quality.items()},
        }


@dataclass(frozen=True)
class TeamCard:
    team: str
    models: tuple[str, ...]  # the models the team owns now
    key: KeyMetrics
    quality: dict[str, Quality]

    def to_dict(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "models": list(self.models),
            **self.key.to_dict(),
            "quality": {k: v.to_dict() for k, v in self.quality.items()},
        }


@dataclass(frozen=True)
class Week:
    start: datetime  # exclusive
    end: datetime  # inclusive
    key: KeyMetrics

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), **self.key.to_dict()}


@dataclass(frozen=True)
class TeamTrend:
    """A team's four figures week by week, oldest first (the dashboard's trend)."""

    team: str
    weeks: tuple[Week, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"team": self.team, "weeks": [w.to_dict() for w in self.weeks]}


@dataclass(frozen=True)
class Scorecard:
    """Per model and per team over ``(since, until]``, with each team's weekly trend."""

    since: datetime
    until: datetime
    models: tuple[ModelCard, ...]
    teams: tuple[TeamCard, ...]
    trends: tuple[TeamTrend, ...]

    @property
    def start(self) -> datetime:
        """The period's start (``since``): the period is ``(start, until]``."""
        return self.since

    def model(self, name: str) -> ModelCard:
        return next(m for m in self.models if m.model == name)

    def team(self, name: str) -> TeamCard:
        return next(t for t in self.teams if t.team == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "models": [m.to_dict() for m in self.models],
            "teams": [t.to_dict() for t in self.teams],
            "trends": [t.to_dict() for t in self.trends],
        }
