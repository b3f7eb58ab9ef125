"""Schemathesis against /openapi.json of a real running server serving a real model.

All checks on: no 5xx, status codes, content types, headers and bodies as documented, invalid
input refused with a 4xx, and an undocumented method answered 405 with its ``Allow`` header.
OWNLOOP_FUZZ_EXAMPLES raises the number of cases per operation (25 by default), and
OWNLOOP_FUZZ_SEED replays a run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from ownloop import Config, Workspace
from ownloop.server import ROUTES
from tests.servers import running

EXAMPLES = int(os.environ.get("OWNLOOP_FUZZ_EXAMPLES", "25"))

# A body that is valid JSON of the documented shape can still be refused by the model that
# answers it (a feature it does not take, a class it does not know): 400 is the documented answer
# there, so schema-valid data may be refused with 400 on these operations, and only there.
MODEL_INPUT = "^(predict|model_invocations|invocations|infer|post_labels)_"
CONFIG = f"""
# an operation that only ever answers 404 never reached a model: fail the run
[warnings]
fail-on = ["missing_test_data"]

[[operations]]
include-operation-id-regex = "{MODEL_INPUT}"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

# a label batch over its limit (maxItems) is refused as too large: 413 is a rejection too
[[operations]]
include-operation-id-regex = "^post_labels_"
checks.negative_data_rejection.expected-statuses = [
  "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"
]
"""


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[str, str]]:
    """churn@1 in production, served by uvicorn on loopback with auth on, on SQLite; the URL and
    an owner token of the model's team."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    with Workspace(Config(home=home, user="tester", auth=True)) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        token = ws.tokens.create("fuzz", team="risk", role="owner").secret
        with running(ws) as url:
            yield url, token


@pytest.fixture(scope="module")
def served(server: tuple[str, str]) -> str:
    return server[0]


@pytest.fixture
def fuzz_headers(server: tuple[str, str]) -> dict[str, str]:
    """Headers sent with every fuzzed request: the owner token of the served model's team."""
    return {"Authorization": f"Bearer {server[1]}"}


@pytest.fixture
def api(server: tuple[str, str]) -> Iterator[httpx.Client]:
    """A client sending the owner token."""
    with httpx.Client(headers={"Authorization": f"Bearer {server[1]}"}) as client:
        yield client


def _schemathesis(
    url: str, headers: dict[str, str], folder: Path
) -> subprocess.CompletedProcess[str]:
    config = folder / "schemathesis.toml"
    # headers go in the config file, not the command line, so a token never shows in `ps`
    table = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in headers.items())
    config.write_text(CONFIG + (f"\n[headers]\n{table}" if headers else ""), encoding="utf-8")
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{url}/openapi.json",
        "--url",
        url,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--mode",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--generation-database",
        "none",
        "--workers",
        "4",
        "--no-color",
    ]
    seed = os.environ.get("OWNLOOP_FUZZ_SEED")
    if seed:
        command += ["--seed", seed]
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.mark.slow
def test_fuzzing_the_running_api_finds_nothing(
    served: str,
    api: httpx.Client,
    fuzz_headers: dict[str, str],
    tmp_path: Path,
    record_property: Any,
) -> None:
    run = _schemathesis(served, fuzz_headers, tmp_path)
    out = run.stdout + run.stderr
    found = re.search(r"(\d+) generated", out)
    cases = int(found.group(1)) if found else 0
    record_property("fuzz_cases", cases)
    print(f"schemathesis: {cases} cases, {EXAMPLES} examples per operation")
    assert run.returncode == 0, out[-8000:]
    # every operation was tested (schemathesis leaves out /openapi.json, the schema itself), and
    # the model routes reached the model, not only 404 (warnings.fail-on above)
    assert f"Selected: {len(ROUTES) - 1}/{len(ROUTES) - 1}" in out, out[-2000:]
    assert f"Tested: {len(ROUTES) - 1}" in out, out[-2000:]
    assert cases >= min(EXAMPLES, 10) * (len(ROUTES) - 1), out[-2000:]
    metrics = api.get(f"{served}/metrics").text
    reached = re.search(r'ownloop_requests_total\{[^}]*model="churn"[^}]*\} (\d+)', metrics)
    assert reached is not None and int(reached.group(1)) > 0, metrics[:2000]


