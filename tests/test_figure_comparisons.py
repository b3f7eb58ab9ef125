"""Every stored monitor figure says what it is compared with, and its verdict agrees (real log,
real store, simulated drift of known truth: 08:00-09:00 like the reference, 09:00-10:00 shifted)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ownloop import InvalidInputError, Workspace
from ownloop.demo import log_predictions, make_churn_data
from ownloop.monitoring import DriftSettings
from ownloop.monitoring._report import StoredResult
from tests.test_monitor import T0, logged
from tests.test_monitor_figures import _label_first_hour

__all__ = ["logged"]

HOUR = timedelta(hours=1)
DRIFT_KINDS = ("feature_drift", "prediction_drift")


def _run(ws: Workspace, end_hours: int = 2) -> tuple[int, list[StoredResult], float]:
    rep = ws.monitor.run("churn", window=HOUR, end=T0 + timedelta(hours=end_hours))[0]
    assert rep.run_id is not None
    alpha = ws.monitor.runs("churn")[0].summary["drift_alpha"]
    return rep.run_id, ws.monitor.results("churn", run_id=rep.run_id), float(alpha)


def _check_consistent(rows: list[StoredResult], alpha: float) -> int:
    """Assert each row's verdict follows from its comparison, as docs/alerts.md states; returns
    how many rows carried a verdict."""
    judged = 0
    for r in rows:
        where = f"{r.kind}/{r.name} ({r.method})"
        assert r.compare in ("above", "below", "test", None), where
        if r.compare is None:
            assert r.bound is None, where
            if r.kind in (*DRIFT_KINDS, "tail_share", "missing_share"):
                assert r.alert is None, where
            continue
        if r.alert is None or r.bound is None:
            continue
        judged += 1
        assert r.value is not None, where
        if r.compare == "test":
            assert r.p_value is not None and r.bound == alpha, where
            significant = r.p_value < r.bound
            if r.kind == "missing_share":
                assert r.reference is not None, where
                assert r.alert == (significant and abs(r.value - r.reference) >= 0.05), where
            elif r.method in ("ks", "chi2"):
                assert r.alert == significant, where
            else:  # tails and identifiers also need a material move
                assert significant or not r.alert, where
        elif r.kind in DRIFT_KINDS:
            assert r.compare == "above", where
            if r.method == "share_off_constant":
                assert r.alert == (r.value > r.bound), where
            else:
                assert r.p_value is not None, where
                assert r.alert == (r.value >= r.bound and r.p_value < alpha), where
        elif r.kind == "dataset_drift":
            assert r.compare == "above", where
            assert r.alert == (r.value >= r.bound), where
    return judged


def _verdict_share(rows: list[StoredResult]) -> StoredResult:
    """The dataset verdict's row: the importance-weighted share when there is one."""
    shares = {r.name: r for r in rows if r.kind == "dataset_drift"}
    verdict = shares.get("weighted_share", shares["share"])
    if "weighted_share" in shares:
        assert shares["share"].alert is None  # the count share is shown, not the verdict
    return verdict


def test_every_drifted_window_figure_agrees_with_its_comparison(logged: Workspace) -> None:
    ws = logged
    _, quiet, alpha = _run(ws, 1)
    _, drifted, _ = _run(ws, 2)
    assert _check_consistent(quiet, alpha) > 10
    assert _check_consistent(drifted, alpha) > 10
    tenure = next(r for r in drifted if r.kind == "feature_drift" and r.name == "tenure_months")
    assert (tenure.method, tenure.compare, tenure.alert) == ("ks+effect", "above", True)
    assert tenure.bound == DriftSettings().min_effect
    share = _verdict_share(drifted)
    assert (share.compare, share.bound, share.alert) == ("above", 0.5, True)
    assert _verdict_share(quiet).alert is False
    for r in drifted:
        if r.kind == "system" or (r.kind == "dataset_drift" and r.name == "effective_rows"):
            assert (r.compare, r.bound, r.reference) == (None, None, None)


def test_bare_tests_are_held_to_alpha_and_distances_to_their_threshold(
    logged: Workspace,
) -> None:
    ws = logged
    ws.monitor.configure("churn", DriftSettings(numeric_method="ks", categorical_method="chi2"))
    _, tests, alpha = _run(ws)
    drift = [r for r in tests if r.kind in DRIFT_KINDS and r.compare is not None]
    assert drift and all(r.compare == "test" and r.bound == alpha for r in drift)
    assert any(r.alert for r in drift) and not all(r.alert for r in drift)
    assert _check_consistent(tests, alpha) > 0
    ws.monitor.configure(
        "churn",
        DriftSettings(numeric_method="wasserstein", categorical_method="jensenshannon"),
    )
    _, dist, alpha = _run(ws)
    drift = [r for r in dist if r.kind == "feature_drift" and r.compare is not None]
    assert {r.method for r in drift} == {"wasserstein", "jensenshannon"}
    assert all(r.compare == "above" and r.bound == 0.1 for r in drift)
    assert any(r.alert for r in drift)
    assert _check_consistent(dist, alpha) > 0


