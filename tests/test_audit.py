"""Every state change writes exactly one audit row naming the actor, in the same transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from ownloop import AlreadyExistsError, Config, DriftSettings, Workspace

ACTOR = "auditor-7"

SUITE = """
datasets:
  holdout: {path: holdout.parquet, label: y}
checks:
  - metric: accuracy
    at_least: 0.1
"""


@pytest.fixture
def audited(config: Config, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace acting as ACTOR, with two teams and a model with two versions."""
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (X["a"] > 0).astype(int)
    X.assign(y=y).to_parquet(tmp_path / "holdout.parquet")
    (tmp_path / "suite.yaml").write_text(SUITE)
    with Workspace(dataclasses.replace(config, user=ACTOR)) as ws:
        reg = ws.registry
        reg.add_team("risk", members=["ana"])
        reg.add_team("growth")
        model = LogisticRegression().fit(X, y)
        for _ in range(2):
            reg.register(model, name="m", owner="risk", reference=X.assign(y=y), target="y")
        reg.set_alias("m", "candidate", 1)
        yield ws


def _model(ws: Workspace) -> LogisticRegression:
    return LogisticRegression().fit(pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 0.0]}), [0, 1])


CALLS: dict[str, tuple[Callable[[Workspace, Path], object], list[str]]] = {
    "add_team": (lambda ws, _: ws.registry.add_team("ops"), ["team.create"]),
    "update_team (set)": (
        lambda ws, _: ws.registry.update_team("risk", email="r@example.com"),
        ["team.update"],
    ),
    "add_member": (lambda ws, _: ws.registry.add_member("risk", "bob"), ["team.member.add"]),
    "remove_member": (
        lambda ws, _: ws.registry.remove_member("risk", "ana"),
        ["team.member.remove"],
    ),
    "register (next version)": (
        lambda ws, _: ws.registry.register(_model(ws), name="m"),
        ["version.register"],
    ),
    # A first registration makes two changes, a model and its version 1: one row each.
    "register (new model)": (
        lambda ws, _: ws.registry.register(_model(ws), name="fresh", owner="risk"),
        ["model.create", "version.register"],
    ),
    "set_alias (new)": (
        lambda ws, _: ws.registry.set_alias("m", "champion", 2),
        ["alias.set"],
    ),
    "set_production (forced)": (
        lambda ws, _: ws.deploy.set_production("m", 2, force=True, reason="hotfix"),
        ["deploy.direct"],
    ),
    "set_alias (move)": (
        lambda ws, _: ws.registry.set_alias("m", "candidate", 2),
        ["alias.set"],
    ),
    "delete_alias": (lambda ws, _: ws.registry.delete_alias("m", "candidate"), ["alias.delete"]),
    "transfer": (lambda ws, _: ws.registry.transfer("m", "growth"), ["model.transfer"]),
    "evaluate (stored verdict)": (
        lambda ws, tmp: ws.evaluations.evaluate("m@2", tmp / "suite.yaml"),
        ["version.evaluate"],
    ),
    "monitor.configure": (
        lambda ws, _: ws.monitor.configure("m", DriftSettings()),
        ["monitor.configure"],
    ),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_every_mutating_call_writes_one_audit_row_naming_the_actor(
    audited: Workspace, tmp_path: Path, call: str
) -> None:
    action, expected = CALLS[call]
    before = len(audited.registry.audit_log(limit=10_000))
    action(audited, tmp_path)
    entries = audited.registry.audit_log(limit=10_000)
    new = list(reversed(entries[: len(entries) - before]))
    assert [e.action for e in new] == expected
    assert all(e.actor == ACTOR for e in new)


def test_a_refused_call_writes_no_audit_row(audited: Workspace) -> None:
    before = len(audited.registry.audit_log(limit=10_000))
    with pytest.raises(AlreadyExistsError, match="already"):
        audited.registry.add_team("risk")
    assert len(audited.registry.audit_log(limit=10_000)) == before
