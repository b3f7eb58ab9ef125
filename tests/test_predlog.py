"""The prediction log: segments, windows, labels, ids and the buffered writer (real Parquet files)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ownloop import InvalidInputError
from ownloop.predlog import (
    BASE_SCHEMA,
    LABEL_SCHEMA,
    Block,
    PredictionLogger,
    blocks_to_table,
    join_labels,
    list_segments,
    new_ids,
    prediction_schema,
    read_labels,
    read_window,
    write_labels,
    write_segment,
)
from ownloop.signature import Feature, Signature

SIG = Signature(
    (Feature("age", "float"), Feature("plan", "string"), Feature("vip", "boolean")),
    "classification",
    (0, 1),
)
T0 = datetime(2026, 3, 1, 23, 59, 0, tzinfo=UTC)


def rows(n: int, start: datetime = T0, *, version: int = 1, step_s: float = 30.0) -> pa.Table:
    ids = new_ids(n)
    data = {
        "prediction_id": ids,
        "ts": [start + timedelta(seconds=step_s * i) for i in range(n)],
        "model": ["churn"] * n,
        "version": [version] * n,
        "arm": ["stable" if i % 4 else "canary" for i in range(n)],
        "request_id": [f"r{i // 2}" for i in range(n)],
        "status": ["ok"] * n,
        "latency_s": [0.001] * n,
        "cpu_s": [0.0005] * n,
        "prediction": [str(i % 2) for i in range(n)],
        "prediction_value": [None] * n,
        "confidence": [0.6 + 0.001 * i for i in range(n)],
        "proba": [[0.4, 0.6]] * n,
        "in.age": [float(20 + i) for i in range(n)],
        "in.plan": ["pro"] * n,
        "in.vip": [i % 3 == 0 for i in range(n)],
    }
    return pa.table(data, schema=prediction_schema(SIG))


def test_schema_has_contract_columns_and_types() -> None:
    schema = prediction_schema(SIG)
    assert schema.names[: len(BASE_SCHEMA)] == BASE_SCHEMA.names
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("version").type == pa.int32()
    assert schema.field("proba").type == pa.list_(pa.float64())
    assert schema.field("in.age").type == pa.float64()
    assert schema.field("in.plan").type == pa.string()
    assert schema.field("in.vip").type == pa.bool_()


def test_ids_are_unique_and_time_ordered_across_processes() -> None:
    first = new_ids(1000)
    code = "from ownloop.predlog import new_ids; print('\\n'.join(new_ids(1000)))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    later = new_ids(1000)
    # sortable by their millisecond (ids of one millisecond are in no particular order)
    assert [i[:12] for i in first] == sorted(i[:12] for i in first)
    assert [i[:12] for i in later] == sorted(i[:12] for i in later)
    assert max(first) < min(later)
    assert len(set(first) | set(other) | set(later)) == 3000


def test_write_splits_by_utc_day_and_leaves_no_temp_files(tmp_path: Path) -> None:
    files = write_segment(tmp_path, "churn", rows(6))  # 23:59:00 .. 00:01:30 crosses midnight
    assert sorted(p.parent.name for p in files) == ["date=2026-03-01", "date=2026-03-02"]
    assert not [p for p in tmp_path.rglob(".*")]
    assert sum(pq.read_metadata(p).num_rows for p in files) == 6


def test_read_window_filters_time_version_arm_and_columns(tmp_path: Path) -> None:
    write_segment(tmp_path, "churn", rows(10, version=1))
    write_segment(tmp_path, "churn", rows(10, version=2))
    table = read_window(tmp_path, "churn", version=2, columns=["ts", "confidence", "in.age"])
    assert table.column_names == ["ts", "confidence", "in.age"]
    assert table.num_rows == 10
    window = read_window(
        tmp_path, "churn", start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3)
    )
    assert window.num_rows == 2 * 4  # 60s, 90s, 120s, 150s per version
    assert read_window(tmp_path, "churn", arm="canary").num_rows == 2 * 3


def test_read_window_reads_only_the_needed_days(tmp_path: Path) -> None:
    write_segment(tmp_path, "churn", rows(6))
    next_day = datetime(2026, 3, 2, tzinfo=UTC)
    assert [p.parent.name for p in list_segments(tmp_path, "churn", start=next_day)] == [
        "date=2026-03-02"
    ]
    # a corrupt file in a day outside the window is never opened
    (tmp_path / "churn" / "date=2026-03-01" / "zz-corrupt.parquet").write_bytes(b"nope")
    assert read_window(tmp_path, "churn", start=next_day).num_rows == 4


def test_segments_written_before_a_moment_are_skipped_by_their_name(tmp_path: Path) -> None:
    early = write_segment(tmp_path, "churn", rows(4))
    moment = datetime.now(UTC)
    time.sleep(0.002)  # the next segment's name (its write time in microseconds) is later
    late = write_segment(tmp_path, "churn", rows(4))
    foreign = early[0].with_name("imported-by-hand.parquet")
    foreign.write_bytes(early[0].read_bytes())
    kept = list_segments(tmp_path, "churn", written_after=moment)
    assert set(kept) == {*late, foreign}  # a file not named by the writer is always read
    assert len(list_segments(tmp_path, "churn")) == len(early) + len(late) + 1


def test_read_window_ignores_hidden_temp_files(tmp_path: Path) -> None:
    write_segment(tmp_path, "churn", rows(3, start=T0 - timedelta(hours=1)))
    (tmp_path / "churn" / "date=2026-03-01" / ".tmp-torn.parquet").write_bytes(b"PAR1 torn")
    assert read_window(tmp_path, "churn").num_rows == 3


def test_read_window_empty_has_the_right_columns(tmp_path: Path) -> None:
    empty = read_window(tmp_path, "churn")
    assert empty.num_rows == 0
    assert empty.schema.names == BASE_SCHEMA.names
    assert read_window(tmp_path, "churn", columns=["ts", "arm"]).column_names == ["ts", "arm"]


def test_read_window_merges_versions_with_different_features(tmp_path: Path) -> None:
    write_segment(tmp_path, "churn", rows(2))
    other = rows(2, version=2).drop_columns(["in.vip"])
    write_segment(tmp_path, "churn", other)
    table = read_window(tmp_path, "churn")
    assert table.num_rows == 4
    assert table.filter(pa.compute.equal(table["version"], 2))["in.vip"].null_count == 2


def test_read_window_rejects_unknown_column_and_bad_model_name(tmp_path: Path) -> None:
    write_segment(tmp_path, "churn", rows(2))
    with pytest.raises(InvalidInputError, match=r"no column in\.nope"):
        read_window(tmp_path, "churn", columns=["in.nope"])
    with pytest.raises(InvalidInputError, match="model name"):
        read_window(tmp_path, "../etc", columns=["ts"])


def labels(ids: list[str], values: list[str], at: datetime) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "prediction_id": ids,
            "label": values,
            "label_value": [float(v) for v in values],
            "labeled_at": [at] * n,
            "source": ["test"] * n,
            "weight": [None] * n,
        },
        schema=LABEL_SCHEMA,
    )


def test_labels_latest_wins_and_join_keeps_prediction_order(tmp_path: Path) -> None:
    preds = rows(5)
    ids = preds["prediction_id"].to_pylist()
    write_segment(tmp_path, "churn", preds)
    write_labels(tmp_path, "churn", labels(ids[:3], ["0", "0", "1"], T0))
    write_labels(tmp_path, "churn", labels([ids[1]], ["1"], T0 + timedelta(days=2)))
    latest = read_labels(tmp_path, "churn")
    assert latest.num_rows == 3
    joined = join_labels(read_window(tmp_path, "churn"), latest)
    assert joined["prediction_id"].to_pylist() == ids
    assert joined["label"].to_pylist() == ["0", "1", "1", None, None]
    assert joined["label_value"].to_pylist() == [0.0, 1.0, 1.0, None, None]
    assert "weight" in joined.column_names


def test_join_with_no_labels_adds_null_columns() -> None:
    joined = join_labels(rows(3), LABEL_SCHEMA.empty_table())
    assert joined["label"].null_count == 3


def test_logger_flushes_on_interval_and_close(tmp_path: Path) -> None:
    logger = PredictionLogger(tmp_path, flush_interval_s=0.05).start()
    logger.submit("churn", rows(4))
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while logger.stats.flushed < 4 and datetime.now(UTC) < deadline:
        time.sleep(0.01)
    assert logger.stats.flushed == 4
    logger.submit("churn", rows(3))
    logger.close()
    assert read_window(tmp_path, "churn").num_rows == 7
    assert logger.stats.dropped == 0
    assert logger.stats.queued == 0


def test_logger_counts_drops_when_buffer_is_full(tmp_path: Path) -> None:
    logger = PredictionLogger(tmp_path, max_buffer=5)
    assert logger.submit("churn", rows(4))
    assert not logger.submit("churn", rows(4))
    logger.close()
    assert logger.stats.dropped == 4
    assert logger.stats.flushed == 4


def test_logger_counts_drops_when_disk_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "predictions"
    blocked.write_text("a file where the log folder should be")
    logger = PredictionLogger(blocked)
    logger.submit("churn", rows(3))
    logger.close()
    assert logger.stats.dropped == 3
    assert logger.stats.write_errors == 1
    assert "dropped 3 rows" in caplog.text


def block(n: int, *, proba: bool = True) -> Block:
    schema = prediction_schema(SIG)
    columns: dict[str, object] = {
        "prediction_id": new_ids(n),
        "ts": int(T0.timestamp() * 1_000_000),
        "model": "churn",
        "version": 1,
        "arm": "stable",
        "request_id": "r",
        "status": "ok",
        "latency_s": 0.002,
        "prediction": np.array(["1"] * n, dtype=object),
        "in.age": np.arange(n, dtype=np.float64),
        "in.plan": np.array(["pro"] * n, dtype=object),
        "in.vip": np.array([True] * n),
    }
    if proba:
        columns["proba"] = np.tile([0.25, 0.75], (n, 1))
        columns["confidence"] = np.full(n, 0.75)
    return Block(schema, n, columns)


def test_blocks_become_one_table_with_scalars_repeated_and_nulls() -> None:
    table = blocks_to_table([block(1), block(3), block(2, proba=False)])
    assert table.schema == prediction_schema(SIG)
    assert table.num_rows == 6
    assert table["ts"].to_pylist() == [T0] * 6
    assert table["version"].to_pylist() == [1] * 6
    assert table["proba"].to_pylist() == [[0.25, 0.75]] * 4 + [None, None]
    assert table["confidence"].to_pylist() == [0.75] * 4 + [None, None]
    assert table["cpu_s"].null_count == 6
    assert table["in.age"].to_pylist() == [0, 0, 1, 2, 0, 1]


def test_logger_writes_blocks_and_tables_together(tmp_path: Path) -> None:
    with PredictionLogger(tmp_path) as logger:
        logger.submit("churn", block(2))
        logger.submit("churn", rows(3, start=T0 - timedelta(hours=1)))
    assert read_window(tmp_path, "churn").num_rows == 5


def test_logger_writes_early_when_the_buffer_fills(tmp_path: Path) -> None:
    with PredictionLogger(tmp_path, flush_interval_s=60, max_buffer=40) as logger:
        logger.submit("churn", rows(12, start=T0 - timedelta(hours=1)))  # over a quarter of 40
        deadline = time.monotonic() + 10
        while logger.stats.flushed < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert logger.stats.flushed == 12


def _bad_text_block() -> Block:
    bad = block(1)
    return Block(bad.schema, 1, {**bad.columns, "in.plan": np.array(["\ud800"], dtype=object)})


def _bad_type_block() -> Block:
    bad = block(2)
    return Block(bad.schema, 2, {**bad.columns, "in.age": np.array(["x", {}], dtype=object)})


def _wait(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check()


def _ids(blocks: list[Block]) -> list[str]:
    return [i for b in blocks for i in b.columns["prediction_id"]]


@pytest.mark.parametrize("bad", [_bad_text_block, _bad_type_block], ids=["surrogate", "type"])
def test_a_bad_block_is_dropped_alone_and_the_writer_lives_on(
    tmp_path: Path, bad: Callable[[], Block], caplog: pytest.LogCaptureFixture
) -> None:
    logger = PredictionLogger(tmp_path, flush_interval_s=0.01)
    good = [block(3), block(1), block(2)]
    rejected = bad()
    for b in (good[0], rejected, good[1], good[2]):  # one flush: the bad block among good ones
        logger.submit("churn", b)
    assert logger.flush() == 6
    assert not logger.healthy
    assert logger.last_error is not None
    with logger:  # then the thread's own flushes
        later = [block(2), block(4)]
        for b in later:
            logger.submit("churn", b)
        _wait(lambda: logger.stats.flushed == 12)
        assert logger.alive
        assert logger.healthy  # a flush that wrote everything clears the error
    logged = read_window(tmp_path, "churn", columns=["prediction_id"])["prediction_id"]
    assert sorted(logged.to_pylist()) == sorted(_ids(good + later))
    assert logger.stats.dropped == rejected.n
    assert logger.stats.write_errors == 1
    assert logger.stats.queued == 0
    assert f"dropped {rejected.n} rows" in caplog.text


def test_the_writer_thread_survives_a_bad_block_alone(tmp_path: Path) -> None:
    with PredictionLogger(tmp_path, flush_interval_s=0.01) as logger:
        logger.submit("churn", _bad_text_block())
        _wait(lambda: logger.stats.dropped == 1)
        assert not logger.healthy
        assert "UnicodeEncodeError" in str(logger.last_error)
        logger.submit("churn", block(2))
        _wait(lambda: logger.stats.flushed == 2)
        assert logger.alive


def test_the_writer_thread_survives_a_failing_callback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stats: object) -> None:
        raise RuntimeError("metrics are broken")

    with PredictionLogger(tmp_path, flush_interval_s=0.01, on_flush=broken) as logger:
        logger.submit("churn", block(1))
        _wait(lambda: "metrics are broken" in caplog.text)
        logger.submit("churn", block(2))
        _wait(lambda: logger.stats.flushed == 3)
        assert logger.alive


def test_rows_a_disk_error_kept_are_written_once_the_disk_recovers(tmp_path: Path) -> None:
    root = tmp_path / "predictions"
    root.write_text("a file where the log folder should be")  # every write: an OSError
    logger = PredictionLogger(root, flush_interval_s=60, retries=3)
    first = [block(2), block(3)]
    for b in first:
        logger.submit("churn", b)
    assert logger.flush() == 0
    assert logger.flush() == 0
    assert (logger.stats.queued, logger.stats.dropped, logger.stats.write_errors) == (5, 0, 2)
    assert not logger.healthy
    assert "OSError" in str(logger.last_error) or "Error" in str(logger.last_error)
    root.unlink()  # space freed, permissions fixed
    second = [block(1)]
    logger.submit("churn", second[0])
    assert logger.flush() == 6
    assert logger.healthy
    logger.close()
    logged = read_window(root, "churn", columns=["prediction_id"])["prediction_id"].to_pylist()
    assert sorted(logged) == sorted(_ids(first + second))
    assert (logger.stats.flushed, logger.stats.dropped, logger.stats.queued) == (6, 0, 0)


def test_kept_rows_are_dropped_after_the_last_retry_and_count_against_the_buffer(
    tmp_path: Path,
) -> None:
    root = tmp_path / "predictions"
    root.write_text("in the way")
    logger = PredictionLogger(root, flush_interval_s=60, max_buffer=8, retries=2)
    assert logger.submit("churn", block(5))
    logger.flush()
    assert not logger.submit("churn", block(4))  # the 5 kept rows still take buffer room
    assert logger.stats.dropped == 4
    logger.flush()  # second retry
    assert logger.stats.queued == 5
    logger.flush()  # out of retries
    assert (logger.stats.queued, logger.stats.dropped, logger.stats.write_errors) == (0, 9, 3)
    assert logger.submit("churn", block(4))
    logger.close()  # the last flush cannot wait for the disk: it drops what fails
    assert (logger.stats.queued, logger.stats.dropped, logger.stats.flushed) == (0, 13, 0)


def test_a_failed_multi_day_write_leaves_no_day_visible(tmp_path: Path) -> None:
    table = rows(4, start=T0, step_s=60)  # two UTC days
    day2 = tmp_path / "churn" / "date=2026-03-02"
    day2.parent.mkdir(parents=True)
    day2.write_text("in the way")  # the second day's folder cannot be made
    with pytest.raises(FileExistsError):
        write_segment(tmp_path, "churn", table)
    assert list((tmp_path / "churn").rglob("*.parquet")) == []


def _packed(b: Block) -> Block:
    """``b`` with its numeric input in a matrix, as the server logs all-number requests."""
    columns = dict(b.columns)
    matrix = np.column_stack([columns.pop("in.age")])
    return Block(b.schema, b.n, columns, matrix, ("in.age",))


def test_blocks_with_a_matrix_give_the_same_table_alone_or_mixed() -> None:
    plain = [block(1), block(3), block(2, proba=False)]
    want = blocks_to_table(plain)
    assert blocks_to_table([_packed(b) for b in plain]).equals(want)
    assert blocks_to_table([_packed(plain[0]), plain[1], _packed(plain[2])]).equals(want)
