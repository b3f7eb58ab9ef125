"""Helpers to run real ownloop servers on 127.0.0.1 in tests (a thread, or a real process)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.server import uvicorn_config


@contextmanager
def running(ws: Workspace, *, log_predictions: bool = True) -> Iterator[str]:
    """Serve ``ws`` with uvicorn in a thread on a free loopback port; yield the base URL.

    The server is stopped and its thread joined on the way out, whatever happened, including a
    server that failed to start.
    """
    config = uvicorn_config(
        ws, "127.0.0.1", 0, log_predictions=log_predictions, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        if thread.is_alive():  # graceful shutdown is stuck (a blocked request): stop it now
            server.force_exit = True
            thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_process(
    env: dict[str, str], port: int, *, preexec: Any = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``ownloop serve`` in a real process, yielded once it answers /v2/health/live.

    On the way out the process is killed (if the test has not stopped it) and waited for,
    whatever happened, so no test leaves a server running.
    """
    out = log.open("wb") if log is not None else None
    try:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ownloop"), "serve", "--port", str(port)],
            env=env,
            stdout=out if out is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
    finally:
        if out is not None:
            out.close()
    try:
        _wait_live(proc, port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


def _wait_live(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server did not answer /v2/health/live (exit {proc.poll()})")
        time.sleep(0.05)


def viewer_workspace(config: Config) -> Workspace:
    return Workspace(config, actor=Actor("eve", viewer=False))


def child_env(config: Config, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(
        OWNLOOP_HOME=str(config.home), OWNLOOP_DB_URL=config.db_url, OWNLOOP_USER=config.user
    )
    env.update(extra)
    return env
