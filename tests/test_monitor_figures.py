"""Monitor figures an owner reads: error rate, trend, row windows, bad segments (real log, real store)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ownloop import Workspace
from ownloop.predlog import new_ids, prediction_schema, write_segment
from tests.test_monitor import T0, logged

__all__ = ["logged"]  # churn@1: 1,200 rows 08:00-09:00 like the reference, 1,200 drifted after

HOUR2 = T0 + timedelta(hours=2)


def _rows(ws: Workspace, n: int, at: datetime | list[datetime], **columns: Any) -> pa.Table:
    """``n`` log rows of churn@1 at ``at``; every column not given is null."""
    schema = prediction_schema(ws.registry.get_version("churn@1").signature)
    stamps = at if isinstance(at, list) else [at] * n
    data: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in schema}
    data.update(
        prediction_id=pa.array(new_ids(n)),
        ts=pa.array(stamps, schema.field("ts").type),
        model=pa.array(["churn"] * n),
        version=pa.array([1] * n, pa.int32()),
        arm=pa.array(["stable"] * n),
    )
    for name, values in columns.items():
        data[name] = pa.array(values, schema.field(name).type)
    return pa.table(data, schema=schema)


def _hour(ws: Workspace) -> Any:
    return ws.monitor.run("churn", window=timedelta(hours=1), end=HOUR2, store=False)[0]


def test_refused_requests_count_in_the_error_rate_and_nowhere_else(logged: Workspace) -> None:
    ws = logged
    before = _hour(ws)
    at = HOUR2 - timedelta(minutes=10)
    refused = _rows(
        ws,
        6,
        at,
        request_id=[f"bad-{i}" for i in range(6)],
        status=["refused"] * 6,
        latency_s=[0.001] * 6,
    )
    broken = _rows(ws, 3, at, request_id=["boom"] * 3, status=["error"] * 3, latency_s=[0.01] * 3)
    write_segment(ws.config.predictions_dir, "churn", pa.concat_tables([refused, broken]))
    after = _hour(ws)
    s = after.system
    assert s.requests == 1200 + 6 + 1  # every answered request, each counted once
    assert (s.refused_requests, s.error_requests, s.errors) == (6, 1, 7)
    assert s.error_rate == pytest.approx(7 / 1207)
    assert "refused inputs (400) and model errors" in s.error_rate_includes
    assert s.predictions == 1200 + 3  # refused requests never reached the model
    assert before.drift is not None and after.drift is not None
    refused_only = [f for f in after.drift.features if f.feature != "tenure_months"]
    assert [f.missing_share for f in before.drift.features] == pytest.approx(
        [f.missing_share for f in after.drift.features], abs=3 / 1200
    )
    assert all(f.missing_drifted is not True for f in refused_only)
    assert after.confidence is not None and before.confidence is not None
    assert after.confidence.mean == pytest.approx(before.confidence.mean)
    assert after.confidence.n == before.confidence.n
    assert any("refused request" in n for n in after.notes)


def test_no_confidence_trend_over_windows_seconds_apart(logged: Workspace) -> None:
    ws = logged
    for seconds in (3, 2, 1, 0):
        rep = ws.monitor.run(
            "churn", window=timedelta(minutes=10), end=HOUR2 - timedelta(seconds=seconds)
        )[0]
    c = rep.confidence
    assert c is not None
    assert c.trend_per_hour is None
    assert c.low_share_trend_per_hour is None
    assert c.trend_note is not None
    assert "at least 3 windows spanning at least 1 h" in c.trend_note
    assert "4 spanning 3 s" in c.trend_note
    stored = ws.monitor.results("churn", kind="confidence", run_id=rep.run_id)
    assert not [r for r in stored if r.name == "trend_per_hour"]
    assert {r.name: r.detail for r in stored}["mean"] == c.trend_note


def test_a_trend_over_an_hour_of_windows_is_per_hour(logged: Workspace) -> None:
    ws = logged
    for minutes in (90, 60, 30, 0):
        rep = ws.monitor.run(
            "churn", window=timedelta(minutes=30), end=HOUR2 - timedelta(minutes=minutes)
        )[0]
    c = rep.confidence
    assert c is not None
    assert c.trend_per_hour is not None
    assert c.trend_windows == 4
    assert c.trend_span_s == pytest.approx(90 * 60)


def test_a_row_window_holds_exactly_the_rows_asked(logged: Workspace) -> None:
    ws = logged
    batches = [HOUR2 + timedelta(minutes=m) for m in (1, 2, 3, 4)]
    stamps = [b for b in batches for _ in range(10)]  # four batch requests of ten rows each
    table = _rows(ws, 40, stamps, status=["ok"] * 40, request_id=[str(b) for b in stamps])
    write_segment(ws.config.predictions_dir, "churn", table)
    end = HOUR2 + timedelta(minutes=5)
    for rows in (15, 25, 40, 41, 1500):
        rep = ws.monitor.run("churn", rows=rows, end=end, store=False)[0]
        assert rep.rows == rows
    start, first_id = ws.monitor.row_window("churn", 15, end)
    assert start == batches[2]
    kept = sorted(
        i for i, t in zip(table["prediction_id"].to_pylist(), stamps, strict=True) if t == start
    )[5:]
    assert first_id == kept[0]


def test_bad_segments_are_named_and_the_rest_is_monitored(logged: Workspace) -> None:
    ws = logged
    day = ws.config.predictions_dir / "churn" / f"date={T0.date().isoformat()}"
    (day / "0000000000000000-broken.parquet").write_bytes(b"PAR1 not parquet at all")
    at = [HOUR2 - timedelta(minutes=5)] * 3
    text = _rows(ws, 3, at, status=["ok"] * 3).drop_columns(["in.tenure_months"])
    text = text.append_column("in.tenure_months", pa.array(["long", "short", "n/a"]))
    pq.write_table(text, day / "0000000000000001-text.parquet")
    odd = _rows(
        ws,
        4,
        at + at[:1],
        status=["ok"] * 4,
        proba=[[0.2, 0.8], [0.1, 0.2, 0.7], [1.5, -0.5], None],
        prediction=["1"] * 4,
    )
    write_segment(ws.config.predictions_dir, "churn", odd)
    rep = _hour(ws)
    assert sorted(Path(s.split(":")[0]).name for s in rep.skipped_segments) == [
        "0000000000000000-broken.parquet",
        "0000000000000001-text.parquet",
    ]
    assert any("left out" in n for n in rep.notes)
    assert rep.rows == 1204  # the odd probabilities are rows too, just not scored
    assert rep.confidence is not None
    assert rep.confidence.n == 1201  # only [0.2, 0.8] of the odd rows is a probability
    sample = ws.monitor.sample("churn", 10, since=timedelta(hours=3), end=HOUR2, seed=1)
    assert sample.table.num_rows == 10


def test_a_window_report_is_a_frame(logged: Workspace) -> None:
    rep = _hour(logged)
    frame = rep.to_frame()
    assert {"model", "version", "kind", "name", "value", "window_end"} <= set(frame.columns)
    row = frame[(frame.kind == "system") & (frame.name == "error_rate")].iloc[0]
    assert row.value == rep.system.error_rate
    drift = frame[frame.kind == "feature_drift"]
    assert rep.drift is not None
    assert len(drift) == len(rep.drift.features)
    assert np.isfinite(drift.value.astype(float)).all()
    assert len(rep.drift.to_frame()) == len(rep.drift.features) + len(rep.drift.prediction)


def _label_first_hour(ws: Workspace, n: int, *, flip: float | None = 0.0, seed: int = 0) -> None:
    """Label ``n`` rows of the first hour: their true outcomes (the fixture's simulated
    customers), a share ``flip`` of them flipped (the score-outcome relation moved); with
    ``flip=None``, outcomes drawn from the probabilities the estimate itself uses (the
    reference's calibration holds exactly)."""
    from ownloop.demo import make_churn_data
    from ownloop.monitoring._partial import proba_matrix
    from ownloop.monitoring._performance import calibrate, calibration_from_profile
    from ownloop.predlog import LABEL_SCHEMA, write_labels

    root = ws.config.predictions_dir
    seg = sorted(root.glob("churn/date=*/*.parquet"))[0]
    cols = ["prediction_id", "in.tenure_months", "proba"]
    logged = pq.read_table(seg, columns=cols).slice(0, n)
    truth = make_churn_data(1200, seed=21).head(n)  # the rows the fixture logged first, in order
    assert logged.column("in.tenure_months").to_pylist() == truth["tenure_months"].tolist()
    rng = np.random.default_rng(seed)
    if flip is None:
        profile = ws.registry.load_profile("churn@1")
        p = calibrate(
            proba_matrix(logged.column("proba"), 2), calibration_from_profile(profile, None)
        )
        y = (rng.random(n) < p[:, 1]).astype(int)
    else:
        y = truth["churned"].to_numpy().astype(int)
        y = np.where(rng.random(n) < flip, 1 - y, y)
    table = pa.table(
        {
            "prediction_id": logged.column("prediction_id"),
            "label": [str(v) for v in y],
            "label_value": y.astype(float),
            "labeled_at": [T0 + timedelta(hours=2)] * n,
            "source": ["test"] * n,
            "weight": [None] * n,
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(root, "churn", table)


def test_headline_switches_to_realised_when_labels_contradict_the_estimate(
    logged: Workspace,
) -> None:
    ws = logged
    _label_first_hour(ws, 400, flip=0.3, seed=3)
    rep = ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    est, real = rep.estimate("accuracy"), rep.realised_figure("accuracy")
    assert est is not None and real is not None and est.value is not None
    assert real.value is not None and real.value < est.value - 0.15
    h = rep.headline
    assert h is not None and h.source == "realised" and h.contradicted
    assert h.value == real.value
    assert (
        f"estimated accuracy {est.value:.2f} disagrees with {real.value:.2f} realised on 400 "
        in (h.reason)
    )
    facts = ws.monitor.runs("churn")[0].summary
    assert facts["accuracy_source"] == "realised"
    assert facts["accuracy"] == pytest.approx(real.value)
    assert "showing realised" in facts["accuracy_reason"]
    stored = ws.monitor.results("churn", kind="headline", run_id=rep.run_id)
    assert [(r.name, r.status, r.alert) for r in stored] == [("accuracy", "realised", True)]
    assert stored[0].detail == h.reason


def test_headline_stays_estimated_when_labels_agree(logged: Workspace) -> None:
    ws = logged
    _label_first_hour(ws, 400, flip=None, seed=4)
    rep = ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    h = rep.headline
    est = rep.estimate("accuracy")
    assert h is not None and est is not None
    assert h.source == "estimated" and not h.contradicted, h.reason
    assert h.value == est.value
    assert "agrees with" in h.reason and "400 labelled rows" in h.reason
    assert est.calibration_sd is not None  # the profile holds the calibration's bootstrap
    assert ws.monitor.runs("churn")[0].summary["accuracy_source"] == "estimated"


def test_out_of_range_logged_probabilities_are_named_in_the_notes(logged: Workspace) -> None:
    ws = logged
    at = HOUR2 - timedelta(minutes=5)
    bad = _rows(
        ws,
        4,
        at,
        status=["ok"] * 4,
        prediction=["1"] * 4,
        proba=[[-3.0, 4.0]] * 4,
        confidence=[4.0] * 4,
    )
    write_segment(ws.config.predictions_dir, "churn", bad)
    rep = _hour(ws)
    assert any("4 prediction(s) logged probabilities outside [0, 1]" in n for n in rep.notes)


def test_calibration_on_the_training_set_is_caught_once_labels_arrive(logged: Workspace) -> None:
    """The fixture's reference is the model's own training set, so the calibration fitted on it
    is optimistic; the true outcomes of 400 rows show it and the headline turns realised."""
    ws = logged
    _label_first_hour(ws, 400)
    rep = ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    h, est = rep.headline, rep.estimate("accuracy")
    assert h is not None and est is not None and est.value is not None and h.value is not None
    assert h.source == "realised" and h.value < est.value
