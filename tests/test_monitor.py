"""Monitor runs over a real prediction log (Parquet segments) with results in the real store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ownloop import Config, InvalidInputError, Workspace, predlog
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data
from ownloop.monitoring import DriftSettings, _engine, parse_duration
from ownloop.monitoring._monitor import linear_trend
from ownloop.predlog import LABEL_SCHEMA, write_labels
from tests.conftest import env_for

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)


@pytest.fixture
def logged(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> Workspace:
    """churn@1 with two hours logged: 08:00-09:00 like the reference, 09:00-10:00 drifted."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.clock = FrozenClock(T0 + timedelta(hours=2))
    ws.monitor.clock = ws.clock
    X0 = make_churn_data(1200, seed=21).drop(columns="churned")
    X1 = make_churn_data(1200, seed=22, shift=1.0).drop(columns="churned")
    log_predictions(ws, "churn@1", X0, T0, step=timedelta(seconds=3), seed=1)
    log_predictions(ws, "churn@1", X1, T0 + timedelta(hours=1), step=timedelta(seconds=3), seed=2)
    return ws


def test_run_stores_a_report_per_window_with_results_and_an_audit_row(logged: Workspace) -> None:
    ws = logged
    quiet = ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    drifted = ws.monitor.run("churn", window=timedelta(hours=1))[0]
    assert quiet.rows == 1200
    assert quiet.drift is not None
    assert quiet.drift.dataset_drift is False
    assert drifted.drift is not None
    assert drifted.drift.dataset_drift is True
    assert "tenure_months" in drifted.drift.drifted_features
    runs = ws.monitor.runs("churn")
    assert [r.id for r in runs] == [drifted.run_id, quiet.run_id]
    assert runs[0].summary["dataset_drift"] is True
    results = ws.monitor.results("churn", run_id=drifted.run_id)
    kinds = {r.kind for r in results}
    assert kinds >= {
        "feature_drift",
        "prediction_drift",
        "dataset_drift",
        "confidence",
        "estimated_performance",
        "system",
        "missing_share",
    }
    tenure = next(r for r in results if r.kind == "feature_drift" and r.name == "tenure_months")
    assert tenure.alert is True
    assert tenure.method == "ks+effect"
    assert tenure.n == 1200
    assert tenure.threshold == 0.05
    audit = [e for e in ws.registry.audit_log(model="churn") if e.action == "monitor.run"]
    assert len(audit) == 2
    assert audit[0].after["run"] == drifted.run_id


def test_system_figures_from_the_log(logged: Workspace) -> None:
    rep = logged.monitor.run("churn", window=timedelta(hours=1), store=False)[0]
    s = rep.system
    assert s.predictions == 1200
    assert s.requests == 1200  # one row per request in this log
    assert s.errors == 0
    assert s.error_rate == 0.0
    assert s.latency_p50_s == pytest.approx(0.004, rel=0.15)  # lognormal median 4 ms
    assert s.latency_p99_s is not None
    assert s.latency_p99_s > s.latency_p50_s  # type: ignore[operator]
    assert s.cost_per_1k == pytest.approx(
        s.cpu_s / 3600 * logged.config.cpu_hour_price / 1200 * 1000
    )


def test_confidence_figures_and_trend_across_windows(logged: Workspace) -> None:
    ws = logged
    for h in range(1, 3):
        ws.monitor.run(
            "churn", window=timedelta(minutes=30), end=T0 + timedelta(hours=h, minutes=-30)
        )
        ws.monitor.run("churn", window=timedelta(minutes=30), end=T0 + timedelta(hours=h))
    last = ws.monitor.results("churn", kind="confidence")
    means = [r for r in last if r.name == "mean"]
    assert len(means) == 4
    assert all(r.threshold is not None for r in means)  # the reference mean
    trend = [r for r in last if r.name == "trend_per_hour"]
    assert trend  # from the third window on
    assert trend[-1].n == 4
    low = [r for r in last if r.name == "low_share_trend_per_hour"]
    assert low
    assert low[-1].n == 4
    assert low[-1].value is not None


