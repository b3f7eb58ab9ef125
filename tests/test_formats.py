from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from ownloop import (
    Config,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnsafeFormatError,
    Workspace,
)
from ownloop.cli import cli
from tests.conftest import env_for

TREE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


class Evil:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def numeric() -> tuple[pd.DataFrame, LogisticRegression]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400)})
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int)
    return X.assign(y=y), LogisticRegression().fit(X, y)


def test_skops_file_with_untrusted_types_needs_trust(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "model.skops"
    sio.dump(churn_model, path)
    with pytest.raises(
        UnsafeFormatError, match=f"nobody has trusted: {TREE}.*trust=\\[.{TREE}.\\]"
    ):
        ws.registry.register(
            name="churn", path=path, owner=team, reference=churn_data, target="churned"
        )
    assert ws.registry.list_models() == []
    v = ws.registry.register(
        name="churn", path=path, owner=team, reference=churn_data, target="churned", trust=[TREE]
    )
    assert v.trusted_types == (TREE,)
    X = churn_data.drop(columns="churned").head(10)
    assert np.allclose(ws.registry.load(v.ref).predict_proba(X), churn_model.predict_proba(X))  # type: ignore[attr-defined]


def test_onnx_model(
    ws: Workspace, team: str, numeric: tuple[pd.DataFrame, LogisticRegression], tmp_path: Path
) -> None:
    from skl2onnx import to_onnx

    data, model = numeric
    X = data[["a", "b"]]
    (tmp_path / "m.onnx").write_bytes(
        to_onnx(model, X.to_numpy(np.float32)[:1]).SerializeToString()
    )
    v = ws.registry.register(
        name="lr", path=tmp_path / "m.onnx", owner=team, reference=data, target="y"
    )
    assert v.artifact_format == "onnx"
    assert v.signature.task == "classification" and v.signature.classes == (0, 1)
    loaded = ws.registry.load("lr@1")
    assert np.allclose(loaded.predict_proba(X.head(20)), model.predict_proba(X.head(20)), atol=1e-5)


def test_broken_onnx_file_is_a_clear_error(ws: Workspace, team: str, tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"these bytes are not a protobuf graph")
    with pytest.raises(InvalidInputError, match="does not start like an ONNX model"):
        ws.registry.register(name="m", path=tmp_path / "m.onnx", owner=team)
    assert ws.registry.list_models() == []


def test_pickle_is_refused_without_opt_in(
    ws: Workspace, team: str, numeric: tuple[pd.DataFrame, LogisticRegression], tmp_path: Path
) -> None:
    data, model = numeric
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    with pytest.raises(InvalidInputError, match="runs arbitrary code.*allow_unsafe_pickle=True"):
        ws.registry.register(
            name="lr", path=tmp_path / "m.pkl", owner=team, reference=data, target="y"
        )
    v = ws.registry.register(
        name="lr",
        path=tmp_path / "m.pkl",
        owner=team,
        reference=data,
        target="y",
        allow_unsafe_pickle=True,
    )
    assert v.unsafe_pickle and v.artifact_format == "pickle"
    assert ws.registry.load("lr@1").predict(data[["a", "b"]].head(3)).shape == (3,)


def test_joblib_with_opt_in(
    ws: Workspace, team: str, numeric: tuple[pd.DataFrame, LogisticRegression], tmp_path: Path
) -> None:
    import joblib

    data, model = numeric
    joblib.dump(model, tmp_path / "m.joblib", compress=3)
    with pytest.raises(InvalidInputError, match="joblib file"):
        ws.registry.register(name="lr", path=tmp_path / "m.joblib", owner=team)
    v = ws.registry.register(
        name="lr",
        path=tmp_path / "m.joblib",
        owner=team,
        reference=data,
        target="y",
        allow_unsafe_pickle=True,
    )
    assert v.artifact_format == "joblib"


def test_malicious_pickle_never_runs_on_default_register(
    ws: Workspace, team: str, tmp_path: Path, config: Config
) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil(marker)))
    (tmp_path / "evil.joblib").write_bytes(pickle.dumps(Evil(marker)))
    for name in ("evil.pkl", "evil.joblib"):
        with pytest.raises(InvalidInputError, match="was not loaded"):
            ws.registry.register(name="evil", path=tmp_path / name, owner=team)
    result = CliRunner().invoke(
        cli, ["register", "evil", str(tmp_path / "evil.pkl"), "--owner", team], env=env_for(config)
    )
    assert result.exit_code == 1
    assert "error:" in result.stderr and "--allow-unsafe-pickle" in result.stderr
    assert not marker.exists()
    assert ws.registry.list_models() == []


def test_malicious_pickle_swapped_in_for_an_artifact_never_runs_on_load(
    ws: Workspace, team: str, numeric: tuple[pd.DataFrame, LogisticRegression], tmp_path: Path
) -> None:
    data, model = numeric
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    for kw in ({"model": model}, {"path": tmp_path / "m.pkl", "allow_unsafe_pickle": True}):
        v = ws.registry.register(name="lr", owner=team, reference=data, target="y", **kw)  # type: ignore[arg-type]
        marker = tmp_path / f"pwned-{v.version}"
        ws.artifacts.path(v.artifact_digest).write_bytes(pickle.dumps(Evil(marker)))
        with pytest.raises(IntegrityError, match="altered on disk"):
            ws.registry.load(v.ref)
        assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"hello, I am a text file", "not a model file"),
        (None, "zip archive but not a skops"),
    ],
)
def test_files_that_are_not_models(
    ws: Workspace, team: str, tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.bin"
    if content is None:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "no model here")
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        ws.registry.register(name="m", path=path, owner=team)
    assert ws.registry.list_models() == []


def test_missing_file_and_folder(ws: Workspace, team: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        ws.registry.register(name="m", path=tmp_path / "nope.skops", owner=team)
    with pytest.raises(InvalidInputError, match="is a folder"):
        ws.registry.register(name="m", path=tmp_path, owner=team)
