"""Guardrail analysis of a rollout: candidate against stable on the same window, looked at again
and again while data arrives."""

from __future__ import annotations

from datetime import datetime

from ownloop.config import Config
from ownloop.deploy._model import Rollout, StepAnalysis
from ownloop.monitoring import Monitor
from ownloop.registry import Registry

__all__ = ["analyse_rollout"]


def analyse_rollout(
    registry: Registry,
    monitor: Monitor,
    config: Config,
    rollout: Rollout,
    *,
    now: datetime,
    looks: int,
) -> StepAnalysis:
    """The candidate's arm (shadow or canary) against stable on the rollout's window up to ``now``.

    ``looks`` is this analysis's number in the rollout (1 for the first), for the sequential bound.
    """
    raise NotImplementedError("the guardrail analysis is being written")
