from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import skops.io as sio
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.cli import cli
from tests.conftest import env_for

TREE = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@pytest.fixture
def run(config: Config) -> object:
    env = env_for(config)

    def _run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return _run


@pytest.fixture
def files(tmp_path: Path, churn_model: object, churn_data: pd.DataFrame) -> tuple[Path, Path]:
    sio.dump(churn_model, tmp_path / "model.skops")
    churn_data.to_parquet(tmp_path / "train.parquet")
    return tmp_path / "model.skops", tmp_path / "train.parquet"


def test_the_tour(run: object, files: tuple[Path, Path], ws: Workspace) -> None:
    model, train = files
    r = run(
        "team",
        "add",
        "risk",
        "--email",
        "risk@example.com",
        "--webhook",
        "http://127.0.0.1:9000/hook",
    )  # type: ignore[operator]
    assert r.exit_code == 0, r.output
    for _ in range(2):
        r = run(
            "register",
            "churn",
            str(model),
            "--owner",
            "risk",
            "--reference",
            str(train),  # type: ignore[operator]
            "--target",
            "churned",
            "--trust",
            TREE,
            "--metric",
            "auc=0.81",
        )
        assert r.exit_code == 0, r.output
    assert "registered churn@2" in r.output
    refused = run("alias", "set", "churn", "production", "1")  # type: ignore[operator]
    assert refused.exit_code == 1 and "churn@1 has no gate run" in refused.stderr
    assert "ownloop deploy" not in refused.stderr or "--force --reason" in refused.stderr
    forced = run("alias", "set", "churn", "production", "1", "--force", "--reason", "first")  # type: ignore[operator]
    assert forced.exit_code == 0, forced.output
    models = json.loads(run("models", "--json").output)  # type: ignore[operator]
    assert [(m["name"], m["owner"], m["latest_version"], m["aliases"]) for m in models] == [
        ("churn", "risk", 2, {"production": 1})
    ]
    versions = json.loads(run("versions", "churn", "--json").output)  # type: ignore[operator]
    assert [(v["version"], v["aliases"], v["gate_status"]) for v in versions] == [
        (1, ["production"], "not_evaluated"),
        (2, [], "not_evaluated"),
    ]
    table = run("versions", "churn").output  # type: ignore[operator]
    assert "skops" in table and versions[0]["artifact_digest"][:8] in table
    shown = run("show", "churn@production").output  # type: ignore[operator]
    for fragment in (
        "churn@1 (owner risk)",
        "classification",
        "support_calls",
        "2,000 rows",
        "auc",
    ):
        assert fragment in shown
    detail = json.loads(run("show", "churn@production", "--json").output)  # type: ignore[operator]
    assert detail["profile"]["rows"] == 2000
    assert detail["version"]["metrics"] == {"auc": 0.81}
    audit = json.loads(run("audit", "--model", "churn", "--json").output)  # type: ignore[operator]
    assert [a["action"] for a in audit] == [
        "deploy.direct",
        "version.register",
        "version.register",
        "model.create",
    ]
    assert ws.registry.get_version("churn@production").version == 1


