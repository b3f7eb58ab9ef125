"""Register takes feature types from the model, a reference or an explicit signature; never guesses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler

from ownloop import Config, InvalidInputError, Signature, Workspace
from ownloop.cli import cli
from ownloop.signature import Feature
from tests.conftest import env_for

CHURN_TYPES = {
    "age": "float",
    "tenure_months": "float",
    "monthly_charges": "float",
    "support_calls": "float",
    "plan": "string",
    "region": "string",
}


def _types(sig: Signature) -> dict[str, str]:
    return {f.name: f.type for f in sig.features}


def test_pipeline_without_reference_records_its_string_columns_as_strings(
    ws: Workspace, team: str, churn_model: object
) -> None:
    v = ws.registry.register(churn_model, name="churn", owner=team)
    assert _types(v.signature) == CHURN_TYPES
    assert v.signature.classes == (0, 1)


def test_ordinal_encoded_integer_codes_are_integers(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"code": [1, 2, 3, 1, 2, 3] * 5, "x": np.arange(30.0)})
    model = make_pipeline(
        make_column_transformer((OrdinalEncoder(), ["code"]), (StandardScaler(), ["x"])),
        LogisticRegression(),
    ).fit(X, np.arange(30) % 2)
    v = ws.registry.register(model, name="m", owner=team)
    assert _types(v.signature) == {"code": "integer", "x": "float"}


def test_a_model_that_records_no_names_is_refused_naming_the_three_ways(
    ws: Workspace, team: str
) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    with pytest.raises(InvalidInputError) as info:
        ws.registry.register(model, name="m", owner=team)
    message = str(info.value)
    assert "reference=" in message and "signature=" in message and "ColumnTransformer" in message
    assert "--" not in message  # Python callers are told Python arguments, not flags
    assert ws.registry.list_models() == []


def test_a_dropped_column_has_no_type_so_the_model_alone_is_not_enough(
    ws: Workspace, team: str
) -> None:
    X = pd.DataFrame({"x": np.arange(30.0), "note": ["a", "b", "c"] * 10})
    model = make_pipeline(
        make_column_transformer((StandardScaler(), ["x"]), ("drop", ["note"])),
        LogisticRegression(),
    ).fit(X, np.arange(30) % 2)
    with pytest.raises(InvalidInputError, match="does not record the types of note: pass"):
        ws.registry.register(model, name="m", owner=team)
    v = ws.registry.register(
        model,
        name="m",
        owner=team,
        signature={
            "features": [{"name": "x", "type": "float"}, {"name": "note", "type": "string"}]
        },
    )
    assert _types(v.signature) == {"x": "float", "note": "string"}


@pytest.mark.parametrize("form", ["dict", "Signature", "json", "yaml"])
def test_explicit_signature_in_every_form(
    ws: Workspace, team: str, tmp_path: Path, form: str
) -> None:
    model = LogisticRegression().fit(np.array([[0.0, 1], [1, 0], [2, 1], [3, 0]]), [0, 0, 1, 1])
    data = {
        "features": [{"name": "age", "type": "float"}, {"name": "calls", "type": "integer"}],
        "target": "churned",
    }
    source: object = data
    if form == "Signature":
        source = Signature((Feature("age", "float"), Feature("calls", "integer")), "classification")
    elif form == "json":
        (tmp_path / "sig.json").write_text(json.dumps(data))
        source = tmp_path / "sig.json"
    elif form == "yaml":
        (tmp_path / "sig.yaml").write_text(yaml.safe_dump(data))
        source = str(tmp_path / "sig.yaml")
    v = ws.registry.register(model, name="m", owner=team, signature=source)  # type: ignore[arg-type]
    assert _types(v.signature) == {"age": "float", "calls": "integer"}
    assert v.signature.task == "classification" and v.signature.classes == (0, 1)


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        ({"features": [{"name": "plan", "type": "text"}]}, "has type 'text'; use one of"),
        ({"features": [{"name": "plan"}]}, "needs a name and a type"),
        ({"features": [], "outputs": {}}, "unknown signature keys: outputs"),
        ({"columns": []}, 'needs a "features" list'),
        (
            {"features": [{"name": "a", "type": "float"}, {"name": "a", "type": "float"}]},
            "names a more than once",
        ),
    ],
)
def test_bad_explicit_signatures_are_refused(
    ws: Workspace, team: str, signature: dict[str, object], fragment: str
) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    with pytest.raises(InvalidInputError, match=fragment):
        ws.registry.register(model, name="m", owner=team, signature=signature)


def test_signature_must_cover_the_columns_the_model_needs(
    ws: Workspace, team: str, churn_model: object
) -> None:
    sig = {"features": [{"name": n, "type": t} for n, t in CHURN_TYPES.items() if n != "region"]}
    with pytest.raises(InvalidInputError, match="the model needs region, which the signature"):
        ws.registry.register(churn_model, name="churn", owner=team, signature=sig)
    wrong = {"features": [{"name": n, "type": "float"} for n in CHURN_TYPES]}
    with pytest.raises(InvalidInputError, match="feature 'plan' is float in the signature"):
        ws.registry.register(churn_model, name="churn", owner=team, signature=wrong)


def test_reference_must_agree_with_the_model(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInputError, match="missing region"):
        ws.registry.register(
            churn_model,
            name="churn",
            owner=team,
            reference=churn_data.drop(columns="region"),
            target="churned",
        )
    coded = churn_data.assign(plan=churn_data["plan"].astype("category").cat.codes)
    with pytest.raises(InvalidInputError, match="feature 'plan' is integer in the reference data"):
        ws.registry.register(
            churn_model, name="churn", owner=team, reference=coded, target="churned"
        )
    assert ws.registry.list_models() == []


def test_reference_types_refine_the_model_types(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    v = ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    assert _types(v.signature) == {**CHURN_TYPES, "support_calls": "integer"}


def test_plain_estimator_fitted_on_a_frame_takes_numbers(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"a": np.arange(10.0), "b": np.arange(10.0) ** 2})
    v = ws.registry.register(LinearRegression().fit(X, X["a"]), name="lin", owner=team)
    assert _types(v.signature) == {"a": "float", "b": "float"}


def test_onnx_inputs_give_names_and_types(ws: Workspace, team: str, tmp_path: Path) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    X = pd.DataFrame({"x": np.arange(40.0), "plan": ["a", "b"] * 20})
    model = make_pipeline(
        make_column_transformer((OrdinalEncoder(), ["plan"]), (StandardScaler(), ["x"])),
        LogisticRegression(),
    ).fit(X, np.arange(40) % 2)
    onx = skl2onnx.convert_sklearn(
        model,
        initial_types=[("x", FloatTensorType([None, 1])), ("plan", StringTensorType([None, 1]))],
        options={id(model.steps[-1][1]): {"zipmap": False}},
    )
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    v = ws.registry.register(name="m", path=tmp_path / "m.onnx", owner=team)
    assert v.artifact_format == "onnx"
    assert _types(v.signature) == {"x": "float", "plan": "string"}


def test_cli_register_with_a_signature_file_and_flag_worded_errors(
    config: Config, ws: Workspace, team: str, tmp_path: Path
) -> None:
    import skops.io as sio

    model = LogisticRegression().fit(np.array([[0.0, 1], [1, 0], [2, 1], [3, 0]]), [0, 0, 1, 1])
    sio.dump(model, tmp_path / "m.skops")
    runner = CliRunner()
    refused = runner.invoke(
        cli, ["register", "m", str(tmp_path / "m.skops"), "--owner", team], env=env_for(config)
    )
    assert refused.exit_code == 1
    assert "--reference FILE" in refused.stderr and "--signature FILE" in refused.stderr
    assert "reference=" not in refused.stderr and "Traceback" not in refused.output
    (tmp_path / "sig.yaml").write_text(
        "features:\n  - {name: age, type: float}\n  - {name: plan, type: string}\n"
    )
    done = runner.invoke(
        cli,
        [
            "register",
            "m",
            str(tmp_path / "m.skops"),
            "--owner",
            team,
            "--signature",
            str(tmp_path / "sig.yaml"),
        ],
        env=env_for(config),
    )
    assert done.exit_code == 0, done.output
    assert _types(ws.registry.get_version("m@1").signature) == {"age": "float", "plan": "string"}
