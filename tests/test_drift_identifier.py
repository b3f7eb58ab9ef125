"""Identifier-like columns: detected at registration, judged by unseen values and the top value."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop.monitoring import DriftReport, PartialSpec, compute_partial, evaluate_drift
from ownloop.monitoring._identifier import IDENTIFIER_METHOD
from ownloop.monitoring._partial import identifier_partial
from ownloop.profile import (
    CategoricalProfile,
    FeatureProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
)


def _profile(**feats: FeatureProfile) -> tuple[ReferenceProfile, PartialSpec]:
    rows = next(iter(feats.values())).count
    profile = ReferenceProfile(rows=rows, features=feats)
    return profile, PartialSpec.from_profile(profile)


def _judge(profile: ReferenceProfile, spec: PartialSpec, **cols: object) -> DriftReport:
    table = pa.table({f"in.{k}": v for k, v in cols.items()})
    return evaluate_drift(compute_partial(table, spec), profile)


@pytest.fixture(scope="module")
def unique_ids() -> tuple[ReferenceProfile, PartialSpec]:
    ids = pd.Series([f"u{i}" for i in range(100_000)])
    return _profile(user=categorical_profile(ids))


def test_an_id_column_of_100k_distinct_values_is_identifier_like(
    unique_ids: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, _ = unique_ids
    feat = profile.features["user"]
    assert isinstance(feat, CategoricalProfile)
    assert feat.identifier is True
    assert ReferenceProfile.from_bytes(profile.to_bytes()).features["user"].identifier is True


def test_every_row_holding_one_id_is_flagged(
    unique_ids: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = unique_ids
    rep = _judge(profile, spec, user=["u17"] * 5000)
    f = rep.feature("user")
    assert f.method == IDENTIFIER_METHOD
    assert f.drifted is True
    assert f.extra["top_share"] == 1.0
    assert "most common value 'u17' 100.0%" in f.detail
    assert rep.dataset_drift is True
    assert "most common value 'u17'" in rep.summary


def test_all_new_ids_against_an_all_unique_reference_are_expected(
    unique_ids: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = unique_ids
    rep = _judge(profile, spec, user=[f"n{i}" for i in range(5000)])
    f = rep.feature("user")
    assert f.extra["unseen_share"] == 1.0
    assert f.extra["expected_unseen_share"] == 1.0
    assert f.drifted is False


def test_reused_customer_ids_then_only_unseen_ones_is_flagged() -> None:
    rng = np.random.default_rng(3)
    ref = pd.Series(rng.integers(0, 500, 100_000)).map(lambda i: f"c{i}")  # ~200 rows per id
    profile, spec = _profile(customer=categorical_profile(ref))
    window = [f"new{i}" for i in rng.integers(0, 5000, 5000)]
    # 500 ids in 100k rows is an ordinary categorical column, and chi-square sees the move ...
    assert profile.features["customer"].identifier is False
    assert _judge(profile, spec, customer=window).feature("customer").drifted is True
    # ... and judged as identifier-like the unseen share (100% against 0.5% expected) flags it
    as_id = replace(profile.features["customer"], identifier=True)
    rep = evaluate_drift(
        compute_partial(pa.table({"in.customer": window}), spec),
        ReferenceProfile(rows=100_000, features={"customer": as_id}),
    )
    f = rep.feature("customer")
    assert f.drifted is True
    assert f.extra["expected_unseen_share"] == pytest.approx(0.005)
    assert rep.reasons["customer"].startswith("unseen values 100.0%")


def test_no_drift_false_alarms_stay_at_or_below_alpha() -> None:
    # 3 populations x 3 window sizes x 40 windows = 360 windows under no drift; at a true rate of
    # 0.05 the binomial sd is 0.011, and the rule's rate is near 0 (material moves are needed).
    rng = np.random.default_rng(4)
    zipf = 1 / np.arange(1, 1_000_001) ** 0.9
    zipf /= zipf.sum()
    populations = {
        "new every row": lambda n: np.char.add("u", rng.integers(0, 10**12, n).astype(str)),
        "60k reused ids": lambda n: np.char.add("c", rng.integers(0, 60_000, n).astype(str)),
        "zipf ids": lambda n: np.char.add("z", rng.choice(zipf.size, n, p=zipf).astype(str)),
    }
    alarms = windows = 0
    for draw in populations.values():
        profile, spec = _profile(id=categorical_profile(pd.Series(draw(10_000))))
        assert profile.features["id"].identifier is True
        for n in (100, 1000, 5000):
            for _ in range(40):
                rep = _judge(profile, spec, id=draw(n))
                alarms += bool(rep.feature("id").drifted)
                windows += 1
    assert alarms / windows <= 0.05, alarms


def test_an_increasing_integer_id_is_identifier_like_and_not_flagged_next_window() -> None:
    rng = np.random.default_rng(5)
    profile, spec = _profile(
        order_id=numeric_profile(np.arange(1, 50_001, dtype=float)),
        amount=numeric_profile(rng.lognormal(3, 1, 50_000)),
    )
    assert profile.features["order_id"].identifier is True
    assert profile.features["amount"].identifier is False
    assert spec.identifiers == ("order_id",)
    rep = _judge(
        profile,
        spec,
        order_id=np.arange(50_001, 55_001, dtype=np.int64),
        amount=rng.lognormal(3, 1, 5000),
    )
    f = rep.feature("order_id")
    assert f.method == IDENTIFIER_METHOD
    assert f.drifted is False
    assert rep.dataset_drift is False
    stuck = _judge(profile, spec, order_id=np.full(5000, 7), amount=rng.lognormal(3, 1, 5000))
    assert stuck.feature("order_id").drifted is True


def test_numeric_id_keys_match_whether_logged_as_int_or_float() -> None:
    parts = [
        identifier_partial(pa.array([12345678901, 7, None], type=pa.int64())),
        identifier_partial(pa.array([12345678901.0, 7.0, 2.5, float("nan")])),
    ]
    merged = parts[0].merge(parts[1])
    assert merged.counts == {"12345678901": 2, "7": 2, "2.5": 1}
    assert merged.nulls == 2


@pytest.mark.parametrize(
    ("values", "what"),
    [
        (np.random.default_rng(6).choice(list("abcde"), 50_000), "5 categories"),
        (np.random.default_rng(7).integers(10_000, 11_000, 50_000).astype(str), "zip codes"),
    ],
)
def test_ordinary_categorical_columns_are_not_identifier_like(
    values: np.ndarray, what: str
) -> None:
    assert categorical_profile(pd.Series(values)).identifier is False, what


def test_ordinary_numeric_columns_are_not_identifier_like() -> None:
    rng = np.random.default_rng(8)
    assert numeric_profile(rng.normal(size=5000)).identifier is False  # distinct, not whole
    assert numeric_profile(rng.integers(0, 1000, 5000).astype(float)).identifier is False
    assert numeric_profile(np.arange(30, dtype=float)).identifier is False  # too few to tell


def test_show_says_a_column_is_identifier_like(
    unique_ids: tuple[ReferenceProfile, PartialSpec],
) -> None:
    from ownloop.cli._registry import _profile_summary

    profile, _ = unique_ids
    assert _profile_summary(profile.features["user"]).endswith(", identifier-like")
