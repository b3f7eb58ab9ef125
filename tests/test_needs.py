"""What a version needs to run: recorded at registration, checked before it goes live."""

from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
import skops
import skops.io as sio
import sqlalchemy as sa
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from ownloop import Config, Workspace, needs
from ownloop.cli import cli
from ownloop.errors import EnvironmentMismatchError, InvalidInputError
from ownloop.store import tables as t
from tests.conftest import env_for

SUITE = """
datasets:
  holdout: {path: holdout.parquet, label: churned}
checks:
  - metric: accuracy
    at_least: 0.1
"""


@pytest.fixture
def churn(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> str:
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    return "churn@1"


def _needs(ws: Workspace, ref: str = "churn@1") -> dict[str, Any]:
    recorded = ws.registry.get_version(ref).needs
    assert recorded is not None
    return recorded


def _environment(recorded: dict[str, Any], **changes: str | None) -> dict[str, str | None]:
    """This environment as the record describes it, with ``changes`` (None: not installed)."""
    env: dict[str, str | None] = {
        name: info["version"] for name, info in recorded["libraries"].items()
    }
    env["python"] = recorded["python"]
    env.update({k.replace("_", "-"): v for k, v in changes.items()})
    return env


def _other_minor(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}.0"


def _other_patch(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{minor}.999"


# -- recording ----------------------------------------------------------------------------------


def test_a_registered_version_records_this_environment(ws: Workspace, churn: str) -> None:
    recorded = _needs(ws)
    libs = recorded["libraries"]
    assert recorded["python"] == platform.python_version()
    assert libs["scikit-learn"]["version"] == sklearn.__version__
    assert libs["scikit-learn"]["role"] == "model"  # the estimator's classes come from it
    assert libs["scikit-learn"]["source"] == "artifact"  # the skops file keeps it
    assert libs["numpy"]["version"] == np.__version__
    assert libs["pandas"]["version"] == pd.__version__
    assert libs["skops"]["version"] == skops.__version__
    assert libs["skops"]["role"] == "format"
    assert {"scipy", "numpy", "pandas"} <= set(libs)
    assert recorded["requirements"] == []
    assert needs.check_runnable(recorded) == []  # it runs where it was registered


def test_the_skops_file_s_own_scikit_learn_version_wins(tmp_path: Path) -> None:
    """A file fitted elsewhere says which scikit-learn fitted it; that is what it needs."""
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    saved = tmp_path / "here.skops"
    sio.dump(model, saved)
    path = tmp_path / "elsewhere.skops"  # the same file, as scikit-learn 1.2.3 would have saved it
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "schema.json":
                data = data.replace(f'\\"{sklearn.__version__}\\"'.encode(), b'\\"1.2.3\\"')
            dst.writestr(item, data)
    recorded = needs.record(model, "skops", artifact=path)
    assert recorded["libraries"]["scikit-learn"] == {
        "version": "1.2.3",
        "role": "model",
        "source": "artifact",
    }


def test_the_library_of_a_model_class_is_recorded_as_a_model_library() -> None:
    class Foreign:  # a model class from a module no installed distribution provides
        def predict(self, X: Any) -> Any:
            return X

    Foreign.__module__ = "customer_models.trees"
    recorded = needs.record(Foreign(), "pickle")
    assert recorded["modules"] == ["customer_models"]
    found = needs.check_runnable(recorded, environment=_environment(recorded))
    assert [(m.library, m.reason, m.blocking) for m in found] == [
        ("customer_models", "missing", True)
    ]


def test_an_onnx_version_needs_onnxruntime_and_no_scikit_learn_minor(
    ws: Workspace, team: str, tmp_path: Path
) -> None:
    """An ONNX graph runs in onnxruntime: scikit-learn is recorded but not a model library."""
    import onnxruntime
    from skl2onnx import to_onnx

    data = pd.DataFrame({"a": [0.0, 1.0] * 10, "b": [1.0, 0.0] * 10, "y": [0, 1] * 10})
    model = LogisticRegression().fit(data[["a", "b"]], data["y"])
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx(model, data[["a", "b"]].to_numpy(np.float32)[:1]).SerializeToString())
    v = ws.registry.register(name="lr", path=path, owner=team, reference=data, target="y")
    assert v.needs is not None
    libs = v.needs["libraries"]
    assert libs["onnxruntime"] == {
        "version": onnxruntime.__version__,
        "role": "format",
        "source": "environment at registration",
    }
    assert libs["scikit-learn"]["role"] == "runtime"
    assert v.needs["modules"] == []
    env = _environment(v.needs, scikit_learn=_other_minor(sklearn.__version__))
    assert not any(m.blocking for m in needs.require_runnable(v, environment=env))
    with pytest.raises(EnvironmentMismatchError, match="needs onnxruntime"):
        needs.require_runnable(v, environment=_environment(v.needs, onnxruntime=None))


def test_requirements_are_recorded_from_a_file(
    ws: Workspace, team: str, churn_model: object, tmp_path: Path
) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("# serving needs\nnumpy>=1.0  # any recent\n\nscipy >= 1.0\n")
    v = ws.registry.register(churn_model, name="churn", owner=team, requirements=req)
    assert v.needs is not None
    assert v.needs["requirements"] == ["numpy>=1.0", "scipy>=1.0"]
    assert needs.check_runnable(v.needs) == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("numpy>=1\nscikit-learn>>=1.4\n", "line 2: 'scikit-learn>>=1.4'"),
        ("-r base.txt\n", "line 1"),
    ],
)
def test_a_malformed_requirements_line_is_refused_by_name(
    ws: Workspace, team: str, churn_model: object, tmp_path: Path, text: str, line: str
) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(text)
    with pytest.raises(InvalidInputError, match=f"requirements.txt, {line}"):
        ws.registry.register(churn_model, name="churn", owner=team, requirements=req)
    assert ws.registry.list_models() == []  # nothing half-written


