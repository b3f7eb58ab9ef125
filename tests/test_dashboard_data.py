"""The dashboard's reads, against windows written through real monitor runs over a log whose
contents the test wrote (so every stored figure and histogram has a known value), on SQLite and
PostgreSQL: series, runs (filters, arms, paging), feature histories with real bin edges, gate
runs by id, rollback checks, scorecard trends, and refusals of bad input."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data
from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.monitoring import Bins, WindowReport
from ownloop.store import Store
from ownloop.store import tables as t
from tests.conftest import STORES, store_url

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
STEP = timedelta(minutes=10)  # one window: 200 rows, one every 3 s
WINDOWS = 6  # the first 3 like the reference, the last 3 shifted (drifted)
ROWS = 200
KEYS = [
    ("system", "latency_p99_s"),
    ("system", "latency_p50_s"),
    ("system", "error_rate"),
    ("system", "cost_per_1k"),
    ("estimated_performance", "accuracy"),
    ("dataset_drift", "share"),
    ("confidence", "mean"),
]


@dataclass
class History:
    ws: Workspace
    reports: list[WindowReport]  # one per window, oldest first
    frames: list[pd.DataFrame]  # the rows each window logged
    reference: pd.DataFrame


@pytest.fixture(scope="module", params=STORES)
def history(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    churn_model: object,
    churn_data: pd.DataFrame,
) -> Iterator[History]:
    folder = tmp_path_factory.mktemp("dashdata")
    with store_url(request, folder) as url:
        config = Config(home=folder / "home", db_url_override=url, user="tester")
        clock = FrozenClock(T0 - timedelta(hours=1))
        with Workspace(config, clock=clock) as ws:
            ws.registry.add_team("risk", members=["tester"])
            for _ in range(2):
                ws.registry.register(
                    churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
                )
            ws.registry.register(
                churn_model, name="quiet", owner="risk", reference=churn_data, target="churned"
            )
            ws.deploy.set_production("churn", 2, force=True, reason="set up")
            ws.deploy.set_production("churn", 1, force=True, reason="set up")
            frames = [
                make_churn_data(ROWS, seed=100 + k, shift=0.0 if k < 3 else 1.0).drop(
                    columns="churned"
                )
                for k in range(WINDOWS)
            ]
            for k, frame in enumerate(frames):
                log_predictions(ws, "churn@1", frame, T0 + k * STEP, step=timedelta(seconds=3))
            clock.current = T0 + WINDOWS * STEP + timedelta(minutes=1)
            reports = [
                ws.monitor.run("churn", window=STEP, end=T0 + (k + 1) * STEP)[0]
                for k in range(WINDOWS)
            ]
            yield History(ws, reports, frames, churn_data)


def _since(h: History) -> datetime:
    return T0 - timedelta(days=1)


# -- series -----------------------------------------------------------------------------------


def _stored(rep: WindowReport, kind: str, name: str) -> dict[str, Any]:
    (row,) = [
        r for r in rep.to_frame().to_dict("records") if (r["kind"], r["name"]) == (kind, name)
    ]
    return row


def test_series_gives_every_window_s_stored_figure_oldest_first(history: History) -> None:
    got = history.ws.monitor.series("churn", KEYS, since=_since(history))
    assert set(got) == set(KEYS)
    for key in KEYS:
        points = got[key]
        assert len(points) == WINDOWS, key
        for p, rep in zip(points, history.reports, strict=True):
            row = _stored(rep, *key)
            assert (p.window_start, p.window_end, p.version) == (rep.start, rep.end, 1)
            for field in ("value", "lower", "upper"):
                want = row[field]
                got_value = getattr(p, field)
                if want is None or (isinstance(want, float) and np.isnan(want)):
                    assert got_value is None, (key, field)
                else:
                    assert got_value == pytest.approx(want), (key, field)
    p99 = [p.value for p in got[("system", "latency_p99_s")]]
    assert p99 == pytest.approx([r.system.latency_p99_s for r in history.reports])
    accuracy = got[("estimated_performance", "accuracy")]
    assert all(p.lower is not None and p.upper is not None for p in accuracy)
    assert all(p.lower <= p.value <= p.upper for p in accuracy)  # type: ignore[operator]
    # the known truth: the last three windows were shifted, the first three were not
    share = [p.value for p in got[("dataset_drift", "share")]]
    assert max(share[:3]) < min(share[3:])  # type: ignore[type-var]


def test_series_windows_versions_and_missing_keys(history: History) -> None:
    ws = history.ws
    cut = T0 + 3 * STEP
    later = ws.monitor.series("churn", KEYS[:1], since=cut)[KEYS[0]]
    assert [p.window_end for p in later] == [r.end for r in history.reports[2:]]
    between = ws.monitor.series("churn", KEYS[:1], since=cut, until=cut + STEP)[KEYS[0]]
    assert [p.window_end for p in between] == [cut, cut + STEP]
    assert ws.monitor.series("churn", KEYS[:1], since=_since(history), version=2) == {KEYS[0]: []}
    none = ws.monitor.series(
        "churn", [("system", "nothing_like_this"), ("made_up", "latency_p99_s")], since=T0
    )
    assert none == {("system", "nothing_like_this"): [], ("made_up", "latency_p99_s"): []}
    assert ws.monitor.series("quiet", KEYS, since=_since(history)) == {k: [] for k in KEYS}
    assert ws.monitor.series("churn", [], since=T0) == {}


# -- feature histories and their bins ------------------------------------------------------------


def _shares(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Shares per bin [a, b) (the last bin closed), as the monitor counts them."""
    idx = np.searchsorted(np.asarray(edges[1:-1]), values, side="right")
    return np.bincount(idx, minlength=len(edges) - 1) / len(values)


