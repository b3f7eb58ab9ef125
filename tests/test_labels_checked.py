"""Labels are checked against the model that made the prediction, and never visible without audit.

SQLite and PostgreSQL (the ``ws`` fixture); the failure test breaks the metadata store for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

import ownloop
from ownloop import Config, InvalidInputError, OwnloopError, Workspace
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import BASE_SCHEMA, new_ids, read_labels, write_segment
from tests.conftest import env_for
from tests.test_labels import logged

__all__ = ["logged"]  # the fixture: ten logged predictions of churn@1, a [0, 1] classifier


def _labels(ws: Workspace, rows: list[dict[str, Any]]) -> pa.Table:
    return labels_table(rows, at=ws.clock.now(), source="test")


def _record(ws: Workspace, rows: list[dict[str, Any]]) -> ownloop.LabelReport:
    return record_labels(ws.registry, ws.config.predictions_dir, "churn", _labels(ws, rows))


@pytest.mark.parametrize("bad", ["banana", "<script>", -99999, 2, 0.5, "1.5"])
def test_a_label_outside_the_classes_is_refused_and_nothing_stored(
    ws: Workspace, logged: list[str], bad: Any
) -> None:
    rows = [{"prediction_id": logged[0], "label": 1}, {"prediction_id": logged[1], "label": bad}]
    with pytest.raises(InvalidInputError, match=r"one of the classes '0', '1'") as err:
        _record(ws, rows)
    assert logged[1] in err.value.message
    assert "nothing was stored" in err.value.message
    assert read_labels(ws.config.predictions_dir, "churn").num_rows == 0
    assert not [e for e in ws.registry.audit_log(model="churn") if e.action == "label.write"]


def test_classes_compare_by_value(ws: Workspace, logged: list[str]) -> None:
    rows = [
        {"prediction_id": logged[0], "label": 1},
        {"prediction_id": logged[1], "label": 1.0},
        {"prediction_id": logged[2], "label": "1"},
        {"prediction_id": logged[3], "label": "0.0"},
    ]
    report = _record(ws, rows)
    assert report.stored == 4
    stored = dict(
        zip(
            read_labels(ws.config.predictions_dir, "churn")["prediction_id"].to_pylist(),
            read_labels(ws.config.predictions_dir, "churn")["label"].to_pylist(),
            strict=True,
        )
    )
    assert stored == {logged[0]: "1", logged[1]: "1", logged[2]: "1", logged[3]: "0"}


def test_a_regressor_takes_finite_numbers_only(ws: Workspace, team: str) -> None:
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [2.0, 4.0, 6.0, 8.0]})
    ws.registry.register(
        LinearRegression().fit(frame[["x"]], frame["y"]),
        name="price",
        owner=team,
        reference=frame,
        target="y",
    )
    ids = new_ids(2)
    _log(ws, "price", ids)
    root = ws.config.predictions_dir
    with pytest.raises(InvalidInputError, match="a finite number"):
        record_labels(
            ws.registry, root, "price", _labels(ws, [{"prediction_id": ids[0], "label": "banana"}])
        )
    report = record_labels(
        ws.registry, root, "price", _labels(ws, [{"prediction_id": ids[0], "label": 3.5}])
    )
    assert report.stored == 1
    assert read_labels(root, "price")["label_value"].to_pylist() == [3.5]


def _log(ws: Workspace, model: str, ids: list[str]) -> None:
    n = len(ids)
    table = pa.table(
        {
            **{f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA},
            "prediction_id": ids,
            "ts": pa.array([ws.clock.now()] * n, BASE_SCHEMA.field("ts").type),
            "model": [model] * n,
            "version": pa.array([1] * n, pa.int32()),
        },
        schema=BASE_SCHEMA,
    )
    write_segment(ws.config.predictions_dir, model, table)


def test_no_label_is_visible_when_its_audit_row_fails(
    ws: Workspace, logged: list[str], db_url: str
) -> None:
    other = sa.create_engine(db_url)
    try:
        with other.begin() as conn:  # the metadata store fails the audit insert
            conn.execute(sa.text("ALTER TABLE audit RENAME TO audit_away"))
    finally:
        other.dispose()
    with pytest.raises((OwnloopError, sa.exc.DBAPIError)):
        _record(ws, [{"prediction_id": logged[0], "label": 1}])
    root = ws.config.predictions_dir
    assert read_labels(root, "churn").num_rows == 0
    left = [p.name for p in (root / "churn" / "labels").rglob("*") if p.is_file()]
    assert left == []  # not even a hidden, unpublished file


def test_public_record_labels_takes_frames_lists_and_paths(
    ws: Workspace, logged: list[str], tmp_path: Path
) -> None:
    report = ownloop.record_labels(
        "churn", [{"prediction_id": logged[0], "label": 1}], workspace=ws
    )
    assert isinstance(report, ownloop.LabelReport)
    assert report.stored == 1
    frame = pd.DataFrame({"prediction_id": logged[1:3], "label": [0.0, 1.0]})
    assert ownloop.record_labels("churn", frame, workspace=ws).stored == 2
    path = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": logged[3:4], "label": ["0"], "weight": [2.0]}).to_csv(path)
    assert ownloop.record_labels("churn", path, source="file", workspace=ws).stored == 1
    assert read_labels(ws.config.predictions_dir, "churn").num_rows == 4


def _cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "ownloop")
    return subprocess.run(
        [exe, *args], env=env_for(config), capture_output=True, text=True, check=False
    )


def test_cli_label_import_refuses_a_non_class_with_exit_2(
    config: Config, ws: Workspace, logged: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "labels.csv"
    pd.DataFrame({"prediction_id": logged[:2], "label": ["1", "banana"]}).to_csv(path, index=False)
    done = _cli(config, "label", "import", str(path), "--model", "churn")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ")
    assert "'banana'" in done.stderr
    assert "Traceback" not in done.stderr
    assert read_labels(config.predictions_dir, "churn").num_rows == 0


def test_http_labels_outside_the_classes_are_400_and_not_stored(
    ws: Workspace, team: str, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    import httpx

    from tests.servers import running

    v = ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", v.version, force=True, reason="set up")
    rows = churn_data.drop(columns="churned").head(2).to_dict("records")
    with running(ws) as url, httpx.Client(base_url=url, timeout=30) as client:
        ids = client.post("/models/churn/predict", json={"instances": rows}).json()[
            "prediction_ids"
        ]
        for bad in ("banana", "<script>", -99999):
            answer = client.post(
                "/models/churn/labels",
                json=[
                    {"prediction_id": ids[0], "label": 1},
                    {"prediction_id": ids[1], "label": bad},
                ],
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["code"] == "invalid_input"
            assert "one of the classes '0', '1'" in answer.json()["error"]
        good = client.post("/models/churn/labels", json=[{"prediction_id": ids[0], "label": 1.0}])
        assert good.status_code == 200, good.text
    assert read_labels(ws.config.predictions_dir, "churn")["label"].to_pylist() == ["1"]


def test_cli_import_of_several_models_stores_nothing_when_one_label_is_bad(
    config: Config,
    ws: Workspace,
    logged: list[str],
    churn_model: Any,
    churn_data: pd.DataFrame,
    tmp_path: Path,
) -> None:
    ws.registry.register(
        churn_model, name="churn2", owner="risk", reference=churn_data, target="churned"
    )
    other = new_ids(1)
    _log(ws, "churn2", other)
    path = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "model": ["churn", "churn2"],
            "prediction_id": [logged[0], other[0]],
            "label": ["1", "banana"],
        }
    ).to_csv(path, index=False)
    done = _cli(config, "label", "import", str(path))
    assert done.returncode == 2, done.stderr
    assert "churn2" in done.stderr
    for model in ("churn", "churn2"):
        assert read_labels(config.predictions_dir, model).num_rows == 0
    path.write_text(path.read_text().replace("banana", "0"))
    done = _cli(config, "label", "import", str(path))
    assert done.returncode == 0, done.stderr
    assert [read_labels(config.predictions_dir, m).num_rows for m in ("churn", "churn2")] == [1, 1]