def test_a_missing_requirements_file_is_named(
    ws: Workspace, team: str, churn_model: object, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match=r"requirements file .*nope.txt does not exist"):
        ws.registry.register(
            churn_model, name="churn", owner=team, requirements=tmp_path / "nope.txt"
        )


# -- checking -----------------------------------------------------------------------------------


def test_a_different_scikit_learn_minor_version_is_refused(ws: Workspace, churn: str) -> None:
    v = ws.registry.get_version(churn)
    trained = sklearn.__version__
    other = _other_minor(trained)
    env = _environment(_needs(ws), scikit_learn=other)
    major_minor = ".".join(trained.split(".")[:2])
    with pytest.raises(EnvironmentMismatchError) as info:
        needs.require_runnable(v, environment=env)
    message = info.value.message
    assert f"churn@1 was trained with scikit-learn {trained}; this environment has {other}" in (
        message
    )
    assert f"pip install 'scikit-learn~={major_minor}.0'" in message
    assert "--force --reason TEXT" in message
    assert info.value.code == "environment_mismatch"
    assert info.value.http_status == 409


def test_a_missing_library_is_refused(ws: Workspace, churn: str) -> None:
    v = ws.registry.get_version(churn)
    env = _environment(_needs(ws), skops=None)
    with pytest.raises(EnvironmentMismatchError, match="this environment does not have it"):
        needs.require_runnable(v, environment=env)


def test_a_patch_difference_passes_with_a_note(ws: Workspace, churn: str) -> None:
    v = ws.registry.get_version(churn)
    other = _other_patch(sklearn.__version__)
    found = needs.require_runnable(v, environment=_environment(_needs(ws), scikit_learn=other))
    assert len(found) == 1
    note = found[0]
    assert (note.library, note.found, note.blocking) == ("scikit-learn", other, False)
    assert "patch level: reported, not refused" in note.text(v.ref)


