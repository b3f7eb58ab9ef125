"""The dataset-level drift verdict: missing values count, and features weigh what the model relies on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop.monitoring import (
    DriftReport,
    DriftSettings,
    PartialSpec,
    compute_partial,
    evaluate_drift,
)
from ownloop.profile import ReferenceProfile, compute_profile, numeric_profile
from ownloop.signature import infer_signature

N_FEATURES = 12


def _judge(profile: ReferenceProfile, frame: pd.DataFrame, **settings: Any) -> DriftReport:
    table = pa.table({f"in.{c}": frame[c].to_numpy() for c in frame.columns})
    part = compute_partial(table, PartialSpec.from_profile(profile))
    return evaluate_drift(part, profile, DriftSettings(**settings))


def _with_missing(x: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    out[rng.random(x.size) < share] = np.nan
    return out


@pytest.fixture(scope="module")
def three_features() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    n = 20_000
    feats = {
        "age": numeric_profile(rng.normal(40, 10, n)),
        "income": numeric_profile(_with_missing(rng.lognormal(10, 1, n), 0.002, rng)),
        "score": numeric_profile(_with_missing(rng.normal(size=n), 0.01, rng)),
    }
    return ReferenceProfile(rows=n, features=feats)


def _three(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": _with_missing(rng.lognormal(10, 1, n), 0.002, rng),
            "score": _with_missing(rng.normal(size=n), 0.01, rng),
        }
    )


def test_an_all_missing_column_counts_and_is_named(three_features: ReferenceProfile) -> None:
    window = _three(np.random.default_rng(1), 5000).assign(income=np.nan)
    rep = _judge(three_features, window, drift_share=0.3)
    assert rep.feature("income").status == "all_missing"
    assert rep.drifted_features == ("income",)
    assert rep.tested == 3
    assert rep.share == pytest.approx(1 / 3)
    assert rep.dataset_drift is True
    assert "income (all 5,000 values missing; reference 0.2%)" in rep.summary


def test_a_missing_share_moving_from_1_to_30_percent_counts(
    three_features: ReferenceProfile,
) -> None:
    rng = np.random.default_rng(2)
    window = _three(rng, 5000)
    window["score"] = np.where(np.arange(5000) < 1500, np.nan, rng.normal(size=5000))
    rep = _judge(three_features, window)
    score = rep.feature("score")
    assert score.drifted is False  # the values that are there did not move ...
    assert score.missing_drifted is True
    assert rep.drifted_features == ("score",)  # ... but the feature counts as drifted
    assert rep.reasons["score"].startswith("missing 30.0%")
    assert "reference 1.0%" in rep.reasons["score"]


def test_a_few_rows_all_missing_are_not_judged(three_features: ReferenceProfile) -> None:
    window = _three(np.random.default_rng(3), 5).assign(income=np.nan)
    rep = _judge(three_features, window)
    assert rep.tested == 0
    assert rep.dataset_drift is None


def test_an_all_missing_window_is_expected_of_a_mostly_missing_column() -> None:
    rng = np.random.default_rng(4)
    profile = ReferenceProfile(
        rows=20_000,
        features={"sparse": numeric_profile(_with_missing(rng.normal(size=20_000), 0.99, rng))},
    )
    rep = _judge(profile, pd.DataFrame({"sparse": np.full(50, np.nan)}))
    assert rep.feature("sparse").status == "all_missing"
    assert (
        rep.tested == 1
    )  # judged by its missing share: 50 of 50 is likely at 99% (0.99**50 = 0.6)
    assert rep.drifted_features == ()
    assert rep.dataset_drift is False


# -- importance ------------------------------------------------------------------------------


def _twelve(
    rng: np.random.Generator, n: int, shift: dict[int, float] | None = None
) -> pd.DataFrame:
    shift = shift or {}
    return pd.DataFrame({f"x{i}": rng.normal(shift.get(i, 0.0), 1.0, n) for i in range(N_FEATURES)})


def _labels(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    logit = 2.0 * frame["x0"] - 1.5 * frame["x1"]  # relies on 2 of the 12 features
    return (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)


def _registered(model: Any, seed: int = 10) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    train = _twelve(rng, 5000)
    model.fit(train, _labels(train, rng))
    ref = _twelve(rng, 5000)
    ref["y"] = _labels(ref, rng)
    return compute_profile(model, ref, infer_signature(model, ref, "y", None))


@pytest.fixture(scope="module")
def logistic() -> ReferenceProfile:
    from sklearn.linear_model import LogisticRegression

    return _registered(LogisticRegression())


def test_the_models_coefficients_give_its_reliance(logistic: ReferenceProfile) -> None:
    assert logistic.importance_method == "coef_ x feature sd"
    assert logistic.importance is not None
    assert sum(logistic.importance.values()) == pytest.approx(1.0)
    assert logistic.importance["x0"] + logistic.importance["x1"] > 0.9
    again = ReferenceProfile.from_bytes(logistic.to_bytes())
    assert again.importance == logistic.importance


def test_a_tree_gives_its_own_importances() -> None:
    from sklearn.tree import DecisionTreeClassifier

    profile = _registered(DecisionTreeClassifier(max_depth=4, random_state=0))
    assert profile.importance_method == "feature_importances_"
    assert profile.importance is not None
    assert profile.importance["x0"] + profile.importance["x1"] > 0.8


def test_two_drifted_top_features_are_dataset_drift(logistic: ReferenceProfile) -> None:
    rep = _judge(logistic, _twelve(np.random.default_rng(11), 5000, {0: 0.5, 1: 0.5}))
    assert set(rep.drifted_features) == {"x0", "x1"}
    assert rep.share == pytest.approx(2 / 12)  # by count: under the 0.5 threshold
    assert rep.weighted_share is not None and rep.weighted_share > 0.9
    assert rep.verdict_by == "importance"
    assert rep.dataset_drift is True
    assert (
        "of the model's reliance" in rep.summary and "importance: coef_ x feature sd" in rep.summary
    )


def test_ten_drifted_unused_features_are_not_dataset_drift(logistic: ReferenceProfile) -> None:
    shift = {i: 0.5 for i in range(2, N_FEATURES)}
    rep = _judge(logistic, _twelve(np.random.default_rng(12), 5000, shift))
    assert len(rep.drifted_features) == 10
    assert rep.share == pytest.approx(10 / 12)  # by count: over the threshold
    assert rep.weighted_share is not None and rep.weighted_share < 0.1
    assert rep.dataset_drift is False


def test_weighted_verdict_false_alarms_stay_at_or_below_alpha(logistic: ReferenceProfile) -> None:
    # 100 no-drift windows of 2,000 rows; at a true rate of 0.05 the binomial sd is 0.022. The
    # weight sits on two features, so the verdict is as noisy as their (adjusted) tests.
    rng = np.random.default_rng(13)
    alarms = sum(bool(_judge(logistic, _twelve(rng, 2000)).dataset_drift) for _ in range(100))
    assert alarms / 100 <= 0.05


def test_a_pipeline_gets_permutation_importance() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer

    # splines give the last step 7 columns per feature: its coef_ does not map onto the features
    profile = _registered(make_pipeline(SplineTransformer(), LogisticRegression()))
    assert profile.importance_method is not None
    assert profile.importance_method.startswith("permutation (log loss, 3 repeats on 2000")
    assert profile.importance is not None
    assert profile.importance["x0"] + profile.importance["x1"] > 0.8
    rep = _judge(profile, _twelve(np.random.default_rng(14), 5000, {0: 0.5, 1: 0.5}))
    assert rep.dataset_drift is True


def test_a_profile_without_importance_keeps_the_count_verdict(
    logistic: ReferenceProfile,
) -> None:
    old = {k: v for k, v in logistic.to_dict().items() if not k.startswith("importance")}
    profile = ReferenceProfile.from_dict(old)
    assert profile.importance is None
    rep = _judge(profile, _twelve(np.random.default_rng(15), 5000, {0: 0.5, 1: 0.5}))
    assert rep.weighted_share is None
    assert rep.verdict_by == "count"
    assert rep.dataset_drift is False  # 2 of 12
    assert "importance" not in rep.summary


def test_no_target_no_importance() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer

    rng = np.random.default_rng(16)
    train = _twelve(rng, 2000)
    model = make_pipeline(SplineTransformer(), LogisticRegression()).fit(train, _labels(train, rng))
    ref = _twelve(rng, 2000)
    profile = compute_profile(model, ref, infer_signature(model, ref, None, None))
    assert profile.importance is None
    assert profile.importance_method is None
