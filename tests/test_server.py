"""The HTTP server, against a real uvicorn on 127.0.0.1: protocols, validation, errors, metrics."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ownloop import Config, Workspace
from ownloop.access import POLICY
from ownloop.demo import make_model
from ownloop.predlog import read_labels, read_window
from ownloop.server import ROUTES
from tests.servers import running

FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[Workspace, str]]:
    """churn@production serving, broken@production failing its digest check, on SQLite."""
    home = tmp_path_factory.mktemp("serve") / "home"
    config = Config(home=home, user="tester", max_body_bytes=64 * 1024, max_json_depth=16)
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        X, y = churn_data.drop(columns="churned"), churn_data["churned"]
        other = make_model(max_iter=3).fit(X, y)
        b = ws.registry.register(
            other, name="broken", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("broken", b.version, force=True, reason="set up")
        path = ws.artifacts.path(b.artifact_digest)
        path.write_bytes(path.read_bytes() + b"tampered")
        with running(ws) as url:
            yield ws, url


@pytest.fixture
def client(served: tuple[Workspace, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1], timeout=30) as c:
        yield c


def records(data: pd.DataFrame, n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data.drop(columns="churned").head(n).to_dict("records")
    return rows


def assert_error(
    response: httpx.Response, status: int, match: str, code: str | None = None
) -> None:
    """Every error has the one shape {"error": message, "code": code}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}
    assert isinstance(body["error"], str)
    assert isinstance(body["code"], str)
    assert match in body["error"], body["error"]
    if code is not None:
        assert body["code"] == code


