"""Prometheus metrics of one server: requests, latency, classes, confidence, log writer, cost.

Per-row figures (confidence) are counted with numpy per batch, not one ``observe`` per row.
Labels carry model, version, arm and owner team, never prediction ids.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ownloop.predlog import FlushStats

__all__ = ["Metrics"]

LABELS = ("model", "version", "arm", "owner")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])

Key = tuple[str, str, str, str]


class _Batched(Collector):
    """Confidence histogram, inference CPU and cost, counted per batch with numpy."""

    def __init__(self, price_per_cpu_hour: float) -> None:
        self.price = price_per_cpu_hour
        self._lock = threading.Lock()
        self._conf: dict[Key, np.ndarray] = {}
        self._conf_sum: dict[Key, float] = {}
        self._cpu: dict[Key, float] = {}
        self._rows: dict[Key, int] = {}

    def add(self, key: Key, n: int, cpu_s: float, confidence: np.ndarray | None) -> None:
        with self._lock:
            self._cpu[key] = self._cpu.get(key, 0.0) + cpu_s
            self._rows[key] = self._rows.get(key, 0) + n
            if confidence is not None and len(confidence):
                idx = np.searchsorted(CONFIDENCE_BUCKETS, confidence, side="left")
                counts = np.bincount(idx, minlength=len(CONFIDENCE_BUCKETS) + 1)
                if key in self._conf:
                    self._conf[key] += counts
                else:
                    self._conf[key] = counts
                self._conf_sum[key] = self._conf_sum.get(key, 0.0) + float(confidence.sum())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            conf = {k: v.copy() for k, v in self._conf.items()}
            conf_sum = dict(self._conf_sum)
            cpu, rows = dict(self._cpu), dict(self._rows)
        h = HistogramMetricFamily(
            "ownloop_prediction_confidence",
            "Highest class probability of each prediction (classifiers).",
            labels=LABELS,
        )
        for key, counts in conf.items():
            cumulative = np.cumsum(counts)
            buckets = [
                (str(float(b)), float(c))
                for b, c in zip(CONFIDENCE_BUCKETS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            h.add_metric(list(key), buckets, conf_sum[key])
        yield h
        c = CounterMetricFamily(
            "ownloop_inference_cpu_seconds",
            "CPU seconds spent decoding, validating, predicting and logging.",
            labels=LABELS,
        )
        cost = GaugeMetricFamily(
            "ownloop_cost_per_1k_predictions",
            "Cost of 1,000 predictions from measured CPU time and the configured price per CPU-hour.",
            labels=LABELS,
        )
        for key, seconds in cpu.items():
            c.add_metric(list(key), seconds)
            if rows[key]:
                cost.add_metric(list(key), seconds / rows[key] * 1000 / 3600 * self.price)
        yield c
        yield cost
        yield GaugeMetricFamily(
            "ownloop_cpu_hour_price", "Configured price of one CPU-hour.", value=self.price
        )


class _LogStats(Collector):
    def __init__(self) -> None:
        self.stats: FlushStats | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.stats if self.stats is not None else FlushStats()
        yield GaugeMetricFamily(
            "ownloop_predlog_queue_depth", "Prediction rows waiting to be written.", value=s.queued
        )
        yield CounterMetricFamily(
            "ownloop_predlog_flushed_records",
            "Prediction rows written to the log.",
            value=s.flushed,
        )
        yield CounterMetricFamily(
            "ownloop_predlog_dropped_records",
            "Prediction rows dropped because the buffer was full or a write failed.",
            value=s.dropped,
        )
        yield CounterMetricFamily(
            "ownloop_predlog_write_errors", "Failed segment writes.", value=s.write_errors
        )


class _Ready(Collector):
    def __init__(self) -> None:
        self.models: dict[tuple[str, str, str], bool] = {}

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "ownloop_model_ready",
            "1 when the model is loaded and serving.",
            labels=("model", "version", "owner"),
        )
        for key, ready in self.models.items():
            g.add_metric(list(key), 1.0 if ready else 0.0)
        yield g


class Metrics:
    """All metrics of one app, in its own registry (no global state)."""

    def __init__(self, price_per_cpu_hour: float) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ownloop_requests",
            "Inference requests by outcome.",
            [*LABELS, "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ownloop_request_duration_seconds",
            "Inference request latency inside the server.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "ownloop_predictions",
            "Predicted rows by predicted class.",
            [*LABELS, "class"],
            registry=self.registry,
        )
        self.shadow_drops = Counter(
            "ownloop_shadow_dropped",
            "Rows not scored by the shadow version because its queue was full.",
            LABELS,
            registry=self.registry,
        )
        self.load_failures = Counter(
            "ownloop_model_load_failures",
            "Model versions that failed to load (digest, missing file, error); the previous serves.",
            ("model", "version"),
            registry=self.registry,
        )
        self.batched = _Batched(price_per_cpu_hour)
        self.log = _LogStats()
        self.ready = _Ready()
        for collector in (self.batched, self.log, self.ready):
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, key: Key, status: str, seconds: float | None = None) -> None:
        self._child(self.requests, *key, status).inc()
        if seconds is not None:
            self._child(self.latency, *key).observe(seconds)

    def shadow_dropped(self, key: Key, n: int) -> None:
        self._child(self.shadow_drops, *key).inc(n)

    def load_failed(self, model: str, version: int) -> None:
        self._child(self.load_failures, model, str(version)).inc()

    def predicted(
        self,
        key: Key,
        classes: list[str] | None,
        picked: np.ndarray | None,
        confidence: np.ndarray | None,
        cpu_s: float,
        n: int,
    ) -> None:
        if classes is not None and picked is not None:
            counts = np.bincount(picked, minlength=len(classes))
            for cls, count in zip(classes, counts.tolist(), strict=True):
                if count:
                    self._child(self.predictions, *key, cls).inc(count)
        else:
            self._child(self.predictions, *key, "").inc(n)
        self.batched.add(key, n, cpu_s, confidence)
