"""Drift on pandas frames: the fast paths (categories through Arrow, figures read off one sort,
the in-place sketch, columns on threads) give exactly what the plain computations give."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import ownloop
from ownloop.monitoring import PartialSpec, compute_partial
from ownloop.monitoring._batch import category_array, frame_profile
from ownloop.monitoring._partial import (
    HLL_BITS,
    _hll_ranks,
    categorical_partial,
    hll_sketch,
    map_columns,
)
from ownloop.profile import N_HIST_BINS, ReferenceProfile, numeric_profile

N = 3000


def _texts(rng: np.random.Generator, p: tuple[float, ...] = (0.5, 0.3, 0.15, 0.05)) -> np.ndarray:
    values = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), N, p=p)
    values[rng.random(N) < 0.05] = None
    values[rng.random(N) < 0.03] = np.nan
    return values


def _columns() -> dict[str, pd.Series]:
    rng = np.random.default_rng(0)
    texts = _texts(rng)
    numbers = rng.integers(0, 4, N)
    flags = rng.random(N) < 0.3
    mixed = np.array([1, "1", 2.5, True, None, "x", np.nan, pd.NA], dtype=object)
    return {
        "object text with None and NaN": pd.Series(texts, dtype=object),
        "object text with pd.NA": pd.Series(np.where(pd.isna(texts), pd.NA, texts), dtype=object),
        "string[pyarrow]": pd.Series(texts, dtype="string[pyarrow]"),
        "string[python]": pd.Series(texts, dtype=pd.StringDtype("python")),
        "arrow string": pd.Series(texts, dtype=pd.ArrowDtype(pa.string())),
        "categorical of text": pd.Series(texts, dtype="category"),
        "categorical of numbers": pd.Series(numbers * 1.5, dtype="category"),
        "numbers stored as object": pd.Series(numbers.astype(object)),
        "floats stored as object": pd.Series((numbers * 0.5).astype(object)),
        "bool": pd.Series(flags),
        "nullable boolean": pd.Series(np.where(rng.random(N) < 0.1, None, flags), dtype="boolean"),
        "bools stored as object": pd.Series(flags.astype(object)),
        "mixed objects": pd.Series(np.resize(mixed, N)),
        "nothing but missing": pd.Series([None] * N, dtype=object),
    }


COLUMNS = _columns()


@pytest.mark.parametrize("name", list(COLUMNS))
def test_categories_through_arrow_count_each_value_as_its_text(name: str) -> None:
    """Known truth: a category is str(value), missing values (None, NaN, pd.NA) are not one."""
    s = COLUMNS[name]
    truth = Counter(str(v) for v in s.astype(object) if not pd.isna(v))
    part = categorical_partial(category_array(s))
    assert part.counts == dict(truth)
    assert part.nulls == int(s.isna().sum())
    assert part.n == len(s)


def test_a_current_column_of_another_dtype_gets_the_same_verdicts() -> None:
    """The reference holds object text; the current frame the same values as object text, a pandas
    categorical and pyarrow strings: the three reports are identical, and find the shift of 'd'
    from 5% to 20% of rows (the numeric column does not move)."""
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"plan": pd.Series(_texts(rng), dtype=object), "x": rng.normal(size=N)})
    texts = _texts(np.random.default_rng(2), (0.4, 0.25, 0.15, 0.2))
    x = rng.normal(size=N)
    frames = [
        ownloop.drift(ref, pd.DataFrame({"plan": pd.Series(texts, dtype=dtype), "x": x}))
        .to_frame()
        .set_index("feature")
        for dtype in ("object", "category", "string[pyarrow]")
    ]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    assert bool(frames[0].loc["plan", "drifted"]) is True
    assert bool(frames[0].loc["x", "drifted"]) is False


def _drawn(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    x: np.ndarray = {
        "normal": lambda: rng.normal(3, 2, n),
        "counts": lambda: rng.poisson(2, n).astype(float),
        "rounded": lambda: np.round(rng.lognormal(0, 1, n), 1),
        "with missing": lambda: np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "with infinities": lambda: np.r_[rng.normal(size=n - 2), np.inf, -np.inf],
        "ids": lambda: rng.permutation(n).astype(float),
        "constant": lambda: np.full(n, 7.0),
        "a few floats apart": lambda: 1.0 + np.arange(n) % 40 * np.spacing(1.0),
    }[shape]()
    return x


SHAPES = [
    "normal",
    "counts",
    "rounded",
    "with missing",
    "with infinities",
    "ids",
    "constant",
    "a few floats apart",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_numeric_profile_figures_equal_the_plain_computations(shape: str) -> None:
    x = _drawn(shape, 20_000, np.random.default_rng(3))
    p = numeric_profile(x)
    finite = x[np.isfinite(x)]
    counts, edges = np.histogram(finite, bins=N_HIST_BINS)
    assert p.hist_counts == tuple(counts) and p.hist_edges == tuple(edges)
    values, times = np.unique(finite, return_counts=True)
    assert p.distinct == values.size
    if values.size <= 20:
        assert p.support == tuple(values) and p.support_counts == tuple(times)
    else:
        assert p.support is None
    grid = np.asarray(p.grid)
    below = np.searchsorted(grid, finite, side="right")
    assert p.grid_counts == tuple(np.bincount(below, minlength=grid.size + 1))
    assert p.identifier is (shape == "ids")
    assert (p.nulls, p.nonfinite) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))


def _plain_hll(values: np.ndarray) -> np.ndarray:
    """The sketch written step by step (splitmix64, frexp, maximum.at): the definition."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)] + 0.0
    z = x.view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    q = 64 - HLL_BITS
    _, bit_length = np.frexp((z & np.uint64((1 << q) - 1)).astype(np.float64))
    registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)
    np.maximum.at(registers, (z >> np.uint64(q)).astype(np.intp), (q + 1 - bit_length))
    return registers


