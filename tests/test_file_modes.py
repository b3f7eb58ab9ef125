"""What ownloop writes is private: files 0600, folders 0700, checked with os.stat after real
operations (register, serve + predict + flush, label, export); the process umask is left alone."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import ownloop
from ownloop import Config, Workspace
from tests.servers import running

ROW = {
    "age": 41,
    "tenure_months": 3.0,
    "monthly_charges": 80.5,
    "support_calls": 2,
    "plan": "pro",
    "region": "north",
}


def modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` (and ``root``), by path relative to it."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def not_private(found: dict[str, int], root: Path) -> dict[str, str]:
    return {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (0o700 if (root / name).is_dir() else 0o600)
    }


@pytest.mark.slow
def test_everything_written_in_a_loop_is_private(
    tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    umask = os.umask(0o022)  # the usual umask, which would give 0644 files and 0755 folders
    try:
        home = tmp_path / "home"
        config = Config(home=home, user="tester", predlog_flush_s=0.05)
        with Workspace(config) as ws:
            ws.registry.add_team("risk", members=["tester"])
            v = ws.registry.register(
                churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
            )
            ws.deploy.set_production("churn", v.version, force=True, reason="set up")
            with running(ws) as url:
                r = httpx.post(f"{url}/models/churn/predict", json={"instances": [ROW, ROW]})
                assert r.status_code == 200, r.text
                ids = r.json()["prediction_ids"]
            ownloop.record_labels(
                "churn", [{"prediction_id": i, "label": 1} for i in ids], workspace=ws
            )
            ws.monitor.run("churn")  # caches its per-segment partials under the home
            exports = tmp_path / "exports"
            exports.mkdir()
            ws.feedback.export_evalset("churn", exports / "evals.parquet")
            ws.feedback.export_evalset("churn", exports / "evals-b.csv")
        assert os.umask(0o022) == 0o022  # ownloop did not change the process umask
    finally:
        os.umask(umask)

    found = modes(home)
    names = set(found)
    assert "ownloop.db" in names
    assert any(n.startswith("artifacts/sha256/") and len(n) > 30 for n in names), names
    assert any(n.startswith("predictions/churn/date=") and n.endswith(".parquet") for n in names)
    assert any(n.startswith("predictions/churn/labels/date=") for n in names), names
    assert any(n.startswith("monitoring/partials/churn/") for n in names), names
    assert not_private(found, home) == {}
    written = {n: m for n, m in modes(exports).items() if n != "."}
    assert len(written) == 4, written  # two exports and their suites
    assert not_private(written, exports) == {}


def test_a_new_home_and_database_are_private_even_under_a_lax_umask(tmp_path: Path) -> None:
    umask = os.umask(0o000)
    try:
        home = tmp_path / "a" / "b" / "home"
        with Workspace(Config(home=home, user="tester")) as ws:
            ws.registry.add_team("risk", members=["tester"])
    finally:
        os.umask(umask)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", home):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((home / "ownloop.db").stat().st_mode) == 0o600


def test_an_existing_home_keeps_its_mode(tmp_path: Path) -> None:
    """A folder the user made (and named as the home) is theirs: ownloop does not chmod it."""
    home = tmp_path / "mine"
    home.mkdir(mode=0o750)
    os.chmod(home, 0o750)
    Config(home=home).ensure_home()
    assert stat.S_IMODE(home.stat().st_mode) == 0o750
