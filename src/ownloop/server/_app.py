"""The ASGI app: routes (each with its access rule, declared once), handlers, error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ownloop import __version__, labels, objectstore, predlog
from ownloop.access import Actor, Role, required_role
from ownloop.alerts import AlertLoop
from ownloop.compaction import CompactionLoop, lease_lock
from ownloop.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
    OwnloopError,
    PayloadTooLargeError,
)
from ownloop.predlog import PredictionLogger
from ownloop.server import _decode
from ownloop.server._auth import (
    ANONYMOUS,
    anonymous,
    presented_secret,
    public,
    unauthenticated,
)
from ownloop.server._controller import Controller
from ownloop.server._decode import bounded
from ownloop.server._limits import CheckedPaths
from ownloop.server._live import Live, LiveModel, feature_key, find, routing_key
from ownloop.server._metrics import Metrics
from ownloop.server._openapi import Served, openapi
from ownloop.server._pages import Pages, browser_headers, ui_path
from ownloop.server._served import Prediction, ServedModel, redact_paths, refused_block
from ownloop.server._shadow import Shadow, ShadowJob
from ownloop.store.lease import Lease
from ownloop.ui import UI_ROUTES, Dashboard
from ownloop.workspace import Workspace

__all__ = ["ROUTES", "RouteSpec", "create_app"]

log = logging.getLogger("ownloop.server")
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class RouteSpec:
    """One route: method, path, the access action (``ownloop.access.POLICY``) and what it does."""

    method: str
    path: str
    handler: str
    action: str
    summary: str
    ui: bool = False  # a dashboard route: HTML, and a browser's session cookie names the caller


# Who may call what, in one place. Switching tokens on changes the actor, never these lines.
ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/v2", "server_metadata", "health.read", "Server metadata (v2)"),
    RouteSpec("GET", "/v2/health/live", "live", "health.read", "Liveness (v2)"),
    RouteSpec("GET", "/v2/health/ready", "server_ready", "health.read", "Readiness (v2)"),
    RouteSpec(
        "GET", "/v2/models/{name}", "model_metadata", "model.metadata", "Model metadata (v2)"
    ),
    RouteSpec(
        "GET",
        "/v2/models/{name}/versions/{version}",
        "model_metadata",
        "model.metadata",
        "Model version metadata (v2)",
    ),
    RouteSpec(
        "GET", "/v2/models/{name}/ready", "model_ready", "health.read", "Model readiness (v2)"
    ),
    RouteSpec(
        "GET",
        "/v2/models/{name}/versions/{version}/ready",
        "model_ready",
        "health.read",
        "Model version readiness (v2)",
    ),
    RouteSpec("POST", "/v2/models/{name}/infer", "infer", "model.predict", "Inference (v2)"),
    RouteSpec(
        "POST",
        "/v2/models/{name}/versions/{version}/infer",
        "infer",
        "model.predict",
        "Inference on a version (v2)",
    ),
    RouteSpec("GET", "/models", "list_models", "model.metadata", "Served models and readiness"),
    RouteSpec(
        "POST", "/models/{name}/predict", "predict", "model.predict", "Inference (simple JSON)"
    ),
    RouteSpec(
        "POST",
        "/models/{name}/invocations",
        "model_invocations",
        "model.predict",
        "Inference (MLflow scoring formats)",
    ),
    RouteSpec(
        "POST",
        "/invocations",
        "invocations",
        "model.predict",
        "Inference on the one served model (MLflow scoring formats, as 'mlflow models serve')",
    ),
    RouteSpec(
        "POST", "/models/{name}/labels", "post_labels", "label.write", "Labels for predictions"
    ),
    RouteSpec("GET", "/metrics", "metrics_text", "metrics.read", "Prometheus metrics"),
    RouteSpec("GET", "/openapi.json", "openapi_doc", "api.read", "This API's OpenAPI schema"),
)

# A body this large (after decompression) is decoded and scored in a worker thread.
OFFLOAD_BYTES = 64 * 1024

_BINARY = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
    "BOOL": "?",
}


def _json(data: Any, status: int = 200) -> Response:
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type="application/json")


@dataclass(frozen=True)
class _Job:
    """One inference request once its body is read: what ``_Server._run`` needs to answer it.

    ``entry`` and ``arm`` are set when the request picked its arm before decoding (a header key,
    a version in the path); a key taken from a feature is read once the rows are decoded.
    """

    live: LiveModel
    entry: ServedModel | None
    arm: str
    shape: _Shape
    body: bytes
    headers: Headers
    request_id: str | None
    start: float


@dataclass(frozen=True)
class _CsvBody:
    """A ``text/csv`` body, left for the shape to decode against the model's signature."""

    data: bytes


