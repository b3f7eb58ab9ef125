"""The prediction log's durability contract, with real ``ownloop serve`` processes and signals."""

from __future__ import annotations

import resource
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ownloop import Config, Workspace
from ownloop.predlog import list_segments, read_window
from tests.servers import child_env, free_port, start_process

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame) -> Config:
    config = Config(home=tmp_path / "home", user="tester")
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.registry.set_alias("churn", "production", v.version)
    return config


def send(client: httpx.Client, rows: list[dict[str, Any]], n: int) -> list[tuple[float, list[str]]]:
    """``n`` requests of 1-3 rows; each answer's ids with the time the answer arrived."""
    answers = []
    for i in range(n):
        r = client.post("/models/churn/predict", json={"instances": rows[: 1 + i % 3]})
        assert r.status_code == 200, r.text
        answers.append((time.monotonic(), r.json()["prediction_ids"]))
    return answers


def logged_ids(config: Config) -> list[str]:
    return read_window(config.predictions_dir, "churn", columns=["prediction_id"])[
        "prediction_id"
    ].to_pylist()


def test_sigterm_flushes_every_prediction(
    home: Config, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    port = free_port()
    # a long flush interval, so rows are still buffered when SIGTERM comes (on a busy machine a
    # periodic flush may have written some of them already: only the rest proves the point)
    with start_process(
        child_env(home, OWNLOOP_PREDLOG_FLUSH_S="60"), port, log=tmp_path / "out.log"
    ) as proc:
        rows = churn_data.drop(columns="churned").head(3).to_dict("records")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            answers = send(client, rows, 300)
        sent = [pid for _, ids in answers for pid in ids]
        buffered = set(sent) - set(logged_ids(home))
        assert buffered, "every row was flushed before SIGTERM; nothing left to prove"
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert sorted(logged_ids(home)) == sorted(sent)
    assert f"{len(sent)} rows written, 0 dropped" in (tmp_path / "out.log").read_text()


def test_sigkill_loses_at_most_the_unflushed_buffer(home: Config, churn_data: pd.DataFrame) -> None:
    port = free_port()
    flush_s = 0.2
    with start_process(child_env(home, OWNLOOP_PREDLOG_FLUSH_S=str(flush_s)), port) as proc:
        rows = churn_data.drop(columns="churned").head(200).to_dict("records")
        answers: list[tuple[float, list[str]]] = []

        def load() -> None:  # keep the writer busy until the process dies
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                while True:
                    try:
                        r = client.post(
                            "/models/churn/predict",
                            json={"instances": rows[: 1 + len(answers) % 200]},
                        )
                    except httpx.TransportError:
                        return
                    answers.append((time.monotonic(), r.json()["prediction_ids"]))

        client = threading.Thread(target=load)
        client.start()
        try:
            # kill once segments are on disk (however long that takes): those rows must survive
            deadline = time.monotonic() + 120
            while not (durable := set(logged_ids(home))) and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            client.join(timeout=60)
    # every segment a reader sees is whole; a write cut short can only leave a hidden .tmp-* file
    for segment in list_segments(home.predictions_dir, "churn"):
        pq.read_table(segment)
    logged = set(logged_ids(home))
    sent = {pid for _, ids in answers for pid in ids}
    assert durable, "nothing was flushed in the run"
    assert durable <= logged  # what was flushed before the kill survives it
    assert logged <= sent


FILE_LIMIT = 48 * 1024  # above SQLite's 32 KiB shared-memory file, below any log segment here


def _small_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_full_disk_keeps_serving_and_counts_drops(
    home: Config, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    port = free_port()
    env = child_env(home, OWNLOOP_PREDLOG_FLUSH_S="0.1")
    rows = churn_data.drop(columns="churned").to_dict("records")  # 2,000 rows a request
    with start_process(env, port, preexec=_small_files, log=tmp_path / "out.log") as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            sent = 0
            for _ in range(5):
                r = client.post("/models/churn/predict", json={"instances": rows})
                assert r.status_code == 200, r.text
                sent += len(r.json()["prediction_ids"])
            deadline = time.monotonic() + 20
            while True:
                text = client.get("/metrics").text
                dropped = _value(text, "ownloop_predlog_dropped_records_total")
                if dropped == sent or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert dropped == sent
            assert _value(text, "ownloop_predlog_write_errors_total") >= 1
            small = client.post("/models/churn/predict", json={"instances": rows[:1]})
            assert small.status_code == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "prediction log write failed" in (tmp_path / "out.log").read_text()
    # no partial segment became visible; a small segment later still fits and is written
    assert logged_ids(home) == small.json()["prediction_ids"]
    assert all(p.stat().st_size <= FILE_LIMIT for p in home.predictions_dir.rglob("*"))


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")
