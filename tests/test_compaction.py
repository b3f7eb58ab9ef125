"""Compaction of the prediction log: the same reads, labels, id lookups and monitor results
before and after; fewer files; crash safety under SIGKILL; concurrent readers."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ownloop import Config, Workspace, predlog
from ownloop.clock import FrozenClock
from ownloop.compaction import CompactionLoop, compact
from ownloop.demo import log_predictions, make_churn_data
from ownloop.errors import InvalidInputError
from ownloop.labels import record_labels
from ownloop.store.lease import Lease
from tests.conftest import env_for
from tests.servers import running

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
# the monitored log is recent: label lookups find a prediction by the time in its id
RECENT = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
KILLS = int(os.environ.get("OWNLOOP_KILL_LOOPS", "8"))
ZERO = timedelta(0)


def _rows(n: int, start: datetime, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = predlog.new_ids(n)
    return pa.table(
        {
            "prediction_id": ids,
            "ts": pa.array([start + timedelta(milliseconds=int(x)) for x in range(n)], predlog.TS),
            "model": ["m"] * n,
            "version": pa.array([1] * n, pa.int32()),
            "arm": ["stable"] * n,
            "request_id": ids,
            "status": ["ok"] * n,
            "latency_s": rng.random(n),
            "cpu_s": rng.random(n),
            "prediction": ["1"] * n,
            "prediction_value": pa.nulls(n, pa.float64()),
            "confidence": rng.random(n),
            "proba": pa.nulls(n, pa.list_(pa.float64())),
            "in.x": rng.normal(size=n),
        }
    )


def _write(root: Path, segments: int, rows: int, start: datetime, seed: int) -> list[str]:
    """``segments`` one-second segments of model ``m``; the ids written."""
    ids: list[str] = []
    for i in range(segments):
        table = _rows(rows, start + timedelta(seconds=i), seed * 100_000 + i)
        predlog.write_segment(root, "m", table)
        ids += table["prediction_id"].to_pylist()
    return ids


def _visible_ids(root: Path) -> Counter[str]:
    read = predlog.read_log(root, "m", columns=["prediction_id"])
    assert read.skipped == ()
    return Counter(read.table["prediction_id"].to_pylist())


def _on_disk(root: Path, model: str = "m") -> list[Path]:
    return sorted(p for p in (root / model).glob("date=*/*.parquet") if p.name[0] != ".")


def test_compaction_merges_old_segments_sorted_and_reads_the_same(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    ids = _write(root, 300, 20, T0, seed=1)
    before = predlog.read_log(root, "m").table.sort_by("prediction_id")
    [preds, labels] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, max_rows=2500)
    assert (preds.sources, preds.files, preds.rows, preds.removed) == (300, 3, 6000, 300)
    assert labels.sources == 0
    files = _on_disk(root)
    assert len(files) == 3 and all(predlog.is_compacted(p.name) for p in files)
    for f in files:
        ts = pq.read_table(f, columns=["ts"])["ts"].to_numpy()
        assert (np.diff(ts.astype(np.int64)) >= 0).all()  # sorted by time
        assert pq.ParquetFile(f).metadata.num_row_groups >= 1
    after = predlog.read_log(root, "m").table.sort_by("prediction_id")
    assert after.equals(before)
    assert _visible_ids(root) == Counter(ids)
    # a window read and the written_after filter see the same rows
    start, end = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
    window = predlog.read_window(root, "m", start=start, end=end, columns=["prediction_id"])
    assert window.num_rows == 200


def test_the_open_period_and_hidden_files_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    _write(root, 5, 10, T0, seed=2)
    day = next((root / "m").glob("date=*"))
    hidden = day / ".tmp-0000000000000000-deadbeef.parquet"
    hidden.write_bytes(b"a writer's file in progress")
    [preds, _] = compact(root, "m", older_than=timedelta(hours=1), keep_sources=ZERO)
    assert preds.sources == 0 and len(_on_disk(root)) == 5
    compact(root, "m", older_than=ZERO, keep_sources=ZERO)
    assert hidden.read_bytes() == b"a writer's file in progress"
    assert len(_on_disk(root)) == 1


def test_sources_are_kept_for_readers_then_deleted_by_a_later_run(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    ids = _write(root, 40, 5, T0, seed=3)
    [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=timedelta(minutes=10))
    assert (preds.files, preds.removed) == (1, 0)
    assert len(_on_disk(root)) == 41  # the sources are still there for reads under way ...
    assert _visible_ids(root) == Counter(ids)  # ... but no reader sees their rows twice
    assert len(predlog.list_segments(root, "m")) == 1
    [later, _] = compact(root, "m", older_than=ZERO, now=time.time() + 601)
    assert (later.removed, later.files) == (40, 0)
    assert len(_on_disk(root)) == 1 and _visible_ids(root) == Counter(ids)


def test_segments_of_other_layouts_go_to_their_own_files(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    ids = _write(root, 4, 10, T0, seed=4)
    for i in range(3):
        table = _rows(10, T0 + timedelta(minutes=5, seconds=i), 50 + i)
        table = table.drop_columns(["in.x"]).append_column("in.y", pa.array(["a"] * 10))
        predlog.write_segment(root, "m", table)
        ids += table["prediction_id"].to_pylist()
    [preds, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO)
    assert (preds.sources, preds.files) == (7, 2)
    assert _visible_ids(root) == Counter(ids)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="model 'nope' has no prediction log"):
        compact(tmp_path, "nope")
    with pytest.raises(InvalidInputError, match="must not be negative"):
        compact(tmp_path, older_than=timedelta(seconds=-1))


# -- the monitor, labels and id lookups ------------------------------------------------------


def _close(a: Any, b: Any, where: str = "report") -> None:
    """Equal, except floats may differ in the last bits (sums are added in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(
            a, b, rel_tol=1e-9, abs_tol=1e-12
        ), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _report(rep: Any) -> dict[str, Any]:
    out = asdict(rep)
    out.pop("run_id", None)
    out.pop("skipped_segments", None)
    return out


@pytest.fixture
def logged(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> Workspace:
    """churn@1, two hours logged in 60-row segments (the second hour drifted), some labels."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.clock = FrozenClock(RECENT + timedelta(hours=2))
    ws.monitor.clock = ws.clock
    step = timedelta(seconds=3)
    for hour, seed in ((0, 21), (1, 22)):
        frame = make_churn_data(1200, seed=seed, shift=float(hour)).drop(columns="churned")
        for k in range(0, 1200, 60):
            start = RECENT + timedelta(hours=hour) + step * k
            log_predictions(ws, "churn@1", frame.iloc[k : k + 60], start, step=step, seed=seed + k)
    logged_ids = predlog.read_log(ws.config.predictions_dir, "churn").table
    ids = logged_ids["prediction_id"].to_pylist()[::7]
    for k in range(0, len(ids), 40):
        part = ids[k : k + 40]
        labels = pa.table(
            {
                "prediction_id": part,
                "label": [str(i % 2) for i in range(len(part))],
                "label_value": pa.nulls(len(part), pa.float64()),
                "labeled_at": [RECENT + timedelta(hours=2, seconds=k)] * len(part),
                "source": ["test"] * len(part),
                "weight": [1.0] * len(part),
            }
        )
        report = record_labels(ws.registry, ws.config.predictions_dir, "churn", labels)
        assert report.stored == len(part), report
    return ws


def _answers(ws: Workspace, ids: list[str]) -> dict[str, Any]:
    root = ws.config.predictions_dir
    reports = ws.monitor.run("churn", window=timedelta(hours=3), store=False)
    hourly = ws.monitor.window_reports(
        "churn", RECENT + timedelta(minutes=30), RECENT + timedelta(hours=1)
    )
    start, first = ws.monitor.row_window("churn", 500, RECENT + timedelta(hours=2))
    found = predlog.read_segments(predlog.segments_holding(root, "churn", ids)).table
    hit = found.filter(pa.compute.is_in(found["prediction_id"], value_set=pa.array(ids)))
    return {
        "reports": [_report(r) for r in reports],
        "hourly": [_report(r) for r in hourly],
        "row_window": (start, first),
        "labels": predlog.read_labels(root, "churn").sort_by("prediction_id").to_pylist(),
        "labelled": sorted(predlog.labelled_ids(root, "churn", ids)),
        "lookup": hit.sort_by("prediction_id").to_pylist(),
    }


def test_monitor_labels_and_id_lookups_answer_the_same_after_compaction(logged: Workspace) -> None:
    ws = logged
    root = ws.config.predictions_dir
    every = predlog.read_log(root, "churn", columns=["prediction_id"]).table
    ids = every["prediction_id"].to_pylist()[::11]
    before = _answers(ws, ids)  # fills the partial cache as well
    segments, label_files = (
        len(predlog.list_segments(root, "churn")),
        len(list((root / "churn" / "labels").glob("date=*/*.parquet"))),
    )
    results = compact(root, "churn", older_than=ZERO, keep_sources=ZERO)
    assert [r.files for r in results] == [1, 1]
    assert len(predlog.list_segments(root, "churn")) == 1 < segments == 40
    assert len(list((root / "churn" / "labels").glob("date=*/*.parquet"))) == 1 < label_files
    after = _answers(ws, ids)  # the compacted file's partial is computed, then cached
    _close(before, after)
    _close(before, _answers(ws, ids))  # from the cache


def test_cli_compact_prints_json(logged: Workspace) -> None:
    env = env_for(logged.config)
    args = ["compact", "churn", "--older-than", "0s", "--keep-sources", "0s", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "ownloop", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [(r["kind"], r["sources"], r["files"], r["rows"]) for r in out] == [
        ("predictions", 40, 1, 2400),
        ("labels", 9, 1, 343),
    ]


# -- crash safety and concurrent readers -------------------------------------------------------

CHILD = """
import sys
from datetime import timedelta
from pathlib import Path
from ownloop.compaction import CompactionLoop, compact
print("ready", flush=True)
sys.stdin.readline()
compact(Path(sys.argv[1]), "m", older_than=timedelta(0), keep_sources=timedelta(0), max_rows=900)
print("done", flush=True)
"""


def _check(root: Path, ids: list[str]) -> None:
    """Every row exactly once, every published file reads in full."""
    for path in predlog.list_segments(root, "m"):
        pq.read_table(path)
    seen = _visible_ids(root)
    assert set(seen) == set(ids), "rows lost"
    assert max(seen.values()) == 1, "rows seen twice"


@pytest.mark.slow
def test_a_compaction_killed_at_any_moment_leaves_every_row_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    rng = random.Random(15)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(PYTHONPATH=str(Path(__file__).parent.parent), OMP_NUM_THREADS="1")
    ids: list[str] = []
    moments: Counter[str] = Counter()
    for round_ in range(KILLS):
        ids += _write(root, 120, 30, T0 + timedelta(minutes=round_), seed=round_)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            on_temp = rng.random() < 0.5
            delay = rng.uniform(0, 0.4)
            child.stdin.write("go\n")
            child.stdin.flush()
            started = time.monotonic()
            while child.poll() is None and time.monotonic() - started < 120:
                temp = any(root.glob("m/date=*/.compacting-*"))
                if (on_temp and temp) or (not on_temp and time.monotonic() - started > delay):
                    time.sleep(rng.uniform(0, 0.02))
                    moments["temp file" if temp else "random"] += 1
                    child.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.001)
        finally:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=60)
            assert child.stdout is not None and child.stdin is not None
            child.stdout.close()
            child.stdin.close()
        _check(root, ids)
        [rerun, _] = compact(root, "m", older_than=ZERO, keep_sources=ZERO, max_rows=900)
        _check(root, ids)
        assert not list(root.glob("m/date=*/.compacting-*"))
        assert all(predlog.is_compacted(p.name) for p in _on_disk(root)), rerun
    assert sum(moments.values()) >= KILLS // 2  # most rounds were cut, not finished


def test_readers_during_compaction_see_every_row_once(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    ids = _write(root, 400, 20, T0, seed=9)
    expected = Counter(ids)
    failures: list[str] = []
    reads = 0
    done = threading.Event()

    def compactor() -> None:
        try:
            compact(root, "m", older_than=ZERO, max_rows=1000)
        finally:
            done.set()

    thread = threading.Thread(target=compactor)
    thread.start()
    try:
        while not done.is_set() or reads < 3:
            try:
                seen = _visible_ids(root)
            except (OSError, AssertionError) as exc:
                failures.append(repr(exc))
            else:
                if seen != expected:
                    failures.append(f"{sum(seen.values())} rows, {len(seen)} distinct")
            reads += 1
    finally:
        thread.join(timeout=300)
    assert not failures, failures[:3]
    assert len(predlog.list_segments(root, "m")) == 8


def test_the_background_loop_compacts_only_while_it_holds_the_lease(ws: Workspace) -> None:
    root = ws.config.predictions_dir
    ids = _write(root, 30, 5, T0, seed=12)
    leases = [Lease(ws.store, ws.clock, "predlog.compaction", ttl_s=600) for _ in range(2)]
    loops = [
        CompactionLoop(root, every_s=3600, older_than=ZERO, hold=lease.acquire) for lease in leases
    ]
    [first, _] = loops[0].run_once()
    assert (first.sources, first.files) == (30, 1)
    assert loops[1].run_once() == []  # the other process does not hold the lease
    loops[0].start()
    loops[0].stop()  # a loop stops without waiting for its interval
    assert len(predlog.list_segments(root, "m")) == 1
    assert _visible_ids(root) == Counter(ids)


def test_every_model_is_compacted_and_foreign_folders_are_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    ids = _write(root, 6, 5, T0, seed=13)
    (root / "not a model").mkdir()
    results = compact(root, older_than=ZERO, keep_sources=ZERO)
    assert [(r.model, r.kind, r.sources) for r in results] == [
        ("m", "predictions", 6),
        ("m", "labels", 0),
    ]
    assert _visible_ids(root) == Counter(ids)


def test_serve_compacts_in_the_background_when_configured(tmp_path: Path, db_url: str) -> None:
    config = Config(
        home=tmp_path / "home",
        db_url_override=db_url,
        user="tester",
        compact_every_s=0.2,
        compact_older_than_s=0.0,
    )
    with Workspace(config) as ws:
        root = ws.config.predictions_dir
        ids = _write(root, 12, 5, T0, seed=14)
        with running(ws):
            deadline = time.monotonic() + 120  # a hang guard only
            while len(predlog.list_segments(root, "m")) > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert len(predlog.list_segments(root, "m")) == 1
        assert _visible_ids(root) == Counter(ids)