def test_simple_predict_matches_the_model(
    client: httpx.Client, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    r = client.post("/models/churn/predict", json={"instances": records(churn_data, 5)})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = churn_model.predict_proba(churn_data.drop(columns="churned").head(5))
    np.testing.assert_allclose(body["probabilities"], expected)
    assert (
        body["predictions"]
        == churn_model.predict(churn_data.drop(columns="churned").head(5)).tolist()
    )
    assert len(set(body["prediction_ids"])) == 5
    assert (body["model"], body["version"]) == ("churn", 1)


def test_dataframe_split_and_row_lists_give_the_same_answer(
    client: httpx.Client, churn_data: pd.DataFrame
) -> None:
    frame = churn_data.drop(columns="churned").head(4)
    split = json.loads(frame.to_json(orient="split", index=False))
    a = client.post("/models/churn/predict", json={"dataframe_split": split}).json()
    b = client.post("/models/churn/predict", json={"instances": split["data"]}).json()
    c = client.post("/models/churn/predict", json={"instances": records(churn_data, 4)}).json()
    assert a["probabilities"] == b["probabilities"] == c["probabilities"]


def _row(**change: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "age": 41,
        "tenure_months": 3.0,
        "monthly_charges": 80.5,
        "support_calls": 2,
        "plan": "pro",
        "region": "north",
    }
    row.update(change)
    return {k: v for k, v in row.items() if v is not ...}


BAD = [
    ({"instances": [_row(), _row(age=...)]}, "row 1: missing feature 'age'"),
    ({"instances": [_row(colour="red")]}, "row 0: unknown feature 'colour'"),
    (
        {"instances": [_row(), _row(), _row(monthly_charges="high")]},
        "row 2, feature 'monthly_charges': expected a number",
    ),
    ({"instances": [_row(plan=3)]}, "row 0, feature 'plan': expected a string"),
    (
        {"instances": [_row(support_calls=1.5)]},
        "row 0, feature 'support_calls': expected a whole number",
    ),
    ({"instances": [_row(age=None)]}, "row 0, feature 'age': expected a number"),
    ({"instances": [_row(age=True)]}, "row 0, feature 'age': expected a number"),
    ({"instances": [[41, 3.0, 80.5, 2, "pro"]]}, "row 0 has 5 values but there are 6 columns"),
    (
        {"dataframe_split": {"columns": FEATURES, "data": [[41, 3.0, 80.5, 2, "pro", "north", 1]]}},
        "row 0 has 7 values but there are 6 columns",
    ),
    (
        {"dataframe_split": {"columns": FEATURES[:5], "data": [[1, 2, 3, 4, "pro"]]}},
        "missing feature 'region'",
    ),
    ({"instances": []}, "non-empty list"),
    ({"instances": [_row()], "dataframe_split": {}}, "exactly one of"),
    ([1, 2], "must be an object"),
]


@pytest.mark.parametrize(("body", "match"), BAD)
def test_bad_input_is_400_naming_field_and_row(client: httpx.Client, body: Any, match: str) -> None:
    assert_error(client.post("/models/churn/predict", json=body), 400, match, "invalid_input")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(client: httpx.Client, literal: str) -> None:
    body = json.dumps({"instances": [_row(), _row()]}).replace("80.5", literal, 2)
    r = client.post("/models/churn/predict", content=body)
    assert_error(r, 400, "row 0, feature 'monthly_charges'", "invalid_input")
    assert "finite number" in r.json()["error"]


def test_not_json_is_400(client: httpx.Client) -> None:
    assert_error(client.post("/models/churn/predict", content=b"{nope"), 400, "not valid JSON")


def test_body_over_the_limit_is_413_before_parsing(client: httpx.Client) -> None:
    huge = b'{"instances": [' + b" " * (70 * 1024) + b"]}"
    assert_error(
        client.post("/models/churn/predict", content=huge), 413, "limit", "payload_too_large"
    )


def test_body_over_the_limit_without_length_is_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 4096

    r = client.post("/models/churn/predict", content=chunks())
    assert_error(r, 413, "limit", "payload_too_large")


def test_gzip_body_is_limited_by_its_inflated_size(client: httpx.Client) -> None:
    bomb = gzip.compress(b'{"instances": [' + b" " * (10 * 1024 * 1024) + b"]}")
    assert len(bomb) < 64 * 1024
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    r = client.post("/models/churn/predict", content=bomb, headers=headers)
    assert_error(r, 413, "inflates to more than", "payload_too_large")
    ok = gzip.compress(json.dumps({"instances": [_row()]}).encode())
    assert client.post("/models/churn/predict", content=ok, headers=headers).status_code == 200


def test_unknown_content_encoding_is_400(client: httpx.Client) -> None:
    r = client.post("/models/churn/predict", content=b"{}", headers={"Content-Encoding": "br"})
    assert_error(r, 400, "Content-Encoding 'br'")


def test_json_nested_too_deep_is_400(client: httpx.Client) -> None:
    deep = '{"instances": [' + "[" * 40 + "]" * 40 + "]}"
    assert_error(client.post("/models/churn/predict", content=deep), 400, "nesting depth")
    # brackets inside strings do not count
    fine = {"instances": [_row(plan="[" * 40)]}
    assert client.post("/models/churn/predict", json=fine).status_code == 200


def test_unknown_model_version_and_route_are_404(client: httpx.Client) -> None:
    assert_error(
        client.post("/models/nope/predict", json={"instances": [_row()]}),
        404,
        "'nope' is not served",
        "not_found",
    )
    assert_error(client.post("/v2/models/nope/infer", json={"inputs": []}), 404, "not served")
    assert_error(
        client.post("/v2/models/churn/versions/7/infer", json={"inputs": []}),
        404,
        "version 7 is not served",
    )
    assert_error(client.get("/v2/models/nope"), 404, "not served")
    assert_error(client.get("/nowhere"), 404, "no route GET /nowhere", "not_found")
    assert_error(
        client.get("/models/churn/predict"), 405, "GET is not allowed", "method_not_allowed"
    )


def test_model_failing_its_digest_is_not_ready_and_others_serve(client: httpx.Client) -> None:
    r = client.get("/v2/models/broken/ready")
    assert_error(r, 400, "altered on disk", "not_ready")  # v2 health: 4xx means "not ready"
    assert_error(
        client.post("/models/broken/predict", json={"instances": [_row()]}), 503, "not ready"
    )
    assert client.get("/v2/models/churn/ready").status_code == 200
    server = client.get("/v2/health/ready")
    assert server.status_code == 400  # not every model is ready
    assert server.json() == {
        "ready": False,
        "models": {"broken": False, "churn": True},
        "prediction_log": {"healthy": True, "error": None},
    }
    listed = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert "altered on disk" in listed["broken"]["reason"]
    assert client.post("/models/churn/predict", json={"instances": [_row()]}).status_code == 200


def test_a_tampered_artifact_is_named_by_model_version_and_digests_never_by_path(
    served: tuple[Workspace, str], client: httpx.Client
) -> None:
    ws, _ = served
    version = ws.registry.get_version("broken@production")
    found = hashlib.sha256(ws.artifacts.path(version.artifact_digest).read_bytes()).hexdigest()
    answers = [
        client.get("/models"),
        client.get("/v2/models/broken/ready"),
        client.get("/v2/models/broken/versions/1/ready"),
        client.post("/models/broken/predict", json={"instances": [_row()]}),
        client.post("/models/broken/invocations", json={"dataframe_records": [_row()]}),
        client.post("/v2/models/broken/infer", json={"inputs": []}),
    ]
    for r in answers:
        assert "model 'broken' version 1" in r.text, r.text
        assert version.artifact_digest in r.text and found in r.text
        assert str(ws.config.home) not in r.text
        assert "/sha256/" not in r.text
    for r in answers[1:]:
        assert set(r.json()) == {"error", "code"}


def _v2_inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    types = {"plan": "BYTES", "region": "BYTES", "support_calls": "INT64"}
    return [
        {
            "name": c,
            "datatype": types.get(c, "FP64"),
            "shape": [len(frame)],
            "data": frame[c].tolist(),
        }
        for c in frame.columns
    ]


def test_v2_infer_per_feature_and_matrix(
    client: httpx.Client, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    frame = churn_data.drop(columns="churned").head(3)
    expected = churn_model.predict_proba(frame)
    r = client.post("/v2/models/churn/infer", json={"id": "req-1", "inputs": _v2_inputs(frame)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (3, 2)), expected)
    assert outputs["probabilities"]["shape"] == [3, 2]
    matrix = [str(v) for row in frame.itertuples(index=False) for v in row]
    r2 = client.post(
        "/v2/models/churn/versions/1/infer",
        json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [3, 6], "data": matrix}]},
    )
    assert r2.status_code == 200, r2.text
    np.testing.assert_allclose(
        np.reshape({o["name"]: o for o in r2.json()["outputs"]}["probabilities"]["data"], (3, 2)),
        expected,
    )


