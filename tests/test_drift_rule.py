"""The per-feature drift rule on simulated data with known truth (seeded): one rule at every
window size, one effect unit for every type, tail contamination, small references."""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from ownloop.errors import InvalidInputError
from ownloop.monitoring import DriftSettings, PartialSpec, compute_partial, evaluate_drift
from ownloop.monitoring._partial import (
    Binner,
    CategoricalPartial,
    NumericPartial,
    WindowPartial,
    grid_of,
    merge_all,
    support_grid,
)
from ownloop.profile import (
    NumericProfile,
    ReferenceProfile,
    categorical_profile,
    numeric_profile,
)

REF_N = 20_000
ZIPF = np.array([f"k{i}" for i in range(200)])
ZIPF_P = 1 / np.arange(1, 201) ** 1.1 / (1 / np.arange(1, 201) ** 1.1).sum()
P0 = 0.3  # the reference share of True in the boolean feature


def _se(p: float, sims: int) -> float:
    return float(np.sqrt(max(p * (1 - p), 0.01 * 0.99) / sims))


@pytest.fixture(scope="module")
def one_feature() -> tuple[ReferenceProfile, ReferenceProfile]:
    """A numeric N(0, 1) feature and a boolean one with share P0 of True, each in its own profile
    (so the adjustment across features does not enter: one feature, one test)."""
    rng = np.random.default_rng(100)
    x = numeric_profile(rng.normal(0, 1, REF_N))
    b = categorical_profile(pd.Series(rng.random(REF_N) < P0))
    return (
        ReferenceProfile(rows=REF_N, features={"x": x}),
        ReferenceProfile(rows=REF_N, features={"b": b}),
    )


def _numeric_window(rng: np.random.Generator, ref: NumericProfile, n: int, shift: float) -> Any:
    """The partial of n draws from N(shift, 1), drawn as multinomial counts on the grid's bins
    (what binning n rows would give, without drawing n rows)."""
    grid = grid_of(ref)
    cdf = stats.norm.cdf(np.concatenate(([-np.inf], grid, [np.inf])) - shift)
    counts = rng.multinomial(n, np.diff(cdf)).astype(np.int64)
    return WindowPartial(
        rows=n, features={"x": NumericPartial(n, 0, 0, counts, 0.0, 0.0, n * shift)}
    )


def _bool_window(rng: np.random.Generator, n: int, share: float) -> WindowPartial:
    k = int(rng.binomial(n, share))
    return WindowPartial(
        rows=n, features={"b": CategoricalPartial(n, 0, {"True": k, "False": n - k})}
    )


def _rates(
    one_feature: tuple[ReferenceProfile, ReferenceProfile],
    kind: str,
    move: float,
    sizes: list[int],
    sims: int,
    seed: int,
) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    num, boo = one_feature
    out = {}
    for n in sizes:
        hits = 0
        for _ in range(sims):
            if kind == "numeric":
                x = num.features["x"]
                assert isinstance(x, NumericProfile)
                hits += bool(
                    evaluate_drift(_numeric_window(rng, x, n, move), num).features[0].drifted
                )
            else:
                hits += bool(
                    evaluate_drift(_bool_window(rng, n, P0 + move), boo).features[0].drifted
                )
        out[n] = hits / sims
    return out


@pytest.mark.parametrize(("kind", "move"), [("numeric", 0.1), ("boolean", 0.1), ("numeric", 0.2)])
def test_detection_rate_rises_smoothly_with_the_window_size(
    one_feature: tuple[ReferenceProfile, ReferenceProfile], kind: str, move: float
) -> None:
    """A 0.1 or 0.2 sd shift, or a 10-point move of a boolean share (0.21 sd), both above the
    0.05 sd minimum effect: no step at the former 1,000-row boundary, and no fall anywhere on a
    ladder from 100 to 1M rows."""
    sizes = [100, 300, 900, 999, 1000, 1001, 1100, 3000, 10_000, 100_000, 1_000_000]
    sims = 200
    rate = _rates(one_feature, kind, move, sizes, sims, seed=101)
    # 200 windows per size: the binomial sd of a rate is at most 0.035; each difference of two
    # rates has sd at most 0.05, so 3 sd is 0.15 (tight near 0 and 1, where the sd is smaller)
    for a, b in itertools.pairwise(sizes):
        margin = 3 * np.sqrt(_se(rate[a], sims) ** 2 + _se(rate[b], sims) ** 2)
        assert rate[b] >= rate[a] - margin, (a, b, rate)
    assert abs(rate[999] - rate[1000]) <= 3 * np.sqrt(2) * _se(rate[1000], sims)
    assert rate[1_000_000] == 1.0


