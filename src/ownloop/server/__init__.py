"""HTTP serving: Open Inference Protocol v2 and simple JSON inference, labels, metrics.

>>> from ownloop.server import serve  # doctest: +SKIP
>>> serve(Workspace(), host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace

import uvicorn

from ownloop.server._app import ROUTES, RouteSpec, create_app
from ownloop.server._auth import check_exposure, loopback
from ownloop.server._limits import limited_protocol
from ownloop.workspace import Workspace

__all__ = [
    "ROUTES",
    "RouteSpec",
    "check_exposure",
    "create_app",
    "loopback",
    "serve",
    "uvicorn_config",
]


def uvicorn_config(
    ws: Workspace,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_predictions: bool = True,
    log_level: str = "info",
) -> uvicorn.Config:
    """A uvicorn configuration for the app of ``ws`` (loopback unless told otherwise).

    Off loopback, auth is on and serving is refused until a token exists (``check_exposure``).
    The request limits come from ``ws.config``: head size and field count (431), the time to send
    a head, the keep-alive idle time, and the open connections (more are answered 503).
    """
    check_exposure(ws, host)
    if not loopback(host):
        ws.config = replace(ws.config, auth=True)
    limits = ws.config
    return uvicorn.Config(
        create_app(ws, log_predictions=log_predictions),
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        http=limited_protocol(limits.max_header_bytes, limits.max_headers, limits.header_timeout_s),
        h11_max_incomplete_event_size=limits.max_header_bytes,
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]
        # uvicorn counts the connection asking too, so one more lets max_connections be served
        limit_concurrency=limits.max_connections + 1,
    )


def serve(
    ws: Workspace,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_predictions: bool = True,
    workers: int = 1,
) -> None:
    """Serve until SIGINT/SIGTERM; shutdown flushes the prediction log (of every worker).

    ``workers`` > 1 runs that many processes on the one port (see ``ownloop.server._workers``).
    """
    if workers > 1:
        from ownloop.server._workers import serve_workers

        serve_workers(ws, host, port, workers=workers, log_predictions=log_predictions)
        return
    uvicorn.Server(uvicorn_config(ws, host, port, log_predictions=log_predictions)).run()
