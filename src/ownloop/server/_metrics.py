"""Prometheus metrics of one server: requests, latency, classes, confidence, log writer, cost.

Per-row figures (confidence) are counted with numpy per batch, not one ``observe`` per row.
Labels carry model, version, arm and owner team, never prediction ids.

Several serve processes on one port (``ownloop serve --workers N``) share one ``/metrics``:
with ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its values to files in that folder
(prometheus-client's multiprocess mode) and whichever process answers a scrape merges them:
counters sum, histograms merge bucket by bucket, the queue depth sums over live processes, a
model is ready only when every live process serves it, and the cost is computed from the summed
CPU seconds and rows. ``ownloop_worker_requests`` says how many requests each process answered.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ownloop.predlog import FlushStats

__all__ = ["MULTIPROC_ENV", "Metrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LABELS = ("model", "version", "arm", "owner")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
CONFIDENCE_HELP = "Highest class probability of each prediction (classifiers)."
CPU_HELP = "CPU seconds spent decoding, validating, predicting and logging."
LOG_COUNTERS = (
    ("flushed", "ownloop_predlog_flushed_records", "Prediction rows written to the log."),
    (
        "dropped",
        "ownloop_predlog_dropped_records",
        "Prediction rows dropped because the buffer was full or a write failed.",
    ),
    ("write_errors", "ownloop_predlog_write_errors", "Failed segment writes."),
)

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
        self.shared: _Shared | None = None

    def add(self, key: Key, n: int, cpu_s: float, confidence: np.ndarray | None) -> None:
        counts, total = None, 0.0
        with self._lock:
            self._cpu[key] = self._cpu.get(key, 0.0) + cpu_s
            self._rows[key] = self._rows.get(key, 0) + n
            if confidence is not None and len(confidence):
                idx = np.searchsorted(CONFIDENCE_BUCKETS, confidence, side="left")
                counts = np.bincount(idx, minlength=len(CONFIDENCE_BUCKETS) + 1)
                total = float(confidence.sum())
                if key in self._conf:
                    self._conf[key] += counts
                else:
                    self._conf[key] = counts.copy()
                self._conf_sum[key] = self._conf_sum.get(key, 0.0) + total
        if self.shared is not None:
            self.shared.batch(key, cpu_s, counts, total)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            conf = {k: v.copy() for k, v in self._conf.items()}
            conf_sum = dict(self._conf_sum)
            cpu, rows = dict(self._cpu), dict(self._rows)
        h = HistogramMetricFamily("ownloop_prediction_confidence", CONFIDENCE_HELP, labels=LABELS)
        for key, counts in conf.items():
            cumulative = np.cumsum(counts)
            buckets = [
                (str(float(b)), float(c))
                for b, c in zip(CONFIDENCE_BUCKETS, cumulative, strict=False)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            h.add_metric(list(key), buckets, conf_sum[key])
        yield h
        c = CounterMetricFamily("ownloop_inference_cpu_seconds", CPU_HELP, labels=LABELS)
        for key, seconds in cpu.items():
            c.add_metric(list(key), seconds)
        yield c
        yield from _priced(cpu, rows, self.price)


def _priced(cpu: dict[Key, float], rows: dict[Key, int], price: float) -> Iterator[Metric]:
    """The cost of 1,000 predictions per key from CPU seconds and rows, and the price itself."""
    cost = GaugeMetricFamily(
        "ownloop_cost_per_1k_predictions",
        "Cost of 1,000 predictions from measured CPU time and the configured price per CPU-hour.",
        labels=LABELS,
    )
    for key, seconds in cpu.items():
        if rows.get(key):
            cost.add_metric(list(key), seconds / rows[key] * 1000 / 3600 * price)
    yield cost
    yield GaugeMetricFamily(
        "ownloop_cpu_hour_price", "Configured price of one CPU-hour.", value=price
    )


class _LogStats(Collector):
    def __init__(self) -> None:
        self.stats: FlushStats | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.stats if self.stats is not None else FlushStats()
        yield GaugeMetricFamily(
            "ownloop_predlog_queue_depth", "Prediction rows waiting to be written.", value=s.queued
        )
        for field, name, text in LOG_COUNTERS:
            yield CounterMetricFamily(name, text, value=getattr(s, field))


class _Ready(Collector):
    def __init__(self) -> None:
        self._models: dict[tuple[str, str, str], bool] = {}
        self.shared: _Shared | None = None

    @property
    def models(self) -> dict[tuple[str, str, str], bool]:
        return self._models

    @models.setter
    def models(self, models: dict[tuple[str, str, str], bool]) -> None:
        if self.shared is not None:
            self.shared.ready(self._models, models)
        self._models = models

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "ownloop_model_ready",
            "1 when the model is loaded and serving.",
            labels=("model", "version", "owner"),
        )
        for key, ready in self.models.items():
            g.add_metric(list(key), 1.0 if ready else 0.0)
        yield g


class _Shared:
    """What this process adds to the metrics every serve process writes to the multiprocess folder.

    The standard metrics (requests, latency, classes) write there by themselves; this writes the
    ones counted per batch or read from the log writer, which a scrape in another process could
    not otherwise see.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], Any] = {}
        self.cpu = Counter("ownloop_inference_cpu_seconds", CPU_HELP, LABELS, registry=None)
        self.queued = Gauge(
            "ownloop_predlog_queue_depth",
            "Prediction rows waiting to be written.",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.ready_gauge = Gauge(
            "ownloop_model_ready",
            "1 when the model is loaded and serving (in every live serve process).",
            ("model", "version", "owner"),
            multiprocess_mode="livemin",
            registry=None,
        )
        self.answered = Gauge(
            "ownloop_worker_requests",
            "Inference requests answered, per serve process (pid).",
            multiprocess_mode="all",
            registry=None,
        )
        self._stop = threading.Event()

    def _value(
        self, typ: str, metric: str, sample: str, names: tuple[str, ...], *labels: str
    ) -> Any:
        key = (sample, *labels)
        with self._lock:
            value = self._values.get(key)
            if value is None:
                help_text = CONFIDENCE_HELP if typ == "histogram" else _LOG_HELP[metric]
                value = self._values[key] = values.ValueClass(
                    typ, metric, sample, names, labels, help_text
                )
        return value

    def batch(self, key: Key, cpu_s: float, counts: np.ndarray | None, total: float) -> None:
        self.cpu.labels(*key).inc(cpu_s)
        if counts is None:
            return
        name = "ownloop_prediction_confidence"
        bounds = [str(float(b)) for b in CONFIDENCE_BUCKETS] + ["+Inf"]
        names = (*LABELS, "le")
        for bound, count in zip(bounds, counts.tolist(), strict=True):
            if count:  # stored per bucket; the scrape makes them cumulative
                self._value("histogram", name, f"{name}_bucket", names, *key, bound).inc(count)
        self._value("histogram", name, f"{name}_sum", LABELS, *key).inc(total)

    def log(self, stats: FlushStats) -> None:
        self.queued.set(stats.queued)
        for field, name, _ in LOG_COUNTERS:
            self._value("counter", name, f"{name}_total", ()).set(getattr(stats, field))

    def ready(
        self, before: dict[tuple[str, str, str], bool], now: dict[tuple[str, str, str], bool]
    ) -> None:
        for key in before.keys() - now.keys():  # no longer served here
            self.ready_gauge.labels(*key).set(0.0)
        for key, ready in now.items():
            self.ready_gauge.labels(*key).set(1.0 if ready else 0.0)

    def follow(self, log: _LogStats, every_s: float = 0.5) -> None:
        """Copy the log writer's figures to the folder every ``every_s`` (a daemon thread)."""

        def run() -> None:
            while not self._stop.wait(every_s):
                if log.stats is not None:
                    self.log(log.stats)

        threading.Thread(target=run, name="ownloop-metrics-share", daemon=True).start()

    def collect(self, price: float) -> list[Metric]:
        """Every process's figures merged, and the cost computed from the merged ones."""
        _forget_dead(self.path)
        collector = multiprocess.MultiProcessCollector(None, str(self.path))  # type: ignore[no-untyped-call]
        merged = list(collector.collect())  # type: ignore[no-untyped-call]
        cpu: dict[Key, float] = {}
        rows: dict[Key, int] = {}
        for metric in merged:
            for sample in metric.samples:
                key = tuple(sample.labels.get(n, "") for n in LABELS)
                if sample.name == "ownloop_inference_cpu_seconds_total":
                    cpu[key] = cpu.get(key, 0.0) + sample.value
                elif sample.name == "ownloop_predictions_total":
                    rows[key] = rows.get(key, 0) + int(sample.value)
        return [*merged, *_priced(cpu, rows, price)]


_LOG_HELP = {name: text for _, name, text in LOG_COUNTERS}


def _forget_dead(path: Path) -> None:
    """Drop the live-only gauges of processes that are gone (a worker that died and was replaced)."""
    for file in path.glob("gauge_live*_*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), str(path))  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, under another user
            continue


class _Merged(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


class Metrics:
    """All metrics of one app, in its own registry (no global state).

    ``shared_dir`` (default: ``PROMETHEUS_MULTIPROC_DIR``, when set) is the folder several serve
    processes write their figures to; :meth:`exposition` then answers for all of them.
    """

    def __init__(self, price_per_cpu_hour: float, *, shared_dir: Path | None = None) -> None:
        if shared_dir is None and os.environ.get(MULTIPROC_ENV):
            shared_dir = Path(os.environ[MULTIPROC_ENV])
        self.price = price_per_cpu_hour
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
        self.shared: _Shared | None = None
        if shared_dir is None:
            ProcessCollector(registry=self.registry)  # one process: its CPU, memory, files
        else:
            self.shared = self.batched.shared = self.ready.shared = _Shared(shared_dir)
            self.shared.follow(self.log)
        self._children: dict[tuple[Any, ...], Any] = {}

    def exposition(self) -> bytes:
        """The text a scrape of ``/metrics`` gets: this process's, or every serve process's."""
        if self.shared is None:
            return generate_latest(self.registry)
        if self.log.stats is not None:
            self.shared.log(self.log.stats)
        return generate_latest(_Merged(self.shared.collect(self.price)))

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, key: Key, status: str, seconds: float | None = None) -> None:
        self._child(self.requests, *key, status).inc()
        if self.shared is not None:
            self.shared.answered.inc()
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
