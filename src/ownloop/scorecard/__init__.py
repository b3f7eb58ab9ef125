"""DevOps' four key metrics for models, per model and per team, beside model quality."""

from __future__ import annotations

from ownloop.scorecard._model import (
    QUALITY_FIGURES,
    DeployFrequency,
    Durations,
    FailureRate,
    KeyMetrics,
    ModelCard,
    Quality,
    Scorecard,
    TeamCard,
    TeamTrend,
    Week,
)
from ownloop.scorecard._service import Scorecards

__all__ = [
    "QUALITY_FIGURES",
    "DeployFrequency",
    "Durations",
    "FailureRate",
    "KeyMetrics",
    "ModelCard",
    "Quality",
    "Scorecard",
    "Scorecards",
    "TeamCard",
    "TeamTrend",
    "Week",
]
