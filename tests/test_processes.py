"""Real processes: concurrent registration and a register killed half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from ownloop import Config, Workspace
from ownloop.store import tables
from tests.conftest import env_for

pytestmark = pytest.mark.slow


@pytest.fixture
def small_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    y = (X["a"] > 0).astype(int)
    sio.dump(LogisticRegression().fit(X, y), tmp_path / "m.skops")
    X.assign(y=y).to_csv(tmp_path / "ref.csv", index=False)
    return tmp_path / "m.skops", tmp_path / "ref.csv"


REGISTER_LOOP = """
import sys, ownloop
for _ in range(int(sys.argv[3])):
    ownloop.register(name="race", path=sys.argv[1], owner="risk", reference=sys.argv[2], target="y")
"""


def test_concurrent_registers_never_share_a_version_number(
    config: Config, small_files: tuple[Path, Path]
) -> None:
    with Workspace(config) as ws:
        ws.registry.add_team("risk")
    model, ref = small_files
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_LOOP, str(model), str(ref), "5"],
            env=env_for(config),
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    with Workspace(config) as ws:
        numbers = [v.version for v in ws.registry.list_versions("race")]
        assert numbers == list(range(1, 16))
        assert ws.registry.get_model("race").latest_version == 15
        actions = [e.action for e in ws.registry.audit_log(model="race", limit=100)]
        assert actions.count("version.register") == 15 and actions.count("model.create") == 1


def _check_invariant(ws: Workspace) -> int:
    """Every version row points at complete, verifiable artifacts; every final-named file verifies."""
    with ws.store.read() as conn:
        rows = conn.execute(sa.select(tables.versions)).all()
    for row in rows:
        ws.artifacts.verify(row.artifact_digest)
        if row.profile_digest:
            ws.artifacts.verify(row.profile_digest)
    for path in (ws.config.artifacts_dir / "sha256").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            ws.artifacts.verify(path.name)
    return len(rows)


def test_register_killed_half_way_leaves_nothing_half_written(
    config: Config, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    n = 400_000
    X = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)})
    y = (X["x0"] + X["x1"] > 0).astype(int)
    sio.dump(LogisticRegression().fit(X.head(5000), y.head(5000)), tmp_path / "m.skops")
    X.assign(y=y).to_parquet(tmp_path / "ref.parquet")
    with Workspace(config) as ws:
        ws.registry.add_team("risk")
    cmd = [
        sys.executable,
        "-m",
        "ownloop",
        "register",
        "big",
        str(tmp_path / "m.skops"),
        "--owner",
        "risk",
        "--reference",
        str(tmp_path / "ref.parquet"),
        "--target",
        "y",
    ]
    start = time.monotonic()
    subprocess.run(cmd, env=env_for(config), check=True, capture_output=True, timeout=120)
    full = time.monotonic() - start
    killed = 0
    for fraction in (0.2, 0.4, 0.55, 0.7, 0.8, 0.9, 0.97):
        proc = subprocess.Popen(
            cmd, env=env_for(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(full * fraction)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        with Workspace(config) as ws:
            _check_invariant(ws)
    assert killed >= 3, "the register finished before it could be killed; the test proves nothing"
    # The store is not left locked or damaged: the next register works and counts on.
    subprocess.run(cmd, env=env_for(config), check=True, capture_output=True, timeout=120)
    with Workspace(config) as ws:
        versions = [v.version for v in ws.registry.list_versions("big")]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2
        assert _check_invariant(ws) == len(versions)
