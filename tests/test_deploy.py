"""The rollout state machine on the real store, with a scripted analysis of each step."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.clock import FrozenClock
from ownloop.demo import make_churn_data, make_model
from ownloop.deploy import (
    Outcome,
    Plan,
    Rollout,
    State,
    StepAnalysis,
    Strategy,
)
from ownloop.errors import (
    ConflictError,
    GateFailedError,
    InvalidInputError,
    NotFoundError,
)
from ownloop.store import tables as t

START = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)


class Script:
    """An analyser whose outcomes a test writes in advance, per model (INCONCLUSIVE when empty)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, list[Outcome | Exception]] = {}
        self.looks: list[int] = []
        self.gate: threading.Barrier | None = None

    def then(self, model: str, *outcomes: Outcome | Exception) -> None:
        self.outcomes.setdefault(model, []).extend(outcomes)

    def __call__(self, rollout: Rollout, now: datetime, looks: int) -> StepAnalysis:
        self.looks.append(looks)
        if self.gate is not None:
            self.gate.wait(timeout=60)
        queue = self.outcomes.get(rollout.model, [])
        outcome = queue.pop(0) if queue else Outcome.INCONCLUSIVE
        if isinstance(outcome, Exception):
            raise outcome
        return analysis(outcome, now, looks)


def analysis(outcome: Outcome, now: datetime, looks: int = 1) -> StepAnalysis:
    n = 800 if outcome != Outcome.INCONCLUSIVE else 212
    return StepAnalysis(
        outcome=outcome,
        at=now,
        window_start=now - timedelta(minutes=10),
        window_end=now,
        arm="canary",
        n_stable=1890,
        n_candidate=n,
        guardrails=(),
        decided_by=("error_rate",) if outcome == Outcome.FAIL else (),
        summary=f"scripted {outcome}",
        looks=looks,
    )


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return make_churn_data(400, seed=3)


@pytest.fixture(scope="module")
def fitted(train: pd.DataFrame) -> Any:
    return make_model(max_iter=5).fit(train.drop(columns="churned"), train["churned"])


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def dws(config: Config, clock: FrozenClock, script: Script) -> Iterator[Workspace]:
    """A workspace whose deploy analysis is ``script`` and whose clock stands still."""
    with Workspace(config, clock=clock) as workspace:
        workspace.deploy.analyser = script
        yield workspace


def _gate(ws: Workspace, ref: str, tmp_path: Path, train: pd.DataFrame, passed: bool) -> None:
    path = tmp_path / "holdout.parquet"
    if not path.exists():
        train.to_parquet(path)
    ws.evaluations.evaluate(
        ref,
        {
            "datasets": {"holdout": {"path": str(path), "label": "churned"}},
            "checks": [{"type": "model_size", "at_most": 1000 if passed else 0.0001}],
        },
    )


@pytest.fixture
def churn(dws: Workspace, tmp_path: Path, train: pd.DataFrame, fitted: Any) -> str:
    """churn@1 in production, churn@2 with a passed gate, churn@3 with a failed one."""
    dws.registry.add_team("risk", members=["tester"])
    for _ in range(3):
        dws.registry.register(fitted, name="churn", owner="risk", reference=train, target="churned")
    dws.deploy.set_production("churn", 1, force=True, reason="set up")
    _gate(dws, "churn@2", tmp_path, train, passed=True)
    _gate(dws, "churn@3", tmp_path, train, passed=False)
    return "churn"


def _audit(ws: Workspace, action: str) -> list[Any]:
    return [a for a in ws.registry.audit_log(model="churn", limit=500) if a.action == action]


# -- the happy path -----------------------------------------------------------------------


