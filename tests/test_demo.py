"""The demo runs end to end; each step's result is checked from the store and the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from ownloop import Config, Workspace
from ownloop.demo import run_demo
from ownloop.predlog import read_labels, read_window


@pytest.mark.slow
def test_demo_serves_logs_and_labels(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(home, say=lines.append)
    assert result.steps[:2] == ["register", "serve"]
    root = home / "predictions"
    logged = read_window(root, "churn")
    assert logged.num_rows == result.counts["predictions"] == 400
    assert set(logged["version"].to_pylist()) == {1}
    labels = read_labels(root, "churn")
    assert labels.num_rows == result.counts["labels"] == 250
    assert set(labels["prediction_id"].to_pylist()) <= set(logged["prediction_id"].to_pylist())
    assert any("refused with 400" in line and "feature 'age'" in line for line in lines)
    with Workspace(Config(home=home, user="demo")) as ws:
        actions = [a.action for a in ws.registry.audit_log(model="churn")]
    assert "label.write" in actions
