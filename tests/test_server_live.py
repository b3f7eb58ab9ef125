"""Live routing in one server (a real uvicorn on 127.0.0.1): swaps, canary, shadow, failures, lease.

Every test runs on SQLite and, when reachable, PostgreSQL. Waits are on conditions with generous
deadlines, never on durations.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.clock import FrozenClock
from ownloop.demo import make_model
from ownloop.deploy import MAX_KEY_CHARS, Deployments, Lease, arm_for
from ownloop.predlog import read_window
from ownloop.server._controller import Controller
from tests.servers import running

DEADLINE_S = 60.0
FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]


def rows(data: pd.DataFrame, n: int, start: int = 0) -> list[dict[str, Any]]:
    return list(data[FEATURES].iloc[start : start + n].to_dict(orient="records"))


def two_versions(ws: Workspace, churn_model: Any, churn_data: pd.DataFrame) -> None:
    """churn@1 (production) and churn@2, a model that answers differently on many rows."""
    ws.registry.add_team("risk", members=["tester"])
    ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    X, y = churn_data.drop(columns="churned"), churn_data["churned"]
    other = make_model(max_iter=2).fit(X, 1 - y)  # the opposite model: its answers differ
    ws.registry.register(other, name="churn", owner="risk", reference=churn_data, target="churned")
    ws.deploy.set_production("churn", 1, force=True, reason="set up")


def route(
    ws: Workspace,
    *,
    stable: int | None = 1,
    candidate: int | None = None,
    arm: str | None = None,
    weight: float = 0.0,
    key: str | None = None,
    rollout_id: int | None = 7,
) -> None:
    """Write churn's routing as the rollout controller would (the rollout API lands separately)."""
    with ws.store.write() as conn:
        row = ws.registry.require_model_row(conn, "churn")
        ws.deploy.write_route(
            conn,
            row,
            ws.clock.now(),
            stable=stable,
            candidate=candidate,
            candidate_arm=arm,
            weight=weight,
            routing_key=key,
            rollout_id=rollout_id,
        )


def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def generation_is(client: httpx.Client, generation: int) -> Callable[[], bool]:
    def check() -> bool:
        models = client.get("/models").json()["models"]
        return bool(models) and models[0]["generation"] >= generation

    return check


def current_generation(ws: Workspace) -> int:
    return ws.deploy.generations()["churn"]


@pytest.fixture
def live(
    config: Config, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[Workspace, httpx.Client]]:
    fast = replace(config, reload_poll_s=0.05, deploy_tick_s=60.0, predlog_flush_s=0.05)
    with Workspace(fast) as ws:
        two_versions(ws, churn_model, churn_data)
        with running(ws) as url, httpx.Client(base_url=url, timeout=30) as client:
            yield ws, client


def predict(client: httpx.Client, body: list[dict[str, Any]], **headers: str) -> httpx.Response:
    return client.post("/models/churn/predict", json={"instances": body}, headers=headers)


