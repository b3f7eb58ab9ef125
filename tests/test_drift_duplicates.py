"""Windows of repeated rows: the tests take the window's distinct rows as its size.

A window of 5,000 rows drawn (with replacement) from a few hundred distinct inputs, the same
customers scored again and again, holds the information of those few hundred; judged as 5,000
independent rows it is flagged in most windows though nothing drifted.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop.monitoring import (
    DriftReport,
    PartialSpec,
    WindowPartial,
    compute_partial,
    evaluate_drift,
)
from ownloop.monitoring._partial import NumericPartial, hll_count, hll_sketch, numeric_partial
from ownloop.profile import ReferenceProfile, categorical_profile, numeric_profile

CATS = np.array(["a", "b", "c", "d"])
CAT_P = np.array([0.4, 0.3, 0.2, 0.1])
WINDOW = 5000


def _population(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "income": rng.lognormal(10, 1, n),
            "score": rng.uniform(0, 1, n),
            "age": rng.normal(40, 10, n),
            "kind": rng.choice(CATS, n, p=CAT_P),
            "flag": (rng.random(n) < 0.3).astype(np.int64),
        }
    )


def _profile(frame: pd.DataFrame) -> ReferenceProfile:
    feats = {
        c: categorical_profile(frame[c]) if c == "kind" else numeric_profile(frame[c].to_numpy())
        for c in frame.columns
    }
    return ReferenceProfile(rows=len(frame), features=feats)


@pytest.fixture(scope="module")
def reference() -> tuple[ReferenceProfile, PartialSpec]:
    profile = _profile(_population(np.random.default_rng(0), 20_000))
    return profile, PartialSpec.from_profile(profile)


def _partial(frame: pd.DataFrame, spec: PartialSpec) -> WindowPartial:
    return compute_partial(pa.table({f"in.{c}": frame[c].to_numpy() for c in frame}), spec)


def _unsketched(part: WindowPartial) -> WindowPartial:
    """The same partial without distinct-value sketches: judged as the code did before them."""
    feats = {
        k: replace(v, hll=np.zeros(0, dtype=np.uint8)) if isinstance(v, NumericPartial) else v
        for k, v in part.features.items()
    }
    return replace(part, features=feats)


def _flagged(rep: DriftReport) -> bool:
    return bool(rep.drifted_features) or any(f.tail_drifted for f in rep.features)


def _boot(rng: np.random.Generator, pool: pd.DataFrame, n: int = WINDOW) -> pd.DataFrame:
    return pool.iloc[rng.integers(0, len(pool), n)].reset_index(drop=True)


@pytest.mark.parametrize("n", [1000, 100_000])
def test_the_sketch_counts_distinct_values_within_a_few_percent(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    repeated = np.concatenate([x, x[rng.integers(0, n, 3 * n)], -np.zeros(3), [np.nan, np.inf]])
    # 2^11 registers: relative sd 1.04 / sqrt(2048) = 2.3%; 6% is over 2.5 sd
    assert hll_count(hll_sketch(repeated)) == pytest.approx(n + 1, rel=0.06)


def test_sketches_merge_to_the_sketch_of_the_union() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=30_000), rng.normal(size=20_000)
    b[:5000] = a[:5000]  # overlapping values count once
    grid = np.linspace(-3, 3, 50)
    pa_, pb = numeric_partial(a, grid, sketch=True), numeric_partial(b, grid, sketch=True)
    merged = pa_.merge(pb)
    np.testing.assert_array_equal(merged.hll, hll_sketch(np.concatenate([a, b])))
    assert hll_count(merged.hll) == pytest.approx(45_000, rel=0.06)
    whole = WindowPartial(features={"x": merged})
    back = WindowPartial.from_json(json.loads(json.dumps(whole.to_json())))
    got = back.features["x"]
    assert isinstance(got, NumericPartial)
    np.testing.assert_array_equal(got.hll, merged.hll)


def test_only_never_repeating_continuous_columns_are_sketched(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    _, spec = reference
    assert spec.distinct == ("x", "income", "score", "age")  # not the category, not the 0/1 flag


@pytest.mark.parametrize("pool_rows", [200, 500])
def test_windows_of_repeated_rows_flag_at_about_alpha(
    reference: tuple[ReferenceProfile, PartialSpec], pool_rows: int
) -> None:
    """5,000 rows bootstrapped from a fresh pool of the reference's population, nothing drifted."""
    profile, spec = reference
    rng = np.random.default_rng(pool_rows)
    windows = 200
    flagged = before = 0
    effective: list[int] = []
    distinct: list[int] = []
    for _ in range(windows):
        part = _partial(_boot(rng, _population(rng, pool_rows)), spec)
        rep = evaluate_drift(part, profile)
        flagged += _flagged(rep)
        before += _flagged(evaluate_drift(_unsketched(part), profile))
        assert rep.effective_rows is not None and rep.distinct_rows is not None
        effective.append(rep.effective_rows)
        distinct.append(rep.distinct_rows)
    # the window holds about pool_rows distinct rows (a 5,000-row bootstrap misses few of them);
    # drawn at random from them, it varies like n N / (n + N) independent rows
    seen = pool_rows * -np.expm1(-WINDOW / pool_rows)
    assert np.median(distinct) == pytest.approx(seen, rel=0.06)
    kish = WINDOW * pool_rows / (WINDOW + pool_rows)
    assert np.median(effective) == pytest.approx(kish, rel=0.06)
    # two families, values and tails, each bounded by 5% under no drift: the nominal any-flag rate
    # is up to 10%; 200 windows: at 10% the sd is 2.1 points; allow 2.5 sd (measured over 400
    # windows: 6.5% for pools of 200, 9.2% for 500, against 100% for both without the correction)
    assert flagged / windows <= 0.10 + 2.5 * np.sqrt(0.1 * 0.9 / windows)
    # judged as 5,000 independent rows, most of these windows were flagged
    assert before / windows >= 0.3