def test_a_shift_under_the_minimum_effect_is_not_flagged_in_huge_windows(
    one_feature: tuple[ReferenceProfile, ReferenceProfile],
) -> None:
    rate = _rates(one_feature, "numeric", 0.02, [1_000_000, 10_000_000], 50, seed=102)
    assert rate == {1_000_000: 0.0, 10_000_000: 0.0}


def test_no_drift_false_alarms_stay_at_or_below_alpha_at_every_size(
    one_feature: tuple[ReferenceProfile, ReferenceProfile],
) -> None:
    sims = 300
    for kind in ("numeric", "boolean"):
        rate = _rates(one_feature, kind, 0.0, [100, 1000, 100_000], sims, seed=103)
        # 300 windows per size: binomial sd of a rate of 0.05 is 0.0126; allow 3 sd, as every
        # window meets the same reference, whose own sampling error makes alarms correlated
        # (measured: 5.5% over 2,000 windows of 1,000 rows against one 20,000-row reference)
        assert max(rate.values()) <= 0.05 + 3 * _se(0.05, sims), (kind, rate)


# -- one unit for every type ------------------------------------------------------------------


def _encodings(values: np.ndarray) -> dict[str, Any]:
    """One integer column as int, float, string and (for 0/1) boolean."""
    out: dict[str, Any] = {
        "as_int": values.astype(np.int64),
        "as_float": values.astype(float),
        "as_str": values.astype(str),
    }
    if values.max() <= 1:
        out["as_bool"] = values.astype(bool)
    return out


def _profile_of(cols: dict[str, Any]) -> ReferenceProfile:
    feats = {
        k: numeric_profile(np.asarray(v, float))
        if k in ("as_int", "as_float")
        else categorical_profile(pd.Series(v))
        for k, v in cols.items()
    }
    return ReferenceProfile(rows=len(next(iter(cols.values()))), features=feats)


def _table(cols: dict[str, Any]) -> pa.Table:
    return pa.table({f"in.{k}": pa.array(v) for k, v in cols.items()})


@pytest.mark.parametrize(
    ("ref_p", "cur_p"),
    [([0.7, 0.3], [0.6, 0.4]), ([0.7, 0.3], [0.68, 0.32]), ([0.5, 0.3, 0.2], [0.4, 0.35, 0.25])],
)
def test_bool_int_float_and_string_copies_of_one_shift_get_the_same_verdict(
    ref_p: list[float], cur_p: list[float]
) -> None:
    rng = np.random.default_rng(104)
    k = len(ref_p)
    ref = _encodings(rng.choice(k, 10_000, p=ref_p))
    profile = _profile_of(ref)
    spec = PartialSpec.from_profile(profile)
    for n in (500, 5000, 50_000):
        rep = evaluate_drift(
            compute_partial(_table(_encodings(rng.choice(k, n, p=cur_p))), spec), profile
        )
        first = rep.features[0]
        assert first.method == "chi2+effect"
        for f in rep.features[1:]:
            assert f.method == "chi2+effect"
            assert f.p_value == pytest.approx(first.p_value, rel=1e-9)
            assert f.effect == pytest.approx(first.effect, rel=1e-9)
            assert f.moved_share == pytest.approx(first.moved_share, rel=1e-9)
            assert f.drifted == first.drifted


