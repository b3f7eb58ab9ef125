"""A client written for ``mlflow models serve`` works unchanged: MLflow's scoring formats on
``/invocations`` (and per model), in the exact body shapes MLflow's docs and clients send."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.predlog import read_window
from tests.servers import running

JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, match: str, code: str) -> None:
    """Every error has the one shape {"error": message, "code": code}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert match in body["error"], body["error"]
    assert body["code"] == code


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> Config:
    config = Config(home=tmp_path_factory.mktemp("mlflow") / "home", user="tester")
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
    return config


@pytest.fixture(scope="module")
def url(home: Config) -> Iterator[str]:
    with Workspace(home) as ws, running(ws) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def frame(churn_data: pd.DataFrame) -> pd.DataFrame:
    return churn_data.drop(columns="churned").head(5)


def mlflow_bodies(frame: pd.DataFrame) -> dict[str, str]:
    """The JSON bodies MLflow documents for its scoring server, built as its users build them."""
    return {
        # pandas' own split orientation, index included, as mlflow's client serialises frames
        "dataframe_split": json.dumps(
            {"dataframe_split": json.loads(frame.to_json(orient="split"))}
        ),
        "dataframe_records": json.dumps(
            {"dataframe_records": json.loads(frame.to_json(orient="records"))}
        ),
        "instances": json.dumps({"instances": json.loads(frame.to_json(orient="records"))}),
        "inputs as columns": json.dumps({"inputs": {c: frame[c].tolist() for c in frame.columns}}),
        "inputs as rows": json.dumps({"inputs": frame.to_numpy().tolist()}),
        "inputs as records": json.dumps({"inputs": json.loads(frame.to_json(orient="records"))}),
        "empty params": json.dumps(
            {"dataframe_split": json.loads(frame.to_json(orient="split")), "params": {}}
        ),
    }


@pytest.mark.parametrize("path", ["/invocations", "/models/churn/invocations"])
def test_every_mlflow_json_format_answers_like_mlflow(
    client: httpx.Client, churn_model: Any, frame: pd.DataFrame, path: str
) -> None:
    expected = churn_model.predict(frame).tolist()
    for shape, body in mlflow_bodies(frame).items():
        r = client.post(path, content=body, headers=JSON)
        assert r.status_code == 200, (shape, r.text)
        answer = r.json()
        assert answer["predictions"] == expected, shape
        assert len(answer["prediction_ids"]) == len(frame)


@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8"])
def test_csv_bodies_are_read_like_mlflow(
    client: httpx.Client, churn_model: Any, frame: pd.DataFrame, content_type: str
) -> None:
    r = client.post(
        "/invocations",
        content=frame.to_csv(index=False).encode(),
        headers={"Content-Type": content_type},
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == churn_model.predict(frame).tolist()


def test_the_simple_route_takes_dataframe_records(
    client: httpx.Client, churn_model: Any, frame: pd.DataFrame
) -> None:
    records = json.loads(frame.to_json(orient="records"))
    r = client.post("/models/churn/predict", json={"dataframe_records": records})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == churn_model.predict(frame).tolist()


def test_mlflow_answers_are_logged_like_every_prediction(
    home: Config, client: httpx.Client, frame: pd.DataFrame
) -> None:
    r = client.post(
        "/invocations",
        content=mlflow_bodies(frame)["dataframe_records"],
        headers={**JSON, "X-Request-Id": "mlflow-1"},
    )
    ids = r.json()["prediction_ids"]
    deadline = time.monotonic() + 60  # the writer flushes about every second
    while True:
        logged = read_window(home.predictions_dir, "churn", columns=["prediction_id", "request_id"])
        mine = [row for row in logged.to_pylist() if row["request_id"] == "mlflow-1"]
        if len(mine) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted(row["prediction_id"] for row in mine) == sorted(ids)


@pytest.mark.parametrize(
    ("body", "headers", "match"),
    [
        ('{"dataframe_records": {"age": [41]}}', JSON, "'dataframe_records' must be a list"),
        ('{"inputs": {"age": [41]}}', JSON, "inputs: missing feature"),
        (
            '{"inputs": {"age": 41, "tenure_months": 1, "monthly_charges": 1, "support_calls": 1, '
            '"plan": "a", "region": "b"}}',
            JSON,
            "inputs: column 'age' must be a list",
        ),
        ('{"dataframe_split": {"columns": [], "data": []}, "params": {"k": 1}}', JSON, "'params'"),
        ('{"instances": [], "inputs": []}', JSON, "exactly one of"),
        ("age,plan\n41,pro\n", {"Content-Type": "text/csv"}, "CSV: missing feature"),
        ("age\n", {"Content-Type": "text/csv"}, "needs a header row and at least one row"),
    ],
)
def test_bad_mlflow_bodies_are_400(
    client: httpx.Client, body: str, headers: dict[str, str], match: str
) -> None:
    assert_error(
        client.post("/invocations", content=body, headers=headers), 400, match, "invalid_input"
    )


def test_invocations_with_several_models_names_them_and_the_per_model_route(
    tmp_path: Path, home: Config, churn_model: Any, churn_data: pd.DataFrame, frame: pd.DataFrame
) -> None:
    config = Config(home=tmp_path / "home", user="tester")
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        for name in ("churn", "churn2"):
            ws.registry.register(
                churn_model, name=name, owner="risk", reference=churn_data, target="churned"
            )
            ws.deploy.set_production(name, 1, force=True, reason="set up")
        with running(ws) as base, httpx.Client(base_url=base, timeout=60) as c:
            body = mlflow_bodies(frame)["dataframe_split"]
            r = c.post("/invocations", content=body, headers=JSON)
            assert_error(r, 400, "serves 2 ('churn', 'churn2')", "invalid_input")
            assert "/models/{name}/invocations" in r.json()["error"]
            assert (
                c.post("/models/churn2/invocations", content=body, headers=JSON).status_code == 200
            )


def test_invocations_are_in_the_openapi_document(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/invocations", "/models/{name}/invocations"):
        body = paths[path]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "text/csv"}
        assert paths[path]["post"]["x-ownloop-access"]["action"] == "model.predict"