V2_BAD = [
    (
        [{"name": "age", "datatype": "BYTES", "shape": [1], "data": ["41"]}],
        "input 'age' has datatype BYTES",
    ),
    (
        [{"name": "age", "datatype": "FP64", "shape": [2], "data": [41.0]}],
        "shape [2] needs 2 values but 'data' has 1",
    ),
    ([{"name": "x", "datatype": "FP64", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}], "[N, 6]"),
    ([{"name": "age", "datatype": "FP64", "shape": "1", "data": [1]}], "'shape' must be a list"),
    ("nope", "non-empty list of tensors"),
]


@pytest.mark.parametrize(("inputs", "match"), V2_BAD)
def test_v2_bad_input_is_400(client: httpx.Client, inputs: Any, match: str) -> None:
    assert_error(client.post("/v2/models/churn/infer", json={"inputs": inputs}), 400, match)


def test_v2_missing_feature_and_row_counts(client: httpx.Client, churn_data: pd.DataFrame) -> None:
    inputs = _v2_inputs(churn_data.drop(columns="churned").head(2))
    assert_error(
        client.post("/v2/models/churn/infer", json={"inputs": inputs[:-1]}),
        400,
        "missing feature 'region'",
    )
    inputs[0] = {**inputs[0], "shape": [1], "data": inputs[0]["data"][:1]}
    assert_error(
        client.post("/v2/models/churn/infer", json={"inputs": inputs}), 400, "different row counts"
    )


