"""The gate's statistics on simulated data with known truth (seeded, a few seconds each)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm

from ownloop.errors import InvalidInputError
from ownloop.evaluation import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    CheckSpec,
    Outputs,
    Suite,
    judge_outputs,
)
from ownloop.evaluation._metrics import metric_def, prepare_metric
from ownloop.evaluation._stats import (
    BootstrapPlan,
    holm,
    paired_accuracy_difference,
    percentile_interval,
    wilson_interval,
)
from ownloop.evaluation._suite import SliceSpec

LEVEL = 0.95
ALPHA = (1 - LEVEL) / 2  # each bound is judged one-sided at 2.5%


def _suite(spec: CheckSpec, resamples: int = 1000, min_rows: int = 30, seed: int = 0) -> Suite:
    return Suite(
        datasets={}, checks=(spec,), level=LEVEL, resamples=resamples, seed=seed, min_rows=min_rows
    )


def _binary(y: np.ndarray, correct: np.ndarray, proba: np.ndarray | None = None) -> Outputs:
    pred = np.where(correct, y, 1 - y)
    return Outputs(y.astype(np.int64), pred.astype(np.int64), proba, (0, 1))


def _paired_correctness(
    rng: np.random.Generator, n: int, both: float, cand_only: float, base_only: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows where both are right, only the candidate, only the baseline, or neither."""
    kind = rng.choice(4, size=n, p=[both, cand_only, base_only, 1 - both - cand_only - base_only])
    return (kind == 0) | (kind == 1), (kind == 0) | (kind == 2)


def _accuracy_ni(
    cand_ok: np.ndarray,
    base_ok: np.ndarray,
    y: np.ndarray,
    margin: float,
    kind: str = "non_inferiority",
) -> str:
    spec = CheckSpec(
        type=kind, name="acc", dataset="d", metric="accuracy", margin=margin, sliced=False
    )
    return judge_outputs(spec, _suite(spec), _binary(y, cand_ok), _binary(y, base_ok))[0].status


# -- metric values agree with scikit-learn --------------------------------------------------------


def _classifier_outputs(k: int, n: int = 600, seed: int = 0) -> tuple[Outputs, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Outputs(y, proba.argmax(axis=1), proba, tuple(range(k))), proba


@pytest.mark.parametrize("k", [2, 3])
def test_classifier_metrics_match_scikit_learn(k: int) -> None:
    out, proba = _classifier_outputs(k)
    avg = "binary" if k == 2 else "macro"
    expected = {
        "accuracy": skm.accuracy_score(out.y, out.pred),
        "balanced_accuracy": skm.balanced_accuracy_score(out.y, out.pred),
        "precision": skm.precision_score(out.y, out.pred, average=avg),
        "recall": skm.recall_score(out.y, out.pred, average=avg),
        "f1": skm.f1_score(out.y, out.pred, average=avg),
        "roc_auc": skm.roc_auc_score(out.y, proba[:, 1] if k == 2 else proba, multi_class="ovr"),
        "log_loss": skm.log_loss(out.y, proba),
    }
    if k == 2:
        expected["brier"] = skm.brier_score_loss(out.y, proba[:, 1])
    for name, value in expected.items():
        assert prepare_metric(name, out).point(out.n) == pytest.approx(value, abs=1e-9), name


def test_auc_with_ties_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    score = np.round(rng.random(500) * 0.5 + 0.3 * y, 1)  # heavy ties
    proba = np.column_stack([1 - score, score])
    out = Outputs(y, (score > 0.5).astype(np.int64), proba, (0, 1))
    assert prepare_metric("roc_auc", out).point(500) == pytest.approx(skm.roc_auc_score(y, score))


def test_regressor_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 400)
    pred = y + rng.normal(0, 1, 400)
    out = Outputs(y, pred, None, ())
    assert prepare_metric("mae", out).point(400) == pytest.approx(skm.mean_absolute_error(y, pred))
    assert prepare_metric("rmse", out).point(400) == pytest.approx(
        np.sqrt(skm.mean_squared_error(y, pred))
    )
    assert prepare_metric("r2", out).point(400) == pytest.approx(skm.r2_score(y, pred))
    assert prepare_metric("mape", out).point(400) == pytest.approx(
        skm.mean_absolute_percentage_error(y, pred)
    )


