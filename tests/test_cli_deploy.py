"""``ownloop deploy / status / promote / abort / pause / resume / rollouts / policy``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.cli import cli
from ownloop.demo import make_churn_data, make_model
from ownloop.deploy import Guardrail, Outcome, Rollout, StepAnalysis
from tests.conftest import env_for
from tests.test_deploy import Script, _gate, analysis

Run = Callable[..., Result]


@pytest.fixture
def run(config: Config) -> Run:
    env = {**env_for(config), "OWNLOOP_NO_PROGRESS": "1"}

    def _run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return _run


@pytest.fixture
def churn(ws: Workspace, tmp_path: Path, train: pd.DataFrame, fitted: Any) -> str:
    """churn@1 in production, churn@2 with a passed gate, churn@3 with a failed one."""
    ws.registry.add_team("risk", members=["tester"])
    for _ in range(3):
        ws.registry.register(fitted, name="churn", owner="risk", reference=train, target="churned")
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    _gate(ws, "churn@2", tmp_path, train, passed=True)
    _gate(ws, "churn@3", tmp_path, train, passed=False)
    return "churn"


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_churn_data(400, seed=3)


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> Any:
    return make_model(max_iter=5).fit(train.drop(columns="churned"), train["churned"])


@contextmanager
def ticking(config: Config, *outcomes: Outcome) -> Iterator[None]:
    """A controller in a thread: ticks every 0.2 s with scripted outcomes, stopped on exit."""
    script = Script()
    script.then("churn", *outcomes)
    stop = threading.Event()

    def loop() -> None:
        with Workspace(config) as controller:
            controller.deploy.analyser = script
            while not stop.is_set():
                controller.deploy.tick()
                stop.wait(0.2)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


# -- starting and reading -----------------------------------------------------------------


def test_deploy_then_status_and_rollouts(run: Run, churn: str) -> None:
    r = run("deploy", "churn@2", "--steps", "10,50,100", "--max-wait", "30m",
            "--routing-key", "header:x-customer-id")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.startswith("rollout #1: churn@2 over v1, canary steps 10,50,100, 500 rows")
    assert "routing header:x-customer-id" in r.output
    again = run("deploy", "churn@2")
    assert again.exit_code == 1
    assert "active rollout (#1: version 2, pending)" in again.stderr
    overview = run("status")
    assert overview.exit_code == 0, overview.output
    assert "churn" in overview.output and "stable 100%, canary v2 0%" in overview.output
    one = run("status", "churn")
    assert "rollout #1 of churn@2 (pending: before the first step)" in one.output
    assert "next: pending: starts at the next tick (canary step 1 of 3 at 10%)" in one.output
    data = json.loads(run("status", "churn", "--json").output)
    assert (data["rollout"]["state"], data["route"]["candidate"]) == ("pending", 2)
    listed = json.loads(run("rollouts", "churn", "--json").output)
    assert [(r["id"], r["candidate"], r["state"]) for r in listed] == [(1, 2, "pending")]
    assert "canary" in run("rollouts", "churn").output


def test_status_shows_the_analysis_table(run: Run, churn: str, ws: Workspace) -> None:
    def with_table(rollout: Rollout, now: datetime, looks: int) -> StepAnalysis:
        rail = Guardrail(
            name="error rate", outcome=Outcome.INCONCLUSIVE, stable=0.003, candidate=0.004,
            difference=0.001, lower=-0.002, upper=0.006, bound=0.01, n_stable=1890,
            n_candidate=212, min_samples=500, method="sequential", text="within",
        )  # fmt: skip
        base = analysis(Outcome.INCONCLUSIVE, now, looks)
        return StepAnalysis(**{**base.__dict__, "guardrails": (rail,)})

    ws.deploy.analyser = with_table
    ws.deploy.deploy("churn@2")
    ws.deploy.tick()
    ws.deploy.tick()
    out = run("status", "churn").output
    assert "canary vs stable" in out
    for cell in ("error rate", "0.003", "0.004", "+0.001", "+0.01", "212 / 1,890", "INCONCLUSIVE"):
        assert cell in out, cell
    assert "needs 500 rows per arm (canary 212, stable 1,890)" in out


def test_status_with_nothing_deployed(
    run: Run, ws: Workspace, train: pd.DataFrame, fitted: Any
) -> None:
    r = run("status")
    assert r.exit_code == 0 and "nothing is deployed yet" in r.output
    ws.registry.add_team("risk", members=["tester"])
    ws.registry.register(fitted, name="new", owner="risk", reference=train, target="churned")
    one = run("status", "new")
    assert one.exit_code == 0, one.output
    assert "new: not deployed (no production version)" in one.output
    assert run("status", "nope").exit_code == 1


# -- a person decides ----------------------------------------------------------------------


def test_pause_resume_abort_promote(run: Run, churn: str) -> None:
    assert run("deploy", "churn@2").exit_code == 0
    assert "paused before the first step" in run("pause", "churn", "--reason", "lunch").output
    assert "resumed before the first step" in run("resume", "churn").output
    missing = run("abort", "churn")
    assert missing.exit_code == 2 and "--reason" in missing.output
    aborted = run("abort", "churn", "--reason", "wrong data")
    assert aborted.exit_code == 0 and "aborted; stable v1 answers" in aborted.output
    marked = run("versions", "churn").output  # the aborted candidate is marked where users look
    assert "aborted (#" in marked
    nothing = run("promote", "churn")
    assert nothing.exit_code == 1
    assert "no active rollout to promote" in nothing.stderr
    assert run("deploy", "churn@2").exit_code == 0
    promoted = run("promote", "churn", "--reason", "looks right")
    assert promoted.exit_code == 0 and "churn@2 is production now" in promoted.output


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--steps", "5,5,100"], 1, "strictly increasing"),
        (["--steps", "5,150"], 1, "above 0 and at most 100"),
        (["--max-wait", "0s"], 2, "must be positive"),
        (["--min-samples", "0"], 1, "at least 1"),
        (["--routing-key", "cookie:x"], 1, "header:NAME"),
        (["--strategy", "blue"], 2, "'blue' is not one of"),
    ],
)
def test_bad_input_is_refused(run: Run, churn: str, args: list[str], code: int, text: str) -> None:
    r = run("deploy", "churn@2", *args)
    assert r.exit_code == code, r.output
    assert text in r.output + r.stderr
    assert "Traceback" not in r.output


def test_a_failed_gate_is_refused_unless_forced(run: Run, churn: str) -> None:
    refused = run("deploy", "churn@3")
    assert refused.exit_code == 1 and "churn@3's gate is FAILED" in refused.stderr
    forced = run("deploy", "churn@3", "--force", "--reason", "hotfix")
    assert forced.exit_code == 0, forced.output


def test_the_policy_is_shown_and_set(run: Run, churn: str) -> None:
    shown = run("policy", "churn")
    assert "churn: canary steps 5,25,50,100, 500 rows per arm, max wait 30m" in shown.output
    set_ = run("policy", "churn", "--strategy", "shadow", "--steps", "20,100", "--max-wait", "1h")
    assert set_.exit_code == 0, set_.output
    assert json.loads(run("policy", "churn", "--json").output) == {
        "strategy": "shadow", "steps": [20.0, 100.0], "min_samples": 500, "max_wait_s": 3600.0,
        "routing_key": None, "on_inconclusive": "abort",
    }  # fmt: skip
    bad = run("policy", "churn", "--steps", "20,50")
    assert bad.exit_code == 1 and "must end at 100" in bad.stderr


# -- following a rollout --------------------------------------------------------------------


def test_wait_exits_0_when_promoted(run: Run, churn: str, config: Config) -> None:
    with ticking(config, Outcome.PASS, Outcome.PASS):
        r = run("deploy", "churn@2", "--steps", "10,50,100", "--wait", "--timeout", "2m")
    assert r.exit_code == 0, r.output
    assert "pending -> canary  10%" in r.output
    assert "canary -> canary  50%" in r.output
    assert "canary -> promoted" in r.output


def test_wait_exits_1_when_aborted(run: Run, churn: str, config: Config) -> None:
    with ticking(config, Outcome.FAIL):
        r = run("deploy", "churn@2", "--wait", "--timeout", "2m")
    assert r.exit_code == 1, r.output
    assert "canary -> aborted" in r.output
    assert "rollout #1 aborted: step 1 of 4 (5%) FAILED on error_rate" in r.output


def test_wait_exits_1_when_paused(run: Run, churn: str, config: Config) -> None:
    with ticking(config):
        r = run("deploy", "churn@2", "--max-wait", "1s", "--on-inconclusive", "pause",
                "--wait", "--timeout", "2m")  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "rollout #1 paused: step 1 of 4 (5%) still INCONCLUSIVE" in r.output


def test_wait_says_when_nothing_advances_the_rollout(run: Run, churn: str) -> None:
    r = run("deploy", "churn@2", "--wait", "--timeout", "4s", "--stalled-after", "1s")
    assert r.exit_code == 1, r.output
    assert "a running 'ownloop serve' advances rollouts" in r.output
    assert "still before the first step after" in r.output