def test_numeric_bins_have_real_ascending_edges_and_the_logged_shares(history: History) -> None:
    windows = history.ws.monitor.feature_history("churn", "monthly_charges", since=_since(history))
    assert [w.window_end for w in windows] == [r.end for r in history.reports]
    ref = history.reference["monthly_charges"].to_numpy(dtype=float)
    for w, frame in zip(windows, history.frames, strict=True):
        assert (w.kind, w.name, w.status, w.version) == (
            "feature_drift",
            "monthly_charges",
            "ok",
            1,
        )
        b = w.bins
        assert b is not None and b.kind == "numeric"
        edges = np.asarray(b.edges)
        assert np.isfinite(edges).all() and (np.diff(edges) > 0).all()
        assert len(b.edges) == len(b.labels) + 1 == len(b.reference) + 1 == len(b.current) + 1
        assert 2 <= len(b.labels) <= 30
        cur = frame["monthly_charges"].to_numpy(dtype=float)
        # the outer edges close the reference's range, widened to the window's
        assert edges[0] == pytest.approx(min(ref.min(), cur.min()))
        assert edges[-1] == pytest.approx(max(ref.max(), cur.max()))
        assert sum(b.reference) == pytest.approx(1, abs=1e-3)
        assert sum(b.current) == pytest.approx(1, abs=1e-3)
        assert b.current == pytest.approx(_shares(cur, b.edges).tolist(), abs=1e-4)
        assert b.reference == pytest.approx(_shares(ref, b.edges).tolist(), abs=1e-4)
    # quantile bins: the reference's shares are about equal; shifted windows pile up on the right
    first, last = windows[0].bins, windows[-1].bins
    assert first is not None and last is not None
    assert max(first.reference) < 2.5 / len(first.reference)
    half = len(last.current) // 2
    assert sum(last.current[half:]) > 0.7 > sum(first.current[half:])
    assert [w.alert for w in windows] == [False, False, False, True, True, True]


def test_categorical_bins_name_the_categories(history: History) -> None:
    windows = history.ws.monitor.feature_history("churn", "plan", since=_since(history))
    assert len(windows) == WINDOWS
    for w, frame in zip(windows, history.frames, strict=True):
        b = w.bins
        assert b is not None and b.kind == "categorical" and b.edges == ()
        counts = frame["plan"].value_counts(normalize=True)
        for label, share in zip(b.labels, b.current, strict=True):
            assert share == pytest.approx(float(counts.get(label, 0.0)), abs=1e-4), label
        assert sum(b.current) == pytest.approx(1, abs=1e-3)