def test_numpy_and_python_differences_are_reported_not_refused(ws: Workspace, churn: str) -> None:
    v = ws.registry.get_version(churn)
    env = _environment(_needs(ws), numpy=_other_minor(np.__version__), python="3.99.0")
    found = needs.require_runnable(v, environment=env)
    assert {m.library for m in found} == {"numpy", "python"}
    assert not any(m.blocking for m in found)


def test_force_returns_the_mismatches_instead_of_refusing(ws: Workspace, churn: str) -> None:
    v = ws.registry.get_version(churn)
    env = _environment(_needs(ws), skops=None)
    found = needs.require_runnable(v, environment=env, force=True)
    assert [(m.library, m.reason, m.blocking) for m in found] == [("skops", "missing", True)]


def test_an_unmet_requirement_is_refused(
    ws: Workspace, team: str, churn_model: object, tmp_path: Path
) -> None:
    v = ws.registry.register(
        churn_model, name="churn", owner=team, requirements=["numpy>=1.0", "xgboost>=2.0"]
    )
    with pytest.raises(EnvironmentMismatchError, match=r"churn@1 requires 'xgboost>=2.0'"):
        needs.require_runnable(v, environment=_environment(_needs(ws)))
    env = _environment(_needs(ws), xgboost="1.7.6")
    with pytest.raises(EnvironmentMismatchError, match="this environment has 1.7.6"):
        needs.require_runnable(v, environment=env)
    assert needs.require_runnable(v, environment=_environment(_needs(ws), xgboost="2.1.0")) == []


def _forget_needs(ws: Workspace) -> None:
    with ws.store.write() as conn:
        conn.execute(t.versions.update().values(needs=None))


def test_a_version_registered_before_needs_were_recorded(ws: Workspace, churn: str) -> None:
    _forget_needs(ws)
    v = ws.registry.get_version(churn)
    assert v.needs is None
    assert needs.check_runnable(v.needs) == []
    assert needs.require_runnable(v, environment={}) == []


# -- deploy -------------------------------------------------------------------------------------


def _passed_gate(ws: Workspace, ref: str, tmp_path: Path, data: pd.DataFrame) -> None:
    data.to_parquet(tmp_path / "holdout.parquet")
    (tmp_path / "suite.yaml").write_text(SUITE)
    ws.evaluations.evaluate(ref, tmp_path / "suite.yaml")
    assert ws.registry.get_version(ref).gate_status == "passed"


def _unrunnable(ws: Workspace, team: str, model: object) -> str:
    """A version needing a numpy no environment has: this one cannot run it."""
    ws.registry.register(model, name="churn", owner=team, requirements=["numpy>=999"])
    return "churn@1"


