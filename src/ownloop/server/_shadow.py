"""Shadow scoring: the candidate scores what stable answered, off the request path.

A request hands its decoded rows to a bounded queue and returns; one worker thread scores them
with the shadow version and logs the rows with arm ``shadow``, the stable answer's request id and
the rows in the same order (the analysis pairs them by request id and position). What is queued
when the worker comes round is scored in one model call, so the candidate costs far less CPU than
the stable answers it mirrors. When the queue is full the rows are dropped and counted
(``ownloop_shadow_dropped``): a shadow never blocks or slows an answer, and its errors never
reach the client.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ownloop import predlog
from ownloop.errors import OwnloopError
from ownloop.predlog import PredictionLogger
from ownloop.server._decode import Columns
from ownloop.server._metrics import Metrics
from ownloop.server._served import Prediction, ServedModel

__all__ = ["Shadow", "ShadowJob"]

log = logging.getLogger("ownloop.server")

Decode = Callable[[ServedModel, Any], Columns]


@dataclass(frozen=True)
class ShadowJob:
    """One answered request for the shadow version: its rows as stable saw them."""

    entry: ServedModel
    stable: ServedModel
    cols: Columns
    payload: Any
    decode: Decode
    request_id: str
    ts_us: int


class Shadow:
    """The bounded queue and the worker thread that scores shadow requests."""

    def __init__(self, metrics: Metrics, logger: PredictionLogger | None, *, capacity: int) -> None:
        self.metrics = metrics
        self.logger = logger
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job``; False (dropped and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.metrics.shadow_dropped(job.entry.key("shadow"), job.cols.n)
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ownloop-shadow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Score what is queued, then stop (before the prediction log is closed)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout=60)
        self._thread = None

    def drain(self) -> None:
        """Wait until every queued job is scored (labels and tests read the log after this)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            jobs, stop = self._take()
            try:
                for group in _groups(jobs):
                    self.score(group)
            except Exception:  # the thread boundary: a bug is logged, never the client's problem
                log.exception("shadow scoring failed")
            finally:
                for _ in range(len(jobs) + stop):
                    self._queue.task_done()
            if stop:
                return
            # let requests gather: one model call for many rows, and fewer thread switches that
            # would take the interpreter from the request path
            time.sleep(GATHER_S)

    def _take(self) -> tuple[list[ShadowJob], bool]:
        """What is queued, up to ``MAX_BATCH`` jobs (waits for the first); True at the end marker."""
        jobs: list[ShadowJob] = []
        job = self._queue.get()
        while job is not None:
            jobs.append(job)
            if len(jobs) >= MAX_BATCH:
                return jobs, False
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return jobs, False
        return jobs, True

    def score(self, jobs: list[ShadowJob]) -> None:
        """Score queued requests of one version as one batch (a model call costs the same for
        one row or a hundred), then log each request's rows under its own request id."""
        entry, start, cpu0 = jobs[0].entry, time.perf_counter(), time.thread_time()
        key = entry.key("shadow")
        ready = [(job, cols) for job in jobs if (cols := self._decode(job)) is not None]
        if not ready:
            return
        merged = _merge([cols for _, cols in ready])
        out: Prediction | None
        try:
            out = entry.predict(merged)
        except Exception:  # one bad request must not lose the others' rows: score them alone
            if len(ready) > 1:
                for job, _ in ready:
                    self.score([job])
                return
            out = None
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu0
        for _, cols in ready:
            share = seconds * cols.n / merged.n
            self.metrics.request(key, "ok" if out is not None else "error", share)
        if out is not None:
            self.metrics.predicted(key, entry.class_text, out.picked, out.confidence, cpu, merged.n)
        self._log(ready, merged, out, seconds, cpu)

    def _decode(self, job: ShadowJob) -> Columns | None:
        if job.entry.signature == job.stable.signature:
            return job.cols
        try:
            return job.decode(job.entry, job.payload)
        except OwnloopError as exc:  # the candidate takes other inputs and these do not fit it
            self.metrics.request(job.entry.key("shadow"), "error")
            log.warning("shadow version %s could not read a request: %s", job.entry.version, exc)
            return None

    def _log(
        self,
        ready: list[tuple[ShadowJob, Columns]],
        merged: Columns,
        out: Prediction | None,
        seconds: float,
        cpu: float,
    ) -> None:
        """One log block for the batch, each row under its own request's id, in request order."""
        if self.logger is None:
            return
        first = ready[0][0]
        block = first.entry.log_block(
            merged,
            out,
            predlog.new_ids(merged.n),
            ts_us=first.ts_us,  # the batch's rows are stamped alike: they pair by request id
            request_id=first.request_id,
            arm="shadow",
            latency_s=seconds,
            cpu_s=cpu,
        )
        if len(ready) > 1:
            ids = np.array([job.request_id for job, _ in ready], dtype=object)
            block.columns["request_id"] = np.repeat(ids, [cols.n for _, cols in ready])
        self.logger.submit(first.entry.name, block)


MAX_BATCH = 256  # requests scored in one model call; bounds the delay before a row is logged
GATHER_S = 0.05


def _groups(jobs: list[ShadowJob]) -> list[list[ShadowJob]]:
    """Runs of jobs for the same loaded version (a routing change starts a new run)."""
    groups: list[list[ShadowJob]] = []
    for job in jobs:
        if groups and groups[-1][0].entry is job.entry:
            groups[-1].append(job)
        else:
            groups.append([job])
    return groups


def _merge(parts: list[Columns]) -> Columns:
    if len(parts) == 1:
        return parts[0]
    data = {name: np.concatenate([p.data[name] for p in parts]) for name in parts[0].data}
    matrices = [p.matrix for p in parts]
    matrix = None
    if all(m is not None for m in matrices):
        matrix = np.concatenate([m for m in matrices if m is not None])
    return Columns(sum(p.n for p in parts), data, matrix)
