"""The server under hostile and broken input: text UTF-8 cannot hold, huge numbers, truncated
binary tensors, models that cannot be loaded, a failing log writer, large batches."""

from __future__ import annotations

import json
import pickle
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.predlog import read_window
from ownloop.registry import ModelVersion
from ownloop.store import tables as t
from tests.servers import running

FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]
ROW: dict[str, Any] = {
    "age": 41,
    "tenure_months": 3.0,
    "monthly_charges": 80.5,
    "support_calls": 2,
    "plan": "pro",
    "region": "north",
}
V2_TYPES = {"plan": "BYTES", "region": "BYTES", "support_calls": "INT64"}


def assert_error(response: httpx.Response, status: int, match: str, code: str) -> None:
    """Every error has the one shape {"error": message, "code": code}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert match in body["error"], body["error"]
    assert body["code"] == code


@pytest.fixture
def home(tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame) -> Config:
    """churn@production alone (so /invocations answers), flushing the log often."""
    config = Config(home=tmp_path / "home", user="tester", predlog_flush_s=0.05)
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
    return config


@pytest.fixture
def client(home: Config) -> Iterator[httpx.Client]:
    with Workspace(home) as ws, running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def rows(plan: str = "pro") -> list[dict[str, Any]]:
    """Two rows; row 1 has ``plan``."""
    return [dict(ROW), dict(ROW, plan=plan)]


def post(client: httpx.Client, path: str, body: Any, **headers: str) -> httpx.Response:
    """JSON with non-ASCII escaped, as most clients send it: a lone surrogate stays a \\u escape."""
    return client.post(
        path, content=json.dumps(body), headers={"Content-Type": "application/json", **headers}
    )


def split(plan: str) -> dict[str, Any]:
    return {"columns": FEATURES, "data": [list(r.values()) for r in rows(plan)]}


def v2_json(plan: str) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": f,
                "datatype": V2_TYPES.get(f, "FP64"),
                "shape": [2],
                "data": [r[f] for r in rows(plan)],
            }
            for f in FEATURES
        ]
    }


def v2_matrix(plan: str) -> dict[str, Any]:
    data = [str(v) for r in rows(plan) for v in r.values()]
    return {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2, 6], "data": data}]}


def _bytes_tensor(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def v2_binary(plan: bytes, *, cut: int = 0) -> tuple[bytes, dict[str, str]]:
    """The v2 binary tensor extension; ``cut`` drops bytes off the end of the last tensor."""
    inputs, blobs = [], []
    for f in FEATURES:
        values = [r[f] for r in rows()]
        if f in ("plan", "region"):
            raw = _bytes_tensor(
                [plan if f == "plan" and i == 1 else v.encode() for i, v in enumerate(values)]
            )
        elif f == "support_calls":
            raw = np.array(values, dtype="<i8").tobytes()
        else:
            raw = np.array(values, dtype="<f8").tobytes()
        datatype = V2_TYPES.get(f, "FP64")
        blobs.append(raw)
        inputs.append(
            {
                "name": f,
                "datatype": datatype,
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    body = b"".join(blobs)
    if cut:
        body = body[:-cut]
        inputs[-1]["parameters"]["binary_data_size"] -= cut
    header = json.dumps({"inputs": inputs}).encode()
    return header + body, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def csv_body(plan: bytes) -> bytes:
    lines = [",".join(FEATURES).encode()]
    for i, r in enumerate(rows()):
        cells = [str(v).encode() for v in r.values()]
        if i == 1:
            cells[FEATURES.index("plan")] = plan
        lines.append(b",".join(cells))
    return b"\n".join(lines) + b"\n"


Send = Callable[[httpx.Client, str], httpx.Response]
SURROGATE = "\ud800"
LOW = "\udfff"


def _json_route(path: str, build: Callable[[str], Any], bad: str = SURROGATE) -> tuple[Send, Send]:
    return (
        lambda c, rid: post(c, path, build("pro"), **{"X-Request-Id": rid}),
        lambda c, rid: post(c, path, build(bad), **{"X-Request-Id": rid}),
    )


def _binary(path: str) -> tuple[Send, Send]:
    def send(c: httpx.Client, rid: str, plan: bytes) -> httpx.Response:
        body, headers = v2_binary(plan)
        return c.post(path, content=body, headers={**headers, "X-Request-Id": rid})

    return (lambda c, rid: send(c, rid, b"pro"), lambda c, rid: send(c, rid, b"\xff\xfe"))


def _csv(path: str) -> tuple[Send, Send]:
    def send(c: httpx.Client, rid: str, plan: bytes) -> httpx.Response:
        headers = {"Content-Type": "text/csv", "X-Request-Id": rid}
        return c.post(path, content=csv_body(plan), headers=headers)

    return (lambda c, rid: send(c, rid, b"pro"), lambda c, rid: send(c, rid, b"\xed\xa0\x80"))


# every inference route and body shape, each with a good request and one whose row 1 holds text
# UTF-8 cannot hold (a lone surrogate in JSON, invalid UTF-8 in binary and CSV bodies)
ROUTES: dict[str, tuple[Send, Send]] = {
    "simple records": _json_route("/models/churn/predict", lambda p: {"instances": rows(p)}),
    "simple rows": _json_route(
        "/models/churn/predict", lambda p: {"instances": [list(r.values()) for r in rows(p)]}
    ),
    "simple split": _json_route("/models/churn/predict", lambda p: {"dataframe_split": split(p)}),
    "simple dataframe_records": _json_route(
        "/models/churn/predict", lambda p: {"dataframe_records": rows(p)}
    ),
    "invocations split": _json_route(
        "/models/churn/invocations", lambda p: {"dataframe_split": split(p)}
    ),
    "invocations records": _json_route(
        "/models/churn/invocations", lambda p: {"dataframe_records": rows(p)}
    ),
    "invocations instances": _json_route(
        "/models/churn/invocations", lambda p: {"instances": rows(p)}
    ),
    "invocations inputs columns": _json_route(
        "/models/churn/invocations",
        lambda p: {"inputs": {f: [r[f] for r in rows(p)] for f in FEATURES}},
    ),
    "invocations inputs rows": _json_route(
        "/invocations", lambda p: {"inputs": [list(r.values()) for r in rows(p)]}
    ),
    "invocations csv": _csv("/invocations"),
    "v2 json": _json_route("/v2/models/churn/infer", v2_json, LOW),
    "v2 json on a version": _json_route("/v2/models/churn/versions/1/infer", v2_json, LOW),
    "v2 json matrix": _json_route("/v2/models/churn/infer", v2_matrix, LOW),
    "v2 binary": _binary("/v2/models/churn/infer"),
    "v2 binary on a version": _binary("/v2/models/churn/versions/1/infer"),
}


def _ids(response: httpx.Response) -> list[str]:
    body = response.json()
    if "prediction_ids" in body:
        return list(body["prediction_ids"])
    outputs = {o["name"]: o for o in body["outputs"]}
    return list(outputs["prediction_ids"]["data"])


def test_text_utf8_cannot_hold_is_refused_on_every_route_and_nothing_answered_is_lost(
    home: Config,
) -> None:
    answered: list[str] = []
    refused: list[str] = []
    with Workspace(home) as ws, running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
        for i, (route, (good, bad)) in enumerate(ROUTES.items()):
            before = good(c, f"good-{i}")
            assert before.status_code == 200, (route, before.text)
            answered += _ids(before)
            r = bad(c, f"bad-{i}")
            assert_error(r, 400, "row 1, feature 'plan'", "invalid_input")
            assert "not valid Unicode" in r.json()["error"], route
            refused.append(f"bad-{i}")
            after = good(c, f"after-{i}")  # the server and its log writer carry on
            assert after.status_code == 200, (route, after.text)
            answered += _ids(after)
        assert c.get("/v2/health/ready").status_code == 200
    # the server has stopped and flushed: every answered prediction is in the log
    log = read_window(home.predictions_dir, "churn").to_pylist()
    logged = {r["prediction_id"] for r in log if r["status"] == "ok"}
    assert len(answered) == 4 * len(ROUTES)
    assert set(answered) <= logged
    assert sorted(r["request_id"] for r in log if r["status"] == "refused") == sorted(refused)


def test_a_refused_request_is_one_refused_row_in_the_models_log(home: Config) -> None:
    with Workspace(home) as ws, running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
        bad = c.post(
            "/models/churn/predict",
            json={"instances": [dict(ROW, age="old")] * 3},
            headers={"X-Request-Id": "req-7"},
        )
        assert_error(bad, 400, "row 0, feature 'age'", "invalid_input")
        assert_error(
            c.post("/models/churn/predict", content=b"{nope"),
            400,
            "not valid JSON",
            "invalid_input",
        )
    log = read_window(home.predictions_dir, "churn").to_pylist()
    assert len(log) == 2  # one row per refused request, whatever its row count
    first = next(r for r in log if r["request_id"] == "req-7")
    assert first["status"] == "refused"
    assert (first["arm"], first["version"], first["model"]) == ("stable", 1, "churn")
    assert first["latency_s"] >= 0
    assert len(first["prediction_id"]) == 32
    for column in ["prediction", "prediction_value", "confidence", "proba"] + [
        f"in.{f}" for f in FEATURES
    ]:
        assert first[column] is None, column
    other = next(r for r in log if r["request_id"] != "req-7")
    assert other["status"] == "refused"
    assert other["request_id"] == other["prediction_id"]


@pytest.mark.parametrize(
    ("literal", "match"),
    [
        ("1" * 5000, "too long to read"),
        ("1" * 400, "beyond the range of a 64-bit float"),
        ("-" + "9" * 400, "beyond the range of a 64-bit float"),
    ],
)
def test_huge_integer_literals_are_400(client: httpx.Client, literal: str, match: str) -> None:
    body = json.dumps({"instances": [ROW]}).replace('"age": 41', f'"age": {literal}')
    assert_error(client.post("/models/churn/predict", content=body), 400, match, "invalid_input")
    v2 = json.dumps(v2_json("pro")).replace('"data": [41, 41]', f'"data": [41, {literal}]')
    assert literal in v2
    assert_error(client.post("/v2/models/churn/infer", content=v2), 400, match, "invalid_input")
    assert client.post("/models/churn/predict", json={"instances": [ROW]}).status_code == 200


def test_a_bytes_element_running_past_the_body_is_400(client: httpx.Client) -> None:
    body, headers = v2_binary(b"pro")
    assert client.post("/v2/models/churn/infer", content=body, headers=headers).status_code == 200
    # region is the last tensor: its second element says 5 bytes, only 2 are left
    body, headers = v2_binary(b"pro", cut=3)
    r = client.post("/v2/models/churn/infer", content=body, headers=headers)
    assert_error(
        r, 400, "input 'region': BYTES element 1 says 5 bytes but only 2 remain", "invalid_input"
    )


def test_a_lone_surrogate_elsewhere_is_a_clean_400(client: httpx.Client) -> None:
    """Feature names, request ids and output names are echoed in answers: never a 500."""
    r = post(client, "/models/churn/predict", {"instances": [dict(ROW, **{SURROGATE: 1})]})
    assert_error(r, 400, "unknown feature '\\ud800'", "invalid_input")
    r = post(client, "/v2/models/churn/infer", {"id": SURROGATE, **v2_json("pro")})
    assert_error(r, 400, "'id' must be a string of valid Unicode text", "invalid_input")
    r = post(client, "/v2/models/churn/infer", {"outputs": [{"name": LOW}], **v2_json("pro")})
    assert_error(r, 400, "unknown output '\\udfff'", "invalid_input")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prediction_id": SURROGATE, "label": 1}, "label row 0: prediction_id holds '\\ud800'"),
        ({"prediction_id": "x", "label": LOW}, "label row 0: label holds '\\udfff'"),
    ],
)
def test_label_text_utf8_cannot_hold_is_a_clean_400(
    client: httpx.Client, row: dict[str, Any], match: str
) -> None:
    assert_error(post(client, "/models/churn/labels", [row]), 400, match, "invalid_input")


# -- a model that cannot be loaded ----------------------------------------------------------

GONE = "ownloop_gone_module"


def _pickle_of_a_vanishing_class(tmp_path: Path) -> Path:
    """A pickle of an instance of a class whose module exists now and is gone at serve time."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / f"{GONE}.py").write_text(
        "import numpy as np\n"
        "class Constant:\n"
        "    def predict(self, X):\n"
        "        return np.zeros(len(X))\n"
    )
    sys.path.insert(0, str(folder))
    try:
        module = __import__(GONE)
        path = tmp_path / "constant.pkl"
        path.write_bytes(pickle.dumps(module.Constant()))
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(GONE, None)
    return path