def test_the_effect_is_the_standard_deviations_moved() -> None:
    """A 10-point move from 30% is 0.1 / sqrt(0.3 * 0.7) = 0.218 sd coded 0/1 (0.210 by the
    bounded formula); a normal location shift of 0.5 sd is 0.5 sd."""
    rng = np.random.default_rng(105)
    ref = _encodings((rng.random(200_000) < 0.3).astype(np.int64))
    profile = _profile_of(ref)
    cur = _encodings((rng.random(200_000) < 0.4).astype(np.int64))
    rep = evaluate_drift(compute_partial(_table(cur), PartialSpec.from_profile(profile)), profile)
    for f in rep.features:
        assert f.effect == pytest.approx(0.21, abs=0.01)
        assert f.moved_share == pytest.approx(0.1, abs=0.005)
        assert re.search(r"moved 0\.2\d+ sd .*; 10\.\d% of rows moved", f.detail)
    x = numeric_profile(rng.normal(0, 1, 200_000))
    p = ReferenceProfile(rows=200_000, features={"x": x})
    rep = evaluate_drift(
        compute_partial(
            pa.table({"in.x": rng.normal(0.5, 1, 200_000)}), PartialSpec.from_profile(p)
        ),
        p,
    )
    assert rep.feature("x").effect == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("values", "ref_p", "cur_p"),
    [(2, [0.7, 0.3], [0.6, 0.4]), (3, [0.5, 0.3, 0.2], [0.4, 0.35, 0.25])],
)
def test_wasserstein_is_unbiased_for_discrete_columns_of_old_profiles(
    values: int, ref_p: list[float], cur_p: list[float]
) -> None:
    """Profiles from before the support was recorded: the grid points are the values themselves;
    W1 between two discrete distributions is the sum of |difference of CDFs| over the gaps."""
    ref_counts = (np.array(ref_p) * 10_000).astype(int)
    cur_counts = (np.array(cur_p) * 10_000).astype(int)
    ref = numeric_profile(np.repeat(np.arange(values, dtype=float), ref_counts))
    old = NumericProfile.from_dict(
        {
            k: v
            for k, v in ref.to_dict().items()
            if k not in ("distinct", "support", "support_counts")
        }
    )
    profile = ReferenceProfile(rows=10_000, features={"v": old}, version=2)
    spec = PartialSpec.from_profile(profile)
    cur = np.repeat(np.arange(values, dtype=float), cur_counts)
    f = evaluate_drift(compute_partial(pa.table({"in.v": cur}), spec), profile).feature("v")
    true_w1 = np.abs(np.cumsum(ref_p)[:-1] - np.cumsum(cur_p)[:-1]).sum()
    assert f.extra["wasserstein"] * old.std == pytest.approx(true_w1, rel=1e-9)
    assert f.method == "chi2+effect"  # judged like the categories it is


def test_values_off_a_discrete_support_count_as_other() -> None:
    rng = np.random.default_rng(106)
    ref = numeric_profile(rng.choice([0.0, 1.0, 2.0], 5000))
    assert ref.support == (0.0, 1.0, 2.0)
    grid = grid_of(ref)
    assert np.array_equal(grid, support_grid(np.array([0.0, 1.0, 2.0])))
    profile = ReferenceProfile(rows=5000, features={"v": ref})
    cur = rng.choice([0.0, 1.0, 2.0], 3000)
    cur[:150] = 0.5  # 5% of values between two of the reference's values
    f = evaluate_drift(
        compute_partial(pa.table({"in.v": cur}), PartialSpec.from_profile(profile)), profile
    ).feature("v")
    assert f.drifted is True
    assert f.extra["bins"]["labels"][-1] == "(other)"
    assert f.extra["bins"]["current"][-1] == pytest.approx(0.05)
    assert f.moved_share == pytest.approx(0.05, abs=0.02)


def test_support_grid_binning_is_exact() -> None:
    rng = np.random.default_rng(107)
    support = np.sort(rng.choice(np.arange(-50, 50) * 0.37, 20, replace=False))
    grid = support_grid(support)
    x = np.concatenate(
        (rng.choice(support, 10_000), rng.normal(0, 10, 10_000), np.nextafter(support, -np.inf))
    )
    idx = Binner(grid)(x)
    assert np.array_equal(idx, np.searchsorted(grid, x, side="right"))
    on = np.isin(x, support)
    assert (idx[on] % 2 == 1).all()
    assert (idx[~on] % 2 == 0).all()