def test_fresh_rows_are_judged_exactly_as_before(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    rng = np.random.default_rng(7)
    for n in (100, 1000, 5000, 50_000):
        for _ in range(3):
            part = _partial(_population(rng, n, shift=0.05), spec)
            rep, old = evaluate_drift(part, profile), evaluate_drift(_unsketched(part), profile)
            assert rep.effective_rows is None
            pd.testing.assert_frame_equal(rep.to_frame(), old.to_frame())
            assert rep.summary == old.summary


def test_a_column_stuck_at_one_value_is_drift_not_repeated_rows(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    window = _population(np.random.default_rng(11), WINDOW).assign(x=0.0)
    rep = evaluate_drift(_partial(window, spec), profile)
    assert rep.effective_rows is None  # the other columns hold 5,000 distinct values each
    assert "x" in rep.drifted_features


def test_a_fine_but_finite_resolution_is_not_read_as_repeats() -> None:
    """Values rounded so the reference ties 0.8% of the time: a 1M-row window of fresh values ties
    far more often (birthday collisions), which the reference's own ties predict."""
    rng = np.random.default_rng(8)
    h = 2.5e-6

    def rounded(n: int) -> np.ndarray:
        out: np.ndarray = np.round(rng.normal(size=n) / h) * h
        return out

    ref = numeric_profile(rounded(20_000))
    assert ref.distinct is not None and ref.distinct < 0.995 * ref.finite
    profile = ReferenceProfile(rows=20_000, features={"x": ref})
    spec = PartialSpec.from_profile(profile)
    assert spec.distinct == ("x",)
    x = rounded(1_000_000)
    assert len(np.unique(x)) < 0.8 * x.size  # without the reference's ties this looks repeated
    rep = evaluate_drift(compute_partial(pa.table({"in.x": x}), spec), profile)
    assert rep.effective_rows is None
    for n in (5000, 50_000):  # fresh windows the column can judge (fresh values would not tie)
        fresh = evaluate_drift(compute_partial(pa.table({"in.x": rounded(n)}), spec), profile)
        assert fresh.effective_rows is None
    pool = rounded(300)  # ... and repeats in them are still seen
    window = pool[rng.integers(0, 300, 5000)]
    rep = evaluate_drift(compute_partial(pa.table({"in.x": window}), spec), profile)
    assert rep.distinct_rows == pytest.approx(300, rel=0.06)


def test_only_categories_and_discrete_values_get_no_correction() -> None:
    rng = np.random.default_rng(9)
    frame = _population(rng, 20_000)[["kind", "flag"]]
    profile = _profile(frame)
    spec = PartialSpec.from_profile(profile)
    assert spec.distinct == ()
    part = _partial(_boot(rng, _population(rng, 200)[["kind", "flag"]]), spec)
    rep = evaluate_drift(part, profile)
    assert rep.effective_rows is None
    assert not any("effective_n" in f.extra for f in rep.features)


def test_a_half_sd_shift_in_a_window_of_repeated_rows_is_still_found(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    profile, spec = reference
    rng = np.random.default_rng(10)
    windows = 40
    found = 0
    rep: DriftReport | None = None
    for _ in range(windows):
        pool = _population(rng, 200)
        pool["x"] += 0.5  # the reference's sd is 1
        rep = evaluate_drift(_partial(_boot(rng, pool), spec), profile)
        found += "x" in rep.drifted_features
    # 40 windows: at a true rate of 95% the sd is 3.4 points
    assert found / windows >= 0.9
    assert rep is not None and rep.effective_rows is not None
    assert "distinct inputs (repeated rows); tests use" in rep.summary
    assert "repeated rows: tests use" in rep.feature("x").detail


def test_the_monitor_results_keep_the_effective_size(
    reference: tuple[ReferenceProfile, PartialSpec],
) -> None:
    from datetime import UTC, datetime

    from ownloop.monitoring._report import WindowReport, result_rows, system_figures

    profile, spec = reference
    rng = np.random.default_rng(12)
    part = _partial(_boot(rng, _population(rng, 300)), spec)
    rep = evaluate_drift(part, profile)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    window = WindowReport("m", 1, now, now, part.rows, rep, None, (), (), system_figures(part, 0.0))
    rows = [r for r in result_rows(window) if r["name"] == "effective_rows"]
    assert len(rows) == 1 and rows[0]["kind"] == "dataset_drift"
    assert rows[0]["value"] == rep.effective_rows
    assert rows[0]["n"] == WINDOW
    assert "distinct inputs (repeated rows)" in rows[0]["detail"]