def _register_vanishing(ws: Workspace, tmp_path: Path) -> ModelVersion:
    """A version whose class lives in a module that is gone once it is registered."""
    path = _pickle_of_a_vanishing_class(tmp_path)
    reference = pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 1.5]})
    sys.path.insert(0, str(path.parent / "code"))
    try:
        v = ws.registry.register(
            name="constant",
            path=path,
            owner="risk",
            reference=reference,
            target="y",
            allow_unsafe_pickle=True,
        )
    finally:
        sys.path.remove(str(path.parent / "code"))
        sys.modules.pop(GONE, None)
    ws.deploy.set_production("constant", v.version, force=True, reason="set up")
    return v


def test_a_version_needing_a_module_that_is_gone_is_not_ready_naming_it(
    home: Config, tmp_path: Path
) -> None:
    with Workspace(home) as ws:
        _register_vanishing(ws, tmp_path)
        with running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
            listed = {m["name"]: m for m in c.get("/models").json()["models"]}
    assert listed["constant"]["ready"] is False
    assert f"needs module '{GONE}'" in listed["constant"]["reason"]
    assert "cannot import it" in listed["constant"]["reason"]
    assert listed["churn"]["ready"] is True


def test_a_model_that_cannot_be_loaded_is_not_ready_and_the_others_serve(
    home: Config, tmp_path: Path
) -> None:
    with Workspace(home) as ws:
        v = _register_vanishing(ws, tmp_path)
        with ws.store.write() as conn:  # registered before needs were recorded: no check first
            conn.execute(
                t.versions.update()
                .where(t.versions.c.artifact_digest == v.artifact_digest)
                .values(needs=None)
            )
        with running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
            listed = {m["name"]: m for m in c.get("/models").json()["models"]}
            assert listed["constant"]["ready"] is False
            assert f"No module named '{GONE}'" in listed["constant"]["reason"]
            assert "ModuleNotFoundError" in listed["constant"]["reason"]
            assert listed["churn"]["ready"] is True
            assert_error(
                c.get("/v2/models/constant/ready"), 400, "ModuleNotFoundError", "not_ready"
            )
            assert_error(
                c.post("/models/constant/predict", json={"instances": [{"x": 1.0}]}),
                503,
                "could not be loaded",
                "not_ready",
            )
            assert c.post("/models/churn/predict", json={"instances": [ROW]}).status_code == 200
            ready = c.get("/v2/health/ready")
            assert ready.status_code == 400
            assert ready.json()["models"] == {"churn": True, "constant": False}