class _Monitors:
    """Serve runs the monitors itself (``--monitor-every``), just before the alert rules, while it
    holds the evaluator lease; at most once per interval."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.every_s = ws.config.serve_monitor_every_s or 0.0
        self.last: float | None = None

    def run_if_due(self) -> None:
        now = time.monotonic()
        if self.last is not None and now - self.last < self.every_s:
            return
        self.last = now
        for rep in self.ws.monitor.run(window=timedelta(seconds=self.every_s)):
            log.info("monitored %s@%s: %d rows", rep.model, rep.version, rep.rows)


def _compactor(ws: Workspace) -> CompactionLoop:
    """Background compaction of the prediction log, by one serve process at a time (a lease)."""
    every = ws.config.compact_every_s or 0.0
    lease = Lease(ws.store, ws.clock, COMPACTION_LEASE, ttl_s=max(3 * every, 600.0))
    root = ws.config.predictions_dir
    return CompactionLoop(
        root,
        every_s=every,
        older_than=timedelta(seconds=ws.config.compact_older_than_s),
        hold=lease.acquire,
        release=lease.release,
        # in a bucket a model's lease also keeps `ownloop compact` on another host apart
        lock=lease_lock(ws.store, ws.clock) if objectstore.is_object(root) else None,
    )


COMPACTION_LEASE = "predlog.compaction"


class _Server:
    """The state of one app: workspace, served models, log writer, metrics."""

    def __init__(self, ws: Workspace, *, log_predictions: bool) -> None:
        self.ws = ws
        self.config = ws.config
        # auth: every route but health needs a token (set by serve off loopback, or asked for)
        self.auth = ws.config.auth
        self.metrics = Metrics(ws.config.cpu_hour_price)
        self.routing = Live(
            ws.deploy,
            ws.registry,
            poll_s=ws.config.reload_poll_s,
            allow_env_mismatch=ws.config.allow_env_mismatch,
            on_change=self._routing_changed,
            on_failure=lambda e: self.metrics.load_failed(e.name, e.version),
        )
        self.controller = Controller(ws.deploy, tick_s=ws.config.deploy_tick_s)
        self.monitors = _Monitors(ws) if ws.config.serve_monitor_every_s else None
        self.alert_loop = AlertLoop(
            ws.alerts,
            ws.outbox,
            tick_s=ws.config.alert_tick_s,
            before_evaluate=self.monitors.run_if_due if self.monitors is not None else None,
        )
        self.compactor = _compactor(ws) if ws.config.compact_every_s else None
        self.offload_bytes = OFFLOAD_BYTES
        self.dashboard = Dashboard(ws, ws.config)
        self.pages = Pages(self)
        self.logger: PredictionLogger | None = None
        if log_predictions:
            self.logger = PredictionLogger(
                ws.config.predictions_dir,
                flush_interval_s=ws.config.predlog_flush_s,
                max_buffer=ws.config.predlog_max_buffer,
            )
            self.metrics.log.stats = self.logger.stats
        self.shadow = Shadow(self.metrics, self.logger, capacity=ws.config.shadow_queue)
        self.routing.reload()
        if not self.routing.models:
            log.warning(
                "no model is deployed, so none is served yet; deploy one with "
                "'ownloop deploy MODEL@VERSION' (this server picks it up, no restart)"
            )

    def _routing_changed(self, table: dict[str, LiveModel]) -> None:
        ready: dict[tuple[str, str, str], bool] = {}
        for live in table.values():
            for entry in (live.stable, live.candidate):
                if entry is not None:
                    ready[(entry.name, str(entry.version), entry.owner)] = entry.ready
        self.metrics.ready.models = ready

    @property
    def served(self) -> dict[str, LiveModel]:
        return self.routing.models

    def start(self) -> None:
        """Background work: the log writer, the shadow worker, the reload poller, the controller,
        the alert evaluator."""
        if self.logger is not None:
            self.logger.start()
        self.shadow.start()
        self.routing.start()
        self.controller.start()
        self.alert_loop.start()
        if self.compactor is not None:
            self.compactor.start()

    def stop(self) -> None:
        """Stop in order: no new routing or ticks, score queued shadow rows, then flush the log."""
        self.alert_loop.stop()
        if self.compactor is not None:
            self.compactor.stop()
        self.controller.stop()
        self.routing.stop()
        self.shadow.stop()
        if self.logger is not None:
            self.logger.close()
            stats = self.logger.stats
            log.info(
                "prediction log closed: %d rows written, %d dropped", stats.flushed, stats.dropped
            )

    def guard(self, spec: RouteSpec, handler: Handler | None = None) -> Handler:
        """The endpoint of ``spec``: who calls (token, local user or anonymous), may they, then
        the handler (this server's ``spec.handler`` unless given), run as that caller so every
        check and audit row inside names them."""
        if handler is None:
            handler = getattr(self, spec.handler)
        assert handler is not None
        if spec.ui:
            return self.pages.endpoint(spec, handler)

        async def endpoint(request: Request) -> Response:
            presented = "authorization" in request.headers
            try:
                actor = await self._caller(request, spec.action)
            except AuthenticationError as exc:
                return unauthenticated(exc, presented=presented)
            with self.ws.acting_as(actor):
                if not (actor is ANONYMOUS and public(self.config, spec.action)):
                    name = request.path_params.get("name")
                    owner = await self.owner(name, spec.action)
                    self.ws.acting.check(spec.action, owner, target=name)
                try:
                    return await handler(request)
                except OwnloopError:
                    raise
                except (
                    Exception
                ):  # the HTTP boundary: a bug becomes a logged 500, the connection lives
                    return _internal(request)

        endpoint.__name__ = spec.handler
        return endpoint

    async def _caller(self, request: Request, action: str) -> Actor:
        """The actor of this request; AuthenticationError for a bad token or a missing one."""
        secret = presented_secret(request.headers.getlist("authorization"))
        if secret is not None:  # checked even when auth is off: a bad token is never ignored
            return await run_in_threadpool(self.ws.tokens.verify, secret)
        if not self.auth:
            return self.ws.acting.default
        return anonymous(self.config, action)

    async def owner(self, name: str | None, action: str) -> str | None:
        """The team owning model ``name`` now: read from the registry for an owner's action, so a
        transfer counts from the next request; the served model's owner is enough otherwise."""
        if name is None:
            return None
        if required_role(action) is not Role.OWNER or self.ws.actor.admin:
            live = self.served.get(name)
            return live.stable.owner if live is not None else None
        try:
            model = await run_in_threadpool(self.ws.registry.get_model, name)
        except (NotFoundError, InvalidInputError):
            return None  # nobody but an admin may act on it; an admin learns it is missing
        return model.owner

    # -- bodies ---------------------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(
                f"request body is {declared} bytes; the limit is {limit} (OWNLOOP_MAX_BODY_BYTES)"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"request body exceeds the limit of {limit} bytes (OWNLOOP_MAX_BODY_BYTES)"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        return _decode.inflate(body, request.headers.get("content-encoding", ""), limit)

    async def _payload(self, request: Request) -> Any:
        return self._parse(await self._body(request), request.headers)

    def _parse(self, body: bytes, headers: Headers, *, csv: bool = False) -> Any:
        """The request as JSON (or the v2 binary extension, or CSV where ``csv`` allows it)."""
        header = headers.get("inference-header-content-length")
        if header is not None:
            return self._binary_payload(body, header)
        if csv and headers.get("content-type", "").split(";")[0].strip().lower() == "text/csv":
            return _CsvBody(body)
        return _decode.parse_json(body, self.config.max_json_depth)

    def _binary_payload(self, body: bytes, header: str) -> Any:
        """The v2 binary tensor extension: a JSON header, then raw tensor bytes."""
        if not header.isdigit() or int(header) > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {header!r} does not fit a {len(body)}-byte body"
            )
        split = int(header)
        payload = _decode.parse_json(body[:split], self.config.max_json_depth)
        rest = memoryview(body)[split:]
        for tensor in payload.get("inputs", []) if isinstance(payload, dict) else []:
            params = tensor.get("parameters") if isinstance(tensor, dict) else None
            size = params.get("binary_data_size") if isinstance(params, dict) else None
            if size is None:
                continue
            if type(size) is not int or size < 0 or size > len(rest):
                raise InvalidInputError(
                    f"input '{tensor.get('name')}': binary_data_size {size!r} exceeds the body"
                )
            tensor["data"] = _binary_values(tensor, bytes(rest[:size]))
            rest = rest[size:]
        return payload

    # -- health and metadata -----------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        return _json(
            {"name": "ownloop", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def server_ready(self, request: Request) -> Response:
        # Open Inference Protocol: "server ready" means every model is ready; 200 is true and a
        # 4xx is false. The body names the models, and the ready ones keep serving either way.
        # A failing prediction log writer makes the server not ready too: it answers but loses rows.
        table = self.served
        models = {m.name: m.stable.ready for m in table.values()}
        body: dict[str, Any] = {"ready": all(models.values()), "models": models}
        problems = {m.name: m.problem for m in table.values() if m.problem is not None}
        if problems:  # a version that failed to load while the previous one serves
            body["problems"] = problems
        if self.logger is not None:
            error = self.logger.last_error
            body["prediction_log"] = {
                "healthy": error is None,
                "error": None if error is None else redact_paths(error),
            }
            body["ready"] = body["ready"] and error is None
        return _json(body, status=200 if body["ready"] else 400)

    def _entry(self, request: Request) -> ServedModel:
        live = find(self.served, request.path_params["name"])
        version = request.path_params.get("version")
        return live.stable if version is None else live.version(version)[0]

    async def model_metadata(self, request: Request) -> Response:
        return _json(self._entry(request).metadata())

    async def model_ready(self, request: Request) -> Response:
        entry = self._entry(request)
        try:
            entry.require_ready()
        except NotReadyError as exc:  # a health answer, so 4xx means "false" (v2 protocol)
            return _json(exc.to_dict(), status=400)
        return _json({"name": entry.name, "version": str(entry.version), "ready": True})

    async def list_models(self, request: Request) -> Response:
        return _json({"models": [m.describe() for m in self.served.values()]})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_doc(self, request: Request) -> Response:
        # the models served now are listed, so a client or a fuzzer reaches real models
        served = {live.name: _described(live) for live in self.served.values()}
        return _json(
            openapi(ROUTES, __version__, served, max_label_rows=self.config.max_label_rows)
        )

    # -- inference ---------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        return await self._score(request, find(self.served, request.path_params["name"]), _simple)

    async def model_invocations(self, request: Request) -> Response:
        return await self._score(request, find(self.served, request.path_params["name"]), _mlflow)

    async def invocations(self, request: Request) -> Response:
        table = self.served
        if len(table) != 1:
            names = ", ".join(f"'{n}'" for n in sorted(table)) or "none"
            example = min(table, default="NAME")
            raise InvalidInputError(
                f"/invocations answers when exactly one model is served, and this server serves "
                f"{len(table)} ({names}); post to /models/{{name}}/invocations instead, "
                f"e.g. /models/{example}/invocations"
            )
        return await self._score(request, next(iter(table.values())), _mlflow)

    async def infer(self, request: Request) -> Response:
        live = find(self.served, request.path_params["name"])
        version = request.path_params.get("version")
        return await self._score(request, live, _v2, None if version is None else version)

    async def _score(
        self, request: Request, live: LiveModel, shape: _Shape, version: str | None = None
    ) -> Response:
        start = time.perf_counter()
        request_id = request.headers.get("x-request-id")
        entry, arm = live.stable, "stable"
        try:
            picked = self._pick_early(request, live, version)
            if picked is not None:
                entry, arm = picked
            entry.require_ready()
            body = await self._body(request)
        except OwnloopError:
            self._refused(entry, request_id, start, 0.0, arm)
            raise
        early = picked is not None or not live.canary
        job = _Job(
            live, entry if early else None, arm, shape, body, request.headers, request_id, start
        )
        if len(body) < self.offload_bytes:
            return self._run(job)  # small requests inline: a thread hop costs more than they do
        # a large batch is decoded and scored in a worker thread, so health checks and other
        # requests are answered meanwhile
        return await run_in_threadpool(self._run, job)

    def _pick_early(
        self, request: Request, live: LiveModel, version: str | None
    ) -> tuple[ServedModel, str] | None:
        """The arm known before the body is read: a version in the path, or a header key."""
        if version is not None:
            return live.version(version)
        header = live.key_header
        if header is None:
            return live.pick(None) if live.canary and live.key_feature is None else None
        # checked whenever the route names a header, so a client learns the limit before a rollout
        key = routing_key(request.headers.get(header), f"header '{header}'")
        return live.pick(key) if live.canary else None

    def _run(self, job: _Job) -> Response:
        entry, arm = job.entry or job.live.stable, job.arm
        shape, cpu0 = job.shape, time.thread_time()
        try:
            payload = self._parse(job.body, job.headers, csv=shape.csv)
            cols = shape.decode(entry, payload)
            if job.entry is None:  # canary keyed by a feature: the first row decides the arm
                entry, arm = self._pick_by_feature(job.live, cols)
                if entry is not job.live.stable and entry.signature != job.live.stable.signature:
                    cols = shape.decode(entry, payload)
        except OwnloopError:
            self._refused(entry, job.request_id, job.start, time.thread_time() - cpu0, arm)
            raise
        ids = predlog.new_ids(cols.n)
        request_id = (job.request_id or ids[0])[:200]
        key = entry.key(arm)
        try:
            out = entry.predict(cols)
        except Exception:  # logged as error rows with their inputs, then answered as 400 / 500
            self.metrics.request(key, "error")
            self._log(entry, arm, cols, None, ids, request_id, job.start, cpu0)
            raise
        response = shape.respond(entry, payload, out, ids)
        response.headers["x-ownloop-arm"] = arm
        self._log(entry, arm, cols, out, ids, request_id, job.start, cpu0)
        cpu = time.thread_time() - cpu0
        self.metrics.request(key, "ok", time.perf_counter() - job.start)
        self.metrics.predicted(key, entry.class_text, out.picked, out.confidence, cpu, cols.n)
        shadow = job.live.shadow
        if shadow is not None and arm == "stable":
            self.shadow.submit(
                ShadowJob(
                    shadow, entry, cols, payload, shape.decode, request_id, time.time_ns() // 1000
                )
            )
        return response

    def _pick_by_feature(self, live: LiveModel, cols: _decode.Columns) -> tuple[ServedModel, str]:
        feature = live.key_feature
        return live.pick(None if feature is None else feature_key(cols, feature))

    def _refused(
        self,
        entry: ServedModel,
        request_id: str | None,
        start: float,
        cpu_s: float,
        arm: str = "stable",
    ) -> None:
        """Count a refused request and log it as one ``refused`` row, so error rates see it."""
        self.metrics.request(entry.key(arm), "error")
        if self.logger is None:
            return
        pid = predlog.new_ids(1)
        block = refused_block(
            entry,
            pid,
            ts_us=time.time_ns() // 1000,
            request_id=(request_id or pid[0])[:200],
            latency_s=time.perf_counter() - start,
            cpu_s=cpu_s,
            arm=arm,
        )
        self.logger.submit(entry.name, block)

    def _log(
        self,
        entry: ServedModel,
        arm: str,
        cols: _decode.Columns,
        out: Prediction | None,
        ids: list[str],
        request_id: str,
        start: float,
        cpu0: float,
    ) -> None:
        if self.logger is None:
            return
        block = entry.log_block(
            cols,
            out,
            ids,
            ts_us=time.time_ns() // 1000,
            request_id=request_id,
            arm=arm,
            latency_s=time.perf_counter() - start,
            cpu_s=time.thread_time() - cpu0,
        )
        self.logger.submit(entry.name, block)

    # -- labels ------------------------------------------------------------------------------

    async def post_labels(self, request: Request) -> Response:
        name = request.path_params["name"]
        payload = await self._payload(request)
        rows = payload.get("labels") if isinstance(payload, dict) else payload
        if not isinstance(rows, list) or not rows:
            raise InvalidInputError(
                'labels must be a non-empty list like [{"prediction_id": "...", "label": 1}]'
            )
        labels.check_batch_size(len(rows), self.config.max_label_rows)
        _check_label_text(rows)
        table = labels.labels_table(rows, at=self.ws.clock.now(), source="api")
        report = await run_in_threadpool(self._record_labels, name, table)
        return _json(report.to_dict())

    def _record_labels(self, name: str, table: Any) -> labels.LabelReport:
        if self.logger is not None:
            self.shadow.drain()
            self.logger.flush()  # a label may arrive before its prediction's segment is written
        return labels.record_labels(
            self.ws.registry,
            self.config.predictions_dir,
            name,
            table,
            max_rows=self.config.max_label_rows,
        )


# One value of each feature type, for the example row of a served model's schema.
_EXAMPLE_VALUE = {"float": 0.0, "integer": 0, "boolean": False, "string": "a"}


def _described(live: LiveModel) -> Served:
    """``live`` for the OpenAPI document: its versions (a canary's answers by version too)."""
    entry = live.stable
    versions = [str(entry.version)]
    if live.canary and live.candidate is not None:
        versions.append(str(live.candidate.version))
    datatypes = {i["name"]: i["datatype"] for i in entry.metadata()["inputs"]}
    row = {
        f.name: (_EXAMPLE_VALUE.get(f.type, 0), datatypes[f.name]) for f in entry.signature.features
    }
    classes = entry.signature.classes
    return Served(tuple(versions), row, classes[0] if classes else 0.0)


def _check_label_text(rows: list[Any]) -> None:
    """Refuse label text UTF-8 cannot hold (a lone surrogate) before it reaches the label file."""
    for i, row in enumerate(rows):
        items = row.items() if isinstance(row, dict) else ()
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str) and _decode.printable(text) != text:
                    raise InvalidInputError(
                        f"label row {i}: {_decode.printable(str(key))[:64]} holds "
                        f"'{_decode.printable(text)[:64]}', which is not valid Unicode text "
                        "(a lone UTF-16 surrogate); send UTF-8 text"
                    )


