"""Monitoring: per-window drift, prediction drift, confidence, estimated and realised performance, system figures."""

from __future__ import annotations

from ownloop.monitoring._batch import (
    ChunkDrift,
    ChunkPerformance,
    DriftChunks,
    PerformanceChunks,
    drift,
    estimate_performance,
)
from ownloop.monitoring._cache import PartialCache
from ownloop.monitoring._drift import DriftReport, DriftSettings, FeatureDrift, evaluate_drift
from ownloop.monitoring._engine import (
    ENGINES,
    DaskEngine,
    Engine,
    EngineUnavailableError,
    InProcessEngine,
    SegmentResult,
    SegmentTask,
    VersionInputs,
    open_engine,
    segment_partials,
)
from ownloop.monitoring._monitor import Monitor
from ownloop.monitoring._partial import PartialSpec, WindowPartial, compute_partial, merge_all
from ownloop.monitoring._performance import Estimate, Realised
from ownloop.monitoring._report import (
    DEFAULT_ARMS,
    FINDINGS,
    Bins,
    ConfidenceFigures,
    FeatureWindow,
    MonitorRun,
    Point,
    StoredResult,
    SystemFigures,
    WindowReport,
    parse_duration,
    select_arms,
)
from ownloop.monitoring._sampler import ReviewSample, sample_rows, write_sample

__all__ = [
    "DEFAULT_ARMS",
    "ENGINES",
    "FINDINGS",
    "Bins",
    "ChunkDrift",
    "ChunkPerformance",
    "ConfidenceFigures",
    "DaskEngine",
    "DriftChunks",
    "DriftReport",
    "DriftSettings",
    "Engine",
    "EngineUnavailableError",
    "Estimate",
    "FeatureDrift",
    "FeatureWindow",
    "InProcessEngine",
    "Monitor",
    "MonitorRun",
    "PartialCache",
    "PartialSpec",
    "PerformanceChunks",
    "Point",
    "Realised",
    "ReviewSample",
    "SegmentResult",
    "SegmentTask",
    "StoredResult",
    "SystemFigures",
    "VersionInputs",
    "WindowPartial",
    "WindowReport",
    "compute_partial",
    "drift",
    "estimate_performance",
    "evaluate_drift",
    "merge_all",
    "open_engine",
    "parse_duration",
    "sample_rows",
    "segment_partials",
    "select_arms",
    "write_sample",
]
