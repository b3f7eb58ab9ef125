"""Realised figures of a window over cached partials: labels read once, segments read only when
they can hold a labelled row, the same figures as a run without any cache."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop import Workspace, objectstore, predlog
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data
from ownloop.monitoring import WindowReport

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
SEGMENTS = 6
ROWS = 200


@pytest.fixture
def logged(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> Workspace:
    """churn@1 with six segments of 200 rows, ten minutes each, from 08:00."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.clock = FrozenClock(T0 + timedelta(hours=2))
    ws.monitor.clock = ws.clock
    for s in range(SEGMENTS):
        X = make_churn_data(ROWS, seed=30 + s).drop(columns="churned")
        log_predictions(ws, "churn@1", X, T0 + timedelta(minutes=10 * s), step=timedelta(seconds=3))
    return ws


def _segments(ws: Workspace) -> list[Path]:
    return predlog.list_segments(ws.config.predictions_dir, "churn")


def _label(ws: Workspace, seg: Path, rows: slice, seed: int, hours: float = 2) -> list[bool]:
    """Label ``rows`` of ``seg``: the prediction with chance 0.8, else the other class.

    Returns whether each label equals its prediction (the known truth)."""
    preds = objectstore.read_table(seg, ["prediction_id", "prediction"]).slice(
        rows.start, rows.stop - rows.start
    )
    rng = np.random.default_rng(seed)
    said = preds.column("prediction").to_pylist()
    labels = [p if rng.random() < 0.8 else str(1 - int(p)) for p in said]
    n = len(labels)
    predlog.write_labels(
        ws.config.predictions_dir,
        "churn",
        pa.table(
            {
                "prediction_id": preds.column("prediction_id"),
                "label": labels,
                "label_value": [float(v) for v in labels],
                "labeled_at": [T0 + timedelta(hours=hours)] * n,
                "source": ["test"] * n,
                "weight": [None] * n,
            },
            schema=predlog.LABEL_SCHEMA,
        ),
    )
    return [a == b for a, b in zip(labels, said, strict=True)]


def _run(ws: Workspace) -> WindowReport:
    return ws.monitor.run("churn", window=timedelta(hours=2), store=False)[0]


def _as_json(rep: WindowReport) -> Any:
    return json.loads(json.dumps(asdict(rep), default=str))


def _uncached(ws: Workspace) -> WindowReport:
    shutil.rmtree(ws.monitor.cache.root)
    return _run(ws)


def test_labels_arriving_after_a_cached_run_give_the_figures_of_an_uncached_run(
    logged: Workspace,
) -> None:
    ws = logged
    first = _run(ws)
    assert first.realised == ()  # no label yet
    segs = _segments(ws)
    right = _label(ws, segs[1], slice(0, 150), seed=1)
    cached = _run(ws)
    assert ws.monitor.cache.hits == SEGMENTS  # every partial came from the cache
    acc = cached.realised_figure("accuracy")
    assert acc is not None
    assert acc.n_labelled == 150
    assert acc.value == pytest.approx(np.mean(right))
    assert _as_json(cached) == _as_json(_uncached(ws))
    # more labels: other segments, and a later label replacing one of the first ones
    right += _label(ws, segs[4], slice(50, 200), seed=2)
    right += _label(ws, segs[5], slice(0, 100), seed=3)
    again = _label(ws, segs[1], slice(0, 1), seed=4, hours=3)
    right[0] = again[0]
    _run(ws)
    cached = _run(ws)
    acc = cached.realised_figure("accuracy")
    assert acc is not None
    assert acc.n_labelled == 400
    assert acc.value == pytest.approx(np.mean(right))
    assert _as_json(cached) == _as_json(_uncached(ws))


def test_labels_of_another_window_only_give_no_labelled_rows(logged: Workspace) -> None:
    ws = logged
    segs = _segments(ws)
    _label(ws, segs[0], slice(0, 100), seed=1)
    rep = ws.monitor.run(
        "churn", window=timedelta(minutes=20), end=T0 + timedelta(minutes=60), store=False
    )[0]
    acc = rep.realised_figure("accuracy")
    assert acc is not None
    assert (acc.n_labelled, acc.value) == (0, None)
    assert _as_json(rep) == _as_json(
        ws.monitor.run(
            "churn", window=timedelta(minutes=20), end=T0 + timedelta(minutes=60), store=False
        )[0]
    )


def test_a_cached_run_reads_only_the_labelled_segments_columns(
    logged: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = logged
    segs = _segments(ws)
    _label(ws, segs[2], slice(0, 100), seed=1)
    expected = _run(ws)  # fills the cache
    reads: list[tuple[Path, tuple[str, ...] | None]] = []
    footers: list[Path] = []
    real_table, real_meta = objectstore.read_table, objectstore.read_metadata

    def read_table(path: Path, columns: Any = None) -> pa.Table:
        reads.append((path, None if columns is None else tuple(columns)))
        return real_table(path, columns)

    def read_metadata(path: Path) -> Any:
        footers.append(path)
        return real_meta(path)

    monkeypatch.setattr(objectstore, "read_table", read_table)  # spies: the real ones still run
    monkeypatch.setattr(objectstore, "read_metadata", read_metadata)
    again = _run(ws)
    assert _as_json(again) == _as_json(expected)
    logged_reads = [(p, c) for p, c in reads if p in segs]
    assert [p for p, _ in logged_reads] == [segs[2]]  # the one segment holding labelled ids
    assert all(c is not None and "in.tenure_months" not in c for _, c in logged_reads)
    assert not [p for p in footers if p in segs]  # no prediction segment's footer either


def test_a_damaged_cache_entry_is_computed_again(logged: Workspace) -> None:
    ws = logged
    expected = _run(ws)
    entries = sorted(ws.monitor.cache.root.rglob("*.partial"))
    assert len(entries) == SEGMENTS
    entries[0].write_bytes(entries[0].read_bytes()[:-8])  # cut short
    entries[1].write_bytes(b"{}")  # not an entry at all
    misses = ws.monitor.cache.misses
    again = _run(ws)
    assert ws.monitor.cache.misses == misses + 2
    assert _as_json(again) == _as_json(expected)
