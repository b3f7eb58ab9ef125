"""``ownloop export-evalset`` through the real CLI: the export, the gate it feeds, bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner, Result

from ownloop import Config, Workspace, predlog
from ownloop.cli import cli
from ownloop.demo import log_predictions, make_churn_data, make_model
from tests.conftest import env_for


def run(config: Config, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env_for(config))


@pytest.fixture
def labelled(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame, tmp_path: Path
) -> Path:
    """churn@1 served 400 rows in the last hour, 300 with their true outcome as label.

    churn@2 is the same model again; churn@3 learnt from shuffled outcomes (worse by design).
    Returns an empty folder for the exports.
    """
    X, y = churn_data.drop(columns="churned"), churn_data["churned"]
    shuffled = make_model(max_iter=20).fit(X, np.random.default_rng(0).permutation(y.to_numpy()))
    for model in (churn_model, churn_model, shuffled):
        ws.registry.register(
            model, name="churn", owner=team, reference=churn_data, target="churned"
        )
    frame = make_churn_data(400, seed=51)
    start = datetime.now(UTC) - timedelta(minutes=30)
    logged = log_predictions(ws, "churn@1", frame.drop(columns="churned"), start, seed=2)
    n = 300
    labels = pa.table(  # the label files as the server's label route writes them
        {
            "prediction_id": logged["prediction_id"].slice(0, n),
            "label": [str(v) for v in frame["churned"][:n]],
            "label_value": frame["churned"][:n].astype(float),
            "labeled_at": pa.array([start] * n, predlog.TS),
            "source": ["test"] * n,
            "weight": pa.nulls(n, pa.float64()),
        },
        schema=predlog.LABEL_SCHEMA,
    )
    predlog.write_labels(ws.config.predictions_dir, "churn", labels)
    folder = tmp_path / "evals"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_the_export_gates_the_next_candidate(ws: Workspace, labelled: Path, suffix: str) -> None:
    out = labelled / f"prod{suffix}"
    done = run(ws.config, "export-evalset", "churn", "--since", "7d", "--out", str(out))
    assert done.exit_code == 0, done.output
    assert f"wrote 300 labelled rows of churn to {out}" in done.output
    assert "75.0% of 400 answered predictions" in done.output
    assert "misclassified" in done.output and "churn@1 300" in done.output
    suite = str(labelled / "prod.yaml")
    same = run(ws.config, "eval", "churn@2", "--suite", suite)
    assert same.exit_code == 0, same.output
    assert "PASS: churn@2 vs churn@1" in same.output
    worse = run(ws.config, "eval", "churn@3", "--suite", suite)
    assert worse.exit_code == 1, worse.output
    assert "FAIL: churn@3 vs churn@1" in worse.output


def test_json_summary_and_a_named_suite(ws: Workspace, labelled: Path) -> None:
    out, suite = labelled / "prod.parquet", labelled / "gates" / "prod.yaml"
    suite.parent.mkdir()
    done = run(
        ws.config, "export-evalset", "churn", "--out", str(out), "--suite-out", str(suite), "--json"
    )
    assert done.exit_code == 0, done.output
    body = json.loads(done.output)
    assert (body["rows"], body["predictions"], body["versions"]) == (300, 400, {"1": 300})
    assert body["label_column"] == "churned" and body["weight_column"] == "weight"
    assert body["suite_path"] == str(suite)
    assert "path: ../prod.parquet" in suite.read_text()
    assert run(ws.config, "eval", "churn@2", "--suite", str(suite)).exit_code == 0


def test_bad_input_is_a_clear_error(ws: Workspace, labelled: Path) -> None:
    out = str(labelled / "prod.parquet")
    cases = [
        (["nosuch", "--out", out], 1, "error: model 'nosuch' does not exist"),
        (
            ["churn", "--out", out, "--arm", "canary"],
            2,
            "error: no labelled predictions of 'churn'",
        ),
        (["churn", "--out", str(labelled / "no" / "p.parquet")], 2, "does not exist; create it"),
        (["churn", "--out", str(labelled / "p.xlsx")], 2, "as .parquet or .csv"),
        (["churn", "--out", "/proc/ownloop-evalset.parquet"], 2, "cannot write"),
        (["churn", "--out", out, "--since", "soon"], 2, "not understood"),
        (["churn", "--out", out, "--version", "9"], 1, "no version 9"),
    ]
    for args, code, message in cases:
        result = run(ws.config, "export-evalset", *args)
        assert (result.exit_code, message in result.output) == (code, True), result.output
        assert "Traceback" not in result.output
    assert list(labelled.iterdir()) == []
    assert run(ws.config, "export-evalset", "churn", "--out", out).exit_code == 0
    again = run(ws.config, "export-evalset", "churn", "--out", out)
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    assert run(ws.config, "export-evalset", "churn", "--out", out, "--force").exit_code == 0