def test_a_canary_passes_every_step_and_is_promoted(
    dws: Workspace, churn: str, script: Script
) -> None:
    rollout = dws.deploy.deploy("churn@2", steps=(5, 25, 100), min_samples=100)
    assert (rollout.state, rollout.step, rollout.stable) == (State.PENDING, -1, 1)
    route = dws.deploy.route("churn")
    assert (route.stable, route.candidate, route.weight) == (1, 2, 0.0)  # preloaded, no traffic

    (started,) = dws.deploy.tick()
    assert (started.to_state, started.weight) == (State.CANARY, 5.0)
    route = dws.deploy.route("churn")
    assert (route.candidate_arm, route.weight, route.rollout_id) == ("canary", 5.0, rollout.id)

    script.then("churn", Outcome.PASS)
    (second,) = dws.deploy.tick()
    assert (second.to_state, second.step, second.weight) == (State.CANARY, 1, 25.0)
    assert second.evidence is not None and second.evidence["outcome"] == "PASS"

    script.then("churn", Outcome.PASS)
    (done,) = dws.deploy.tick()
    assert done.to_state == State.PROMOTED
    after = dws.deploy.rollout(rollout.id)
    assert (after.state, after.finished_at, after.stable) == (State.PROMOTED, START, 1)
    assert dws.registry.get_version("churn@production").version == 2
    route = dws.deploy.route("churn")
    assert (route.stable, route.candidate, route.weight) == (2, None, 0.0)
    assert [e.to_state for e in dws.deploy.events(rollout.id)] == [
        State.PENDING, State.CANARY, State.CANARY, State.PROMOTED,
    ]  # fmt: skip
    assert len(_audit(dws, "deploy.start")) == 1
    assert len(_audit(dws, "deploy.step")) == 2
    (promoted,) = _audit(dws, "deploy.promote")
    assert promoted.before == {"version": 1}
    assert promoted.after["evidence"]["rollout_id"] == rollout.id
    assert promoted.after["evidence"]["outcome"] == "PASS"
    assert script.looks == [1, 2]
    assert dws.deploy.tick() == []  # nothing active


def test_a_shadow_runs_first_then_the_canary_steps(
    dws: Workspace, churn: str, script: Script
) -> None:
    dws.deploy.deploy("churn@2", strategy="shadow", steps="50,100")
    (shadow,) = dws.deploy.tick()
    assert shadow.to_state == State.SHADOWING
    route = dws.deploy.route("churn")
    assert (route.candidate, route.candidate_arm, route.weight) == (2, "shadow", 0.0)
    script.then("churn", Outcome.PASS)
    (canary,) = dws.deploy.tick()
    assert (canary.from_state, canary.to_state, canary.weight) == (
        State.SHADOWING,
        State.CANARY,
        50.0,
    )


def test_a_shadow_with_only_the_last_step_promotes_after_the_shadow(
    dws: Workspace, churn: str, script: Script
) -> None:
    dws.deploy.deploy("churn@2", strategy="shadow", steps=[100])
    dws.deploy.tick()
    script.then("churn", Outcome.PASS)
    (done,) = dws.deploy.tick()
    assert done.to_state == State.PROMOTED
    assert dws.registry.get_version("churn@production").version == 2


def test_direct_and_a_first_version_move_production_at_once(
    dws: Workspace, churn: str, train: pd.DataFrame, fitted: Any, tmp_path: Path
) -> None:
    direct = dws.deploy.deploy("churn@2", strategy="direct")
    assert (direct.state, direct.active, direct.stable) == (State.PROMOTED, False, 1)
    assert dws.registry.get_version("churn@production").version == 2
    assert [e.to_state for e in dws.deploy.events(direct.id)] == [State.PROMOTED]
    dws.registry.register(fitted, name="fresh", owner="risk", reference=train, target="churned")
    _gate(dws, "fresh@1", tmp_path, train, passed=True)
    first = dws.deploy.deploy("fresh@1")
    assert (first.state, first.stable) == (State.PROMOTED, None)
    assert dws.deploy.route("fresh").stable == 1


# -- failure and waiting ------------------------------------------------------------------


def test_a_failed_step_aborts_and_the_route_is_stable_only(
    dws: Workspace, churn: str, script: Script
) -> None:
    rollout = dws.deploy.deploy("churn@2")
    dws.deploy.tick()
    script.then("churn", Outcome.FAIL)
    (aborted,) = dws.deploy.tick()
    assert aborted.to_state == State.ABORTED
    assert aborted.reason is not None and "error_rate" in aborted.reason
    route = dws.deploy.route("churn")
    assert (route.stable, route.candidate, route.candidate_arm, route.weight) == (1, None, None, 0)
    assert dws.registry.get_version("churn@production").version == 1
    assert dws.deploy.rollout(rollout.id).state == State.ABORTED
    (audit,) = _audit(dws, "deploy.abort")
    assert audit.after["evidence"]["outcome"] == "FAIL"
    assert dws.deploy.deploy("churn@2").state == State.PENDING  # nothing active any more