def test_dataset_drift_share_at_its_threshold_is_drift(logged: Workspace) -> None:
    ws = logged
    _, first, _ = _run(ws)
    share = _verdict_share(first)
    assert share.value is not None and 0 < share.value < 1
    ws.monitor.configure("churn", DriftSettings(drift_share=share.value))
    _, again, _ = _run(ws)
    same = _verdict_share(again)
    assert same.value == same.bound == pytest.approx(share.value)
    assert same.alert is True  # the verdict is value >= bound


def test_a_missing_share_that_jumps_is_a_test_against_alpha(logged: Workspace) -> None:
    ws = logged
    X = make_churn_data(600, seed=31).drop(columns="churned")
    X["monthly_charges"] = None
    start = T0 + timedelta(hours=2)
    log_predictions(ws, "churn@1", X, start, step=timedelta(seconds=3), seed=5)
    _, rows, alpha = _run(ws, 3)
    miss = next(r for r in rows if r.kind == "missing_share" and r.name == "monthly_charges")
    assert miss.value == pytest.approx(1.0)
    assert (miss.compare, miss.bound, miss.alert) == ("test", alpha, True)
    assert miss.p_value is not None and miss.p_value < alpha
    assert miss.reference is not None and miss.reference < 0.1
    calm = [r for r in rows if r.kind == "missing_share" and r.name != "monthly_charges"]
    assert calm and all(r.alert is False for r in calm)
    assert _check_consistent(rows, alpha) > 0


def test_confidence_and_performance_carry_the_reference_figure(logged: Workspace) -> None:
    ws = logged
    _label_first_hour(ws, 400, flip=0.0, seed=3)
    rep = ws.monitor.run("churn", window=HOUR, end=T0 + HOUR)[0]
    rows = ws.monitor.results("churn", run_id=rep.run_id)
    by = {(r.kind, r.name): r for r in rows}
    conf = rep.confidence
    assert conf is not None
    mean, low = by["confidence", "mean"], by["confidence", "low_share"]
    assert (mean.compare, mean.reference, mean.bound) == ("below", conf.reference_mean, None)
    assert (low.compare, low.reference, low.bound) == ("above", conf.reference_low_share, None)
    ref_acc = rep.reference_accuracy
    assert ref_acc is not None
    for kind in ("estimated_performance", "realised_performance", "headline"):
        acc = by[kind, "accuracy"]
        assert (acc.compare, acc.reference, acc.bound) == ("below", ref_acc, None), kind
        assert acc.lower is not None and acc.upper is not None
        assert acc.lower <= acc.value <= acc.upper  # type: ignore[operator]
    f1 = by.get(("estimated_performance", "f1"))
    assert f1 is not None and f1.compare == "below" and f1.reference is None


def test_latest_results_group_the_last_windows_by_run(logged: Workspace) -> None:
    ws = logged
    ws.monitor.run("churn", window=HOUR, end=T0 + HOUR)
    ws.monitor.run("churn", window=HOUR, end=T0 + 2 * HOUR)
    ws.monitor.run("churn", window=HOUR, end=T0 + 2 * HOUR, arm="shadow")
    latest = ws.monitor.latest_results("churn", runs=2)
    assert [run.window_end for run, _ in latest] == [T0 + 2 * HOUR, T0 + HOUR]
    for run, figures in latest:
        assert run.version == 1 and run.summary["arms"] == ["stable", "canary"]
        assert figures and {f.run_id for f in figures} == {run.id}
        assert all(f.window_start == run.window_start for f in figures)
    shadow = ws.monitor.latest_results("churn", runs=5, arm="shadow")
    assert len(shadow) == 1 and shadow[0][0].summary["arms"] == ["shadow"]
    assert ws.monitor.latest_results("churn", version=2) == []
    with pytest.raises(InvalidInputError, match="runs 0 must be 1 or more"):
        ws.monitor.latest_results("churn", runs=0)


def test_stored_rows_keep_the_legacy_threshold(logged: Workspace) -> None:
    _, rows, _ = _run(logged)
    tenure = next(r for r in rows if r.kind == "feature_drift" and r.name == "tenure_months")
    assert tenure.threshold == tenure.bound  # the effect threshold, as before
    mean = next(r for r in rows if r.kind == "confidence" and r.name == "mean")
    assert mean.threshold == mean.reference  # the reference mean, as before