@pytest.mark.parametrize("shape", SHAPES)
def test_sketch_equals_its_plain_definition(shape: str) -> None:
    x = _drawn(shape, 50_000, np.random.default_rng(4))
    assert np.array_equal(hll_sketch(x), _plain_hll(x))


def test_sketch_ranks_at_the_edges_equal_frexp() -> None:
    """Ranks of 0 (every bit zero), 1, powers of two and the largest q-bit value."""
    q = 64 - HLL_BITS
    low = [0, 1, 2, 3, 4, 7, 8, 2**q - 1, 2 ** (q - 1), 2 ** (q - 1) - 1, 12345]
    rng = np.random.default_rng(5)
    z = np.array(low + list(rng.integers(0, 2**q, 1000)), dtype=np.uint64)
    want = q + 1 - np.frexp(z.astype(np.float64))[1]
    _hll_ranks(z, q)
    assert z.tolist() == want.tolist()


def test_partial_on_threads_equals_the_partial_on_one() -> None:
    rng = np.random.default_rng(6)
    n = 20_000
    ref = pd.DataFrame(
        {
            **{f"x{i}": rng.normal(size=n) for i in range(4)},
            "counts": rng.poisson(3, n).astype(float),
            "order_id": np.arange(n),
            "plan": rng.choice(["a", "b", "c"], n),
            "absent": rng.normal(size=n),
        }
    )
    profile = frame_profile(ref, list(ref.columns))
    spec = PartialSpec.from_profile(profile)
    cur = pa.table(
        {f"in.{c}": ref[c].to_numpy()[::-1] for c in ref.columns if c != "absent"}
        | {"in.x0": np.r_[rng.normal(0.3, 1, n - 3), np.nan, np.inf, -np.inf]}
    )
    one = compute_partial(cur, spec).to_json()
    assert compute_partial(cur, spec, threads=3).to_json() == one
    order = [*spec.numeric, *spec.identifiers, *spec.categorical]  # as on one thread
    assert list(compute_partial(cur, spec, threads=3).features) == order
    assert spec.identifiers == ("order_id",) and "absent" in spec.numeric


def test_frame_profile_equals_the_profile_of_each_column() -> None:
    """A frame large enough for threads (see column_threads) profiles as its columns do."""
    rng = np.random.default_rng(7)
    n = 120_000
    ref = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.poisson(2, n), "c": rng.choice(["u", "v"], n)}
    )
    got = frame_profile(ref, ["a", "b", "c"])
    assert got.features["a"] == numeric_profile(ref["a"].to_numpy())
    assert got.features["b"] == numeric_profile(ref["b"].to_numpy(dtype=float))
    assert isinstance(got, ReferenceProfile) and list(got.features) == ["a", "b", "c"]


def test_threads_return_in_order_and_raise_the_first_error() -> None:
    def square(v: int) -> int:
        if v in (5, 7):
            raise ValueError(f"bad {v}")
        return v * v

    assert map_columns(square, [3, 1, 2], threads=2) == [9, 1, 4]
    with pytest.raises(ValueError, match="bad 5"):
        map_columns(square, list(range(10)), threads=3)
