"""Whole rollouts driven by real ``ownloop serve`` processes, with traffic over real HTTP.

Two serve processes share one store (a SQLite file, or PostgreSQL when reachable); their
controller (one of them at a time, by the lease) analyses the logged traffic and moves each
rollout. The test only sends requests and labels, and reads the store: nothing here ticks.
Every process is killed and reaped in teardown; waits are on conditions with generous deadlines.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.demo import make_churn_data, make_model
from ownloop.deploy import CONTROLLER_LEASE, Lease, Outcome, RolloutEvent, State
from ownloop.predlog import read_log
from tests.conftest import env_for
from tests.servers import free_port, start_process

pytestmark = pytest.mark.slow
# Each whole rollout takes a minute on a busy machine: the abort on errors runs on both stores;
# the others on one each (several servers on one PostgreSQL is the production case).
ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
ON_POSTGRESQL = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

DEADLINE_S = 180.0  # a whole rollout on a busy 2-core machine; never asserted, only waited on
KEY = "x-customer"
FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]
FAST = {
    "OWNLOOP_DEPLOY_TICK_S": "0.5",
    "OWNLOOP_RELOAD_POLL_S": "0.2",
    "OWNLOOP_PREDLOG_FLUSH_S": "0.5",
}
ROOT = Path(__file__).resolve().parent.parent


class Flaky:
    """The production churn model with a bug: it raises on customers with 3+ support calls
    (about a fifth of valid rows), as a feature transform that breaks on some values would.
    Its training sample had no such customers, so registration and the gate never saw it."""

    def __init__(self, model: Any = None) -> None:
        self.model = model

    @property
    def classes_(self) -> Any:
        return self.model.classes_

    def fit(self, X: Any, y: Any) -> Flaky:
        return self

    def _check(self, X: pd.DataFrame) -> None:
        if (np.asarray(X["support_calls"], dtype=float) >= 3).any():
            raise RuntimeError("support_calls >= 3 breaks the call-rate transform")

    def predict(self, X: pd.DataFrame) -> Any:
        self._check(X)
        return self.model.predict(X)

    def predict_proba(self, X: pd.DataFrame) -> Any:
        self._check(X)
        return self.model.predict_proba(X)


# -- the store and the servers ---------------------------------------------------------------


@pytest.fixture
def store(config: Config, churn_model: Any, churn_data: pd.DataFrame) -> Config:
    """churn@1 in production (the session's churn model, its training data as reference)."""
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
    return config


def child_env(config: Config) -> dict[str, str]:
    """The serve and CLI environment: short intervals, and this checkout importable, since a
    version whose class lives in it (``Flaky``) needs its module on the serving side."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**env_for(config), **FAST, "PYTHONPATH": path}


Server = tuple[subprocess.Popen[bytes], httpx.Client]


@pytest.fixture
def servers(store: Config, tmp_path: Path) -> Iterator[list[Server]]:
    """Two serve processes on the store; both killed and reaped in teardown."""
    with ExitStack() as stack:
        started = []
        for _ in range(2):
            port = free_port()
            log = tmp_path / f"serve-{port}.log"
            proc = stack.enter_context(start_process(child_env(store), port, log=log))
            client = stack.enter_context(
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            )
            started.append((proc, client))
        yield started


def candidate(ws: Workspace, model: Any, reference: pd.DataFrame, tmp_path: Path) -> str:
    """Register ``model`` as the next churn version and run a gate on it that passes."""
    version = ws.registry.register(
        model, name="churn", owner="risk", reference=reference, target="churned"
    )
    holdout = tmp_path / f"holdout-{version.version}.parquet"
    reference.to_parquet(holdout)
    result = ws.evaluations.evaluate(
        version.ref,
        {
            "datasets": {"holdout": {"path": str(holdout), "label": "churned"}},
            "checks": [{"type": "model_size", "at_most": 1000}],
        },
    )
    assert result.verdict == "passed"
    return version.ref


def retrained(seed: int) -> tuple[Any, pd.DataFrame]:
    """A sound churn model fitted on a fresh sample: the refresh a rollout should promote."""
    data = make_churn_data(2000, seed=seed)
    return make_model(max_iter=20).fit(data[FEATURES], data["churned"]), data


# -- traffic ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answered request: when it came back, who answered, which rows it sent, the body."""

    at: float  # time.time() once the answer was back
    version: int
    arm: str
    start: int  # the first row of Traffic.data it sent
    body: dict[str, Any]


class Traffic:
    """Requests of a few rows each, spread over the servers, one customer key per request;
    with ``labels`` the true labels of every answered row are posted back to the server that
    answered (it flushes its log first, so every id is known)."""

    def __init__(self, clients: list[httpx.Client], rows: int, labels: bool = False) -> None:
        self.clients = clients
        self.rows = rows
        self.labels = labels
        self.data = make_churn_data(5000, seed=21)
        self.sent = 0
        self.labelled = 0
        self.answers: list[Answer] = []

    def send(self, requests: int) -> None:
        pending: dict[int, list[dict[str, Any]]] = {}
        for _ in range(requests):
            which = self.sent % len(self.clients)
            start = (self.sent * self.rows) % (len(self.data) - self.rows)
            batch = self.data.iloc[start : start + self.rows]
            r = self.clients[which].post(
                "/models/churn/predict",
                json={"instances": batch[FEATURES].to_dict(orient="records")},
                headers={KEY: f"customer-{self.sent}"},
            )
            self.sent += 1
            assert r.status_code in (200, 500), r.text  # 500: a candidate's bug, logged as errors
            if r.status_code == 200:
                body = r.json()
                self.answers.append(
                    Answer(time.time(), body["version"], r.headers["x-ownloop-arm"], start, body)
                )
            if self.labels and r.status_code == 200:
                ids, truth = r.json()["prediction_ids"], batch["churned"].tolist()
                pending.setdefault(which, []).extend(
                    {"prediction_id": i, "label": int(y)} for i, y in zip(ids, truth, strict=True)
                )
        for which, rows in pending.items():
            r = self.clients[which].post("/models/churn/labels", json={"labels": rows})
            assert r.status_code == 200, r.text
            self.labelled += int(r.json()["stored"])

    def until(self, done: Callable[[], bool], what: str, batch: int = 8) -> None:
        """Send batches until ``done()``; fail after DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what} ({self.sent} requests sent)")
            self.send(batch)


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def finished(ws: Workspace, rollout_id: int) -> Callable[[], bool]:
    return lambda: not ws.deploy.rollout(rollout_id).active


def path(events: list[RolloutEvent]) -> list[tuple[str | None, str, int, float]]:
    """Each transition as (from, to, step, weight)."""
    return [
        (None if e.from_state is None else str(e.from_state), str(e.to_state), e.step, e.weight)
        for e in events
    ]


CANARY_25_50 = [
    (None, "pending", -1, 0.0),
    ("pending", "canary", 0, 25.0),
    ("canary", "canary", 1, 50.0),
    ("canary", "promoted", 2, 100.0),
]


def answered(client: httpx.Client, data: pd.DataFrame, n: int = 200) -> Counter[tuple[int, str]]:
    """(version, arm) of ``n`` single-row requests, each with its own customer key."""
    seen: Counter[tuple[int, str]] = Counter()
    for i in range(n):
        r = client.post(
            "/models/churn/predict",
            json={"instances": data[FEATURES].iloc[[i]].to_dict(orient="records")},
            headers={KEY: f"after-{i}"},
        )
        assert r.status_code == 200, r.text
        seen[(r.json()["version"], r.headers["x-ownloop-arm"])] += 1
    return seen


def effective_routing(ws: Workspace, clients: list[httpx.Client], data: pd.DataFrame) -> list[Any]:
    """What each server answers once it has loaded the stored route's generation."""
    generation = ws.deploy.generations()["churn"]
    for c in clients:
        wait_for(
            lambda c=c: c.get("/models").json()["models"][0]["generation"] >= generation,
            f"generation {generation} in every server",
        )
    return [answered(c, data) for c in clients]


def cli(config: Config, *args: str) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "ownloop"
    return subprocess.Popen(
        [str(exe), *args], env=child_env(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def active_rollout(ws: Workspace) -> int:
    """The id of churn's active rollout, once one has been started."""
    found: list[int] = []

    def started() -> bool:
        status = ws.deploy.status("churn")
        if status.active and status.rollout is not None:
            found.append(status.rollout.id)
        return bool(found)

    wait_for(started, "the rollout to start")
    return found[0]


# -- the tests -------------------------------------------------------------------------------


def test_a_canary_that_errors_is_aborted_and_every_server_answers_with_stable(
    store: Config,
    servers: list[Server],
    churn_model: Any,
    churn_data: pd.DataFrame,
    tmp_path: Path,
) -> None:
    clients = [c for _, c in servers]
    with Workspace(store) as ws:
        sample = churn_data[churn_data["support_calls"] < 3]
        ref = candidate(ws, Flaky(churn_model), sample, tmp_path)
        with cli(
            store, "deploy", ref, "--steps", "25,50,100", "--min-samples", "200",
            "--routing-key", f"header:{KEY}", "--max-wait", "10m", "--wait", "--timeout", "5m",
        ) as follow:  # fmt: skip
            rollout_id = active_rollout(ws)
            Traffic(clients, rows=5).until(finished(ws, rollout_id), "the abort")
            out, _ = follow.communicate(timeout=DEADLINE_S)
        assert follow.returncode == 1, out.decode()
        assert f"rollout #{rollout_id} aborted" in out.decode()

        rollout = ws.deploy.rollout(rollout_id)
        assert (rollout.state, rollout.weight) == (State.ABORTED, 0.0)
        *before, last = path(ws.deploy.events(rollout_id))
        assert before == CANARY_25_50[:2]  # aborted in the first step, nothing skipped
        assert last == ("canary", "aborted", 0, 0.0)
        evidence = ws.deploy.events(rollout_id)[-1].evidence
        assert evidence is not None and evidence["outcome"] == str(Outcome.FAIL)
        assert "error_rate" in evidence["decided_by"]
        (errors,) = [g for g in evidence["guardrails"] if g["name"] == "error_rate"]
        assert errors["outcome"] == "FAIL" and errors["lower"] > errors["bound"]
        assert "above the allowed +1.0 pt" in errors["text"]
        assert ws.registry.get_version("churn@production").version == 1

        route = ws.deploy.route("churn")
        assert (route.stable, route.candidate, route.weight) == (1, None, 0.0)
        for seen in effective_routing(ws, clients, churn_data):
            assert seen == {(1, "stable"): 200}


@ON_POSTGRESQL
def test_a_canary_worse_on_labelled_traffic_is_aborted(
    store: Config, servers: list[Server], churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    """A model fitted on labels a pipeline bug flipped for customers with 2+ support calls: it
    answers with the same class mix and confidence as stable (its reference has the same bad
    labels, so its own estimate looks healthy), and only the labels show it is wrong."""
    clients = [c for _, c in servers]
    X, y = churn_data[FEATURES], churn_data["churned"]
    flipped = np.where(X["support_calls"] >= 2, 1 - y, y)
    corrupted = make_model(max_iter=20).fit(X, flipped)
    with Workspace(store) as ws:
        ref = candidate(ws, corrupted, churn_data.assign(churned=flipped), tmp_path)
        rollout = ws.deploy.deploy(
            ref, steps="50,100", min_samples=1500, routing_key=f"header:{KEY}", max_wait_s=600
        )
        traffic = Traffic(clients, rows=40, labels=True)
        traffic.until(finished(ws, rollout.id), "the abort")
        assert traffic.labelled > 0

        assert path(ws.deploy.events(rollout.id)) == [
            (None, "pending", -1, 0.0),
            ("pending", "canary", 0, 50.0),
            ("canary", "aborted", 0, 0.0),
        ]
        evidence = ws.deploy.events(rollout.id)[-1].evidence
        assert evidence is not None and evidence["outcome"] == str(Outcome.FAIL)
        assert "realised_accuracy" in evidence["decided_by"], evidence["summary"]
        (realised,) = [g for g in evidence["guardrails"] if g["name"] == "realised_accuracy"]
        assert realised["candidate"] < realised["stable"]
        assert ws.registry.get_version("churn@production").version == 1
        for seen in effective_routing(ws, clients, churn_data):
            assert seen == {(1, "stable"): 200}


@ON_SQLITE
def test_a_good_canary_is_promoted_through_every_step_and_the_cli_exits_0(
    store: Config, servers: list[Server], churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    clients = [c for _, c in servers]
    model, data = retrained(seed=12)
    with Workspace(store) as ws:
        ref = candidate(ws, model, data, tmp_path)
        with cli(
            store, "deploy", ref, "--steps", "25,50,100", "--min-samples", "200",
            "--routing-key", f"header:{KEY}", "--max-wait", "10m", "--wait", "--timeout", "5m",
        ) as follow:  # fmt: skip
            rollout_id = active_rollout(ws)
            Traffic(clients, rows=20).until(finished(ws, rollout_id), "the promotion")
            out, _ = follow.communicate(timeout=DEADLINE_S)
        assert follow.returncode == 0, out.decode()

        events = ws.deploy.events(rollout_id)
        assert path(events) == CANARY_25_50
        for step in events[2:]:  # each step after the first was earned by a PASS
            assert step.evidence is not None and step.evidence["outcome"] == "PASS"
            assert min(step.evidence["n_stable"], step.evidence["n_candidate"]) >= 200
        assert ws.deploy.rollout(rollout_id).stable == 1  # kept as the rollback target
        assert ws.registry.get_version("churn@production").version == 2
        for seen in effective_routing(ws, clients, churn_data):
            assert seen == {(2, "stable"): 200}


@ON_POSTGRESQL
def test_killing_the_controller_mid_rollout_hands_it_to_the_other_server(
    store: Config, servers: list[Server], churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    by_pid = {proc.pid: (proc, client) for proc, client in servers}
    model, data = retrained(seed=13)
    with Workspace(store) as ws:
        ref = candidate(ws, model, data, tmp_path)
        rollout = ws.deploy.deploy(
            ref, steps="25,50,100", min_samples=200, routing_key=f"header:{KEY}", max_wait_s=600
        )
        lease = Lease(ws.store, ws.clock, CONTROLLER_LEASE, ttl_s=1)

        def holder() -> int | None:
            held = lease.current()
            if held is None or held.expires_at < ws.clock.now():
                return None
            return int(held.holder.split(":")[-2])

        wait_for(lambda: ws.deploy.rollout(rollout.id).state == State.CANARY, "the first step")
        first = holder()
        assert first in by_pid
        Traffic([c for _, c in servers], rows=20).send(4)  # rows in flight, short of the step
        os.kill(first, signal.SIGKILL)
        by_pid[first][0].wait(timeout=60)
        (survivor,) = set(by_pid) - {first}
        assert ws.deploy.rollout(rollout.id).step == 0  # killed while in the first step

        Traffic([by_pid[survivor][1]], rows=20).until(finished(ws, rollout.id), "the promotion")
        assert holder() == survivor
        assert path(ws.deploy.events(rollout.id)) == CANARY_25_50  # no step skipped or repeated
        assert ws.registry.get_version("churn@production").version == 2
        assert by_pid[survivor][0].poll() is None
        (seen,) = effective_routing(ws, [by_pid[survivor][1]], churn_data)
        assert seen == {(2, "stable"): 200}


@ON_SQLITE
def test_a_shadow_never_changes_an_answer_and_its_pass_promotes(
    store: Config,
    servers: list[Server],
    churn_model: Any,
    churn_data: pd.DataFrame,
    tmp_path: Path,
) -> None:
    clients = [c for _, c in servers]
    fresh = pd.concat([churn_data, make_churn_data(2000, seed=12)], ignore_index=True)
    model = make_model(max_iter=20).fit(fresh[FEATURES], fresh["churned"])  # a refresh
    with Workspace(store) as ws:
        ref = candidate(ws, model, fresh, tmp_path)
        rollout = ws.deploy.deploy(ref, strategy="shadow", steps="100", min_samples=200)
        traffic = Traffic(clients, rows=20)
        traffic.until(finished(ws, rollout.id), "the promotion")

        events = ws.deploy.events(rollout.id)
        assert path(events) == [
            (None, "pending", -1, 0.0),
            ("pending", "shadowing", -1, 0.0),
            ("shadowing", "promoted", 0, 100.0),
        ]
        shadow = events[-1].evidence
        assert shadow is not None and shadow["outcome"] == "PASS" and shadow["arm"] == "shadow"
        assert shadow["n_candidate"] >= 200
        promoted_at = events[-1].at.timestamp()
        models = {1: churn_model, 2: model}
        for a in traffic.answers:  # every answer is its version's own, from the stable arm
            rows = traffic.data[FEATURES].iloc[a.start : a.start + traffic.rows]
            assert a.body["predictions"] == models[a.version].predict(rows).tolist()
            assert a.arm == "stable"
            assert a.version == 1 or a.at > promoted_at
        mirrored = read_log(ws.config.predictions_dir, "churn", version=2, arm="shadow").table
        assert mirrored.num_rows >= 200
        stable = read_log(ws.config.predictions_dir, "churn", version=1, arm="stable").table
        ids = set(stable.column("request_id").to_pylist())
        assert set(mirrored.column("request_id").to_pylist()) <= ids  # scored, never answered
        assert ws.registry.get_version("churn@production").version == 2