# -- the log writer fails ---------------------------------------------------------------------


def _wait_ready(c: httpx.Client, status: int) -> httpx.Response:
    """/v2/health/ready once it answers ``status``; the writer flushes every 0.05 s."""
    for _ in range(600):
        c.post("/models/churn/predict", json={"instances": [ROW]})
        r = c.get("/v2/health/ready")
        if r.status_code == status:
            return r
        threading.Event().wait(0.05)
    raise AssertionError(f"/v2/health/ready never answered {status}: {r.text}")


def test_ready_is_false_while_the_log_writer_fails(home: Config) -> None:
    home.predictions_dir.mkdir(parents=True, exist_ok=True)
    blocker = home.predictions_dir / "churn"  # a file where the model's log folder must go
    with Workspace(home) as ws, running(ws) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/v2/health/ready").status_code == 200
        blocker.write_text("not a folder")
        r = _wait_ready(c, 400)
        body = r.json()
        assert body["ready"] is False
        assert body["models"] == {"churn": True}  # the model itself is fine
        assert body["prediction_log"]["healthy"] is False
        assert "Error" in body["prediction_log"]["error"]
        assert str(home.home) not in r.text  # the path stays in the server's own log
        blocker.unlink()
        r = _wait_ready(c, 200)
        assert r.json()["prediction_log"] == {"healthy": True, "error": None}