def test_a_real_v2_client_library_talks_to_the_server(
    served: tuple[Workspace, str], churn_model: Any, churn_data: pd.DataFrame
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    frame = churn_data.drop(columns="churned").head(4)
    client = triton.InferenceServerClient(served[1].removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert not client.is_server_ready()  # "broken" is not ready; the others still serve
        assert client.is_model_ready("churn")
        assert not client.is_model_ready("broken")
        meta = client.get_model_metadata("churn")
        assert [i["name"] for i in meta["inputs"]] == FEATURES
        for binary in (False, True):
            inputs = []
            for spec in meta["inputs"]:
                dtype = {"FP64": np.float64, "INT64": np.int64, "BYTES": np.object_}[
                    spec["datatype"]
                ]
                tensor = triton.InferInput(spec["name"], [len(frame)], spec["datatype"])
                tensor.set_data_from_numpy(
                    frame[spec["name"]].to_numpy().astype(dtype), binary_data=binary
                )
                inputs.append(tensor)
            result = client.infer(
                "churn",
                inputs,
                request_id=f"triton-{binary}",
                outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)],
            )
            np.testing.assert_allclose(
                result.as_numpy("probabilities"), churn_model.predict_proba(frame)
            )
            assert result.get_response()["id"] == f"triton-{binary}"
        bad = triton.InferInput("age", [1], "BYTES")
        bad.set_data_from_numpy(np.array(["old"], dtype=np.object_), binary_data=False)
        with pytest.raises(InferenceServerException, match="input 'age' has datatype BYTES"):
            client.infer("churn", [bad])
    finally:
        client.close()


def test_predictions_are_logged_with_inputs_and_ids(
    served: tuple[Workspace, str], client: httpx.Client, churn_data: pd.DataFrame
) -> None:
    ws, _ = served
    r = client.post(
        "/models/churn/predict",
        json={"instances": records(churn_data, 3)},
        headers={"X-Request-Id": "abc"},
    )
    ids = r.json()["prediction_ids"]
    table = _wait_logged(ws.config.predictions_dir, ids)
    rows = table.to_pylist()
    assert [row["request_id"] for row in rows] == ["abc"] * 3
    assert [row["in.plan"] for row in rows] == churn_data["plan"].head(3).tolist()
    assert all(
        row["status"] == "ok" and row["arm"] == "stable" and row["version"] == 1 for row in rows
    )
    assert all(0.5 <= row["confidence"] <= 1 and len(row["proba"]) == 2 for row in rows)
    assert all(row["latency_s"] > 0 and row["cpu_s"] >= 0 for row in rows)


def _wait_logged(root: Path, ids: list[str]) -> Any:
    """The logged rows of ``ids``, once the writer (flushing every second) has written them."""
    deadline = time.monotonic() + 10
    while True:
        table = read_window(root, "churn")
        table = table.filter(pc.is_in(table["prediction_id"], value_set=pa.array(ids)))
        if table.num_rows == len(ids) or time.monotonic() > deadline:
            return table.sort_by("prediction_id")
        time.sleep(0.05)