def _binary_values(tensor: dict[str, Any], raw: bytes) -> list[Any]:
    datatype = str(tensor.get("datatype", "")).upper()
    if datatype == "BYTES":
        values: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise InvalidInputError(f"input '{tensor.get('name')}': truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + length > len(raw):
                raise InvalidInputError(
                    f"input '{_decode.printable(str(tensor.get('name')))[:64]}': BYTES element "
                    f"{len(values)} says {length} bytes but only {len(raw) - at} remain"
                )
            # invalid UTF-8 becomes lone surrogates, which validation refuses naming row and feature
            values.append(raw[at : at + length].decode("utf-8", "surrogateescape"))
            at += length
        return values
    dtype = _BINARY.get(datatype)
    if dtype is None:
        raise InvalidInputError(f"input '{tensor.get('name')}': unknown datatype {datatype!r}")
    if len(raw) % np.dtype(dtype).itemsize:
        raise InvalidInputError(
            f"input '{tensor.get('name')}': {len(raw)} bytes is not a whole number of {datatype}"
        )
    arr = np.frombuffer(raw, dtype=dtype)
    values = arr.astype(np.float64).tolist() if datatype != "BOOL" else arr.tolist()
    return list(values)


class _Shape:
    """How one protocol reads a request and writes a response."""

    csv = False  # whether a text/csv body is read

    def decode(self, entry: ServedModel, payload: Any) -> _decode.Columns:
        raise NotImplementedError

    def respond(
        self, entry: ServedModel, payload: Any, out: Prediction, ids: list[str]
    ) -> Response:
        raise NotImplementedError


class _SimpleShape(_Shape):
    keys: tuple[str, ...] = ("instances", "dataframe_split", "dataframe_records")
    ignored: frozenset[str] = frozenset()

    def decode(self, entry: ServedModel, payload: Any) -> _decode.Columns:
        wanted = ", ".join(f"'{k}'" for k in self.keys)
        if not isinstance(payload, dict):
            raise InvalidInputError(f"body must be an object with one of {wanted}")
        keys = set(payload) - self.ignored
        if len(keys) != 1 or not keys <= set(self.keys):
            got = ", ".join(_decode.printable(k) for k in sorted(keys)) or "nothing"
            raise InvalidInputError(f"body must have exactly one of {wanted}, got: {got}")
        (key,) = keys
        return self.decode_key(entry, key, payload[key])

    def decode_key(self, entry: ServedModel, key: str, value: Any) -> _decode.Columns:
        if key == "dataframe_split":
            return _decode.decode_split(entry.signature, value)
        if key == "dataframe_records" and not (
            isinstance(value, list) and all(type(r) is dict for r in value)
        ):
            raise InvalidInputError("'dataframe_records' must be a list of records (objects)")
        return _decode.decode_records(entry.signature, value)

    def respond(
        self, entry: ServedModel, payload: Any, out: Prediction, ids: list[str]
    ) -> Response:
        data: dict[str, Any] = {"predictions": out.values}
        if out.probabilities is not None:
            data["probabilities"] = out.probabilities
        data.update(prediction_ids=ids, model=entry.name, version=entry.version)
        return _json(data)


class _MlflowShape(_SimpleShape):
    """MLflow's scoring server formats (``mlflow models serve``): JSON with one of four keys, or CSV."""

    csv = True
    keys = ("dataframe_split", "dataframe_records", "instances", "inputs")
    ignored = frozenset({"params"})

    def decode(self, entry: ServedModel, payload: Any) -> _decode.Columns:
        if isinstance(payload, _CsvBody):
            return _decode.decode_csv(entry.signature, payload.data)
        if isinstance(payload, dict) and payload.get("params") not in (None, {}):
            raise InvalidInputError(
                "'params' are not supported: ownloop models take no inference parameters; "
                "send the rows only"
            )
        return super().decode(entry, payload)

    def decode_key(self, entry: ServedModel, key: str, value: Any) -> _decode.Columns:
        if key == "inputs" and isinstance(value, dict):
            return _decode.decode_columnar(entry.signature, value)
        if key == "inputs":
            return _decode.decode_records(entry.signature, value)
        return super().decode_key(entry, key, value)


class _V2Shape(_Shape):
    def decode(self, entry: ServedModel, payload: Any) -> _decode.Columns:
        if not isinstance(payload, dict) or "inputs" not in payload:
            raise InvalidInputError("an inference request must be an object with 'inputs'")
        rid = payload.get("id")
        if "id" in payload and (not isinstance(rid, str) or _decode.printable(rid) != rid):
            raise InvalidInputError("'id' must be a string of valid Unicode text")
        if "parameters" in payload and not isinstance(payload["parameters"], dict):
            raise InvalidInputError("'parameters' must be an object (ownloop reads none)")
        self.outputs(entry, payload)  # an unknown output is refused before the model runs
        return _decode.decode_v2(entry.signature, payload["inputs"])

    def outputs(self, entry: ServedModel, payload: Any) -> list[str] | None:
        """The output names asked for, or None for all; an unknown name is a 400."""
        wanted = payload.get("outputs")
        if "outputs" in payload and not isinstance(wanted, list):
            raise InvalidInputError('\'outputs\' must be a list like [{"name": "predictions"}]')
        if not wanted:
            return None
        names = [str(w.get("name") if isinstance(w, dict) else w) for w in wanted]
        have = {"predictions", "prediction_ids"} | (
            {"probabilities"} if entry.classes is not None else set()
        )
        unknown = [w for w in names if w not in have]
        if unknown:
            raise InvalidInputError(
                f"unknown output '{_decode.printable(unknown[0])[:64]}'; this model gives: "
                f"{', '.join(sorted(have))}"
            )
        return names

    def respond(
        self, entry: ServedModel, payload: Any, out: Prediction, ids: list[str]
    ) -> Response:
        n = len(ids)
        outputs: list[dict[str, Any]] = [
            {
                "name": "predictions",
                "datatype": entry.output_datatype,
                "shape": [n],
                "data": out.values,
            }
        ]
        if out.probabilities is not None:
            outputs.append(
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": list(out.probabilities.shape),
                    "data": out.probabilities.reshape(-1),
                }
            )
        outputs.append({"name": "prediction_ids", "datatype": "BYTES", "shape": [n], "data": ids})
        names = self.outputs(entry, payload)
        if names is not None:
            outputs = [o for o in outputs if o["name"] in names]
        data: dict[str, Any] = {
            "model_name": entry.name,
            "model_version": str(entry.version),
            "outputs": outputs,
        }
        if payload.get("id") is not None:
            data["id"] = payload["id"]
        return _json(data)


