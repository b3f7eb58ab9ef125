"""Real processes: concurrent registration and a register killed half-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import sqlalchemy as sa
from sklearn.linear_model import LogisticRegression

from ownloop import Config, Workspace
from ownloop.artifacts import sha256_file
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


def _kill_when(proc: subprocess.Popen[bytes], seen: Callable[[], bool]) -> bool:
    """SIGKILL ``proc`` the moment ``seen()`` is true; False when it finished first."""
    while proc.poll() is None:
        if seen():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        time.sleep(0.001)
    return False


def _temp_in(folder: Path) -> Callable[[], bool]:
    return lambda: folder.is_dir() and any(p.name.startswith(".tmp-") for p in folder.rglob("*"))


def test_register_killed_half_way_leaves_nothing_half_written(
    config: Config, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    n = 100_000
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
    artifacts = config.artifacts_dir
    model_file = artifacts / "sha256" / sha256_file(tmp_path / "m.skops")[:2]
    final = model_file / sha256_file(tmp_path / "m.skops")
    moments = {
        # the model file is being copied and hashed into a temporary name
        "staging": _temp_in(artifacts / "tmp"),
        # the reference profile is being written under a temporary name
        "profile": _temp_in(artifacts / "sha256"),
        # the model artifact has its final name; its version row is not committed yet
        "committed": final.exists,
    }
    killed: dict[str, bool] = {}
    for moment, seen in moments.items():
        final.unlink(missing_ok=True)  # so "committed" waits for this run's rename
        proc = subprocess.Popen(
            cmd, env=env_for(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            killed[moment] = _kill_when(proc, seen)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
        with Workspace(config) as ws:
            _check_invariant(ws)
    print(f"killed at: {killed}")
    # The staged copy lives while the profile is computed: that kill cannot be missed.
    assert killed["staging"], f"the register finished before its artifact was staged: {killed}"
    with Workspace(config) as ws:
        before = [v.version for v in ws.registry.list_versions("big")] if _has(ws, "big") else []
    # The store is not left locked or damaged: the next register works and counts on.
    subprocess.run(cmd, env=env_for(config), check=True, capture_output=True, timeout=300)
    with Workspace(config) as ws:
        versions = [v.version for v in ws.registry.list_versions("big")]
        assert versions == [*before, len(before) + 1]
        assert versions == list(range(1, len(versions) + 1))
        assert _check_invariant(ws) == len(versions)


def _has(ws: Workspace, model: str) -> bool:
    return model in [m.name for m in ws.registry.list_models()]