def test_ece_of_a_calibrated_model_is_small_and_of_an_overconfident_one_large() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0.5, 1.0, 20_000)
    y = (rng.random(20_000) < p).astype(np.int64)
    calibrated = Outputs(y, np.ones_like(y), np.column_stack([1 - p, p]), (0, 1))
    sure = np.full_like(p, 0.99)
    overconfident = Outputs(y, np.ones_like(y), np.column_stack([1 - sure, sure]), (0, 1))
    assert prepare_metric("ece", calibrated).point(20_000) < 0.02
    assert prepare_metric("ece", overconfident).point(20_000) == pytest.approx(
        0.99 - y.mean(), abs=1e-9
    )


def test_unknown_metric_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"unknown metric 'acuracy'; did you mean 'accuracy'\? known metrics: classifiers accuracy, .*regressors mae",
    ):
        metric_def("acuracy")


def test_regression_metric_on_a_classifier_is_refused() -> None:
    out, _ = _classifier_outputs(2)
    with pytest.raises(
        InvalidInputError,
        match="metric 'mae' is for regression models but this model is a classifier; use one of: accuracy",
    ):
        prepare_metric("mae", out)


# -- resampling machinery -------------------------------------------------------------------------


def test_bootstrap_weights_are_resamples_of_n_rows_drawn_in_blocks() -> None:
    blocks = list(BootstrapPlan(resamples=300, seed=4).blocks(40_000))
    W = np.vstack(blocks)
    assert len(blocks) > 1  # memory stays bounded
    assert W.shape == (300, 40_000)
    assert np.all(W.sum(axis=1) == 40_000)
    assert W.mean() == pytest.approx(1.0)
    # each row drawn Binomial(n, 1/n) times: share of rows left out is about e^-1
    assert (W == 0).mean() == pytest.approx(np.exp(-1), abs=0.002)


def test_holm_adjusts_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


# -- coverage of the intervals --------------------------------------------------------------------


def test_wilson_interval_covers_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(5)
    for p, n in ((0.85, 200), (0.97, 120), (0.5, 40)):
        hits = rng.binomial(n, p, 4000)
        covered = np.mean(
            [lo <= p <= hi for lo, hi in (wilson_interval(h, n, LEVEL) for h in hits)]
        )
        assert 0.93 <= covered <= 0.975, (p, n, covered)


def test_bootstrap_interval_of_auc_covers_near_nominal() -> None:
    rng = np.random.default_rng(6)
    mu = 1.0
    true_auc = stats.norm.cdf(mu / np.sqrt(2))
    reps, n, covered = 150, 600, 0
    for r in range(reps):
        y = (rng.random(n) < 0.4).astype(np.int64)
        score = rng.normal(mu * y, 1.0)
        p = 1 / (1 + np.exp(-score))
        out = Outputs(y, (p > 0.5).astype(np.int64), np.column_stack([1 - p, p]), (0, 1))
        auc = prepare_metric("roc_auc", out)
        reps_values = np.concatenate([auc.value(W) for W in BootstrapPlan(500, r).blocks(n)])
        lo, hi = percentile_interval(reps_values, LEVEL)
        covered += lo <= true_auc <= hi
    assert 0.90 <= covered / reps <= 0.985


def test_bootstrap_interval_of_mae_covers_near_nominal() -> None:
    rng = np.random.default_rng(7)
    reps, n, covered = 300, 300, 0
    true_mae = np.sqrt(2 / np.pi)  # E|N(0, 1)|
    for r in range(reps):
        y = rng.normal(0, 5, n)
        out = Outputs(y, y + rng.normal(0, 1, n), None, ())
        mae = prepare_metric("mae", out)
        values = np.concatenate([mae.value(W) for W in BootstrapPlan(500, r).blocks(n)])
        lo, hi = percentile_interval(values, LEVEL)
        covered += lo <= true_mae <= hi
    assert 0.91 <= covered / reps <= 0.98


def test_paired_accuracy_interval_covers_near_nominal() -> None:
    rng = np.random.default_rng(8)
    both, c_only, b_only = 0.7, 0.06, 0.09
    truth = c_only - b_only
    covered = 0
    for _ in range(2000):
        c_ok, b_ok = _paired_correctness(rng, 800, both, c_only, b_only)
        lo, hi = paired_accuracy_difference(c_ok, b_ok, 0.01, LEVEL).interval
        covered += lo <= truth <= hi
    assert 0.93 <= covered / 2000 <= 0.965


