"""The demo runs end to end and leaves real, checkable state in its store."""

from __future__ import annotations

from pathlib import Path

from ownloop import Config, Workspace
from ownloop.demo import run_demo


def test_demo_monitor_step_finds_the_drifted_windows(tmp_path: Path) -> None:
    lines: list[str] = []
    home = tmp_path / "demo"
    result = run_demo(home, say=lines.append)
    assert "monitor" in result.steps
    with Workspace(Config(home=home, user="tester")) as ws:
        runs = sorted(ws.monitor.runs("churn"), key=lambda r: r.window_end)
        assert [r.summary["dataset_drift"] for r in runs] == [
            False,
            False,
            False,
            False,
            True,
            True,
        ]
        assert all(r.rows == 1500 for r in runs)
        assert "tenure_months" in runs[-1].summary["drifted"]
        realised = ws.monitor.results("churn", kind="realised_performance")
        accuracy = [r for r in realised if r.name == "accuracy"]
        assert len(accuracy) == 6
        assert all(r.value is not None and 0.6 < r.value < 0.95 for r in accuracy)
        estimated = [
            r
            for r in ws.monitor.results("churn", kind="estimated_performance")
            if r.name == "accuracy"
        ]
        assert len(estimated) == 6
    assert any("dataset drift found in 2" in line for line in lines)