# -- large batches off the event loop -----------------------------------------------------------

ENTERED = threading.Event()
RELEASE = threading.Event()


class Blocking:
    """A regressor whose predict waits for the test to release it (large batches only)."""

    n_features_in_ = 1

    def fit(self, X: Any, y: Any) -> Blocking:
        return self

    def predict(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=float)
        if len(x) > 100:
            ENTERED.set()
            RELEASE.wait(120)
        return x.reshape(-1) * 2


def test_a_large_batch_does_not_block_health_checks(tmp_path: Path) -> None:
    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})
    ENTERED.clear()
    RELEASE.clear()
    with Workspace(Config(home=tmp_path / "home", user="tester")) as ws:
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.register(Blocking(), name="slow", owner="risk", reference=reference, target="y")
        ws.deploy.set_production("slow", 1, force=True, reason="set up")
        big = {"instances": [{"x": float(i)} for i in range(20_000)]}
        answer: list[httpx.Response] = []
        with running(ws) as url:
            sender = threading.Thread(
                target=lambda: answer.append(
                    httpx.post(f"{url}/models/slow/predict", json=big, timeout=120)
                )
            )
            sender.start()
            try:
                assert ENTERED.wait(120), "the large batch never reached the model"
                # the model is blocked inside the large batch: the server must still answer
                live = httpx.get(f"{url}/v2/health/live", timeout=60)
                assert live.status_code == 200
                small = httpx.post(
                    f"{url}/models/slow/predict", json={"instances": [{"x": 2.0}]}, timeout=60
                )
                assert small.json()["predictions"] == [4.0]
            finally:
                RELEASE.set()
                sender.join(timeout=120)
        assert answer[0].status_code == 200
        assert answer[0].json()["predictions"][:3] == [0.0, 2.0, 4.0]