def test_labels_known_unknown_and_duplicate(
    served: tuple[Workspace, str], client: httpx.Client, churn_data: pd.DataFrame
) -> None:
    ws, _ = served
    ids = client.post("/models/churn/predict", json={"instances": records(churn_data, 3)}).json()[
        "prediction_ids"
    ]
    first = client.post(
        "/models/churn/labels",
        json=[{"prediction_id": ids[0], "label": 0}, {"prediction_id": "0" * 32, "label": 1}],
    )
    assert first.status_code == 200, first.text
    assert first.json() | {"unknown": None} == {
        "model": "churn",
        "received": 2,
        "stored": 1,
        "replaced": 0,
        "unknown_count": 1,
        "unknown": None,
    }
    second = client.post(
        "/models/churn/labels",
        json={
            "labels": [
                {"prediction_id": ids[0], "label": 1},
                {"prediction_id": ids[1], "label": "1", "weight": 2.5},
            ]
        },
    ).json()
    assert (second["stored"], second["replaced"]) == (2, 1)
    latest = {
        r["prediction_id"]: r for r in read_labels(ws.config.predictions_dir, "churn").to_pylist()
    }
    assert latest[ids[0]]["label"] == "1"
    assert latest[ids[1]]["weight"] == 2.5
    audit = [a for a in ws.registry.audit_log(model="churn") if a.action == "label.write"]
    assert audit[0].after["replaced_ids"] == [ids[0]]


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ([{"prediction_id": "x"}], "label row 0: label is missing"),
        ([{"prediction_id": "x", "label": 1, "extra": 2}], "unknown field extra"),
        ([{"prediction_id": "x", "label": 1, "weight": -1}], "weight must be a positive number"),
        ({"rows": []}, "non-empty list"),
    ],
)
def test_bad_labels_are_400(client: httpx.Client, body: Any, match: str) -> None:
    assert_error(client.post("/models/churn/labels", json=body), 400, match, "invalid_input")


def test_labels_for_an_unknown_model_are_404(client: httpx.Client) -> None:
    assert_error(
        client.post("/models/nope/labels", json=[{"prediction_id": "x", "label": 1}]),
        404,
        "'nope' does not exist",
    )


def test_metrics_expose_the_documented_names_without_ids(client: httpx.Client) -> None:
    r = client.post("/models/churn/predict", json={"instances": [_row(), _row(plan="basic")]})
    client.post("/models/churn/predict", json={"instances": [_row(age="x")]})
    text = client.get("/metrics").text
    for name in (
        'ownloop_requests_total{arm="stable",model="churn",owner="risk",status="ok",version="1"}',
        'ownloop_requests_total{arm="stable",model="churn",owner="risk",status="error",version="1"}',
        "ownloop_request_duration_seconds_bucket",
        "ownloop_predictions_total{",
        "ownloop_prediction_confidence_bucket",
        "ownloop_predlog_queue_depth",
        "ownloop_predlog_flushed_records_total",
        "ownloop_predlog_dropped_records_total",
        "ownloop_inference_cpu_seconds_total",
        "ownloop_cost_per_1k_predictions{",
        'ownloop_model_ready{model="broken",owner="risk",version="1"} 0.0',
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    assert not any(pid in text for pid in r.json()["prediction_ids"])


def test_openapi_matches_the_routes_the_server_has(
    served: tuple[Workspace, str], client: httpx.Client
) -> None:
    doc = client.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(s.method, s.path) for s in ROUTES}
    for spec in ROUTES:
        op = doc["paths"][spec.path][spec.method.lower()]
        assert op["x-ownloop-access"]["role"] == POLICY[spec.action].name.lower()
        # every documented route answers with something other than "no such route"
        path = spec.path.replace("{name}", "churn").replace("{version}", "1")
        r = client.request(spec.method, path, content=b"{}")
        assert r.status_code not in (404, 405) or r.json()["code"] not in ("method_not_allowed",)
        assert "no route" not in r.text


