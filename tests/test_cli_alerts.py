"""``ownloop rules / alerts / ack / resolve`` against a real store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.cli import cli
from tests.conftest import env_for
from tests.test_alerts import HOUR, _window

Run = Callable[..., Result]


@pytest.fixture
def run(config: Config) -> Run:
    env = {**env_for(config), "OWNLOOP_NO_PROGRESS": "1"}

    def _run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return _run


@pytest.fixture
def churn(ws: Workspace, churn_model: object) -> str:
    ws.registry.add_team("risk", webhook_url="https://alerts.example.com/hook", members=["tester"])
    ws.registry.register(churn_model, name="churn", owner="risk")
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    return "churn"


def test_rules_table_set_reset_and_load(run: Run, churn: str, tmp_path: Path) -> None:
    out = run("rules", "churn")
    assert out.exit_code == 0, out.output
    assert "estimated_accuracy_drop" in out.output and "default" in out.output
    out = run("rules", "churn", "set", "error_rate", "--above", "0.1", "--for", "3")
    assert out.exit_code == 0, out.output
    rules = {r["name"]: r for r in json.loads(run("rules", "--json", "churn").output)}
    assert (rules["error_rate"]["threshold"], rules["error_rate"]["for_windows"]) == (0.1, 3)
    out = run("rules", "churn", "set", "error_rate", "--command", "python retrain.py")
    assert out.exit_code == 0, out.output
    assert "+retrain" in out.output
    assert run("rules", "churn", "reset", "error_rate").exit_code == 0
    path = tmp_path / "alerts.yaml"
    path.write_text("rules:\n  latency_p99: {above: 0.5, for: 1}\n")
    out = run("rules", "churn", "load", str(path))
    assert out.exit_code == 0, out.output
    rules = {r["name"]: r for r in json.loads(run("rules", "--json", "churn").output)}
    assert rules["latency_p99"]["source"] == f"file:{path}"


def test_rules_bad_input_is_a_message_not_a_traceback(run: Run, churn: str) -> None:
    out = run("rules", "churn", "set", "error_rat", "--above", "0.1")
    assert out.exit_code == 1
    assert "did you mean 'error_rate'" in out.output
    assert "Traceback" not in out.output
    out = run("rules", "churn", "set", "estimated_accuracy_drop", "--above", "-0.1")
    assert out.exit_code == 1 and "below 0" in out.output
    out = run("rules", "nosuch")
    assert out.exit_code == 1 and "model 'nosuch' does not exist" in out.output
    out = run("rules", "churn", "set", "error_rate", "--above", "abc")
    assert out.exit_code == 2


def test_alerts_evaluate_list_ack_resolve(run: Run, churn: str, ws: Workspace) -> None:
    now = datetime.now().astimezone()
    _window(ws, now - HOUR, error_rate=0.3)
    _window(ws, now, error_rate=0.3)
    out = run("alerts", "evaluate", "churn")
    assert out.exit_code == 0, out.output
    assert "error_rate" in out.output
    listed = json.loads(run("alerts", "--open", "--mine", "--json").output)
    assert [a["rule"] for a in listed] == ["error_rate"]
    alert_id = str(listed[0]["id"])
    assert "nothing opened" in run("alerts", "check").output
    out = run("ack", alert_id, "--note", "on it")
    assert out.exit_code == 0, out.output
    assert "acknowledged" in out.output
    out = run("ack", alert_id)
    assert out.exit_code == 1 and "already acknowledged" in out.output
    assert run("resolve", alert_id).exit_code == 2  # --note is required
    out = run("resolve", alert_id, "--note", "retrained as v2")
    assert out.exit_code == 0, out.output
    assert "resolved" in out.output
    out = run("ack", "999")
    assert out.exit_code == 1 and "alert 999 does not exist" in out.output
    assert "no alerts" in run("alerts", "--open").output
    assert len(json.loads(run("alerts", "--model", "churn", "--json").output)) == 1
