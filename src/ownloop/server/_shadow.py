"""Shadow scoring: the candidate scores what stable answered, off the request path.

A request hands its decoded rows to a bounded queue and returns; one worker thread scores them
with the shadow version and logs the rows with arm ``shadow``, the stable answer's request id and
the rows in the same order (the analysis pairs them by request id and position). When the queue
is full the rows are dropped and counted (``ownloop_shadow_dropped``): a shadow never blocks or
slows an answer, and its errors never reach the client.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
            job = self._queue.get()
            try:
                if job is None:
                    return
                self.score(job)
            except Exception:  # the thread boundary: a bug is logged, never the client's problem
                log.exception("shadow scoring failed")
            finally:
                self._queue.task_done()

    def score(self, job: ShadowJob) -> None:
        entry, start, cpu0 = job.entry, time.perf_counter(), time.thread_time()
        key = entry.key("shadow")
        try:
            same = entry.signature == job.stable.signature
            cols = job.cols if same else job.decode(entry, job.payload)
        except OwnloopError as exc:  # the candidate takes other inputs and these do not fit it
            self.metrics.request(key, "error")
            log.warning("shadow version %s could not read a request: %s", entry.version, exc)
            return
        ids = predlog.new_ids(cols.n)
        out: Prediction | None
        try:
            out = entry.predict(cols)
        except Exception:  # logged as error rows, as on the request path; never answered
            out = None
        seconds = time.perf_counter() - start
        self.metrics.request(key, "ok" if out is not None else "error", seconds)
        cpu = time.thread_time() - cpu0
        if out is not None:
            self.metrics.predicted(key, entry.class_text, out.picked, out.confidence, cpu, cols.n)
        if self.logger is None:
            return
        block = entry.log_block(
            cols,
            out,
            ids,
            ts_us=job.ts_us,
            request_id=job.request_id,
            arm="shadow",
            latency_s=seconds,
            cpu_s=cpu,
        )
        self.logger.submit(entry.name, block)