def test_prediction_drift_history_and_stored_results_carry_bins(history: History) -> None:
    ws = history.ws
    outputs = ws.monitor.feature_history(
        "churn", "predicted_class", since=_since(history), kind="prediction_drift"
    )
    assert len(outputs) == WINDOWS and all(w.kind == "prediction_drift" for w in outputs)
    assert all(w.bins is not None for w in outputs)
    rows = ws.monitor.results("churn", kind="feature_drift", run_id=history.reports[0].run_id)
    assert rows and all(isinstance(r.bins, Bins) for r in rows if r.status == "ok")
    (_, latest), *_ = ws.monitor.latest_results("churn")
    assert {r.name for r in latest if r.bins is not None} >= {"monthly_charges", "plan"}
    assert ws.monitor.feature_history("churn", "no_such_feature", since=T0) == []
    assert ws.monitor.feature_history("quiet", "plan", since=T0) == []


# -- runs --------------------------------------------------------------------------------------


def test_runs_newest_first_with_filters_and_pages(history: History) -> None:
    ws = history.ws
    ids = [r.run_id for r in history.reports]
    every = ws.monitor.runs("churn")
    assert [r.id for r in every] == ids[::-1]
    assert [r.id for r in ws.monitor.runs()] == ids[::-1]  # every model
    assert [r.id for r in ws.monitor.runs("churn", limit=2, offset=1)] == ids[::-1][1:3]
    assert [r.id for r in ws.monitor.runs("churn", since=T0 + 5 * STEP)] == ids[::-1][:2]
    assert [r.id for r in ws.monitor.runs("churn", until=T0 + 2 * STEP)] == ids[1::-1]
    assert ws.monitor.runs("churn", version=2) == []
    assert [r.id for r in ws.monitor.runs("churn", version=1, arm="default")] == ids[::-1]
    assert ws.monitor.runs("churn", arm="canary") == []
    assert [r.id for r in ws.monitor.runs("churn", status="ok")] == ids[::-1]
    assert ws.monitor.runs("churn", status="no_data") == []
    assert ws.monitor.runs("quiet") == []
    run = every[0]
    assert (run.window_start, run.window_end, run.rows) == (T0 + 5 * STEP, T0 + 6 * STEP, ROWS)