def test_a_production_change_is_served_without_a_restart(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    assert predict(client, rows(churn_data, 1)).json()["version"] == 1
    ws.deploy.set_production("churn", 2, force=True, reason="test")
    wait_for(lambda: predict(client, rows(churn_data, 1)).json()["version"] == 2, "version 2")
    r = client.post(
        "/v2/models/churn/versions/2/infer",
        json={"inputs": [{"name": "age", "datatype": "FP64", "shape": [1], "data": [40.0]}]},
    )
    assert r.status_code == 400  # served (the other features are missing), not 404
    assert client.get("/models").json()["models"][0]["version"] == 2


def test_canary_routing_is_sticky_per_key_and_agrees_with_arm_for(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=50, key="header:x-customer")
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    stored = ws.deploy.route("churn")
    seen: Counter[str] = Counter()
    for i in range(60):
        key = f"customer-{i}"
        answers = {predict(client, rows(churn_data, 2), **{"x-customer": key}) for _ in range(2)}
        versions = {(r.json()["version"], r.headers["x-ownloop-arm"]) for r in answers}
        want = arm_for(stored, key)
        assert versions == {(2 if want == "canary" else 1, want)}, key
        seen[want] += 1
    assert seen["canary"] > 5 and seen["stable"] > 5


def test_a_routing_header_over_the_limit_is_400_naming_it(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=50, key="header:x-customer")
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    r = predict(client, rows(churn_data, 1), **{"x-customer": "k" * (MAX_KEY_CHARS + 1)})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_input"
    assert f"limit is {MAX_KEY_CHARS}" in r.json()["error"]
    assert predict(client, rows(churn_data, 1), **{"x-customer": "k" * MAX_KEY_CHARS}).is_success


def test_a_feature_key_sends_the_whole_batch_by_its_first_row(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=50, key="feature:region")
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    stored = ws.deploy.route("churn")
    for start in range(0, 40, 4):
        batch = rows(churn_data, 4, start)
        want = arm_for(stored, str(batch[0]["region"]))
        r = predict(client, batch)
        assert r.headers["x-ownloop-arm"] == want
        assert r.json()["version"] == (2 if want == "canary" else 1)


def test_weight_zero_and_no_candidate_answer_every_request_with_stable(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=100)
    wait_for(generation_is(client, current_generation(ws)), "the canary at 100%")
    assert predict(client, rows(churn_data, 1)).json()["version"] == 2
    for candidate in (2, None):  # weight 0, then the candidate removed
        route(ws, candidate=candidate, arm="canary" if candidate else None, weight=0.0)
        wait_for(generation_is(client, current_generation(ws)), f"candidate {candidate}")
        answered = Counter(
            predict(client, rows(churn_data, 1)).json()["version"] for _ in range(200)
        )
        assert answered == {1: 200}


def test_every_logged_row_carries_its_arm_and_version(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=50, key="header:x-customer")
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    answered = {}
    for i in range(30):
        r = predict(client, rows(churn_data, 1), **{"x-customer": f"c{i}"}).json()
        answered[r["prediction_ids"][0]] = r["version"]

    def logged() -> Any:
        table = read_window(ws.config.predictions_dir, "churn")
        return table if table is not None and table.num_rows >= 30 else None

    wait_for(lambda: logged() is not None, "30 logged rows")
    table = logged().to_pandas().set_index("prediction_id")
    for pid, version in answered.items():
        assert table.loc[pid, "version"] == version
        assert table.loc[pid, "arm"] == ("canary" if version == 2 else "stable")


def test_shadow_never_changes_an_answer_and_logs_paired_rows(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    batch = rows(churn_data, 5, 100)
    before = predict(client, batch).json()
    route(ws, candidate=2, arm="shadow")
    wait_for(
        lambda: client.get("/models").json()["models"][0]["candidate"] is not None, "the shadow"
    )
    request_ids = []
    for i in range(20):
        r = predict(client, batch, **{"x-request-id": f"req-{i}"})
        assert r.headers["x-ownloop-arm"] == "stable"
        assert (r.json()["version"], r.json()["predictions"]) == (1, before["predictions"])
        request_ids.append(f"req-{i}")
    assert client.post("/v2/models/churn/versions/2/infer", json={"inputs": []}).status_code == 404

    def shadow_rows() -> pd.DataFrame:
        table = read_window(ws.config.predictions_dir, "churn")
        if table is None:
            return pd.DataFrame()
        frame = table.to_pandas()
        return frame[frame["request_id"].isin(request_ids)]

    wait_for(lambda: len(shadow_rows()) == 2 * 20 * 5, "stable and shadow rows of every request")
    frame = shadow_rows()
    stable = frame[frame["arm"] == "stable"]
    shadow = frame[frame["arm"] == "shadow"]
    assert set(stable["version"]) == {1} and set(shadow["version"]) == {2}
    for rid in request_ids:
        a, b = stable[stable["request_id"] == rid], shadow[shadow["request_id"] == rid]
        # same rows, same order: the analysis pairs them by request id and position
        assert a["in.age"].tolist() == b["in.age"].tolist() == [r["age"] for r in batch]
    assert (stable["prediction"].to_numpy() != shadow["prediction"].to_numpy()).any()


def test_a_candidate_failing_its_digest_leaves_stable_serving_and_is_reported(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    path = ws.artifacts.path(ws.registry.get_version("churn@2").artifact_digest)
    path.write_bytes(path.read_bytes() + b"tampered")
    route(ws, candidate=2, arm="canary", weight=100)
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    answered = Counter(predict(client, rows(churn_data, 1)).json()["version"] for _ in range(20))
    assert answered == {1: 20}
    listed = client.get("/models").json()["models"][0]
    assert listed["candidate"] is None and "altered on disk" in listed["problem"]
    ready = client.get("/v2/health/ready").json()
    assert ready["ready"] is True and "canary version 2" in ready["problems"]["churn"]
    metrics = client.get("/metrics").text
    assert 'ownloop_model_load_failures_total{model="churn",version="2"} 1.0' in metrics
    # a direct promotion to the broken version keeps version 1 serving too
    ws.deploy.set_production("churn", 2, force=True, reason="test")
    wait_for(generation_is(client, current_generation(ws)), "the promotion")
    assert predict(client, rows(churn_data, 1)).json()["version"] == 1
    assert "version 1 keeps serving" in client.get("/models").json()["models"][0]["problem"]


def test_the_canary_version_can_be_called_by_version(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=1)
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    assert client.get("/v2/models/churn/versions/2/ready").status_code == 200
    r = client.post("/v2/models/churn/versions/2/infer", json={"inputs": []})
    assert r.status_code == 400  # served: the inputs are wrong, the version is not unknown
    r = client.post("/v2/models/churn/versions/3/infer", json={"inputs": []})
    assert r.status_code == 404 and "version 2 is canary" in r.json()["error"]


def test_a_removed_route_stops_serving_the_model(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, stable=None)
    wait_for(lambda: client.get("/models").json()["models"] == [], "the model to go")
    assert predict(client, rows(churn_data, 1)).status_code == 404


# -- the controller lease ------------------------------------------------------------------


def test_one_holder_at_a_time_and_an_expired_lease_is_taken_over(ws: Workspace) -> None:
    clock = FrozenClock()
    a = Lease(ws.store, clock, "deploy.controller", ttl_s=15, holder="a")
    b = Lease(ws.store, clock, "deploy.controller", ttl_s=15, holder="b")
    assert a.acquire() and not b.acquire()
    first = a.current()
    assert first is not None and first.holder == "a"
    clock.advance(seconds=10)
    assert a.acquire() and not b.acquire()  # renewed: still a's
    renewed = a.current()
    assert renewed is not None and renewed.acquired_at == first.acquired_at
    assert renewed.expires_at == clock.now() + timedelta(seconds=15)
    clock.advance(seconds=16)  # a stopped renewing
    assert b.acquire() and not a.acquire()
    taken = b.current()
    assert taken is not None and (taken.holder, taken.acquired_at) == ("b", clock.now())
    b.release()
    assert a.acquire()


def test_the_metrics_count_requests_per_arm(
    live: tuple[Workspace, httpx.Client], churn_data: pd.DataFrame
) -> None:
    ws, client = live
    route(ws, candidate=2, arm="canary", weight=100)
    wait_for(generation_is(client, current_generation(ws)), "the canary route")
    predict(client, rows(churn_data, 1))
    text = client.get("/metrics").text
    assert 'arm="canary"' in text and 'version="2"' in text


def test_only_the_controller_holding_the_lease_ticks(ws: Workspace) -> None:
    ticks: list[str] = []

    class Counting(Deployments):
        def tick(self) -> list[Any]:
            ticks.append(self.actor.name)
            return []

    def controller(name: str) -> Controller:
        deploy = Counting(
            ws.store, ws.registry, ws.evaluations, ws.monitor, ws.config, ws.clock, Actor(name)
        )
        return Controller(deploy, tick_s=60)

    a, b = controller("a"), controller("b")
    for _ in range(3):
        a.step()
        b.step()
    assert ticks == ["a", "a", "a"] and a.holding and not b.holding
    a.stop()  # a graceful stop lets the lease go at once
    b.step()
    assert b.holding and ticks[-1] == "b"
    b.stop()


def test_a_tick_longer_than_the_lease_keeps_it(ws: Workspace) -> None:
    """A slow analysis (a big window, many rollouts) must not hand the lease to another process
    while the holder is still ticking: two controllers would analyse the same rollouts at once."""
    inside, release = threading.Event(), threading.Event()

    class Slow(Deployments):
        def tick(self) -> list[Any]:
            inside.set()
            release.wait(60)
            return []

    slow = Slow(ws.store, ws.registry, ws.evaluations, ws.monitor, ws.config, ws.clock, Actor("a"))
    a = Controller(slow, tick_s=0.2)
    b = Controller(ws.deploy, tick_s=0.2)
    a.start()
    try:
        assert inside.wait(60), "the controller never ticked"
        ticking_since = ws.clock.now()
        # well past the lease's three ticks, while the tick is still running
        wait_for(lambda: ws.clock.now() > ticking_since + 3 * a.lease.ttl, "the lease's ttl")
        b.step()
        assert not b.holding
        held = a.lease.current()
        assert held is not None and held.holder == a.lease.holder
    finally:
        release.set()
        a.stop()
        b.stop()


def test_a_shadow_error_never_reaches_the_client(config: Config) -> None:
    from sklearn.linear_model import LogisticRegression

    from tests.test_server import Moody

    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    fast = replace(config, reload_poll_s=0.05, predlog_flush_s=0.05)
    with Workspace(fast) as ws:
        ws.registry.add_team("risk", members=["tester"])
        stable = LogisticRegression().fit(reference[["x"]], reference["y"])
        ws.registry.register(stable, name="moody", owner="risk", reference=reference, target="y")
        ws.registry.register(Moody(), name="moody", owner="risk", reference=reference, target="y")
        ws.deploy.set_production("moody", 1, force=True, reason="set up")
        with ws.store.write() as conn:
            row = ws.registry.require_model_row(conn, "moody")
            ws.deploy.write_route(
                conn, row, ws.clock.now(), stable=1, candidate=2, candidate_arm="shadow"
            )
        sent = [1.0, 666.0, 2.0, 13.0, 3.0]
        with running(ws) as url, httpx.Client(base_url=url, timeout=30) as c:
            for i, x in enumerate(sent):
                r = c.post(
                    "/models/moody/predict",
                    json={"instances": [{"x": x}]},
                    headers={"x-request-id": f"r{i}"},
                )
                assert r.status_code == 200 and r.json()["version"] == 1, r.text

            def shadow_rows() -> list[dict[str, Any]]:
                table = read_window(ws.config.predictions_dir, "moody")
                if table is None:
                    return []
                return [row for row in table.to_pylist() if row["arm"] == "shadow"]

            wait_for(lambda: len(shadow_rows()) == len(sent), "a shadow row per request")
        status = {r["request_id"]: r["status"] for r in shadow_rows()}
        assert status == {"r0": "ok", "r1": "error", "r2": "ok", "r3": "error", "r4": "ok"}