def test_pickle_flag_is_recorded_and_shown(
    run: object, tmp_path: Path, churn_model: object, churn_data: pd.DataFrame
) -> None:
    import pickle

    (tmp_path / "m.pkl").write_bytes(pickle.dumps(churn_model))
    churn_data.to_csv(tmp_path / "train.csv", index=False)
    run("team", "add", "risk")  # type: ignore[operator]
    r = run(
        "register",
        "churn",
        str(tmp_path / "m.pkl"),
        "--owner",
        "risk",
        "--allow-unsafe-pickle",  # type: ignore[operator]
        "--reference",
        str(tmp_path / "train.csv"),
        "--target",
        "churned",
    )
    assert r.exit_code == 0, r.output
    assert "warning" in r.output
    assert "pickle (UNSAFE pickle, opted in)" in run("versions", "churn").output  # type: ignore[operator]
    assert json.loads(run("versions", "churn", "--json").output)[0]["unsafe_pickle"] is True  # type: ignore[operator]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "ghost@1"], "model 'ghost' does not exist"),
        (["team", "show", "nobody"], "team 'nobody' does not exist"),
        (["team", "add", "a b"], "team name 'a b' is not allowed"),
        (["team", "add", "x" * 300], "the limit is 64"),
        (["register", "m", "/does/not/exist.skops", "--owner", "risk"], "does not exist"),
        (["alias", "set", "ghost", "production", "1"], "model 'ghost' does not exist"),
        (["transfer", "ghost", "--to", "risk"], "model 'ghost' does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(run: object, args: list[str], message: str) -> None:
    r = run(*args)  # type: ignore[operator]
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1


def test_duplicate_team_and_missing_owner(run: object, files: tuple[Path, Path]) -> None:
    model, train = files
    assert run("team", "add", "risk").exit_code == 0  # type: ignore[operator]
    dup = run("team", "add", "risk")  # type: ignore[operator]
    assert dup.exit_code == 1 and "already exists" in dup.stderr
    r = run("register", "churn", str(model), "--reference", str(train), "--target", "churned")  # type: ignore[operator]
    assert r.exit_code == 1 and "--owner TEAM" in r.stderr


def test_usage_mistakes_exit_2(run: object) -> None:
    assert run("versions").exit_code == 2  # type: ignore[operator]
    assert run("audit", "--limit", "0").exit_code == 2  # type: ignore[operator]
    assert run("no-such-command").exit_code == 2  # type: ignore[operator]


def test_team_commands(run: object) -> None:
    run("team", "add", "risk", "--member", "ana")  # type: ignore[operator]
    assert run("team", "member", "add", "risk", "bob").exit_code == 0  # type: ignore[operator]
    assert (
        run("team", "set", "risk", "--slack-webhook", "https://hooks.example.com/x").exit_code == 0
    )  # type: ignore[operator]
    team = json.loads(run("team", "show", "risk", "--json").output)  # type: ignore[operator]
    assert team["members"] == ["ana", "bob"]
    assert team["slack_webhook_url"] == "https://hooks.example.com/x"
    assert run("team", "set", "risk").exit_code == 2  # type: ignore[operator]


def test_audit_of_an_unknown_model_names_the_known_ones(
    run: object, files: tuple[Path, Path]
) -> None:
    model, train = files
    run("team", "add", "risk")  # type: ignore[operator]
    r = run(
        "register",
        "churn",
        str(model),
        "--owner",
        "risk",
        "--reference",
        str(train),
        "--target",
        "churned",
        "--trust",
        TREE,
    )  # type: ignore[operator]
    assert r.exit_code == 0, r.output
    typo = run("audit", "--model", "chrun")  # type: ignore[operator]
    assert typo.exit_code == 1
    assert "model 'chrun' does not exist (known models: churn)" in typo.stderr
    assert typo.stdout == ""
    assert run("audit", "--model", "churn").exit_code == 0  # type: ignore[operator]


def test_register_errors_name_flags_not_python_arguments(
    run: object, files: tuple[Path, Path]
) -> None:
    model, train = files
    run("team", "add", "risk")  # type: ignore[operator]
    r = run(
        "register",
        "churn",
        str(model),
        "--owner",
        "risk",
        "--reference",
        str(train),
        "--target",
        "label",
        "--trust",
        TREE,
    )  # type: ignore[operator]
    assert r.exit_code == 1
    assert "with --target" in r.stderr and "target=" not in r.stderr
    r = run("register", "churn", str(model), "--owner", "risk")  # type: ignore[operator]
    assert r.exit_code == 1
    assert f"register with --trust {TREE}" in r.stderr and "trust=" not in r.stderr


def test_register_of_a_name_ending_in_a_newline_is_refused(
    run: object, files: tuple[Path, Path]
) -> None:
    model, _ = files
    run("team", "add", "risk")  # type: ignore[operator]
    r = run("register", "nl\n", str(model), "--owner", "risk", "--trust", TREE)  # type: ignore[operator]
    assert r.exit_code == 1 and "model name 'nl\n' is not allowed" in r.stderr
    r = run("alias", "set", "m", "production\n", "1")  # type: ignore[operator]
    assert r.exit_code == 1 and "alias name" in r.stderr