def test_a_single_arm_window_stays_out_of_default_series(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    log_predictions(
        ws,
        "churn@1",
        make_churn_data(100, seed=3).drop(columns="churned"),
        T0,
        step=timedelta(seconds=3),
    )
    end = T0 + STEP
    default = ws.monitor.run("churn", window=STEP, end=end)[0]
    canary = ws.monitor.run("churn", window=STEP, end=end, arm="canary")[0]  # no canary rows
    key = ("system", "predictions")
    assert [p.value for p in ws.monitor.series("churn", [key], since=T0)[key]] == [100]
    assert [p.value for p in ws.monitor.series("churn", [key], since=T0, arm="canary")[key]] == [0]
    assert [r.id for r in ws.monitor.runs("churn", arm="canary")] == [canary.run_id]
    assert [r.id for r in ws.monitor.runs("churn", arm="default")] == [default.run_id]
    assert {r.id for r in ws.monitor.runs("churn")} == {canary.run_id, default.run_id}
    assert ws.monitor.runs("churn", arm="canary", status="no_data")[0].id == canary.run_id
    # a run stored before arms were recorded (NULL) counted the default arms
    with ws.store.write() as conn:
        conn.execute(t.monitor_runs.update().values(arms=None))
    assert {r.id for r in ws.monitor.runs("churn", arm="default")} == {
        canary.run_id,
        default.run_id,
    }
    (latest, _), *_ = ws.monitor.latest_results("churn")
    assert latest.id == canary.run_id  # the newest default-arm run now: both read as default


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda m: m.series("churn", KEYS, since=datetime(2026, 5, 4)), "timezone-aware"),
        (lambda m: m.series("churn", KEYS, since=T0, until=T0 - STEP), "after until"),
        (lambda m: m.series("churn", ["system"], since=T0), "(kind, name) pair"),
        (lambda m: m.series("churn", "system", since=T0), "list of (kind, name)"),
        (lambda m: m.series("churn", [("system", "")], since=T0), "(kind, name) pair"),
        (lambda m: m.series("churn", KEYS, since=T0, arm="blue"), "arm 'blue'"),
        (lambda m: m.series("churn", KEYS, since=T0, version=0), "version 0"),
        (lambda m: m.series("bad name!", KEYS, since=T0), "model"),
        (lambda m: m.runs("churn", limit=0), "limit 0"),
        (lambda m: m.runs("churn", limit=5000), "limit 5000"),
        (lambda m: m.runs("churn", offset=-1), "offset -1"),
        (lambda m: m.runs("churn", status="done"), "status 'done'"),
        (lambda m: m.runs("churn", arm="blue"), "arm 'blue'"),
        (lambda m: m.runs("churn", since=T0, until=T0 - STEP), "after until"),
        (lambda m: m.feature_history("churn", "plan", since=T0, kind="drift"), "drift kind"),
        (lambda m: m.feature_history("churn", "", since=T0), "feature"),
        (lambda m: m.feature_history("churn", "plan", since=None), "since is required"),
    ],
)
def test_bad_reads_are_refused_with_what_to_do(history: History, call: Any, says: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        call(history.ws.monitor)
    assert says in err.value.message


# -- gate runs, rollback checks ------------------------------------------------------------------


def test_a_gate_run_by_id(history: History, churn_data: pd.DataFrame) -> None:
    ws = history.ws
    ws.evaluations.evaluate("churn@2", data=churn_data.iloc[:300], label="churned")
    latest = ws.evaluations.latest("churn@2")
    assert latest is not None
    assert ws.evaluations.get(latest.id) == latest
    with pytest.raises(NotFoundError, match=r"gate run 987654 does not exist"):
        ws.evaluations.get(987654)
    for bad in (0, -3, "5", True):
        with pytest.raises(InvalidInputError, match="evaluation id"):
            ws.evaluations.get(bad)  # type: ignore[arg-type]


def test_rollback_checks_newest_first(history: History) -> None:
    ws = history.ws
    assert ws.deploy.rollback_checks("quiet") == []
    first = ws.deploy.rollback("churn", to=2, check_only=True)
    second = ws.deploy.rollback("churn", to=2, check_only=True)
    found = ws.deploy.rollback_checks("churn")
    assert [c.id for c in found[:2]] == [second.check_id, first.check_id]
    c = found[0]
    assert (c.model, c.current_version, c.target_version, c.acted) == ("churn", 1, 2, False)
    assert c.verdict == str(second.verdict) and c.reasons == second.reasons
    assert c.verdict in c.summary and "checked only" in c.summary
    assert c.at == second.at and c.by == "tester"
    assert len(ws.deploy.rollback_checks("churn", limit=1)) == 1
    with pytest.raises(NotFoundError):
        ws.deploy.rollback_checks("nope")
    with pytest.raises(InvalidInputError, match="limit 0"):
        ws.deploy.rollback_checks("churn", limit=0)


# -- the scorecard over time -------------------------------------------------------------------


def test_scorecard_trend_splits_the_history_into_periods(
    config: Config, churn_model: object, churn_data: pd.DataFrame
) -> None:
    day = timedelta(days=1)
    clock = FrozenClock(T0)
    with Workspace(config, clock=clock) as ws:
        ws.registry.add_team("risk", members=["tester"])
        for _ in range(3):
            ws.registry.register(
                churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
            )
        for version, at in ((1, 1), (2, 3), (3, 4)):  # promotions on days 1, 3 and 4
            clock.current = T0 + at * day
            ws.deploy.set_production("churn", version, force=True, reason="scripted")
        clock.current = T0 + 7 * day
        trend = ws.scorecard.trend(model="churn", periods=3, period=2 * day, until=T0 + 6 * day)
        assert [(c.start, c.until) for c in trend] == [
            (T0, T0 + 2 * day),
            (T0 + 2 * day, T0 + 4 * day),
            (T0 + 4 * day, T0 + 6 * day),
        ]
        assert [c.teams[0].key.deployment_frequency.count for c in trend] == [1, 2, 0]
        for c in trend:  # each period is the card of that period
            alone = ws.scorecard.card(model="churn", since=2 * day, until=c.until)
            assert c.teams == alone.teams and c.models == alone.models
        now = ws.scorecard.trend(model="churn", periods=1, period=7 * day)
        assert now[0].until == T0 + 7 * day
        assert now[0].teams[0].key.deployment_frequency.count == 3
        for bad in ({"periods": 0}, {"period": timedelta(0)}, {"until": datetime(2026, 5, 4)}):
            with pytest.raises(InvalidInputError):
                ws.scorecard.trend(model="churn", **bad)  # type: ignore[arg-type]


# -- the arms column on runs stored before it existed -------------------------------------------


@pytest.mark.empty_store
def test_migration_9_reads_each_older_run_s_arms_from_its_summary(db_url: str) -> None:
    store = Store(db_url, check_schema=False)
    try:
        store.upgrade(8)
        old = sa.table(
            "monitor_runs",
            *(sa.column(c) for c in ("model", "window_start", "window_end", "rows", "status")),
            sa.column("summary", sa.JSON),
            *(sa.column(c) for c in ("started_at", "finished_at", "run_by")),
        )
        with store.write() as conn:
            for summary in ({"arms": ["canary"]}, {"arms": ["stable", "canary"]}, {}):
                conn.execute(
                    old.insert().values(
                        model="churn",
                        window_start=T0,
                        window_end=T0 + STEP,
                        rows=1,
                        status="ok",
                        summary=summary,
                        started_at=T0,
                        finished_at=T0,
                        run_by="tester",
                    )
                )
        store.upgrade()
        with store.read() as conn:
            arms = conn.execute(
                sa.select(t.monitor_runs.c.arms).order_by(t.monitor_runs.c.id)
            ).scalars()
            assert list(arms) == ["canary", "stable,canary", None]
    finally:
        store.close()


def test_bins_from_other_shapes_read_as_none() -> None:
    assert Bins.from_stored(None) is None
    assert Bins.from_stored({"labels": ["a"], "reference": [1.0], "current": [1.0]}) is None
    assert Bins.from_stored("x") is None
    b = Bins("numeric", ("< 1", ">= 1"), (0.0, 1.0, 2.0), (0.5, 0.5), (0.25, 0.75))
    assert Bins.from_stored(b.to_dict()) == b


def test_numeric_bins_fold_bins_of_no_width_into_a_neighbour() -> None:
    from ownloop.monitoring._drift import numeric_bins

    cuts = np.array([1.0, 2.0, 3.0])
    low = numeric_bins(cuts, np.array([0, 5, 5, 10]), np.array([0, 2, 3, 5]), 1.0, 4.0)
    assert low["edges"] == [1.0, 2.0, 3.0, 4.0]
    assert low["reference"] == [0.25, 0.25, 0.5] and low["current"] == [0.2, 0.3, 0.5]
    assert len(low["labels"]) == 3
    high = numeric_bins(cuts, np.array([4, 4, 2, 0]), np.array([1, 1, 1, 1]), 0.0, 3.0)
    assert high["edges"] == [0.0, 1.0, 2.0, 3.0]
    assert high["reference"] == [0.4, 0.4, 0.2] and high["current"] == [0.25, 0.25, 0.5]
    wide = numeric_bins(cuts, np.ones(4), np.ones(4), -5.0, 9.0)  # the window went beyond
    assert wide["edges"] == [-5.0, 1.0, 2.0, 3.0, 9.0]
    assert Bins.from_stored(wide) is not None