# -- tails ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide() -> tuple[ReferenceProfile, PartialSpec]:
    rng = np.random.default_rng(108)
    feats = {f"x{i}": numeric_profile(rng.normal(0, 1, REF_N)) for i in range(10)}
    profile = ReferenceProfile(rows=REF_N, features=feats)
    return profile, PartialSpec.from_profile(profile)


def _tail_window(rng: np.random.Generator, n: int, share: float, sd: float) -> pa.Table:
    cols = {}
    for i in range(10):
        x = rng.normal(0, 1, n)
        if i == 0:
            x[rng.random(n) < share] += sd
        cols[f"in.x{i}"] = x
    return pa.table(cols)


def test_one_pct_of_rows_moved_by_10_sd_is_found_in_95pct_of_5000_row_windows(
    wide: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = wide
    rng = np.random.default_rng(109)
    windows, found = 150, 0
    for _ in range(windows):
        f = evaluate_drift(
            compute_partial(_tail_window(rng, 5000, 0.01, 10.0), spec), profile
        ).feature("x0")
        found += bool(f.tail_drifted)
    # 150 windows: at a true rate of 0.99 the binomial sd is 0.008, at 0.95 it is 0.018
    assert found / windows >= 0.95
    assert f.tail_share is not None and f.tail_reference_share is not None
    assert f.tail_share > 1.5 * f.tail_reference_share
    assert "sd above its maximum" in f.detail
    assert "tail contamination" in f.detail


def test_tail_check_false_alarms_stay_at_or_below_alpha(
    wide: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = wide
    rng = np.random.default_rng(110)
    windows, any_alarm = 150, 0
    for _ in range(windows):
        rep = evaluate_drift(compute_partial(_tail_window(rng, 5000, 0.0, 0.0), spec), profile)
        any_alarm += any(f.tail_drifted for f in rep.features)
        assert all(f.tail_p is not None for f in rep.features)
    # Benjamini-Hochberg over 10 features bounds P(any tail alarm | no change) by 0.05;
    # 150 windows: binomial sd 0.018, allow 2 sd
    assert any_alarm / windows <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / windows)


def test_a_small_location_shift_in_a_huge_window_is_drift_not_tail_contamination(
    one_feature: tuple[ReferenceProfile, ReferenceProfile],
) -> None:
    num, _ = one_feature
    x = num.features["x"]
    assert isinstance(x, NumericProfile)
    f = evaluate_drift(
        _numeric_window(np.random.default_rng(111), x, 10_000_000, 0.1), num
    ).feature("x")
    assert f.drifted is True
    tail = f.extra["tail"]
    assert tail["side"] == "above"
    assert tail["side_share"] > tail["side_reference_share"]  # the upper tail does grow a little
    assert f.tail_drifted is False  # but not by the doubling that marks contamination


# -- small references ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["normal", "lognormal", "ties"])
def test_a_bootstrap_of_a_300_row_reference_is_flagged_at_most_at_alpha(shape: str) -> None:
    """The window is drawn from the reference rows themselves: the same population. The test uses
    the reference's size, so its 300 values widen the band instead of raising alarms."""
    rng = np.random.default_rng(112)
    draw = {
        "normal": lambda n: rng.normal(0, 1, n),
        "lognormal": lambda n: rng.lognormal(0, 1.5, n),
        "ties": lambda n: np.round(rng.gamma(2, 3, n)),  # about 30 distinct values
    }[shape]
    rows = draw(300)
    profile = ReferenceProfile(rows=300, features={"x": numeric_profile(rows)})
    spec = PartialSpec.from_profile(profile)
    windows, alarms, tails = 150, 0, 0
    for _ in range(windows):
        f = evaluate_drift(
            compute_partial(pa.table({"in.x": rng.choice(rows, 5000)}), spec), profile
        ).feature("x")
        alarms += bool(f.drifted)
        tails += bool(f.tail_drifted)
    # 150 windows: binomial sd of a rate of 0.05 is 0.018; allow 2 sd
    assert alarms / windows <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / windows)
    assert tails / windows <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / windows)
    assert "the reference's 300 values limit this test, not the window's 5,000" in f.detail


