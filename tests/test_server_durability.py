"""The prediction log's durability contract, with real ``ownloop serve`` processes and signals.

No assertion here depends on how fast the machine is: the SIGTERM test runs a server whose timer
never fires, the SIGKILL test checks what was lost (only the newest rows) rather than when, and
every process a test starts is killed and reaped in the ``processes`` fixture's teardown.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ownloop import Config, Workspace
from ownloop.predlog import list_segments, read_window
from tests.servers import child_env, free_port

pytestmark = pytest.mark.slow

# `ownloop serve`, with one change: the flush timer never fires (only SIGTERM can flush)
NO_TIMER = """
import dataclasses, sys
from ownloop import config
from ownloop.cli import main
real = config.Config.from_env
config.Config.from_env = classmethod(
    lambda cls, environ=None: dataclasses.replace(real(environ), predlog_flush_s=1e7)
)
main(sys.argv[1:])
"""
OWNLOOP = [str(Path(sys.executable).parent / "ownloop")]
NO_TIMER_OWNLOOP = [sys.executable, "-c", NO_TIMER]
STUCK_S = 300.0  # only a broken server takes this long: these waits are for events, not time


@pytest.fixture
def home(tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame) -> Config:
    config = Config(home=tmp_path / "home", user="tester")
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
    return config


Starter = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Starter]:
    """Start ``ownloop serve`` processes; each is killed (if still running) and reaped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        env: dict[str, str],
        port: int,
        *,
        command: list[str] = OWNLOOP,
        preexec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        with (tmp_path / f"serve-{port}.log").open("wb") as out:
            proc = subprocess.Popen(
                [*command, "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
        started.append(proc)
        deadline = time.monotonic() + STUCK_S
        while not _live(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server exited with {proc.returncode}: {_output(tmp_path)}")
            time.sleep(0.05)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _live(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2/health/live").status_code == 200
    except httpx.TransportError:
        return False


def _output(tmp_path: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in tmp_path.glob("serve-*.log"))


def send(client: httpx.Client, rows: list[dict[str, Any]], n: int) -> list[str]:
    """``n`` requests of 1-3 rows; the prediction ids answered, in order."""
    ids = []
    for i in range(n):
        r = client.post("/models/churn/predict", json={"instances": rows[: 1 + i % 3]})
        assert r.status_code == 200, r.text
        ids += r.json()["prediction_ids"]
    return ids


def logged_ids(config: Config) -> list[str]:
    return read_window(config.predictions_dir, "churn", columns=["prediction_id"])[
        "prediction_id"
    ].to_pylist()


def test_sigterm_flushes_every_prediction(
    home: Config, churn_data: pd.DataFrame, serve: Starter, tmp_path: Path
) -> None:
    port = free_port()
    proc = serve(child_env(home), port, command=NO_TIMER_OWNLOOP)
    rows = churn_data.drop(columns="churned").head(3).to_dict("records")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        sent = send(client, rows, 150)
        queued = _value(client.get("/metrics").text, "ownloop_predlog_queue_depth")
    assert logged_ids(home) == []  # nothing can have flushed them but the shutdown
    assert queued == len(sent) == 300
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert sorted(logged_ids(home)) == sorted(sent)
    assert "300 rows written, 0 dropped" in _output(tmp_path)


def _names(folder: Path) -> set[str]:
    return {f"{day.name}/{name}" for day in folder.glob("date=*") for name in os.listdir(day)}


def _write_starts(folder: Path, deadline: float) -> bool:
    """Poll until a new file appears (a segment is being written) or the deadline passes."""
    seen = _names(folder)
    while time.monotonic() < deadline:
        if _names(folder) - seen:
            return True
        time.sleep(0.0005)  # leave the server the CPU
    return False


def test_sigkill_loses_at_most_the_unflushed_buffer(
    home: Config, churn_data: pd.DataFrame, serve: Starter
) -> None:
    port = free_port()
    proc = serve(child_env(home, OWNLOOP_PREDLOG_FLUSH_S="0.05"), port)
    rows = churn_data.drop(columns="churned").head(400).to_dict("records")
    answers: list[list[str]] = []  # in the order the single client got them
    stop = threading.Event()

    def load() -> None:  # one client, so rows reach the writer in answer order
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while not stop.is_set():
                body = {"instances": rows[: 1 + len(answers) * 37 % 400]}
                try:
                    r = client.post("/models/churn/predict", json=body)
                except httpx.TransportError:
                    return
                answers.append(r.json()["prediction_ids"])

    client = threading.Thread(target=load)
    client.start()
    try:
        folder = home.predictions_dir / "churn"
        deadline = time.monotonic() + STUCK_S
        while len(list_segments(home.predictions_dir, "churn")) < 3:  # flushes have happened
            assert client.is_alive() and proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        # kill as a segment starts being written (its hidden file appears), if we catch one
        _write_starts(folder, time.monotonic() + 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        stop.set()
        client.join(timeout=60)
    # no visible segment is torn: each reads whole, as many rows as its footer says
    segments = list_segments(home.predictions_dir, "churn")
    for segment in segments:
        assert pq.read_table(segment).num_rows == pq.ParquetFile(segment).metadata.num_rows
    logged = set(logged_ids(home))
    sent = [pid for ids in answers for pid in ids]
    # the request in flight at the kill may be logged without its answer having arrived
    assert len(logged - set(sent)) <= len(rows)
    # what was lost is the newest rows only (the unflushed buffer): the log is a prefix of the run
    first_lost = next((i for i, pid in enumerate(sent) if pid not in logged), len(sent))
    assert logged & set(sent[first_lost:]) == set()
    assert first_lost > 0


FILE_LIMIT = 48 * 1024  # above SQLite's 32 KiB shared-memory file, below any log segment here


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_full_disk_keeps_serving_and_counts_drops(
    home: Config, churn_data: pd.DataFrame, serve: Starter, tmp_path: Path
) -> None:
    port = free_port()
    proc = serve(child_env(home, OWNLOOP_PREDLOG_FLUSH_S="0.05"), port, preexec=_small_files)
    rows = churn_data.drop(columns="churned").to_dict("records")  # 2,000 rows a request
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        sent = 0
        for _ in range(5):
            r = client.post("/models/churn/predict", json={"instances": rows})
            assert r.status_code == 200, r.text
            sent += len(r.json()["prediction_ids"])
        deadline = time.monotonic() + STUCK_S
        while True:  # the writer retries the rows a few times, then drops and counts them
            text = client.get("/metrics").text
            if _value(text, "ownloop_predlog_dropped_records_total") >= sent:
                break
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert _value(text, "ownloop_predlog_dropped_records_total") == sent
        assert _value(text, "ownloop_predlog_write_errors_total") >= 1
        small = client.post("/models/churn/predict", json={"instances": rows[:1]})
        assert small.status_code == 200
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert "prediction log write failed" in _output(tmp_path)
    # no partial segment became visible; a small segment later still fits and is written
    assert logged_ids(home) == small.json()["prediction_ids"]
    assert all(p.stat().st_size <= FILE_LIMIT for p in home.predictions_dir.rglob("*"))


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")