def test_linear_trend_recovers_a_known_slope() -> None:
    rng = np.random.default_rng(4)
    end = T0 + timedelta(hours=24)
    hours = np.arange(-23, 1)
    falling = [
        (end + timedelta(hours=int(h)), 0.80 - 0.005 * (h + 23) + rng.normal(0, 0.002))
        for h in hours
    ]
    slope, p, n = linear_trend(falling, end)  # type: ignore[misc]
    assert n == 24
    assert slope == pytest.approx(-0.005, abs=0.0005)
    assert p is not None and p < 1e-6
    flat = [(end + timedelta(hours=int(h)), 0.8 + rng.normal(0, 0.002)) for h in hours]
    flat_slope, _, _ = linear_trend(flat, end)  # type: ignore[misc]
    assert abs(flat_slope) < 0.0005
    assert linear_trend(falling[:2], end) is None
    assert linear_trend([(end, 0.1), (end, 0.2), (end, 0.3)], end) is None


def test_long_window_reuses_segment_partials(
    logged: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = _engine.compute_partial

    def counted(batch: Any, spec: Any) -> Any:
        calls.append(batch.num_rows)
        return real(batch, spec)

    monkeypatch.setattr(_engine, "compute_partial", counted)  # a spy: the real one still runs
    ws = logged
    counts = ws.monitor.cache
    before = (counts.hits, counts.misses, counts.writes)
    first = ws.monitor.run("churn", window=timedelta(hours=3), store=False)[0]
    assert calls == [1200, 1200]  # one partial per segment, each wholly inside the window
    after = (counts.hits, counts.misses, counts.writes)
    assert [b - a for a, b in zip(before, after, strict=True)] == [0, 2, 2]
    cache = list((ws.config.home / "monitoring" / "partials" / "churn").rglob("*.partial"))
    assert len(cache) == 2
    again = ws.monitor.run("churn", window=timedelta(hours=3), store=False)[0]
    assert calls == [1200, 1200]  # the second run computed no partial: both came from the cache
    assert (counts.hits, counts.misses, counts.writes) == (after[0] + 2, after[1], after[2])
    assert first.drift is not None
    assert again.drift is not None
    assert [f.score for f in first.drift.features] == [f.score for f in again.drift.features]
    est = first.estimate("accuracy")
    assert est is not None
    assert est.value == again.estimate("accuracy").value  # type: ignore[union-attr]


def test_window_cutting_a_segment_reads_only_its_rows(logged: Workspace) -> None:
    rep = logged.monitor.run(
        "churn", window=timedelta(minutes=30), end=T0 + timedelta(minutes=30), store=False
    )[0]
    assert rep.rows == 600


def test_row_count_window_takes_the_last_rows(logged: Workspace) -> None:
    rep = logged.monitor.run("churn", rows=1500, store=False)[0]
    assert rep.rows == 1500
    assert rep.start == T0 + timedelta(
        minutes=45
    )  # 1,200 rows in the last hour, 300 before, every 3 s
    assert logged.monitor.run("churn", rows=10**6, store=False)[0].rows == 2400


def test_realised_performance_when_labels_arrive(logged: Workspace) -> None:
    ws = logged
    root = ws.config.predictions_dir
    seg = sorted(root.glob("churn/date=*/*.parquet"))[0]
    preds = pq.read_table(seg, columns=["prediction_id", "prediction"]).slice(0, 300)
    rng = np.random.default_rng(0)
    labels = [
        p if rng.random() < 0.8 else str(1 - int(p)) for p in preds.column("prediction").to_pylist()
    ]
    as_imported = [f"{v}.0" for v in labels]  # a CSV round trip turns class 1 into 1.0
    table = pa.table(
        {
            "prediction_id": preds.column("prediction_id"),
            "label": as_imported,
            "label_value": [float(v) for v in labels],
            "labeled_at": [T0 + timedelta(hours=2)] * 300,
            "source": ["test"] * 300,
            "weight": [None] * 300,
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(root, "churn", table)
    rep = ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    acc = rep.realised_figure("accuracy")
    assert acc is not None
    assert acc.n_labelled == 300
    assert acc.coverage == pytest.approx(0.25)
    assert acc.value == pytest.approx(
        np.mean(
            [a == b for a, b in zip(labels, preds.column("prediction").to_pylist(), strict=True)]
        )
    )
    assert acc.lower < acc.value < acc.upper  # type: ignore[operator]
    stored = ws.monitor.results("churn", kind="realised_performance", run_id=rep.run_id)
    assert {r.name for r in stored} == {"accuracy", "f1", "roc_auc"}


def test_empty_window_stores_a_no_data_run(logged: Workspace) -> None:
    rep = logged.monitor.run("churn", window=timedelta(hours=1), end=T0 - timedelta(days=3))[0]
    assert rep.rows == 0
    assert rep.drift is not None
    assert rep.drift.dataset_drift is None
    assert "no predictions in the window" in rep.notes
    assert logged.monitor.runs("churn")[0].status == "no_data"
    assert rep.system.error_rate is None


def test_settings_are_stored_per_model_and_audited(logged: Workspace) -> None:
    ws = logged
    ws.monitor.configure(
        "churn", DriftSettings(alpha=0.01, feature_thresholds={"tenure_months": 5.0})
    )
    assert ws.monitor.settings("churn").alpha == 0.01
    rep = ws.monitor.run("churn", window=timedelta(hours=1))[0]
    assert rep.drift is not None
    assert rep.drift.feature("tenure_months").drifted is False
    assert rep.drift.feature("tenure_months").threshold == 5.0
    assert any(e.action == "monitor.configure" for e in ws.registry.audit_log(model="churn"))


def test_bad_settings_and_durations_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="drift share"):
        DriftSettings(drift_share=0)
    with pytest.raises(InvalidInputError, match="unknown correction"):
        DriftSettings(correction="bonferonni")
    with pytest.raises(InvalidInputError, match="not understood"):
        parse_duration("soon")
    assert parse_duration("5m") == timedelta(minutes=5)


def test_monitor_without_a_model_covers_production_models(logged: Workspace) -> None:
    reports = logged.monitor.run(window=timedelta(hours=1))
    assert [(r.model, r.version) for r in reports] == [("churn", 1)]


def test_review_sample(logged: Workspace, tmp_path: Path) -> None:
    s = logged.monitor.sample("churn", 40, since=timedelta(hours=2), seed=3)
    assert s.table.num_rows == 40
    assert set(s.table.column_names) >= {
        "prediction_id",
        "weight",
        "stratum",
        "label",
        "tenure_months",
    }
    assert s.picked_low == min(20, s.low_rows)


def _cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from ownloop.cli import main; main()", *args],
        env=env_for(config),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_monitor_drift_and_sample(logged: Workspace, tmp_path: Path) -> None:
    cfg = logged.config
    out = _cli(cfg, "monitor", "churn", "--window", "1000d")
    assert out.returncode == 0, out.stderr
    assert "DATASET DRIFT" in out.stdout
    assert "estimated (CBPE" in out.stdout
    html = tmp_path / "drift.html"
    out = _cli(cfg, "drift", "churn", "--since", "1000d", "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert "<svg" in html.read_text()
    assert "tenure_months" in html.read_text()
    review = tmp_path / "review.csv"
    out = _cli(
        cfg, "sample", "churn", "--n", "25", "--out", str(review), "--since", "1000d", "--seed", "1"
    )
    assert out.returncode == 0, out.stderr
    assert len(pd.read_csv(review)) == 25
    loop = _cli(cfg, "monitor", "churn", "--rows", "500", "--every", "1s", "--runs", "2")
    assert loop.returncode == 0, loop.stderr
    assert loop.stdout.count("500 predictions") == 2
    bad = _cli(cfg, "monitor", "churn", "--window", "soon")
    assert bad.returncode == 2
    assert "not understood" in bad.stderr
    missing = _cli(cfg, "drift", "nosuch")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: model 'nosuch' does not exist")


def test_regression_model_gets_prediction_drift_and_realised_error(
    ws: Workspace, team: str, tmp_path: Path
) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = make_churn_data(3000, seed=31).drop(columns=["churned", "plan", "region"])
    reg = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(
        data.drop(columns="monthly_charges"), data["monthly_charges"]
    )
    ws.registry.register(reg, name="charges", owner=team, reference=data, target="monthly_charges")
    frame = make_churn_data(800, seed=32, shift=1.0)
    logged = log_predictions(ws, "charges@1", frame, T0, step=timedelta(seconds=1))
    labels = pa.table(
        {
            "prediction_id": logged.column("prediction_id"),
            "label": [str(v) for v in frame["monthly_charges"]],
            "label_value": frame["monthly_charges"].to_numpy(),
            "labeled_at": [T0] * 800,
            "source": ["test"] * 800,
            "weight": pa.nulls(800, pa.float64()),
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(ws.config.predictions_dir, "charges", labels)
    rep = ws.monitor.run("charges", window=timedelta(hours=1), end=T0 + timedelta(hours=1))[0]
    assert rep.confidence is None
    assert rep.estimated == ()
    assert rep.drift is not None
    pred = rep.drift.prediction[0]
    assert pred.feature == "predicted_value"
    assert pred.drifted is True
    mae = rep.realised_figure("mae")
    assert mae is not None
    assert mae.n_labelled == 800
    truth = float(
        np.mean(
            np.abs(
                logged.column("prediction_value").to_numpy() - frame["monthly_charges"].to_numpy()
            )
        )
    )
    assert mae.value == pytest.approx(truth)
    assert mae.lower < truth < mae.upper  # type: ignore[operator]


def test_bad_rows_in_the_log_give_statuses_not_crashes(logged: Workspace) -> None:
    from ownloop.predlog import new_ids, prediction_schema, write_segment

    ws = logged
    sig = ws.registry.get_version("churn@1").signature
    n = 60
    start = T0 + timedelta(hours=5)
    age = np.full(n, np.nan)
    age[:5] = np.inf
    table = pa.table(
        {
            "prediction_id": new_ids(n),
            "ts": [start + timedelta(seconds=i) for i in range(n)],
            "model": ["churn"] * n,
            "version": [1] * n,
            "arm": ["stable"] * n,
            "request_id": ["r"] * n,
            "status": ["error" if i % 3 == 0 else "ok" for i in range(n)],
            "latency_s": [0.01] * n,
            "cpu_s": [0.001] * n,
            "prediction": [None if i % 3 == 0 else "0" for i in range(n)],
            "prediction_value": [None] * n,
            "confidence": [None if i % 3 == 0 else 0.7 for i in range(n)],
            "proba": [None if i % 3 == 0 else [0.7, 0.3] for i in range(n)],
            "in.age": age,
            "in.tenure_months": np.full(n, 12.0),
            "in.monthly_charges": np.linspace(10, 100, n),
            "in.support_calls": np.ones(n),
            "in.plan": ["platinum"] * n,
            "in.region": [None] * n,
        },
        schema=prediction_schema(sig),
    )
    write_segment(ws.config.predictions_dir, "churn", table)
    rep = ws.monitor.run("churn", window=timedelta(minutes=5), end=start + timedelta(minutes=5))[0]
    # one request ("r") of 60 rows, 20 of them model errors: one failed request of one
    assert rep.system.errors == 1
    assert rep.system.error_requests == 1
    assert rep.system.error_rate == pytest.approx(1.0)
    assert rep.drift is not None
    assert rep.drift.feature("age").status == "all_missing"
    assert rep.drift.feature("age").nonfinite == 5
    assert rep.drift.feature("region").status == "all_missing"
    plan = rep.drift.feature("plan")
    assert plan.drifted is True
    assert plan.extra["unseen"] == ["platinum"]
    assert (
        rep.drift.feature("tenure_months").drifted is True
    )  # constant 12 against a spread reference
    acc = rep.estimate("accuracy")
    assert acc is not None
    assert acc.n == 40  # the scored rows only
    assert rep.confidence is not None
    assert rep.confidence.mean == pytest.approx(0.7)
    stored = ws.monitor.results("churn", kind="feature_drift", run_id=rep.run_id)
    assert {r.name: r.status for r in stored}["age"] == "all_missing"


# -- arms: stable, canary, shadow -------------------------------------------------------------


def _log_arm(ws: Workspace, frame: pd.DataFrame, start: datetime, arm: str, seed: int) -> pa.Table:
    """churn@1's rows of ``frame`` from ``start``, every 3 s, logged by ``arm``."""
    from ownloop.predlog import new_ids, write_segment

    scratch = start - timedelta(days=40)  # scored there, then moved to ``start`` under ``arm``
    table = log_predictions(ws, "churn@1", frame, scratch, step=timedelta(seconds=3), seed=seed)
    for day in ws.config.predictions_dir.glob(f"churn/*{scratch.date().isoformat()}"):
        shutil.rmtree(day)
    n = table.num_rows
    changed = {
        "prediction_id": pa.array(new_ids(n)),
        "ts": pa.array([start + timedelta(seconds=3 * i) for i in range(n)], predlog.TS),
        "arm": pa.array([arm] * n),
    }
    for name, column in changed.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), column)
    write_segment(ws.config.predictions_dir, "churn", table)
    return table


@pytest.fixture
def armed(logged: Workspace) -> Workspace:
    """The quiet first hour also has 300 canary rows (quiet) and 600 shadow rows (drifted)."""
    _log_arm(logged, make_churn_data(300, seed=31).drop(columns="churned"), T0, "canary", 31)
    shadow = make_churn_data(600, seed=32, shift=2.0).drop(columns="churned")
    _log_arm(logged, shadow, T0 + timedelta(seconds=1), "shadow", 32)
    return logged


def _first_hour(ws: Workspace, **kw: Any) -> Any:
    return ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1), **kw)[0]


def test_by_default_stable_and_canary_count_and_shadow_does_not(armed: Workspace) -> None:
    for _ in range(2):  # the second run reads the cached partials
        rep = _first_hour(armed)
        assert rep.rows == 1500
        assert rep.arms == ("stable", "canary")
        assert rep.drift is not None
        assert rep.drift.dataset_drift is False  # the drifted shadow rows are not counted
    assert armed.monitor.runs("churn")[0].summary["arms"] == ["stable", "canary"]


@pytest.mark.parametrize(
    ("arm", "rows", "drifted"),
    [("stable", 1200, False), ("canary", 300, False), ("shadow", 600, True)],
)
def test_one_arm_counts_its_rows_only(armed: Workspace, arm: str, rows: int, drifted: bool) -> None:
    _first_hour(armed)  # the default's cached partials never stand in for one arm's
    rep = _first_hour(armed, arm=arm)
    assert rep.rows == rows
    assert rep.arms == (arm,)
    assert rep.drift is not None
    assert rep.drift.dataset_drift is drifted
    assert armed.monitor.runs("churn")[0].summary["arms"] == [arm]


def test_a_row_count_window_counts_the_arm_s_rows(armed: Workspace) -> None:
    end = T0 + timedelta(hours=1)
    rep = armed.monitor.run("churn", rows=100, end=end, arm="canary", store=False)[0]
    assert rep.rows == 100
    assert rep.start == T0 + timedelta(seconds=3 * 200)  # the last 100 of 300 canary rows
    every = armed.monitor.run("churn", rows=10**6, end=end, arm="shadow", store=False)[0]
    assert every.rows == 600


def test_realised_performance_pairs_labels_with_the_arm_s_rows(armed: Workspace) -> None:
    ws = armed
    canary = predlog.read_window(
        ws.config.predictions_dir, "churn", arm="canary", columns=["prediction_id", "prediction"]
    )
    n = canary.num_rows
    table = pa.table(
        {
            "prediction_id": canary.column("prediction_id"),
            "label": canary.column("prediction"),  # every canary answer right
            "label_value": [None] * n,
            "labeled_at": [T0 + timedelta(hours=2)] * n,
            "source": ["test"] * n,
            "weight": [None] * n,
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(ws.config.predictions_dir, "churn", table)
    acc = _first_hour(ws, arm="canary").realised_figure("accuracy")
    assert acc is not None
    assert (acc.n_labelled, acc.value) == (300, 1.0)
    stable = _first_hour(ws, arm="stable").realised_figure("accuracy")
    assert stable is not None
    assert stable.n_labelled == 0  # the labels are the canary's rows
    assert _first_hour(ws).realised_figure("accuracy").n_labelled == 300  # type: ignore[union-attr]


def test_the_confidence_trend_of_one_arm_ignores_the_others_windows(armed: Workspace) -> None:
    ws = armed
    for minutes in (20, 40, 60):
        ws.monitor.run("churn", window=timedelta(minutes=20), end=T0 + timedelta(minutes=minutes))
    canary = ws.monitor.run(
        "churn", window=timedelta(minutes=20), end=T0 + timedelta(minutes=80), arm="canary"
    )[0]
    assert canary.confidence is not None
    assert canary.confidence.trend_per_hour is None  # the default arms' windows are not its own


def test_an_unknown_arm_is_refused(logged: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="arm 'blue' is not one of stable, canary, shadow"):
        logged.monitor.run("churn", arm="blue")