# -- decisions: worse fails, equal passes at the stated rate ----------------------------------------


def test_candidate_worse_than_the_margin_fails_in_at_least_95_percent() -> None:
    """True accuracy change -0.02 with margin 0.01 (McNemar path)."""
    rng = np.random.default_rng(9)
    n, statuses = 3000, []
    for _ in range(300):
        y = rng.integers(0, 2, n)
        c_ok, b_ok = _paired_correctness(rng, n, 0.74, 0.04, 0.06)
        statuses.append(_accuracy_ni(c_ok, b_ok, y, margin=0.01))
    assert statuses.count(FAIL) / len(statuses) >= 0.95
    assert PASS not in statuses


def test_candidate_worse_in_auc_fails_in_at_least_95_percent() -> None:
    """Paired bootstrap: the candidate's scores carry less signal (true AUC 0.71 vs 0.76, margin 0.01)."""
    rng = np.random.default_rng(10)
    n, statuses = 1500, []
    spec = CheckSpec(
        type="non_inferiority", name="auc", dataset="d", metric="roc_auc", margin=0.01, sliced=False
    )
    for r in range(60):
        y = (rng.random(n) < 0.4).astype(np.int64)
        shared = rng.normal(size=n)
        base = 1.0 * y + shared
        cand = 0.78 * y + shared + rng.normal(0, 0.35, n)
        outs = []
        for s in (cand, base):
            p = 1 / (1 + np.exp(-s))
            outs.append(Outputs(y, (p > 0.5).astype(np.int64), np.column_stack([1 - p, p]), (0, 1)))
        statuses.append(
            judge_outputs(spec, _suite(spec, resamples=400, seed=r), outs[0], outs[1])[0].status
        )
    assert statuses.count(FAIL) / len(statuses) >= 0.95


def test_equal_candidate_passes_non_inferiority_at_the_predicted_rate() -> None:
    """Truly equal: pass rate matches the power the one-sided 2.5% test should have."""
    rng = np.random.default_rng(11)
    n, margin, both, disc = 2000, 0.015, 0.72, 0.08  # 8% discordant each way
    se = np.sqrt(2 * disc / n)
    expected = stats.norm.cdf(margin / se - stats.norm.ppf(1 - ALPHA))
    statuses = []
    for _ in range(400):
        y = rng.integers(0, 2, n)
        c_ok, b_ok = _paired_correctness(rng, n, both, disc, disc)
        statuses.append(_accuracy_ni(c_ok, b_ok, y, margin=margin))
    rate = statuses.count(PASS) / len(statuses)
    assert abs(rate - expected) < 0.07, (rate, expected)
    # A miss is FAIL only when the point estimate itself is below -margin (about 4.7% here),
    # else INCONCLUSIVE: an equal candidate is rarely called worse, and never silently passed.
    expected_fail = stats.norm.cdf(-margin / se)
    fail_rate = statuses.count(FAIL) / len(statuses)
    assert abs(fail_rate - expected_fail) < 0.03, (fail_rate, expected_fail)
    assert set(statuses) == {PASS, FAIL, INCONCLUSIVE}


@pytest.mark.parametrize("kind", ["non_inferiority_at_boundary", "superiority_when_equal"])
def test_false_pass_rate_is_the_stated_one_sided_level(kind: str) -> None:
    """At the boundary of the hypothesis, the gate passes at about alpha = 2.5%, not more."""
    rng = np.random.default_rng(12)
    n, margin, statuses = 2000, 0.02, []
    for _ in range(800):
        y = rng.integers(0, 2, n)
        if kind == "non_inferiority_at_boundary":  # candidate truly worse by exactly the margin
            c_ok, b_ok = _paired_correctness(rng, n, 0.7, 0.06, 0.06 + margin)
            statuses.append(_accuracy_ni(c_ok, b_ok, y, margin=margin))
        else:  # truly equal, asked to be better
            c_ok, b_ok = _paired_correctness(rng, n, 0.7, 0.07, 0.07)
            statuses.append(_accuracy_ni(c_ok, b_ok, y, margin=0.0, kind="superiority"))
    rate = statuses.count(PASS) / len(statuses)
    assert 0.005 <= rate <= 0.05, rate


