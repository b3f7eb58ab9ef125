"""Monitoring: per-window drift, prediction drift, confidence, estimated and realised performance, system figures."""

from __future__ import annotations

from ownloop.monitoring._drift import DriftReport, DriftSettings, FeatureDrift, evaluate_drift
from ownloop.monitoring._partial import PartialSpec, WindowPartial, compute_partial, merge_all
from ownloop.monitoring._performance import Estimate, Realised

__all__ = [
    "DriftReport",
    "DriftSettings",
    "Estimate",
    "FeatureDrift",
    "PartialSpec",
    "Realised",
    "WindowPartial",
    "compute_partial",
    "evaluate_drift",
    "merge_all",
]