@pytest.mark.parametrize("action", ["abort", "pause"])
def test_inconclusive_past_the_max_wait_follows_the_plan(
    dws: Workspace, churn: str, clock: FrozenClock, action: str
) -> None:
    rollout = dws.deploy.deploy("churn@2", max_wait_s=1800, on_inconclusive=action)
    dws.deploy.tick()
    clock.advance(minutes=29)
    assert dws.deploy.tick() == []  # INCONCLUSIVE, still within the wait
    status = dws.deploy.status("churn")
    assert status.analysis is not None and status.analysis.n_candidate == 212
    expected = "aborts" if action == "abort" else "pauses"
    assert status.next == (
        "step 1 of 4 (5%): needs 500 rows per arm (canary 212, stable 1,890); INCONCLUSIVE "
        f"until then; {expected} at 11:30 UTC (max wait 30m) if still inconclusive"
    )
    clock.advance(minutes=2)
    (event,) = dws.deploy.tick()
    assert event.reason is not None and "INCONCLUSIVE after 31m" in event.reason
    state = dws.deploy.rollout(rollout.id).state
    route = dws.deploy.route("churn")
    if action == "abort":
        assert state == State.ABORTED
        assert route.candidate is None
    else:
        assert state == State.PAUSED
        assert (route.candidate, route.weight) == (2, 5.0)  # held where it was
        assert dws.deploy.tick() == []  # a paused rollout waits for a person
        assert "paused at step 1 of 4 (5%)" in dws.deploy.status("churn").next


def test_a_restart_resumes_the_same_state(
    dws: Workspace, churn: str, config: Config, clock: FrozenClock
) -> None:
    rollout = dws.deploy.deploy("churn@2", steps="10,100")
    dws.deploy.tick()
    again = Script()
    again.then("churn", Outcome.PASS)
    with Workspace(config, clock=clock) as restarted:
        restarted.deploy.analyser = again
        seen = restarted.deploy.rollout(rollout.id)
        assert (seen.state, seen.step, seen.weight) == (State.CANARY, 0, 10.0)
        (done,) = restarted.deploy.tick()
    assert done.to_state == State.PROMOTED
    assert dws.deploy.rollout(rollout.id).state == State.PROMOTED


def test_a_failing_analysis_is_recorded_and_other_rollouts_go_on(
    dws: Workspace, churn: str, script: Script, train: pd.DataFrame, fitted: Any, tmp_path: Path
) -> None:
    for _ in range(2):
        dws.registry.register(fitted, name="other", owner="risk", reference=train, target="churned")
    dws.deploy.set_production("other", 1, force=True, reason="set up")
    dws.deploy.deploy("churn@2")
    dws.deploy.deploy("other@2", force=True, reason="no gate in this test")
    dws.deploy.tick()
    script.then("churn", RuntimeError("log unreadable"))
    script.then("other", Outcome.PASS)
    (moved,) = dws.deploy.tick()
    assert moved.model == "other"
    status = dws.deploy.status("churn")
    assert (status.rollout and status.rollout.state) == State.CANARY
    assert status.error == "RuntimeError: log unreadable"
    assert "the last analysis failed: RuntimeError: log unreadable" in status.next
    script.then("churn", Outcome.PASS)
    (recovered,) = [e for e in dws.deploy.tick() if e.model == "churn"]
    assert recovered.step == 1
    assert dws.deploy.status("churn").error is None


# -- a person decides ----------------------------------------------------------------------