# -- small samples ---------------------------------------------------------------------------------


def test_twenty_rows_are_inconclusive_where_a_point_threshold_passes() -> None:
    y = np.array([0, 1] * 10)
    correct = np.ones(20, dtype=bool)
    correct[3] = False  # 19 of 20 right: accuracy 0.95
    out = _binary(y, correct)
    spec = CheckSpec(
        type="metric", name="acc", dataset="d", metric="accuracy", at_least=0.9, sliced=False
    )
    point = prepare_metric("accuracy", out).point(20)
    assert point >= 0.9  # a point-threshold gate says PASS
    for min_rows in (30, 1):  # too few rows by rule, and by the interval alone
        result = judge_outputs(spec, _suite(spec, min_rows=min_rows), out)[0]
        assert result.status == INCONCLUSIVE
        assert result.interval is not None
        assert result.interval[0] < 0.9
    assert "fewer than the 30 needed" in judge_outputs(spec, _suite(spec), out)[0].message
    assert "more rows are needed" in judge_outputs(spec, _suite(spec, min_rows=1), out)[0].message


def test_same_accuracy_on_many_rows_passes() -> None:
    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, 5000)
    out = _binary(y, rng.random(5000) < 0.95)
    spec = CheckSpec(
        type="metric", name="acc", dataset="d", metric="accuracy", at_least=0.9, sliced=False
    )
    result = judge_outputs(spec, _suite(spec), out)[0]
    assert result.status == PASS
    assert "Wilson" in result.method
    assert result.interval is not None
    assert result.interval[0] >= 0.9


def test_holm_keeps_the_chance_that_any_slice_passes_by_luck_near_alpha() -> None:
    """Ten slices, each truly exactly at the bound: without adjustment some slice would pass in
    about 1 - 0.975**10 = 22% of runs; with Holm it stays near 2.5%."""
    rng = np.random.default_rng(14)
    slices, rows = 10, 400
    frame = pd.DataFrame({"segment": np.repeat([f"s{i}" for i in range(slices)], rows)})
    spec = CheckSpec(type="metric", name="acc", dataset="d", metric="accuracy", at_least=0.8)
    suite = Suite(datasets={}, checks=(spec,), slices=(SliceSpec("segment"),), min_slice_rows=100)
    any_pass = any_pass_unadjusted = 0
    for _ in range(300):
        y = rng.integers(0, 2, slices * rows)
        results = judge_outputs(
            spec, suite, _binary(y, rng.random(slices * rows) < 0.8), frame=frame
        )
        sliced = [r for r in results if r.slice is not None]
        assert len(sliced) == slices
        assert all("Holm across 10 slices" in r.details["multiple_comparisons"] for r in sliced)
        any_pass += any(r.status == PASS for r in sliced)
        any_pass_unadjusted += any(r.interval is not None and r.interval[0] >= 0.8 for r in sliced)
    assert any_pass / 300 <= 0.05
    assert any_pass_unadjusted / 300 >= 0.12
    # ... and the adjustment still lets slices that truly clear the bound pass (a gate that never
    # passes a slice would meet the bound above too)
    y = rng.integers(0, 2, slices * rows)
    better = judge_outputs(spec, suite, _binary(y, rng.random(slices * rows) < 0.9), frame=frame)
    assert [r.status for r in better if r.slice is not None] == [PASS] * slices


@pytest.mark.parametrize("k", [2, 3])
def test_float32_resample_blocks_agree_with_float64(k: int) -> None:
    """Resample blocks are float32 for speed; on the same weights every metric matches float64."""
    out, _ = _classifier_outputs(k, n=5000)
    tied = Outputs(out.y, out.pred, np.round(out.proba, 2), out.classes, out.positive)  # many ties
    W = next(BootstrapPlan(20, 1).blocks(out.n))
    for o in (out, tied):
        for name in (
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "log_loss",
            "brier",
            "ece",
        ):
            fn = prepare_metric(name, o).value
            assert fn(W) == pytest.approx(fn(W.astype(np.float64)), abs=2e-5), name
