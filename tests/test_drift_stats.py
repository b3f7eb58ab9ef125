"""Drift statistics on simulated data with known truth (seeded): calibration, power, robustness."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop.monitoring import (
    DriftSettings,
    PartialSpec,
    compute_partial,
    evaluate_drift,
    merge_all,
)
from ownloop.profile import ReferenceProfile, categorical_profile, numeric_profile

N_NUM, N_CAT = 20, 5
CATS = np.array(["a", "b", "c", "d", "e"])
BASE_P = np.array([0.1, 0.25, 0.25, 0.2, 0.2])


def _frame(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    shifted: int = 0,
    cat_p: np.ndarray = BASE_P,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for i in range(N_NUM):
        data[f"x{i}"] = rng.normal(shift if i < shifted else 0.0, 1.0, n)
    for j in range(N_CAT):
        data[f"c{j}"] = rng.choice(CATS, n, p=cat_p if j == 0 else BASE_P)
    return data


@pytest.fixture(scope="module")
def reference() -> tuple[ReferenceProfile, PartialSpec]:
    data = _frame(np.random.default_rng(0), 20_000)
    feats = {
        k: numeric_profile(v) if k.startswith("x") else categorical_profile(pd.Series(v))
        for k, v in data.items()
    }
    profile = ReferenceProfile(rows=20_000, features=feats)
    return profile, PartialSpec.from_profile(profile)


def _window(data: dict[str, Any]) -> pa.Table:
    return pa.table({f"in.{k}": v for k, v in data.items()})


@pytest.mark.slow  # hundreds of simulated windows
@pytest.mark.parametrize("n", [300, 5000])
def test_no_drift_false_alarms_stay_at_or_below_alpha(
    reference: tuple[ReferenceProfile, PartialSpec], n: int
) -> None:
    profile, spec = reference
    rng = np.random.default_rng(n)
    windows = 150
    any_alarm = dataset = 0
    for _ in range(windows):
        rep = evaluate_drift(compute_partial(_window(_frame(rng, n)), spec), profile)
        any_alarm += bool(rep.drifted_features)
        dataset += bool(rep.dataset_drift)
    # Benjamini-Hochberg at 0.05 bounds P(any feature flagged | no drift) by 0.05; allow 2 s.e.
    assert any_alarm / windows <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / windows)
    assert dataset / windows <= 0.05


@pytest.mark.slow  # hundreds of simulated windows
def test_mean_shift_of_half_sd_in_3_of_20_features_found_in_95pct_of_5000_row_windows(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    rng = np.random.default_rng(1)
    windows, found, wrong = 100, 0, 0
    for _ in range(windows):
        rep = evaluate_drift(
            compute_partial(_window(_frame(rng, 5000, shift=0.5, shifted=3)), spec), profile
        )
        found += all(rep.feature(f"x{i}").drifted for i in range(3))
        wrong += sum(bool(rep.feature(f"x{i}").drifted) for i in range(3, N_NUM))
    assert found / windows >= 0.95
    assert wrong / (windows * (N_NUM - 3)) <= 0.01
    assert rep.feature("x0").method == "ks+effect"
    assert rep.dataset_drift is False  # 3 of 25 features is under the 0.5 share


@pytest.mark.slow  # hundreds of simulated windows
def test_category_share_10_to_30_pct_found_in_95pct_of_5000_row_windows(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    rng = np.random.default_rng(2)
    moved = np.array([0.3, 0.25, 0.25, 0.2, 0.2]) * np.array(
        [1, 0.7 / 0.9, 0.7 / 0.9, 0.7 / 0.9, 0.7 / 0.9]
    )
    windows = 100
    found = sum(
        bool(
            evaluate_drift(compute_partial(_window(_frame(rng, 5000, cat_p=moved)), spec), profile)
            .feature("c0")
            .drifted
        )
        for _ in range(windows)
    )
    assert found / windows >= 0.95


def test_small_and_large_windows_use_one_rule(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    for n in (400, 5000):
        rep = evaluate_drift(
            compute_partial(
                _window(_frame(np.random.default_rng(3), n, shift=0.5, shifted=3)), spec
            ),
            profile,
        )
        x0 = rep.feature("x0")
        assert x0.method == "ks+effect"
        assert rep.feature("c0").method == "chi2+effect"
        assert x0.drifted is True
        assert x0.p_adjusted is not None
        assert x0.threshold == 0.05
        assert x0.effect == x0.score
        assert "moved 0." in x0.detail and " sd " in x0.detail


@pytest.mark.slow  # a 300,000-row window
def test_huge_window_does_not_flag_a_trivial_shift(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    rep = evaluate_drift(
        compute_partial(
            _window(_frame(np.random.default_rng(4), 300_000, shift=0.03, shifted=20)), spec
        ),
        profile,
    )
    f = rep.feature("x0")
    assert f.p_value is not None
    assert f.p_value < 0.05
    assert f.drifted is False  # but far below the minimum effect
    assert f.effect is not None
    assert 0.01 < f.effect < 0.05
    assert "under the minimum effect" in f.detail


def test_partials_merge_to_the_partial_of_the_whole(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    table = _window(_frame(np.random.default_rng(5), 3000, shift=0.2, shifted=5))
    whole = compute_partial(table, spec)
    parts = merge_all(compute_partial(table.slice(a, 1000), spec) for a in (2000, 0, 1000))
    for name, p in whole.features.items():
        q = parts.features[name]
        if hasattr(p, "counts") and isinstance(p.counts, np.ndarray):
            assert np.array_equal(p.counts, q.counts)  # type: ignore[union-attr]
        else:
            assert p.counts == q.counts
    a, b = evaluate_drift(whole, profile), evaluate_drift(parts, profile)
    assert [f.score for f in a.features] == pytest.approx([f.score for f in b.features])
    assert a.drifted_features == b.drifted_features


def test_holm_is_available_and_never_flags_more_than_bh(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    part = compute_partial(
        _window(_frame(np.random.default_rng(6), 300, shift=0.3, shifted=8)), spec
    )
    bh = evaluate_drift(part, profile, DriftSettings(correction="bh"))
    holm = evaluate_drift(part, profile, DriftSettings(correction="holm"))
    assert set(holm.drifted_features) <= set(bh.drifted_features)


def test_per_feature_threshold_overrides_the_default(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    part = compute_partial(
        _window(_frame(np.random.default_rng(7), 5000, shift=0.5, shifted=3)), spec
    )
    rep = evaluate_drift(part, profile, DriftSettings(feature_thresholds={"x0": 0.9}))
    assert rep.feature("x0").threshold == 0.9
    assert rep.feature("x0").drifted is False
    assert rep.feature("x1").drifted is True


# -- bad inputs: each gives a per-feature result that says what happened ------------------------


@pytest.fixture(scope="module")
def small_reference() -> tuple[ReferenceProfile, PartialSpec]:
    rng = np.random.default_rng(8)
    n = 2000
    feats = {
        "x": numeric_profile(rng.normal(0, 1, n)),
        "const": numeric_profile(np.full(n, 3.0)),
        "empty_ref": numeric_profile(np.full(n, np.nan)),
        "cat": categorical_profile(pd.Series(rng.choice(["a", "b"], n))),
    }
    profile = ReferenceProfile(rows=n, features=feats)
    return profile, PartialSpec.from_profile(profile)


def _bad_window(n: int, rng: np.random.Generator, **over: Any) -> pa.Table:
    cols: dict[str, Any] = {
        "in.x": pa.array(rng.normal(0, 1, n)),
        "in.const": pa.array(np.full(n, 3.0)),
        "in.empty_ref": pa.array(rng.normal(0, 1, n)),
        "in.cat": pa.array(rng.choice(["a", "b"], n).tolist()),
    }
    cols.update(over)
    return pa.table(cols)


def test_nan_and_infinity_are_counted_not_binned(
    small_reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = small_reference
    x = np.random.default_rng(9).normal(0, 1, 500)
    x[:50] = np.nan
    x[50:60] = np.inf
    x[60:65] = -np.inf
    rep = evaluate_drift(
        compute_partial(_bad_window(500, np.random.default_rng(9), **{"in.x": pa.array(x)}), spec),
        profile,
    )
    f = rep.feature("x")
    assert f.status == "ok"
    assert f.n == 435
    assert f.nonfinite == 15
    assert f.missing_share == pytest.approx(65 / 500)
    assert f.missing_drifted is True
    assert f.drifted is False
    assert np.isfinite(f.score)  # type: ignore[arg-type]


def test_all_null_column(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    window = _bad_window(
        200,
        np.random.default_rng(10),
        **{"in.x": pa.nulls(200, pa.float64()), "in.cat": pa.nulls(200, pa.string())},
    )
    rep = evaluate_drift(compute_partial(window, spec), profile)
    for name in ("x", "cat"):
        f = rep.feature(name)
        assert f.status == "all_missing"
        assert f.drifted is None
        assert f.missing_share == 1.0
        assert f.missing_drifted is True
        assert "missing" in f.detail


def test_constant_reference_column(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    rng = np.random.default_rng(11)
    same = evaluate_drift(compute_partial(_bad_window(200, rng), spec), profile).feature("const")
    assert same.status == "constant_reference"
    assert same.drifted is False
    assert same.score == 0.0
    moved = np.full(200, 3.0)
    moved[:20] = 4.0
    rep = evaluate_drift(
        compute_partial(_bad_window(200, rng, **{"in.const": pa.array(moved)}), spec), profile
    )
    f = rep.feature("const")
    assert f.drifted is True
    assert f.score == pytest.approx(0.1)
    assert "constant" in f.detail


def test_constant_current_column_against_a_spread_reference(
    small_reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = small_reference
    rep = evaluate_drift(
        compute_partial(
            _bad_window(2000, np.random.default_rng(12), **{"in.x": pa.array(np.zeros(2000))}), spec
        ),
        profile,
    )
    assert rep.feature("x").drifted is True


def test_reference_without_values(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    f = evaluate_drift(
        compute_partial(_bad_window(200, np.random.default_rng(13)), spec), profile
    ).feature("empty_ref")
    assert f.status == "reference_empty"
    assert f.drifted is None


def test_unseen_category_is_named(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    cats = np.random.default_rng(14).choice(["a", "b", "zzz"], 2000, p=[0.4, 0.4, 0.2]).tolist()
    f = evaluate_drift(
        compute_partial(
            _bad_window(2000, np.random.default_rng(14), **{"in.cat": pa.array(cats)}), spec
        ),
        profile,
    ).feature("cat")
    assert f.drifted is True
    assert f.extra["unseen"] == ["zzz"]
    assert "zzz" in f.detail


def test_empty_window(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    rep = evaluate_drift(compute_partial(_bad_window(0, np.random.default_rng(15)), spec), profile)
    assert {f.status for f in rep.features} == {"empty"}
    assert rep.dataset_drift is None
    assert rep.share is None
    assert "no feature" in rep.summary


def test_three_row_window(small_reference: tuple[ReferenceProfile, PartialSpec]) -> None:
    profile, spec = small_reference
    rep = evaluate_drift(compute_partial(_bad_window(3, np.random.default_rng(16)), spec), profile)
    assert rep.feature("x").status == "too_few_rows"
    assert rep.feature("x").drifted is None
    assert "3 finite values" in rep.feature("x").detail
    assert rep.feature("cat").status == "too_few_rows"
    assert rep.feature("const").status == "too_few_rows"
    assert rep.feature("empty_ref").status == "reference_empty"
    assert rep.dataset_drift is None
    assert rep.tested == 0


def test_missing_input_column_is_all_missing(
    small_reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = small_reference
    table = _bad_window(100, np.random.default_rng(17)).drop_columns(["in.x"])
    assert (
        evaluate_drift(compute_partial(table, spec), profile).feature("x").status == "all_missing"
    )


def test_format_1_profile_still_reads(
    small_reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, _ = small_reference
    old = {
        k: {kk: vv for kk, vv in v.to_dict().items() if kk not in ("grid", "grid_counts")}
        for k, v in profile.features.items()
    }
    p1 = ReferenceProfile.from_dict(
        {"rows": profile.row_count, "features": old, "prediction": {"kind": "none"}}
    )
    assert p1.format == 1
    spec = PartialSpec.from_profile(p1)
    x = np.random.default_rng(18).normal(0.8, 1, 3000)
    rep = evaluate_drift(
        compute_partial(
            _bad_window(3000, np.random.default_rng(18), **{"in.x": pa.array(x)}), spec
        ),
        p1,
    )
    assert rep.feature("x").status == "ok"
    assert rep.feature("x").drifted is True


def test_partials_survive_a_json_round_trip(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    """What a distributed engine would ship between workers: plain JSON."""
    import json

    from ownloop.monitoring import WindowPartial

    profile, spec = reference
    part = compute_partial(
        _window(_frame(np.random.default_rng(19), 2000, shift=0.4, shifted=4)), spec
    )
    back = WindowPartial.from_json(json.loads(json.dumps(part.to_json())))
    a, b = evaluate_drift(part, profile), evaluate_drift(back, profile)
    assert [f.score for f in a.features] == [f.score for f in b.features]


def test_batch_drift_api_on_frames_with_chunks() -> None:
    import ownloop

    rng = np.random.default_rng(20)
    ref = pd.DataFrame({"age": rng.normal(40, 10, 5000), "plan": rng.choice(["a", "b"], 5000)})
    cur = pd.DataFrame(
        {
            "age": np.r_[rng.normal(40, 10, 3000), rng.normal(48, 10, 3000)],
            "plan": rng.choice(["a", "b"], 6000),
        }
    )
    res = ownloop.drift(ref, cur, chunk_size=3000, alpha=0.01)
    assert [(c.start, c.end) for c in res] == [(0, 3000), (3000, 6000)]
    assert res[0].report.feature("age").drifted is False
    assert res[1].report.feature("age").drifted is True
    assert res[1].report.alpha == 0.01
    assert len(ownloop.drift(ref, cur, chunk_number=3)) == 3
    with pytest.raises(ownloop.InvalidInputError, match="not in the current frame"):
        ownloop.drift(ref, cur.drop(columns="plan"))
    with pytest.raises(ownloop.InvalidInputError, match="unknown drift settings"):
        ownloop.drift(ref, cur, treshold=0.2)
    with pytest.raises(ownloop.InvalidInputError, match="not both"):
        ownloop.drift(ref, cur, chunk_size=10, chunk_number=2)


def test_sparse_categories_do_not_inflate_chi_square_false_alarms() -> None:
    """300 Zipf-distributed categories in windows of 300 rows: most are expected under 5 times."""
    rng = np.random.default_rng(21)
    k = 300
    p = 1 / np.arange(1, k + 1) ** 1.1
    p /= p.sum()
    cats = np.array([f"k{i}" for i in range(k)])
    ref = categorical_profile(pd.Series(rng.choice(cats, 50_000, p=p)))
    profile = ReferenceProfile(rows=50_000, features={"c": ref})
    spec = PartialSpec.from_profile(profile)
    windows = 300
    alarms = sum(
        bool(
            evaluate_drift(
                compute_partial(pa.table({"in.c": rng.choice(cats, 300, p=p)}), spec), profile
            )
            .feature("c")
            .drifted
        )
        for _ in range(windows)
    )
    assert alarms / windows <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / windows)


@pytest.mark.parametrize(
    "shape", ["normal", "lognormal", "counts", "pareto", "far_offset", "two_lumps"]
)
def test_lookup_binning_equals_searchsorted_exactly(shape: str) -> None:
    from ownloop.monitoring._partial import Binner

    rng = np.random.default_rng(22)
    draw = {
        "normal": lambda n: rng.normal(0, 1, n),
        "lognormal": lambda n: rng.lognormal(0, 1.5, n),
        "counts": lambda n: rng.poisson(30, n).astype(float),
        "pareto": lambda n: rng.pareto(1.1, n),
        "far_offset": lambda n: 1e15 + rng.normal(0, 1, n),
        "two_lumps": lambda n: np.where(
            rng.random(n) < 0.5, rng.normal(0, 1e-6, n), rng.normal(1e6, 1, n)
        ),
    }[shape]
    grid = np.asarray(numeric_profile(draw(20_000)).grid)
    x = draw(200_000)
    specials = [
        np.nan,
        np.inf,
        -np.inf,
        *grid,
        *np.nextafter(grid, -np.inf),
        *np.nextafter(grid, np.inf),
    ]
    x[: len(specials)] = specials
    assert np.array_equal(Binner(grid)(x), np.searchsorted(grid, x, side="right"))