_simple = _SimpleShape()
_mlflow = _MlflowShape()
_v2 = _V2Shape()


# -- errors ------------------------------------------------------------------------------------


async def _ownloop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OwnloopError)
    # a message may quote client text that UTF-8 cannot hold (a lone surrogate): escape it, and
    # however much client text it quotes, the answer stays small
    body = {k: bounded(_decode.printable(v)) for k, v in exc.to_dict().items()}
    return _json(body, exc.http_status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if ui_path(request.url.path):  # a browser's page: the error as a page, not JSON
        server: _Server = request.app.state.server
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        elif exc.status_code == 404:
            message = f"no dashboard page at {request.url.path}; start from the models at /"
        else:
            message = str(exc.detail)
        page = server.dashboard.error(request, exc.status_code, message, ANONYMOUS)
        page.headers.update(exc.headers or {})
        return browser_headers(page, static=False)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /openapi.json"
        code = "not_found"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /openapi.json"
        code = "method_not_allowed"
    else:
        message, code = str(exc.detail), "http_error"
    response = _json({"error": message, "code": code}, exc.status_code)
    response.headers.update(exc.headers or {})  # a 405 names the methods allowed (RFC 9110)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    return _internal(request)


def _internal(request: Request) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _json(
        {"error": "internal server error; the server log has the details", "code": "internal"},
        500,
    )


def _on_hangup(reload: Callable[[], None]) -> Callable[[], None]:
    """SIGHUP reloads every model instead of ending the process; returns how to undo it.

    Signals reach only the main thread, so a server run in another thread (tests) skips this.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    loop = asyncio.get_running_loop()

    def hangup() -> None:
        log.info("SIGHUP: reloading every model")
        reload()

    loop.add_signal_handler(signal.SIGHUP, hangup)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def create_app(ws: Workspace, *, log_predictions: bool = True) -> Starlette:
    """The ASGI app serving what ``ws.deploy`` routes, kept current while it runs.

    >>> app = create_app(Workspace())  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    server = _Server(ws, log_predictions=log_predictions)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # models and imports live for the whole process: keep them out of every full collection,
        # which would otherwise pause serving for tens of milliseconds
        gc.collect()
        gc.freeze()
        server.start()
        hangup = _on_hangup(server.routing.request_reload)
        try:
            yield
        finally:
            hangup()
            server.stop()

    dashboard = server.dashboard
    pages = [
        (RouteSpec(r.method, r.path, r.handler, r.action, r.summary, ui=True), dashboard.handler(r))
        for r in UI_ROUTES
    ]
    routes = [Route(s.path, server.guard(s), methods=[s.method]) for s in ROUTES]
    routes += [Route(s.path, server.guard(s, h), methods=[s.method]) for s, h in pages]
    paths = [s.path for s in ROUTES] + [s.path for s, _ in pages]
    app = Starlette(
        routes=routes,
        # hostile paths and bad names are a 400 before routing, whoever serves the app
        middleware=[Middleware(CheckedPaths, route_paths=paths)],
        lifespan=lifespan,
        exception_handlers={
            OwnloopError: _ownloop_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.server = server
    return app
