"""Drift-aware rollback on simulated data with known truth: a shift that hurts both versions, a
bug-only regression, a target worse than current, and every refused input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from ownloop import Workspace
from ownloop.cli import cli
from ownloop.clock import FrozenClock
from ownloop.demo import log_predictions, make_churn_data, make_model
from ownloop.deploy import RollbackVerdict
from ownloop.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
)
from ownloop.predlog import LABEL_SCHEMA, write_labels
from ownloop.store import tables as t
from tests.conftest import env_for

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
WINDOW = 3000


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_churn_data(4000, seed=31)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_churn_data(3000, seed=32)


@pytest.fixture(scope="module")
def good(train: pd.DataFrame) -> Any:
    return make_model(max_iter=50).fit(train.drop(columns="churned"), train["churned"])


@pytest.fixture(scope="module")
def good2(train: pd.DataFrame) -> Any:
    return make_model(max_iter=80, learning_rate=0.05).fit(
        train.drop(columns="churned"), train["churned"]
    )


@pytest.fixture(scope="module")
def broken(train: pd.DataFrame) -> Any:
    """A bug in the training pipeline: the strongest feature's column was scrambled."""
    X = train.drop(columns="churned").copy()
    X["support_calls"] = np.random.default_rng(5).permutation(X["support_calls"].to_numpy())
    return make_model(max_iter=50).fit(X, train["churned"])


def _deploy(ws: Workspace, team: str, reference: pd.DataFrame, *models: Any) -> None:
    """Register ``models`` as versions 1, 2, ... and make each production in turn."""
    for i, m in enumerate(models, start=1):
        ws.registry.register(m, name="churn", owner=team, reference=reference, target="churned")
        ws.deploy.set_production("churn", i, force=True, reason="set up")
    ws.clock = FrozenClock(T0 + timedelta(hours=3))
    ws.deploy.clock = ws.clock
    ws.monitor.clock = ws.clock


def _log(ws: Workspace, ref: str, data: pd.DataFrame, labelled: int, seed: int = 0) -> pa.Table:
    """Log ``data`` as served by ``ref`` on the stable arm; label its first ``labelled`` rows."""
    logged = log_predictions(
        ws, ref, data.drop(columns="churned"), T0, step=timedelta(seconds=1), seed=seed
    )
    if labelled:
        ids = logged.column("prediction_id").slice(0, labelled)
        truth = [str(v) for v in data["churned"].iloc[:labelled]]
        table = pa.table(
            {
                "prediction_id": ids,
                "label": truth,
                "label_value": [float(v) for v in truth],
                "labeled_at": [T0 + timedelta(hours=2)] * labelled,
                "source": ["test"] * labelled,
                "weight": [None] * labelled,
            },
            schema=LABEL_SCHEMA,
        )
        write_labels(ws.config.predictions_dir, "churn", table)
    return logged


def _checks(ws: Workspace) -> list[Any]:
    with ws.store.read() as conn:
        return list(conn.execute(sa.select(t.rollback_checks).order_by(t.rollback_checks.c.id)))


def _production(ws: Workspace) -> int:
    return ws.registry.get_model("churn").aliases["production"]


# -- verdicts on known truth -----------------------------------------------------------------


def test_a_covariate_shift_that_hurts_both_versions_is_insufficient(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    # a shift of 0.75 moves the churn rate towards one half: both versions lose ~7 points
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=41, shift=0.75), labelled=1500)
    check = ws.deploy.check_rollback("churn")
    assert check.target == 1 and check.current == 2
    assert check.verdict is RollbackVerdict.INSUFFICIENT
    assert check.dataset_drift is True
    assert check.top_drifted
    assert check.reference_accuracy is not None and check.paired is not None
    assert check.paired.target < check.reference_accuracy - 0.05
    assert check.paired.current < check.reference_accuracy - 0.05
    assert any("realised accuracy" in r for r in check.reasons)
    assert "retrain on recent data (1,500 labelled production row(s)" in check.next_step
    assert check.rows == WINDOW


def test_without_labels_the_drift_against_the_targets_reference_decides(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=41, shift=0.75), labelled=0)
    check = ws.deploy.check_rollback("churn", rows=1000)
    assert check.rows == 1000 and check.paired is None and check.labelled_rows == 0
    assert check.verdict is RollbackVerdict.INSUFFICIENT
    assert check.reasons[0].startswith("today's inputs drifted against the target's own reference")


def test_a_bug_only_regression_is_safe_to_roll_back(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, good, broken)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=42), labelled=1500)
    check = ws.deploy.check_rollback("churn")
    assert check.verdict is RollbackVerdict.SAFE, check.reasons
    assert check.dataset_drift is False
    assert check.paired is not None and check.paired.n == 1500
    assert check.paired.difference > 0  # the target is the better one
    assert check.estimate is not None and check.estimate["status"] == "ok"