def test_access_is_checked_per_route(
    served: tuple[Workspace, str], churn_data: pd.DataFrame
) -> None:
    ws, _ = served
    viewer = ws.tokens.create("risk-viewer", team="risk", role="viewer").secret
    with (
        Workspace(replace(ws.config, auth=True)) as guarded,
        running(guarded, log_predictions=False) as url,
        httpx.Client(base_url=url) as c,
    ):
        assert_error(
            c.post("/models/churn/predict", json={"instances": [_row()]}),
            401,
            "requires a token for model.predict",
            "unauthenticated",
        )
        assert_error(c.get("/metrics"), 401, "requires a token for metrics.read", "unauthenticated")
        assert_error(
            c.post(
                "/models/churn/labels",
                json=[{"prediction_id": "x", "label": 1}],
                headers={"Authorization": f"Bearer {viewer}"},
            ),
            403,
            "needs team 'risk'",
            "permission_denied",
        )


class Moody:
    """A classifier that fails on purpose: 13 is input it cannot take, 666 is a bug in it."""

    classes_ = np.array([0, 1])
    n_features_in_ = 1

    def fit(self, X: Any, y: Any) -> Moody:
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.predict_proba(X)).argmax(axis=1)

    def predict_proba(self, X: Any) -> np.ndarray:
        x = np.asarray(X, dtype=float)
        if (x == 13).any():
            raise ValueError("13 is out of range for this model")
        if (x == 666).any():
            raise RuntimeError("a bug inside the model")
        return np.tile([0.4, 0.6], (len(x), 1))


def test_model_errors_are_400_for_input_and_500_for_bugs(tmp_path: Path) -> None:
    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    with Workspace(Config(home=tmp_path / "home", user="tester")) as ws:
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.register(Moody(), name="moody", owner="risk", reference=reference, target="y")
        ws.deploy.set_production("moody", 1, force=True, reason="set up")
        with running(ws) as url, httpx.Client(base_url=url) as c:
            assert (
                c.post("/models/moody/predict", json={"instances": [{"x": 1}]}).status_code == 200
            )
            r = c.post("/models/moody/predict", json={"instances": [{"x": 13}]})
            assert_error(r, 400, "could not score the input: 13 is out of range", "invalid_input")
            r = c.post("/models/moody/predict", json={"instances": [{"x": 666}]})
            assert_error(r, 500, "internal server error", "internal")
            assert "a bug inside" not in r.text
            assert c.get("/v2/health/live").status_code == 200
        logged = read_window(
            ws.config.predictions_dir, "moody", columns=["status", "in.x", "prediction"]
        )
    assert sorted(logged.to_pylist(), key=lambda r: r["in.x"]) == [
        {"status": "ok", "in.x": 1.0, "prediction": "1"},
        {"status": "error", "in.x": 13.0, "prediction": None},
        {"status": "error", "in.x": 666.0, "prediction": None},
    ]


def test_serves_and_labels_on_each_store(
    ws: Workspace, team: str, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    """The same round trip with the metadata store on SQLite and on PostgreSQL."""
    v = ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    ws.deploy.set_production("churn", v.version, force=True, reason="set up")
    with running(ws) as url, httpx.Client(base_url=url) as c:
        ids = c.post("/models/churn/predict", json={"instances": records(churn_data, 2)}).json()[
            "prediction_ids"
        ]
        report = c.post("/models/churn/labels", json=[{"prediction_id": ids[0], "label": 1}]).json()
    assert report["stored"] == 1
    assert next(a.action for a in ws.registry.audit_log(model="churn")) == "label.write"


def test_server_is_ready_when_every_model_is(
    tmp_path: Path, churn_model: Any, churn_data: pd.DataFrame
) -> None:
    import tritonclient.http as triton

    with Workspace(Config(home=tmp_path / "home", user="tester")) as ws:
        ws.registry.add_team("risk")
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", 1, force=True, reason="set up")
        with running(ws) as url:
            ready = httpx.get(f"{url}/v2/health/ready", timeout=30)
            assert (ready.status_code, ready.json()) == (
                200,
                {
                    "ready": True,
                    "models": {"churn": True},
                    "prediction_log": {"healthy": True, "error": None},
                },
            )
            client = triton.InferenceServerClient(url.removeprefix("http://"))
            try:
                assert client.is_server_ready()
            finally:
                client.close()