def test_promote_abort_pause_resume_by_a_person(dws: Workspace, churn: str) -> None:
    first = dws.deploy.deploy("churn@2")
    dws.deploy.tick()
    paused = dws.deploy.pause("churn", reason="holiday")
    assert (paused.state, paused.weight) == (State.PAUSED, 5.0)
    with pytest.raises(ConflictError, match="already paused"):
        dws.deploy.pause("churn")
    resumed = dws.deploy.resume("churn")
    assert (resumed.state, resumed.step) == (State.CANARY, 0)
    with pytest.raises(ConflictError, match="not paused"):
        dws.deploy.resume("churn")
    with pytest.raises(InvalidInputError, match="needs --reason"):
        dws.deploy.abort("churn", reason=" ")
    aborted = dws.deploy.abort("churn", reason="wrong features")
    assert aborted.reason == "aborted by tester: wrong features"
    assert dws.deploy.route("churn").candidate is None
    second = dws.deploy.deploy("churn@2")
    promoted = dws.deploy.promote("churn", reason="looks right")
    assert promoted.state == State.PROMOTED
    assert dws.registry.get_version("churn@production").version == 2
    assert second.id != first.id
    assert [a.action for a in dws.registry.audit_log(model="churn", limit=6)][:6] == [
        "deploy.promote", "deploy.start", "deploy.abort", "deploy.resume", "deploy.pause",
        "deploy.step",
    ]  # fmt: skip
    assert [r.id for r in dws.deploy.rollouts("churn")] == [second.id, first.id]