def test_a_target_worse_than_current_is_refused_without_force(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, broken, good)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=43), labelled=1500)
    with pytest.raises(ConflictError, match=r"refused: the check says WORSE \(on the same 1,500"):
        ws.deploy.rollback("churn")
    assert _production(ws) == 2
    [row] = _checks(ws)
    assert (row.verdict, row.acted, row.target_version) == ("WORSE", False, 1)
    assert ws.registry.audit_log("churn", limit=1)[0].action == "deploy.rollback_refused"


def test_without_labels_a_target_estimated_worse_is_worse(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, broken, good)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=43), labelled=0)
    check = ws.deploy.check_rollback("churn")
    assert check.paired is None
    assert check.verdict is RollbackVerdict.WORSE
    assert check.reasons[0].startswith("without labels: the target's estimated accuracy")
    assert check.estimate is not None and check.current_estimate is not None
    assert check.estimate["upper"] < check.current_estimate["lower"]


def test_a_regression_target_is_compared_on_paired_absolute_errors(
    ws: Workspace, team: str
) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = make_churn_data(3000, seed=51).drop(columns=["churned", "plan", "region"])
    X, y = data.drop(columns="monthly_charges"), data["monthly_charges"]
    sound = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    noisy = y + np.random.default_rng(3).normal(0, 40, len(y))  # a bug in the label join
    bugged = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, noisy)
    for i, m in enumerate((sound, bugged), start=1):
        ws.registry.register(
            m, name="charges", owner=team, reference=data, target="monthly_charges"
        )
        ws.deploy.set_production("charges", i, force=True, reason="set up")
    frame = make_churn_data(WINDOW, seed=52).drop(columns=["churned", "plan", "region"])
    logged = log_predictions(ws, "charges@2", frame, T0, step=timedelta(seconds=1))
    labels = pa.table(
        {
            "prediction_id": logged.column("prediction_id"),
            "label": [str(v) for v in frame["monthly_charges"]],
            "label_value": frame["monthly_charges"].to_numpy(),
            "labeled_at": [T0] * WINDOW,
            "source": ["test"] * WINDOW,
            "weight": pa.nulls(WINDOW, pa.float64()),
        },
        schema=LABEL_SCHEMA,
    )
    write_labels(ws.config.predictions_dir, "charges", labels)
    check = ws.deploy.check_rollback("charges")
    assert check.estimate is None and check.paired is not None
    assert check.paired.metric == "mae" and check.paired.difference < 0  # the target errs less
    assert check.verdict is RollbackVerdict.SAFE, check.reasons


def test_force_rolls_back_to_a_worse_target_and_audits_it(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, broken, good)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=43), labelled=1500)
    with pytest.raises(InvalidInputError, match="--force needs --reason"):
        ws.deploy.rollback("churn", force=True)
    done = ws.deploy.rollback("churn", force=True, reason="v2 leaks data")
    assert done.acted and done.forced and done.verdict is RollbackVerdict.WORSE
    assert _production(ws) == 1
    assert ws.deploy.route("churn").stable == 1
    [row] = _checks(ws)
    assert (row.verdict, row.acted, row.id) == ("WORSE", True, done.check_id)
    entry = ws.registry.audit_log("churn", limit=1)[0]
    assert entry.action == "deploy.rollback"
    assert entry.after is not None
    assert entry.after["reason"] == "v2 leaks data"
    assert entry.after["evidence"]["verdict"] == "WORSE"
    assert entry.after["evidence"]["forced"] is True


def test_rollback_acts_on_a_safe_verdict_in_one_transaction(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, good, broken)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=42), labelled=0)
    done = ws.deploy.rollback("churn", reason="v2 broken")
    assert done.verdict is RollbackVerdict.SAFE and done.acted
    assert _production(ws) == 1
    [row] = _checks(ws)
    assert row.acted is True and row.report["verdict"] == "SAFE"
    actions = [e.action for e in ws.registry.audit_log("churn", limit=2)]
    assert actions == ["deploy.rollback", "deploy.rollback_check"]


def test_check_only_stores_the_check_and_changes_nothing_else(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, good, broken)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=42), labelled=0)
    generation = ws.deploy.generations()["churn"]
    check = ws.deploy.rollback("churn", check_only=True)
    assert not check.acted and check.check_id is not None
    assert _production(ws) == 2
    assert ws.deploy.generations()["churn"] == generation
    [row] = _checks(ws)
    assert (row.acted, row.verdict) == (False, "SAFE")


