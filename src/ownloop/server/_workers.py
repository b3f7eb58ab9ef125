"""Several serve processes on one port: ``ownloop serve --workers N``.

uvicorn's supervisor binds the port once and starts N worker processes (spawned, so each is a
fresh interpreter) that accept on the same socket; it restarts a worker that dies and, on
SIGTERM/SIGINT, sends each worker SIGTERM and waits for it. A worker builds its own workspace
and app from the environment (:func:`worker_app`), so the settings the command line changed are
passed on as the ``OWNLOOP_*`` variables that set them. Each worker then runs as one serve
process does: its own prediction log writer (segment names carry the write time in
microseconds and 32 random bits, so two writers never pick the same name), its own poll of the
deploy state in the store, and its turn at the rollout controller and alert evaluator leases.

The metrics of all workers are merged through prometheus-client's multiprocess mode in a private
temporary folder that serve creates before the workers start and removes after they stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from ownloop.config import Config
from ownloop.server._app import create_app
from ownloop.server._auth import check_exposure, loopback
from ownloop.server._limits import limited_protocol
from ownloop.server._metrics import MULTIPROC_ENV
from ownloop.workspace import Workspace

__all__ = ["NO_LOG_ENV", "WorkerProtocol", "serve_workers", "worker_app", "worker_env"]

log = logging.getLogger("ownloop.server")

NO_LOG_ENV = "OWNLOOP_SERVE_NO_LOG"  # set by serve for its workers: --no-log
# A worker that does not answer the supervisor's health check this long is killed and replaced.
# A fresh worker imports all of ownloop before it can answer (seconds on a busy machine), so this
# is generous: it only has to tell a hung worker from a slow start.
HEALTHCHECK_S = 60


_LIMITS = Config.from_env()
# The request-head limits of ``server.uvicorn_config``, read from the environment in each worker:
# uvicorn sends a worker its protocol by name (a class made at run time cannot be pickled)
WorkerProtocol = limited_protocol(
    _LIMITS.max_header_bytes, _LIMITS.max_headers, _LIMITS.header_timeout_s
)


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn's app factory), from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    ws = Workspace()
    return create_app(ws, log_predictions=os.environ.get(NO_LOG_ENV) != "1")


def worker_env(config: Config, host: str, *, log_predictions: bool) -> dict[str, str]:
    """The variables that give each worker the settings serve runs with (flags included)."""
    env = {
        "OWNLOOP_AUTH": "1" if config.auth or not loopback(host) else "0",
        "OWNLOOP_PUBLIC_INFERENCE": "1" if config.public_inference else "0",
        "OWNLOOP_ALLOW_ENV_MISMATCH": "1" if config.allow_env_mismatch else "0",
        "OWNLOOP_SERVE_MONITOR_EVERY_S": str(config.serve_monitor_every_s or 0),
        "OWNLOOP_HOME": str(config.home),
        NO_LOG_ENV: "0" if log_predictions else "1",
    }
    if config.db_url_override is not None:
        env["OWNLOOP_DB_URL"] = config.db_url_override
    return env


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def serve_workers(
    ws: Workspace,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    workers: int,
    log_predictions: bool = True,
) -> None:
    """Serve with ``workers`` processes on one port until SIGINT/SIGTERM; every worker flushes its
    prediction log on the way out, and the shared metrics folder is removed."""
    check_exposure(ws, host)
    limits = ws.config
    metrics_dir = tempfile.mkdtemp(prefix="ownloop-metrics-")  # 0700, this user's only
    env = worker_env(ws.config, host, log_predictions=log_predictions)
    env[MULTIPROC_ENV] = metrics_dir
    try:
        with _environment(env):
            config = uvicorn.Config(
                f"{__name__}:worker_app",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                lifespan="on",
                access_log=False,
                log_level="info",
                timeout_graceful_shutdown=10,
                http=f"{__name__}:WorkerProtocol",
                h11_max_incomplete_event_size=limits.max_header_bytes,
                timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
                limit_concurrency=limits.max_connections + 1,
                timeout_worker_healthcheck=HEALTHCHECK_S,
            )
            log.info("serving with %d worker processes on %s:%d", workers, host, port)
            sock = config.bind_socket()
            try:
                Multiprocess(config, sockets=[sock]).run()
            finally:
                sock.close()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
