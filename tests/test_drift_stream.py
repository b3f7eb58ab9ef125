"""Drift over Parquet files, streamed: the same figures as in memory, in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ownloop
from ownloop.cli import cli
from ownloop.errors import InvalidInputError
from ownloop.monitoring._batch import frame_profile
from ownloop.monitoring._stream import (
    CATEGORY_CAP,
    _batches,
    _distinct,
    _open,
    drift_stream,
    stream_profile,
)
from ownloop.profile import CategoricalProfile, NumericProfile

TRUTH = {"x0", "x1", "c0"}  # drifted in the current data below; the other columns are not
COLUMNS = ["x0", "x1", "x2", "x3", "k", "c0", "c1", "flag"]


def _frame(rng: np.random.Generator, n: int, drifted: bool) -> pd.DataFrame:
    shift = 0.3 if drifted else 0.0
    c0_p = [0.2, 0.3, 0.3, 0.2] if drifted else [0.1, 0.3, 0.3, 0.3]
    x3 = rng.normal(0, 1, n)
    x3[rng.random(n) < 0.01] = np.nan
    return pd.DataFrame(
        {
            "x0": rng.normal(shift, 1, n),
            "x1": rng.lognormal(0, 0.5, n) * (1.5 if drifted else 1.0),
            "x2": rng.normal(0, 1, n),
            "x3": x3,
            "k": rng.poisson(3, n).astype(np.int64),
            "c0": rng.choice(list("abcd"), n, p=c0_p),
            "c1": rng.choice(list("xyz"), n),
            "flag": rng.random(n) < 0.3,
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    rng = np.random.default_rng(7)
    ref, cur = _frame(rng, 60_000, False), _frame(rng, 40_000, True)
    folder = tmp_path_factory.mktemp("parquet")
    pq.write_table(pa.Table.from_pandas(ref), folder / "ref.parquet", row_group_size=9_000)
    pq.write_table(pa.Table.from_pandas(cur), folder / "cur.parquet", row_group_size=7_000)
    return ref, cur, folder


def _figures(res: ownloop.DriftChunks) -> pd.DataFrame:
    return res.to_frame()[["chunk", "start", "end", "feature", "score", "p_value", "drifted"]]


def test_a_reference_within_the_sample_gives_the_in_memory_figures_exactly(
    data: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    ref, cur, folder = data
    memory = ownloop.drift(ref, cur, chunk_size=15_000)
    streamed = drift_stream(
        folder / "ref.parquet", folder / "cur.parquet", chunk_size=15_000, batch_rows=4_000
    )
    # chunks of 15,000 rows cross batches of 4,000 and row groups of 7,000
    assert [(c.start, c.end) for c in streamed] == [(0, 15_000), (15_000, 30_000), (30_000, 40_000)]
    pd.testing.assert_frame_equal(_figures(streamed), _figures(memory))


def test_a_sampled_reference_flags_the_same_columns_with_close_figures(
    data: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    """The cuts come from 6,000 of 60,000 rows: a cut's rank is off by about
    sqrt(q (1 - q) / 6000) <= 0.65% of the rows, so a KS distance or a Wasserstein score in sd
    moves by about that much; 0.02 is three times it. Categories are counted exactly."""
    ref, cur, folder = data
    memory = _figures(ownloop.drift(ref, cur)).set_index("feature")
    streamed = _figures(
        drift_stream(
            folder / "ref.parquet", folder / "cur.parquet", sample_rows=6_000, batch_rows=5_000
        )
    ).set_index("feature")
    assert set(memory.index[memory["drifted"]]) == TRUTH
    assert set(streamed.index[streamed["drifted"]]) == TRUTH
    np.testing.assert_allclose(streamed["score"], memory["score"], atol=0.02)
    for c in ("k", "c0", "c1", "flag"):  # discrete and categorical: exact counts, exact figures
        assert streamed.loc[c, "score"] == pytest.approx(memory.loc[c, "score"], abs=1e-12)


def test_a_sampled_profile_has_exact_counts_in_its_cuts(
    data: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    ref, _, folder = data
    got = stream_profile(_open(folder / "ref.parquet", "reference"), COLUMNS, sample_rows=6_000)
    assert (got.passes, got.sampled, got.rows) == (2, 6_000, 60_000)
    exact = frame_profile(ref, COLUMNS)
    for c in ("x0", "x1", "x3"):
        feat = got.profile.features[c]
        assert isinstance(feat, NumericProfile)
        x = ref[c].to_numpy()
        x = x[np.isfinite(x)]
        cuts, grid = np.asarray(feat.cuts), np.asarray(feat.grid)
        assert list(feat.bin_counts) == list(np.bincount(np.searchsorted(cuts, x, "right")))
        assert list(feat.grid_counts) == list(
            np.bincount(np.searchsorted(grid, x, "right"), minlength=grid.size + 1)
        )
        want = exact.features[c]
        assert isinstance(want, NumericProfile)
        assert (feat.count, feat.nulls, feat.min, feat.max, feat.hist_counts) == (
            want.count,
            want.nulls,
            want.min,
            want.max,
            want.hist_counts,
        )
        assert feat.mean == pytest.approx(want.mean, rel=1e-9)
        assert feat.std == pytest.approx(want.std, rel=1e-9)
        assert not feat.identifier and feat.distinct == want.distinct  # every value distinct
    k, want_k = got.profile.features["k"], exact.features["k"]
    assert isinstance(k, NumericProfile) and isinstance(want_k, NumericProfile)
    # discrete: binned on its values, counted exactly (its quantiles still come from the sample)
    assert (k.support, k.support_counts, k.distinct) == (
        want_k.support,
        want_k.support_counts,
        want_k.distinct,
    )
    assert got.profile.features["c0"] == exact.features["c0"]


def test_the_sample_never_holds_more_than_its_cap(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    pq.write_table(pa.table({"x": rng.normal(size=n)}), tmp_path / "r.parquet")
    got = stream_profile(
        _open(tmp_path / "r.parquet", "reference"), ["x"], sample_rows=2_000, batch_rows=1_000
    )
    assert got.sampled == 2_000 and got.rows == n
    # bottom-k: cut back to 2,000 rows whenever it reaches 2,500, so at most that plus a batch
    assert got.largest_sample < 2_000 + 2_000 // 4 + 1_000


def test_batches_never_exceed_the_batch_size(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"x": np.arange(10_000.0)}), tmp_path / "r.parquet", row_group_size=3_000
    )
    data = _open(tmp_path / "r.parquet", "reference")
    sizes = [b.num_rows for b in _batches(data, ["x"], 700)]
    assert max(sizes) <= 700 and sum(sizes) == 10_000
    pf = pq.ParquetFile(tmp_path / "r.parquet")
    sizes = [b.num_rows for b in _batches(pf, ["x"], 700)]
    assert max(sizes) <= 700 and sum(sizes) == 10_000


def test_a_folder_of_files_is_one_dataset_in_file_name_order(
    data: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    ref, cur, _ = data
    parts = [(0, 13_000), (13_000, 25_000), (25_000, 40_000)]
    for i, (a, b) in enumerate(parts):  # written out of order: names decide
        piece = pa.Table.from_pandas(cur.iloc[a:b].reset_index(drop=True))
        pq.write_table(piece, tmp_path / f"part-{2 - i}.parquet", row_group_size=5_000)
        (tmp_path / f"part-{2 - i}.parquet").rename(tmp_path / f"part-{i}.parquet.tmp")
    for f in tmp_path.glob("*.tmp"):
        f.rename(f.with_suffix(""))
    memory = ownloop.drift(ref, cur, chunk_number=3)
    streamed = ownloop.drift(ref, tmp_path, chunk_number=3)
    pd.testing.assert_frame_equal(_figures(streamed), _figures(memory))


def test_datasets_parquet_files_and_frames_mix(
    data: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    ref, cur, folder = data
    want = _figures(ownloop.drift(ref, cur, chunk_size=25_000))
    for r, c in (
        (ds.dataset(folder / "ref.parquet"), pq.ParquetFile(folder / "cur.parquet")),
        (str(folder / "ref.parquet"), cur),
        (pq.ParquetFile(folder / "ref.parquet"), ds.dataset(folder / "cur.parquet")),
    ):
        pd.testing.assert_frame_equal(_figures(ownloop.drift(r, c, chunk_size=25_000)), want)


def test_an_empty_current_gives_one_empty_chunk(
    data: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    _, cur, folder = data
    pq.write_table(pa.Table.from_pandas(cur.iloc[:0]), tmp_path / "empty.parquet")
    res = ownloop.drift(folder / "ref.parquet", tmp_path / "empty.parquet")
    assert [(c.start, c.end, c.report.rows) for c in res] == [(0, 0, 0)]


def test_identifiers_and_repeated_values_are_read_from_the_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    table = pa.table(
        {
            "id": rng.permutation(n).astype(np.int64) + 10**9,
            "tens": np.repeat(rng.normal(size=n // 10), 10),  # 4,000 values, 10 rows each
            "name": [f"u{i}" for i in rng.permutation(n)],
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    got = stream_profile(
        _open(tmp_path / "r.parquet", "reference"), table.column_names, sample_rows=5_000
    )
    ident, tens = got.profile.features["id"], got.profile.features["tens"]
    assert isinstance(ident, NumericProfile) and ident.identifier
    assert isinstance(tens, NumericProfile) and not tens.identifier
    assert tens.distinct == pytest.approx(4_000, rel=0.1)
    name = got.profile.features["name"]
    assert isinstance(name, CategoricalProfile) and name.identifier and name.distinct == n


def test_the_distinct_estimate_is_exact_on_a_whole_column() -> None:
    assert _distinct(50, 150, 150) == 50
    assert _distinct(100, 100, 1_000) == 1_000  # no repeat in the sample: all distinct
    # 1,000 values 10 times each; a tenth of the rows shows 1,000 (1 - 0.9^10) = 651 of them
    assert _distinct(651, 1_000, 10_000) == pytest.approx(1_000, rel=0.01)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.parquet", "does not exist"),
        (
            lambda d: (d / "text.parquet").write_text("a,b\n1,2\n") and d / "text.parquet",
            "not readable as Parquet",
        ),
        (lambda d: (d / "empty").mkdir() or d / "empty", "holds no Parquet files"),
    ],
)
def test_unreadable_reference_data_is_refused_by_name(
    tmp_path: Path, data: tuple[pd.DataFrame, pd.DataFrame, Path], make: object, match: str
) -> None:
    _, _, folder = data
    with pytest.raises(InvalidInputError, match=match):
        ownloop.drift(make(tmp_path), folder / "cur.parquet")  # type: ignore[operator]


def test_a_column_missing_from_the_current_data_is_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    _, cur, folder = data
    pq.write_table(pa.Table.from_pandas(cur.drop(columns=["x2"])), tmp_path / "c.parquet")
    with pytest.raises(InvalidInputError, match="'x2' are in the reference but not in the current"):
        ownloop.drift(folder / "ref.parquet", tmp_path / "c.parquet")


def test_text_where_the_reference_has_numbers_is_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path
) -> None:
    _, cur, folder = data
    bad = cur.assign(x0=cur["x0"].map(lambda v: f"{v:.3f}".replace(".", ",")))
    pq.write_table(pa.Table.from_pandas(bad), tmp_path / "c.parquet")
    with pytest.raises(InvalidInputError, match="'x0' of the current data .* decimal comma"):
        ownloop.drift(folder / "ref.parquet", tmp_path / "c.parquet")


def test_a_column_type_that_cannot_be_profiled_is_refused(tmp_path: Path) -> None:
    t = pa.table({"when": pa.array([0, 1, 2], pa.timestamp("s")), "x": [1.0, 2.0, 3.0]})
    pq.write_table(t, tmp_path / "r.parquet")
    with pytest.raises(InvalidInputError, match="'when' has type timestamp"):
        ownloop.drift(tmp_path / "r.parquet", tmp_path / "r.parquet")


def test_an_empty_reference_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": pa.array([], pa.float64())}), tmp_path / "r.parquet")
    with pytest.raises(InvalidInputError, match="reference data has no rows"):
        ownloop.drift(tmp_path / "r.parquet", tmp_path / "r.parquet")


def test_the_cli_prints_each_chunk_and_json(
    data: tuple[pd.DataFrame, pd.DataFrame, Path],
) -> None:
    _, _, folder = data
    args = ["drift-files", str(folder / "ref.parquet"), str(folder / "cur.parquet")]
    out = CliRunner().invoke(cli, [*args, "--chunk-number", "2"])
    assert out.exit_code == 0, out.output
    assert "chunk 1 (rows 20000 to 39999)" in out.output and "x0" in out.output
    out = CliRunner().invoke(cli, [*args, "--columns", "x0,c1", "--json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert [f["feature"] for f in got[0]["report"]["features"]] == ["x0", "c1"]
    assert got[0]["report"]["features"][0]["drifted"] is True


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["missing.parquet", "{cur}"], "does not exist"),
        (["{ref}", "{ref}", "--columns", "nope"], "'nope' are not in the reference data"),
        (["{text}", "{cur}"], "not readable as Parquet"),
        (["{ref}", "{other}"], "are in the reference but not in the current data"),
    ],
)
def test_the_cli_refuses_bad_input_with_exit_2_and_no_traceback(
    data: tuple[pd.DataFrame, pd.DataFrame, Path], tmp_path: Path, args: list[str], match: str
) -> None:
    _, _, folder = data
    (tmp_path / "t.parquet").write_text("not parquet")
    pq.write_table(pa.table({"zz": [1.0, 2.0]}), tmp_path / "other.parquet")  # no common column
    paths = {
        "ref": folder / "ref.parquet",
        "cur": folder / "cur.parquet",
        "text": tmp_path / "t.parquet",
        "other": tmp_path / "other.parquet",
    }
    out = CliRunner().invoke(cli, ["drift-files", *(a.format(**paths) for a in args)])
    assert out.exit_code == 2
    assert match in out.output and "Traceback" not in out.output


def test_a_categorical_column_with_too_many_values_is_profiled_from_the_sample(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(9)
    n = CATEGORY_CAP + 20_000
    email = pa.array([f"user{i}@example.com" for i in rng.permutation(n)])
    pq.write_table(pa.table({"email": email}), tmp_path / "r.parquet")
    got = stream_profile(_open(tmp_path / "r.parquet", "reference"), ["email"], sample_rows=10_000)
    feat = got.profile.features["email"]
    assert isinstance(feat, CategoricalProfile)
    assert (feat.count, feat.nulls, feat.distinct, feat.identifier) == (n, 0, n, True)
    assert sum(feat.categories.values()) + feat.other == n


def test_files_of_a_folder_may_differ_in_column_order_and_integer_width(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    x = [1, 2, 3] * 200
    pq.write_table(
        pa.table({"x": pa.array(x, pa.int64()), "c": ["a", "b"] * 300}), tmp_path / "ref/a.parquet"
    )
    pq.write_table(
        pa.table({"c": ["a", "b"] * 300, "x": pa.array(x, pa.int32())}), tmp_path / "ref/b.parquet"
    )
    res = ownloop.drift(tmp_path / "ref", tmp_path / "ref")
    assert res[0].report.rows == 1_200 and res[0].report.drifted_features == ()


def test_a_file_of_a_folder_without_a_compared_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "ref").mkdir()
    pq.write_table(pa.table({"x": [1.0, 2.0], "c": ["a", "b"]}), tmp_path / "ref/a.parquet")
    pq.write_table(pa.table({"c": ["a", "b"]}), tmp_path / "ref/b.parquet")
    with pytest.raises(InvalidInputError, match=r"b.parquet lacks column\(s\) 'x'"):
        ownloop.drift(tmp_path / "ref", tmp_path / "ref")