# -- what fuzzing found, pinned ----------------------------------------------------------------


def test_an_undocumented_method_is_405_naming_the_allowed_ones(
    served: str, api: httpx.Client
) -> None:
    for spec in ROUTES:
        path = spec.path.replace("{name}", "churn").replace("{version}", "1")
        other = "DELETE" if spec.method == "GET" else "PUT"
        r = httpx.request(other, f"{served}{path}")
        assert r.status_code == 405, (spec.path, r.text)
        assert r.json()["code"] == "method_not_allowed"
        assert spec.method in {m.strip() for m in r.headers["allow"].split(",")}, spec.path


def test_the_schema_names_the_served_models_and_versions(served: str, api: httpx.Client) -> None:
    doc = api.get(f"{served}/openapi.json").json()
    params = doc["paths"]["/v2/models/{name}/versions/{version}/infer"]["post"]["parameters"]
    assert {p["name"]: p["schema"].get("enum") for p in params} == {
        "name": ["churn"],
        "version": ["1"],
    }
    # a name not served is still answered, with a 404
    r = api.post(f"{served}/models/nobody/predict", json={"instances": [[1]]})
    assert r.status_code == 404, r.text


def test_the_schema_refuses_what_the_server_refuses(served: str, api: httpx.Client) -> None:
    schemas = api.get(f"{served}/openapi.json").json()["components"]["schemas"]
    assert schemas["LabelsRequest"]["minItems"] == 1
    assert api.post(f"{served}/models/churn/labels", json=[]).status_code == 400
    assert "oneOf" in schemas["MlflowRequest"]
    assert api.post(f"{served}/invocations", json={}).status_code == 400


@pytest.mark.parametrize("instance", ["AAA", 1, None, True])
def test_instances_that_are_neither_records_nor_rows_are_400(
    served: str, api: httpx.Client, instance: Any
) -> None:
    r = api.post(f"{served}/models/churn/predict", json={"instances": [instance]})
    assert r.status_code == 400, r.text
    assert "every instance must be a record (object) or a row (list)" in r.json()["error"]


ROW = {
    "age": 41,
    "tenure_months": 12,
    "monthly_charges": 70.5,
    "support_calls": 1,
    "plan": "basic",
    "region": "north",
}


def _v2(**extra: Any) -> dict[str, Any]:
    inputs = [
        {
            "name": k,
            "shape": [1],
            "datatype": "BYTES" if isinstance(v, str) else "FP64",
            "data": [v],
        }
        for k, v in ROW.items()
    ]
    return {"inputs": inputs, **extra}


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"parameters": [None]}, "'parameters' must be an object"),
        ({"outputs": {}}, "'outputs' must be a list"),
        ({"outputs": None}, "'outputs' must be a list"),
        ({"id": None}, "'id' must be a string"),
    ],
)
def test_v2_fields_of_the_wrong_type_are_400(
    served: str, api: httpx.Client, extra: dict[str, Any], match: str
) -> None:
    assert api.post(f"{served}/v2/models/churn/infer", json=_v2()).status_code == 200
    r = api.post(f"{served}/v2/models/churn/infer", json=_v2(**extra))
    assert r.status_code == 400, r.text
    assert match in r.json()["error"]


@pytest.mark.parametrize(("params", "status"), [(None, 200), ({}, 200), ([], 400), (0, 400)])
def test_mlflow_params_may_be_empty_or_null_and_nothing_else(
    served: str, api: httpx.Client, params: Any, status: int
) -> None:
    body = {"dataframe_records": [ROW], "params": params}
    r = api.post(f"{served}/models/churn/invocations", json=body)
    assert r.status_code == status, r.text
