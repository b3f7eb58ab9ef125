"""`ownloop demo` end to end, as a user runs it, checked from the store it leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ownloop import Config, InvalidInputError, Workspace
from ownloop.demo import MARKER, prepare_home

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "ownloop-demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    result = subprocess.run(
        [sys.executable, "-m", "ownloop", "demo", "--home", str(home)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "done." in result.stdout
    return home


def test_demo_registers_owned_versions_with_profiles(demo_home: Path) -> None:
    with Workspace(Config(home=demo_home)) as ws:
        [model] = ws.registry.list_models()
        assert (model.name, model.owner) == ("churn", "risk")
        assert model.aliases["production"] == 1
        team = ws.registry.get_team("risk")
        assert team.email and team.webhook_url
        for v in ws.registry.list_versions("churn")[:2]:
            assert v.signature.task == "classification"
            assert ws.registry.load_profile(v.ref).row_count == 8000
            assert v.metrics["valid_accuracy"] > 0.7
        assert hasattr(ws.registry.load("churn@production"), "predict_proba")
        assert {"team.create", "model.create", "version.register", "alias.set"} <= {
            e.action for e in ws.registry.audit_log(limit=1000)
        }


def test_demo_refuses_to_wipe_a_folder_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="not an ownloop demo folder"):
        prepare_home(tmp_path)
    assert (tmp_path / "precious.txt").exists()


def test_demo_reruns_in_its_own_folder(tmp_path: Path) -> None:
    prepare_home(tmp_path / "d")
    (tmp_path / "d" / "old.txt").write_text("from the last run")
    prepare_home(tmp_path / "d")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [MARKER]


def test_demo_monitor_step_finds_the_drifted_windows(demo_home: Path) -> None:
    with Workspace(Config(home=demo_home)) as ws:
        runs = sorted(ws.monitor.runs("churn"), key=lambda r: r.window_end)
        assert [r.summary["dataset_drift"] for r in runs] == [False] * 4 + [True] * 2
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
        assert {"monitor.run"} <= {e.action for e in ws.registry.audit_log(limit=1000)}
