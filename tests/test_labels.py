"""Label ingestion on SQLite and PostgreSQL: unknown ids reported, last label wins, audited; CLI import."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from ownloop import Config, InvalidInputError, PermissionDeniedError, Workspace
from ownloop.access import Actor
from ownloop.clock import FrozenClock
from ownloop.labels import id_time, labels_table, record_labels
from ownloop.predlog import BASE_SCHEMA, new_ids, read_labels, write_segment
from tests.conftest import env_for


@pytest.fixture
def logged(ws: Workspace, team: str, churn_model: Any, churn_data: pd.DataFrame) -> list[str]:
    """Ten logged predictions of churn (a registered model)."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ids = new_ids(10)
    now = ws.clock.now()
    table = pa.table(
        {
            **{f.name: pa.nulls(10, f.type) for f in BASE_SCHEMA},
            "prediction_id": ids,
            "ts": pa.array([now] * 10, BASE_SCHEMA.field("ts").type),
            "model": ["churn"] * 10,
            "version": pa.array([1] * 10, pa.int32()),
        },
        schema=BASE_SCHEMA,
    )
    write_segment(ws.config.predictions_dir, "churn", table)
    return ids


def labels(ws: Workspace, rows: list[dict[str, Any]]) -> pa.Table:
    return labels_table(rows, at=ws.clock.now(), source="test")


def test_ids_carry_their_time() -> None:
    stamp = id_time(new_ids(1)[0])
    assert stamp is not None
    assert id_time("not-an-id") is None


def test_unknown_ids_are_reported_not_stored(ws: Workspace, logged: list[str]) -> None:
    root = ws.config.predictions_dir
    report = record_labels(
        ws.registry,
        root,
        "churn",
        labels(
            ws, [{"prediction_id": logged[0], "label": 1}, {"prediction_id": "f" * 32, "label": 0}]
        ),
    )
    assert (report.stored, report.replaced, report.unknown) == (1, 0, ["f" * 32])
    assert read_labels(root, "churn")["prediction_id"].to_pylist() == [logged[0]]


def test_late_duplicate_label_wins_and_is_audited(ws: Workspace, logged: list[str]) -> None:
    clock = FrozenClock()
    ws.registry.clock = clock
    root = ws.config.predictions_dir
    record_labels(
        ws.registry,
        root,
        "churn",
        labels_table([{"prediction_id": logged[2], "label": 0}], at=clock.now(), source="a"),
    )
    clock.advance(days=3)  # late: labelled days after the prediction
    report = record_labels(
        ws.registry,
        root,
        "churn",
        labels_table(
            [{"prediction_id": logged[2], "label": 1}, {"prediction_id": logged[3], "label": 1}],
            at=clock.now(),
            source="b",
        ),
    )
    assert report.replaced == 1
    latest = {r["prediction_id"]: r for r in read_labels(root, "churn").to_pylist()}
    assert latest[logged[2]]["label"] == "1"
    assert latest[logged[2]]["source"] == "b"
    entries = [a for a in ws.registry.audit_log(model="churn") if a.action == "label.write"]
    assert [e.after["replaced_ids"] for e in entries] == [[logged[2]], []]
    assert entries[0].at - entries[1].at == timedelta(days=3)


def test_labels_need_the_owning_team(ws: Workspace, logged: list[str]) -> None:
    denied: list[tuple[str, str, str | None, str | None]] = []
    ws.acting.on_denied = lambda actor, action, team, target: denied.append(
        (actor.name, action, team, target)
    )
    mallory = Actor("mallory", teams=frozenset({"other"}))
    with ws.acting_as(mallory), pytest.raises(PermissionDeniedError, match="needs team 'risk'"):
        record_labels(
            ws.registry,
            ws.config.predictions_dir,
            "churn",
            labels(ws, [{"prediction_id": logged[0], "label": 1}]),
        )
    assert denied == [("mallory", "label.write", "risk", "model:churn")]
    assert read_labels(ws.config.predictions_dir, "churn").num_rows == 0


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prediction_id": 5, "label": 1}, "prediction_id must be a non-empty string"),
        ({"prediction_id": "x", "label": float("nan")}, "not a finite number"),
        ({"prediction_id": "x", "label": [1]}, "class name or a number"),
    ],
)
def test_bad_label_rows_are_rejected(ws: Workspace, row: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        labels(ws, [row])


def _cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "ownloop")
    return subprocess.run(
        [exe, *args], env=env_for(config), capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_label_import(
    config: Config, ws: Workspace, logged: list[str], tmp_path: Path, suffix: str
) -> None:
    frame = pd.DataFrame(
        {"prediction_id": [logged[0], logged[1], logged[0], "e" * 32], "label": [0, 1, 1, 0]}
    )
    path = tmp_path / f"labels{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    done = _cli(config, "label", "import", str(path), "--model", "churn")
    assert done.returncode == 0, done.stderr
    assert (
        "3 labels stored (1 replaced an earlier label), 1 unknown prediction ids not stored"
        in done.stdout
    )
    assert "e" * 32 in done.stdout
    latest = {
        r["prediction_id"]: r["label"]
        for r in read_labels(config.predictions_dir, "churn").to_pylist()
    }
    assert latest == {logged[0]: "1", logged[1]: "1"}


def test_cli_label_import_of_a_file_over_the_batch_limit_stores_it_in_batches(
    config: Config, ws: Workspace, logged: list[str], tmp_path: Path
) -> None:
    """The batch limit guards the HTTP route; a local file is recorded in batches of the limit."""
    frame = pd.DataFrame({"prediction_id": logged[:5], "label": [0, 1, 0, 1, 1]})
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    env = {**env_for(config), "OWNLOOP_MAX_LABEL_ROWS": "2"}
    exe = str(Path(sys.executable).parent / "ownloop")
    done = subprocess.run(
        [exe, "label", "import", str(path), "--model", "churn"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5 labels stored" in done.stdout, done.stdout
    stored = read_labels(config.predictions_dir, "churn")
    assert sorted(stored["prediction_id"].to_pylist()) == sorted(logged[:5])
    batches = [e for e in ws.registry.audit_log("churn") if e.action == "label.write"]
    assert len(batches) == 3  # 2 + 2 + 1 rows, each batch audited


def test_cli_label_import_needs_the_columns(config: Config, ws: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"id": ["x"], "label": [1]}).to_csv(path, index=False)
    done = _cli(config, "label", "import", str(path), "--model", "churn")
    assert done.returncode == 2  # bad input, like a usage error
    assert done.stderr.startswith("error: ")
    assert "lacks column prediction_id" in done.stderr