def test_set_production_refuses_a_version_this_environment_cannot_run(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    ref = _unrunnable(ws, team, churn_model)
    _passed_gate(ws, ref, tmp_path, churn_data)
    with pytest.raises(EnvironmentMismatchError, match=r"churn@1 requires 'numpy>=999'"):
        ws.deploy.set_production("churn", 1)
    assert ws.registry.get_version(ref).aliases == ()
    assert "churn" not in ws.deploy.routes()


def test_set_production_of_a_runnable_version_records_no_mismatch(
    ws: Workspace, churn: str, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    _passed_gate(ws, churn, tmp_path, churn_data)
    ws.deploy.set_production("churn", 1)
    entry = ws.registry.audit_log("churn", limit=1)[0]
    assert entry.action == "deploy.direct"
    assert "environment" not in entry.after["evidence"]


def test_forced_set_production_audits_the_mismatch(
    ws: Workspace, team: str, churn_model: object
) -> None:
    _unrunnable(ws, team, churn_model)
    v = ws.deploy.set_production("churn", 1, force=True, reason="hotfix, numpy coming")
    assert v.aliases == ("production",)
    entry = ws.registry.audit_log("churn", limit=1)[0]
    assert entry.action == "deploy.direct"
    assert entry.after["reason"] == "hotfix, numpy coming"
    [mismatch] = entry.after["evidence"]["environment"]
    assert mismatch["library"] == "numpy"
    assert mismatch["needed"] == "numpy>=999"
    assert mismatch["found"] == np.__version__
    assert mismatch["blocking"] is True


def test_set_production_of_a_version_without_needs_is_not_refused(
    ws: Workspace, churn: str, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    _forget_needs(ws)
    _passed_gate(ws, churn, tmp_path, churn_data)
    assert ws.deploy.set_production("churn", 1).aliases == ("production",)


def test_the_refusal_reaches_the_command_line(
    ws: Workspace, config: Config, team: str, churn_model: object
) -> None:
    _unrunnable(ws, team, churn_model)
    out = CliRunner().invoke(
        cli, ["alias", "set", "churn", "production", "1", "--force"], env=env_for(config)
    )
    assert out.exit_code != 0
    out = CliRunner().invoke(
        cli,
        ["alias", "set", "churn", "production", "1", "--force", "--reason", "known gap"],
        env=env_for(config),
    )
    assert out.exit_code == 0, out.output


# -- the command line ---------------------------------------------------------------------------


def _ref(folder: Path) -> list[str]:
    return ["--reference", str(folder / "ref.parquet"), "--target", "y"]


def _model_file(folder: Path) -> Path:
    """A small model file, with its reference data beside it."""
    data = pd.DataFrame({"a": [0.0, 1.0] * 10, "y": [0, 1] * 10})
    data.to_parquet(folder / "ref.parquet")
    path = folder / "m.skops"
    sio.dump(LogisticRegression().fit(data[["a"]], data["y"]), path)
    return path


def test_register_with_requirements_and_show_lists_the_needs(
    config: Config, team: str, churn_model: object, tmp_path: Path
) -> None:
    path = _model_file(tmp_path)
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1.0\nxgboost>=2.0\n")
    env = env_for(config)
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "register",
            "churn",
            str(path),
            "--owner",
            team,
            "--requirements",
            str(req),
            *_ref(tmp_path),
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["show", "churn@1"], env={**env, "COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "needs of churn@1" in out.output
    assert f"scikit-learn │ {sklearn.__version__}" in out.output
    assert "xgboost>=2.0" in out.output
    assert "REFUSED" in out.output  # no xgboost here
    shown = json.loads(runner.invoke(cli, ["show", "churn@1", "--json"], env=env).output)
    assert shown["version"]["needs"]["requirements"] == ["numpy>=1.0", "xgboost>=2.0"]
    assert [m["library"] for m in shown["environment"]] == ["xgboost"]


def test_register_refuses_a_malformed_requirements_file_on_the_command_line(
    config: Config, team: str, churn_model: object, tmp_path: Path
) -> None:
    path = _model_file(tmp_path)
    req = tmp_path / "requirements.txt"
    req.write_text("numpy>=1.0\nnot a requirement!\n")
    out = CliRunner().invoke(
        cli,
        [
            "register",
            "churn",
            str(path),
            "--owner",
            team,
            "--requirements",
            str(req),
            *_ref(tmp_path),
        ],
        env=env_for(config),
    )
    assert out.exit_code == 1
    assert "line 2: 'not a requirement!' is not a requirement specifier" in out.output


def test_show_says_when_needs_were_not_recorded(ws: Workspace, config: Config, churn: str) -> None:
    _forget_needs(ws)
    out = CliRunner().invoke(cli, ["show", churn], env=env_for(config))
    assert out.exit_code == 0, out.output
    assert "needs: not recorded" in out.output
    shown = json.loads(
        CliRunner().invoke(cli, ["show", churn, "--json"], env=env_for(config)).output
    )
    assert shown["version"]["needs"] is None
    assert shown["environment"] is None


def test_a_stored_record_survives_the_database(ws: Workspace, churn: str) -> None:
    with ws.store.read() as conn:
        stored = conn.execute(sa.select(t.versions.c.needs)).scalar_one()
    assert stored == _needs(ws)