@pytest.mark.parametrize(
    ("shape", "m"),
    [("integers", 50), ("zero_inflated", 50), ("categories", 100), ("zipf", 200), ("normal", 800)],
)
def test_small_references_against_fresh_windows_alarm_at_most_at_alpha(shape: str, m: int) -> None:
    """A new small reference for every window, both drawn from one population: the two-sample
    tests, pooling by the smaller sample and the exceedance test for tails keep drift and tail
    alarms at alpha, though a small reference misses rare values and its extreme quantiles are its
    own. (Zipf over 200 categories against 200-row references: 100% of windows flagged when the
    pooling counted the window's expected counts only.)"""
    rng = np.random.default_rng(114)
    draw = {
        "integers": lambda n: rng.binomial(10, 0.3, n).astype(float),  # values 7-10: 1% together
        "zero_inflated": lambda n: np.where(rng.random(n) < 0.7, 0.0, rng.exponential(5, n)),
        "categories": lambda n: rng.choice(list("abcdefghij"), n, p=np.r_[0.5, np.full(9, 1 / 18)]),
        "normal": lambda n: rng.normal(0, 1, n),
        "zipf": lambda n: rng.choice(ZIPF, n, p=ZIPF_P),
    }[shape]
    windows, alarms, tails = 200, 0, 0
    for _ in range(windows):
        rows = draw(m)
        categorical = shape in ("categories", "zipf")
        feat = categorical_profile(pd.Series(rows)) if categorical else numeric_profile(rows)
        profile = ReferenceProfile(rows=m, features={"x": feat})
        part = compute_partial(pa.table({"in.x": draw(5000)}), PartialSpec.from_profile(profile))
        f = evaluate_drift(part, profile).feature("x")
        alarms += bool(f.drifted)
        tails += bool(f.tail_drifted)
    # 200 independent references: binomial sd of a rate of 0.05 is 0.0154; allow 2 sd
    assert alarms / windows <= 0.05 + 2 * _se(0.05, windows)
    assert tails / windows <= 0.05 + 2 * _se(0.05, windows)


# -- settings and partials -------------------------------------------------------------------


def test_large_window_is_refused_naming_min_effect() -> None:
    with pytest.raises(InvalidInputError, match="min_effect"):
        DriftSettings.from_dict({"large_window": 1000})
    with pytest.raises(InvalidInputError, match="min_effect"):
        DriftSettings(min_effect=-0.1)
    stored = DriftSettings.from_stored({"alpha": 0.01, "large_window": 1000})
    assert stored.alpha == 0.01
    assert stored.min_effect == 0.05


def test_min_effect_and_feature_thresholds_set_the_floor(
    one_feature: tuple[ReferenceProfile, ReferenceProfile],
) -> None:
    num, _ = one_feature
    x = num.features["x"]
    assert isinstance(x, NumericProfile)
    part = _numeric_window(np.random.default_rng(113), x, 1_000_000, 0.1)
    assert evaluate_drift(part, num).feature("x").drifted is True
    assert evaluate_drift(part, num, DriftSettings(min_effect=0.2)).feature("x").drifted is False
    over = DriftSettings(min_effect=0.2, feature_thresholds={"x": 0.08})
    assert evaluate_drift(part, num, over).feature("x").threshold == 0.08
    assert evaluate_drift(part, num, over).feature("x").drifted is True


def test_window_extremes_merge() -> None:
    grid = np.array([0.0, 1.0])
    from ownloop.monitoring._partial import numeric_partial

    a = numeric_partial(np.array([0.5, -3.0, np.nan]), grid)
    b = numeric_partial(np.array([7.0, 0.2]), grid)
    c = numeric_partial(np.array([np.nan]), grid)
    m = merge_all(WindowPartial(features={"x": p}) for p in (a, c, b)).features["x"]
    assert isinstance(m, NumericPartial)
    assert (m.lo, m.hi) == (-3.0, 7.0)
    assert (c.lo, c.hi) == (None, None)
