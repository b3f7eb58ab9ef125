"""Reading the prediction log never fails on segments of another type: real Parquet files."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ownloop.predlog import (
    BASE_SCHEMA,
    label_key,
    new_ids,
    read_labels,
    read_log,
    read_window,
    stage_labels,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def segment(root: Path, name: str, *, version: int, plan: pa.Array, start: datetime) -> Path:
    """One segment written with pyarrow directly, its ``in.plan`` column of the given type."""
    n = len(plan)
    base = {f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA}
    base.update(
        prediction_id=pa.array(new_ids(n)),
        ts=pa.array([start + timedelta(seconds=i) for i in range(n)], BASE_SCHEMA.field("ts").type),
        model=pa.array(["churn"] * n),
        version=pa.array([version] * n, pa.int32()),
        status=pa.array(["ok"] * n),
    )
    table = pa.table({**base, "in.plan": plan})
    folder = root / "churn" / f"date={start.date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(table, path)
    return path


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Version 1 logged ``plan`` as numbers (a wrong signature), version 2 as text."""
    segment(tmp_path, "a.parquet", version=1, plan=pa.array([1.0, 2.0, 3.0]), start=T0)
    segment(
        tmp_path,
        "b.parquet",
        version=1,
        plan=pa.array([4.0, 5.0]),
        start=T0 + timedelta(minutes=1),
    )
    segment(
        tmp_path,
        "c.parquet",
        version=2,
        plan=pa.array(["pro", "pro", "basic", "basic"]),
        start=T0 + timedelta(minutes=2),
    )
    return tmp_path


def test_each_version_reads_with_its_own_column_type(mixed: Path) -> None:
    v1 = read_window(mixed, "churn", version=1)
    v2 = read_window(mixed, "churn", version=2)
    assert v1.schema.field("in.plan").type == pa.float64()
    assert v1["in.plan"].to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert v2.schema.field("in.plan").type == pa.string()
    assert v2["in.plan"].to_pylist() == ["pro", "pro", "basic", "basic"]


def test_a_segment_of_another_type_is_left_out_by_name(
    mixed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ownloop.predlog"):
        read = read_log(mixed, "churn")  # every version: numbers are the common type of in.plan
    assert read.table.num_rows == 5
    assert [s.path.name for s in read.skipped] == ["c.parquet"]
    assert "in.plan" in read.skipped[0].reason
    assert "c.parquet" in caplog.text
    ids = read_window(mixed, "churn", columns=["prediction_id", "version"])
    assert ids.num_rows == 9  # columns of one type everywhere: every segment is read


def test_the_version_signature_decides_the_type(mixed: Path) -> None:
    schema = pa.schema([pa.field("in.plan", pa.string())])
    read = read_log(mixed, "churn", version=1, schema=schema)
    assert read.table["in.plan"].to_pylist() == ["1", "2", "3", "4", "5"]  # numbers as text
    assert read.skipped == ()


def test_an_unreadable_segment_is_named_not_fatal(mixed: Path) -> None:
    broken = mixed / "churn" / f"date={T0.date().isoformat()}" / "d.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    read = read_log(mixed, "churn", version=2)
    assert read.table.num_rows == 4
    assert [s.path.name for s in read.skipped] == ["d.parquet"]
    assert "not a readable Parquet file" in read.skipped[0].reason


def test_staged_labels_are_invisible_until_published(tmp_path: Path) -> None:
    ids = new_ids(2)
    table = pa.table(
        {
            "prediction_id": ids,
            "label": ["1", "0"],
            "label_value": [1.0, 0.0],
            "labeled_at": pa.array([T0, T0], BASE_SCHEMA.field("ts").type),
            "source": ["test", "test"],
            "weight": pa.nulls(2, pa.float64()),
        }
    )
    staged = stage_labels(tmp_path, "churn", table)
    assert read_labels(tmp_path, "churn").num_rows == 0
    staged.publish()
    assert sorted(read_labels(tmp_path, "churn")["prediction_id"].to_pylist()) == sorted(ids)
    again = stage_labels(tmp_path, "churn", table)
    again.discard()
    assert not list((tmp_path / "churn" / "labels").rglob(".pending-*"))


@pytest.mark.parametrize(
    ("a", "b"),
    [(1, 1.0), (1, "1"), ("1.0", 1), (0, "0.0"), (2.5, "2.5"), ("yes", "yes"), (True, "True")],
)
def test_label_keys_compare_by_value(a: object, b: object) -> None:
    assert label_key(a) == label_key(b)


def test_label_keys_keep_different_values_apart() -> None:
    assert label_key(1) != label_key(2)
    assert label_key("1") != label_key("one")
    assert label_key(float("nan")) != label_key(0)