@pytest.mark.parametrize("verb", ["promote", "abort", "pause", "resume"])
def test_a_person_action_with_nothing_active_is_refused(
    dws: Workspace, churn: str, verb: str
) -> None:
    call = {
        "promote": lambda: dws.deploy.promote("churn"),
        "abort": lambda: dws.deploy.abort("churn", reason="why"),
        "pause": lambda: dws.deploy.pause("churn"),
        "resume": lambda: dws.deploy.resume("churn"),
    }[verb]
    with pytest.raises(ConflictError, match=f"no active rollout to {verb}.*ownloop deploy churn@"):
        call()


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": "5,5,100"}, InvalidInputError, "strictly increasing"),
        ({"steps": "50,25,100"}, InvalidInputError, "strictly increasing"),
        ({"steps": "0,50,100"}, InvalidInputError, "above 0 and at most 100"),
        ({"steps": "50,150"}, InvalidInputError, "above 0 and at most 100"),
        ({"steps": "5,50"}, InvalidInputError, "must end at 100"),
        ({"steps": "five"}, InvalidInputError, "not numbers"),
        ({"min_samples": 0}, InvalidInputError, "at least 1"),
        ({"max_wait_s": 0}, InvalidInputError, "must be positive"),
        ({"routing_key": "cookie:x"}, InvalidInputError, "header:NAME"),
        ({"routing_key": "header:"}, InvalidInputError, "header:NAME"),
        ({"routing_key": "feature:salary"}, InvalidInputError, "no feature 'salary'.*tenure"),
        ({"on_inconclusive": "wait"}, InvalidInputError, "'abort' or 'pause'"),
        ({"strategy": "blue-green"}, InvalidInputError, "direct, canary, shadow"),
        ({"force": True}, InvalidInputError, "--force needs --reason"),
    ],
)
def test_bad_plans_are_refused_and_nothing_is_written(
    dws: Workspace, churn: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        dws.deploy.deploy("churn@2", **kwargs)
    assert dws.deploy.rollouts("churn") == []
    assert dws.deploy.route("churn").candidate is None


def test_the_gate_must_have_passed(dws: Workspace, churn: str) -> None:
    with pytest.raises(GateFailedError, match=r"churn@3's gate is FAILED \(evaluation \d+"):
        dws.deploy.deploy("churn@3")
    forced = dws.deploy.deploy("churn@3", force=True, reason="hotfix, gate data stale")
    assert forced.gate_evaluation_id is None
    (start,) = _audit(dws, "deploy.start")
    assert start.after["evidence"]["forced"] is True
    assert start.after["reason"] == "hotfix, gate data stale"


def test_a_version_without_a_gate_run_is_refused(
    dws: Workspace, churn: str, train: pd.DataFrame, fitted: Any
) -> None:
    dws.registry.register(fitted, name="churn", owner="risk", reference=train, target="churned")
    with pytest.raises(GateFailedError, match="churn@4 has no gate run.*ownloop eval churn@4"):
        dws.deploy.deploy("churn@4")


@pytest.mark.parametrize(
    ("ref", "match"),
    [("churn@9", "has no version 9"), ("nope@1", "model 'nope' does not exist")],
)
def test_a_version_that_does_not_exist_is_refused(
    dws: Workspace, churn: str, ref: str, match: str
) -> None:
    with pytest.raises(NotFoundError, match=match):
        dws.deploy.deploy(ref)


def test_the_production_version_is_not_deployed_again(dws: Workspace, churn: str) -> None:
    with pytest.raises(ConflictError, match="churn@1 is already production"):
        dws.deploy.deploy("churn@1")
    with pytest.raises(ConflictError, match="churn@1 is already production"):
        dws.deploy.deploy("churn@production", force=True, reason="again")


def test_a_second_deploy_is_refused_naming_the_active_one(dws: Workspace, churn: str) -> None:
    active = dws.deploy.deploy("churn@2")
    with pytest.raises(
        ConflictError,
        match=rf"active rollout \(#{active.id}: version 2, pending\).*ownloop abort churn",
    ):
        dws.deploy.deploy("churn@3", force=True, reason="x")
    with pytest.raises(ConflictError, match="active rollout"):
        dws.deploy.set_production("churn", 2)


# -- policy --------------------------------------------------------------------------------


def test_the_policy_gives_the_defaults_and_is_audited(dws: Workspace, churn: str) -> None:
    assert dws.deploy.policy("churn") == Plan()
    plan = Plan(strategy=Strategy.SHADOW, steps=(20.0, 100.0), routing_key="feature:region")
    dws.deploy.set_policy("churn", plan)
    assert dws.deploy.policy("churn") == plan
    (audit,) = _audit(dws, "deploy.policy")
    assert (audit.before, audit.after["steps"]) == (None, [20.0, 100.0])
    rollout = dws.deploy.deploy("churn@2", min_samples=50)
    assert rollout.plan == Plan(
        strategy=Strategy.SHADOW, steps=(20.0, 100.0), min_samples=50, routing_key="feature:region"
    )
    with pytest.raises(InvalidInputError, match="must end at 100"):
        dws.deploy.set_policy("churn", Plan(steps=(10.0,)))


# -- two processes -------------------------------------------------------------------------


def test_two_processes_ticking_at_once_apply_one_transition(
    dws: Workspace, churn: str, config: Config, clock: FrozenClock
) -> None:
    rollout = dws.deploy.deploy("churn@2")
    dws.deploy.tick()
    barrier = threading.Barrier(2)
    scripts = [Script(), Script()]
    results: list[list[Any]] = []
    errors: list[BaseException] = []

    def run(script: Script) -> None:
        script.gate = barrier  # both analyse before either applies
        script.then("churn", Outcome.PASS)
        try:
            with Workspace(config, clock=clock) as other:
                other.deploy.analyser = script
                results.append(other.deploy.tick())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in scripts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert sorted(len(r) for r in results) == [0, 1]
    after = dws.deploy.rollout(rollout.id)
    assert (after.state, after.step) == (State.CANARY, 1)
    with dws.store.read() as conn:
        steps = conn.execute(
            sa.select(sa.func.count())
            .select_from(t.rollout_events)
            .where(t.rollout_events.c.rollout_id == rollout.id, t.rollout_events.c.step == 1)
        ).scalar_one()
    assert steps == 1
    assert len(_audit(dws, "deploy.step")) == 2  # start to step 1, then step 1 to 2 once


def test_two_deploys_at_once_start_one_rollout(
    dws: Workspace, churn: str, config: Config, clock: FrozenClock
) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run(ref: str) -> None:
        with Workspace(config, clock=clock) as other:
            barrier.wait(timeout=60)
            try:
                outcomes.append(other.deploy.deploy(ref, force=True, reason="race"))
            except ConflictError as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=run, args=(ref,)) for ref in ("churn@2", "churn@3")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    (won,) = [o for o in outcomes if isinstance(o, Rollout)]
    (lost,) = [o for o in outcomes if isinstance(o, ConflictError)]
    assert f"active rollout (#{won.id}: version {won.candidate}, pending)" in str(lost)
    assert [r.id for r in dws.deploy.rollouts("churn")] == [won.id]
    assert dws.deploy.route("churn").candidate == won.candidate


def test_status_after_an_abort_says_why(dws: Workspace, churn: str) -> None:
    dws.deploy.deploy("churn@2")
    dws.deploy.abort("churn", reason="wrong features")
    status = dws.deploy.status("churn")
    assert not status.active
    assert status.next == (
        "nothing is rolling out; the last rollout (churn@2) was aborted at 11:00 UTC: "
        "aborted by tester: wrong features"
    )