# -- bad input ---------------------------------------------------------------------------------


def test_rollback_with_no_previous_version_is_refused(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any
) -> None:
    _deploy(ws, team, reference, good)
    with pytest.raises(NotFoundError, match="no previous production version"):
        ws.deploy.rollback("churn")
    assert _checks(ws) == []


def test_rollback_to_the_current_or_a_missing_version_is_refused(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    with pytest.raises(InvalidInputError, match="version 2 of model 'churn' is already production"):
        ws.deploy.rollback("churn", to=2)
    with pytest.raises(NotFoundError, match="7"):
        ws.deploy.rollback("churn", to=7)
    with pytest.raises(InvalidInputError, match="positive whole number"):
        ws.deploy.rollback("churn", to="x")
    with pytest.raises(NotFoundError):
        ws.deploy.rollback("nosuch")


def test_rollback_to_a_tampered_artifact_is_refused(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    _log(ws, "churn@2", make_churn_data(500, seed=44), labelled=0)
    path = ws.registry.artifacts.path(ws.registry.get_version("churn@1").artifact_digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes() + b"tampered")
    with pytest.raises(IntegrityError, match=r"cannot roll back to churn@1: its artifact fails"):
        ws.deploy.rollback("churn")
    assert _production(ws) == 2 and _checks(ws) == []


def test_rollback_without_logged_rows_is_not_ready(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    with pytest.raises(NotReadyError, match="0 answered logged row"):
        ws.deploy.check_rollback("churn")


def test_rollback_during_an_active_rollout_is_refused_naming_it(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    _log(ws, "churn@2", make_churn_data(500, seed=44), labelled=0)
    with ws.store.write() as conn:
        model_id = ws.registry.require_model_row(conn, "churn").id
        conn.execute(t.rollouts.insert().values(_rollout_row(model_id, ws.clock.now())))
    with pytest.raises(ConflictError, match=r"active rollout \(#1: version 1"):
        ws.deploy.rollback("churn")
    assert ws.deploy.rollback("churn", check_only=True).check_id is not None
    assert _production(ws) == 2


def _rollout_row(model_id: int, now: datetime) -> dict[str, Any]:
    """A rollout row as the rollout state machine writes it (active: ``active_model_id`` set)."""
    return {
        "model_id": model_id,
        "active_model_id": model_id,
        "model": "churn",
        "candidate_version": 1,
        "stable_version": 2,
        "strategy": "canary",
        "plan": {},
        "state": "canary",
        "step": 0,
        "weight": 5.0,
        "started_at": now,
        "step_started_at": now,
        "updated_at": now,
        "created_by": "tester",
    }


# -- the command -------------------------------------------------------------------------------


def _cli(ws: Workspace, *args: str) -> Result:
    return CliRunner().invoke(cli, ["rollback", *args], env=env_for(ws.config))


def test_cli_check_only_shows_the_figures_that_decided(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, good2: Any
) -> None:
    _deploy(ws, team, reference, good, good2)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=41, shift=0.75), labelled=1500)
    out = _cli(ws, "churn", "--check-only")
    assert out.exit_code == 1, out.output  # INSUFFICIENT: not a go
    assert "verdict: INSUFFICIENT" in out.output
    assert "DATASET DRIFT" in out.output
    assert "realised accuracy on the same 1,500 labelled rows" in out.output
    assert "retrain on recent data" in out.output
    assert _production(ws) == 2
    as_json = _cli(ws, "churn", "--check-only", "--json")
    report = json.loads(as_json.output)
    assert report["verdict"] == "INSUFFICIENT" and report["paired"]["n"] == 1500


def test_cli_rolls_back_on_safe_and_refuses_worse_with_its_figures(
    ws: Workspace, team: str, reference: pd.DataFrame, good: Any, broken: Any
) -> None:
    _deploy(ws, team, reference, broken, good)
    _log(ws, "churn@2", make_churn_data(WINDOW, seed=43), labelled=1500)
    refused = _cli(ws, "churn")
    assert refused.exit_code == 1
    assert "verdict: WORSE" in refused.output
    assert "refused: the check says WORSE" in refused.output
    assert _production(ws) == 2
    forced = _cli(ws, "churn", "--force", "--reason", "incident 12")
    assert forced.exit_code == 0, forced.output
    assert "rolled back: production churn@2 -> @1 (forced, audited)" in forced.output
    assert _production(ws) == 1
    again = _cli(ws, "churn", "--to", "2")  # churn@1 has served nothing yet: no data to judge on
    assert again.exit_code == 1
    assert "churn@1 has 0 answered logged row(s)" in again.output
    assert _production(ws) == 1
