from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from ownloop import (
    AlreadyExistsError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    Workspace,
)
from ownloop.profile import (
    CategoricalProfile,
    ClassificationProfile,
    NumericProfile,
    ReferenceProfile,
    RegressionProfile,
)
from ownloop.registry import git_commit


def _register(ws: Workspace, model: object, data: pd.DataFrame, **kw: object) -> object:
    return ws.registry.register(
        model, name="churn", owner="risk", reference=data, target="churned", **kw
    )  # type: ignore[arg-type]


# -- teams ----------------------------------------------------------------------------------


def test_team_with_members_and_routes(ws: Workspace) -> None:
    t = ws.registry.add_team(
        "risk",
        email="risk@example.com",
        webhook_url="http://127.0.0.1:9000/hook",
        slack_webhook_url="https://hooks.example.com/T1",
        members=["ana", "bob"],
    )
    assert (t.name, t.email, t.members) == ("risk", "risk@example.com", ("ana", "bob"))
    t = ws.registry.update_team("risk", webhook_url="")
    assert t.webhook_url is None
    assert ws.registry.add_member("risk", "cy").members == ("ana", "bob", "cy")
    assert ws.registry.remove_member("risk", "ana").members == ("bob", "cy")
    actions = [e.action for e in ws.registry.audit_log()]
    assert actions == ["team.member.remove", "team.member.add", "team.update", "team.create"]


def test_duplicate_team(ws: Workspace, team: str) -> None:
    with pytest.raises(AlreadyExistsError, match="team 'risk' already exists"):
        ws.registry.add_team("risk")


def test_unknown_team_lists_the_known_ones(ws: Workspace, team: str) -> None:
    with pytest.raises(NotFoundError, match=r"team 'riks' does not exist \(known teams: risk\)"):
        ws.registry.get_team("riks")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "not-an-address"),
        ("webhook_url", "ftp://x"),
        ("slack_webhook_url", "javascript:alert(1)"),
    ],
)
def test_bad_routes_are_refused(ws: Workspace, field: str, value: str) -> None:
    with pytest.raises(InvalidInputError):
        ws.registry.add_team("risk", **{field: value})
    assert ws.registry.list_teams() == []


# -- register -------------------------------------------------------------------------------


def test_new_model_needs_an_owner(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    with pytest.raises(InvalidInputError, match="needs an owning team: pass owner=TEAM"):
        ws.registry.register(churn_model, name="churn", reference=churn_data, target="churned")
    assert ws.registry.list_models() == []


def test_owner_of_unknown_team(ws: Workspace, churn_model: object) -> None:
    with pytest.raises(NotFoundError, match="team 'nobody' does not exist"):
        ws.registry.register(churn_model, name="churn", owner="nobody")


def test_versions_count_up_and_keep_lineage(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    v1 = _register(
        ws, churn_model, churn_data, metrics={"auc": np.float64(0.8)}, description="first"
    )
    v2 = ws.registry.register(churn_model, name="churn")  # owner known from now on
    assert (v1.version, v2.version) == (1, 2)  # type: ignore[attr-defined]
    got = ws.registry.get_version("churn@1")
    assert got.owner == "risk"
    assert got.metrics == {"auc": 0.8}
    assert got.params["histgradientboostingclassifier__max_iter"] == 20
    assert got.data_digest is not None and len(got.data_digest) == 64
    assert got.artifact_format == "skops" and not got.unsafe_pickle
    assert got.trusted_types == (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    )
    assert got.gate_status == "not_evaluated"
    assert ws.registry.get_version("churn").version == 2
    assert ws.registry.get_model("churn").latest_version == 2


def test_signature_from_reference(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    sig = _register(ws, churn_model, churn_data).signature  # type: ignore[attr-defined]
    assert sig.feature_names == [
        "age",
        "tenure_months",
        "monthly_charges",
        "support_calls",
        "plan",
        "region",
    ]
    assert [f.type for f in sig.features] == [
        "float",
        "float",
        "float",
        "integer",
        "string",
        "string",
    ]
    assert sig.task == "classification" and sig.classes == (0, 1) and sig.target == "churned"


def test_signature_from_feature_names_without_reference(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    v = ws.registry.register(
        LinearRegression().fit(X, [0.0, 1.0, 2.0, 3.0]), name="lin", owner="risk"
    )
    assert v.signature.feature_names == ["a", "b"]
    assert v.signature.task == "regression"
    assert v.profile_digest is None
    with pytest.raises(NotFoundError, match="no reference profile"):
        ws.registry.load_profile("lin@1")


def test_model_without_inputs_known_needs_a_reference(ws: Workspace, team: str) -> None:
    model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), [0, 0, 1, 1])
    with pytest.raises(InvalidInputError, match="pass reference data"):
        ws.registry.register(model, name="m", owner="risk")


def test_reference_columns_must_match_the_model(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    bad = churn_data.drop(columns="plan").assign(customer_id=1)
    with pytest.raises(
        InvalidInputError, match=r"missing plan; not used by the model: customer_id"
    ):
        _register(ws, churn_model, bad)
    with pytest.raises(InvalidInputError, match="target column 'label' is not in the reference"):
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="label"
        )
    assert ws.registry.list_models() == []


def test_reference_file_paths(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame, tmp_path: Path
) -> None:
    churn_data.to_parquet(tmp_path / "train.parquet")
    churn_data.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "empty.parquet").write_bytes(b"")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    a = ws.registry.register(
        churn_model,
        name="churn",
        owner="risk",
        reference=tmp_path / "train.parquet",
        target="churned",
    )
    b = ws.registry.register(
        churn_model, name="churn", reference=tmp_path / "train.csv", target="churned"
    )
    assert a.data_digest != b.data_digest and a.signature == b.signature
    with pytest.raises(NotFoundError, match="does not exist"):
        ws.registry.register(churn_model, name="churn", reference=tmp_path / "nope.parquet")
    with pytest.raises(InvalidInputError, match="is empty"):
        ws.registry.register(churn_model, name="churn", reference=tmp_path / "empty.parquet")
    with pytest.raises(InvalidInputError, match="cannot read"):
        ws.registry.register(churn_model, name="churn", reference=tmp_path / "junk.parquet")
    assert ws.registry.get_model("churn").latest_version == 2


def test_object_without_predict_is_not_a_model(ws: Workspace, team: str) -> None:
    with pytest.raises(InvalidInputError, match="no predict method"):
        ws.registry.register({"weights": [1, 2]}, name="m", owner="risk")


def test_code_commit_inside_a_repo(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run(["git", "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run(
        [
            "git",
            "-C",
            str(tmp_path),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "c",
        ],
        check=True,
    )
    commit = git_commit(tmp_path)
    assert commit is not None and len(commit) == 40
    (tmp_path / "f").write_text("changed")
    assert git_commit(tmp_path) == commit + "+dirty"


# -- profile --------------------------------------------------------------------------------


def test_reference_profile_matches_known_distributions(ws: Workspace, team: str) -> None:
    rng = np.random.default_rng(3)
    n = 50_000
    df = pd.DataFrame(
        {
            "x": rng.normal(10, 2, n),
            "c": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
            "y": rng.integers(0, 2, n),
        }
    )
    df.loc[: n // 10 - 1, "x"] = np.nan  # 10% missing
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    model = make_pipeline(
        make_column_transformer((OrdinalEncoder(), ["c"]), remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=5),
    ).fit(df[["x", "c"]], df["y"])
    ws.registry.register(model, name="m", owner="risk", reference=df, target="y")
    p = ws.registry.load_profile("m")
    x, c = p.features["x"], p.features["c"]
    assert isinstance(x, NumericProfile)
    assert isinstance(c, CategoricalProfile)
    assert p.row_count == n
    assert x.nulls == n // 10
    assert x.quantiles[100] == pytest.approx(10, abs=0.05)  # median
    assert x.std == pytest.approx(2, abs=0.05)
    assert sum(x.bin_counts) == n - n // 10
    assert max(x.bin_counts) / min(x.bin_counts) < 1.01  # quantile bins hold equal shares
    assert x.distinct == n - n // 10 and x.support is None  # continuous: no support kept
    assert c.categories["a"] / n == pytest.approx(0.6, abs=0.01)
    assert c.distinct == 3
    pred = p.prediction
    assert isinstance(pred, ClassificationProfile)
    assert sum(pred.predicted_counts) == n
    assert pred.confidence.mean is not None and 0.5 <= pred.confidence.mean <= 1.0
    assert [sum(cal.counts) for cal in pred.calibration] == [n, n]
    assert pred.target_counts is not None and sum(pred.target_counts) == n
    assert ReferenceProfile.from_bytes(p.to_bytes()) == p  # one round trip, nothing lost


def test_profile_of_a_regressor(ws: Workspace, team: str) -> None:
    X = pd.DataFrame({"a": np.arange(100.0)})
    v = ws.registry.register(
        LinearRegression().fit(X, 2 * X["a"]),
        name="r",
        owner="risk",
        reference=X.assign(t=2 * X["a"]),
        target="t",
    )
    pred = ws.registry.load_profile(v.ref).prediction
    assert isinstance(pred, RegressionProfile)
    assert pred.values.max == pytest.approx(198)
    assert pred.performance is not None
    assert pred.performance.metrics["mae"] == pytest.approx(0, abs=1e-9)


# -- load, aliases, transfer, audit ---------------------------------------------------------


def test_tampered_artifact_is_refused(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    v = _register(ws, churn_model, churn_data)
    path = ws.artifacts.path(v.artifact_digest)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"expected sha256 {v.artifact_digest}"):  # type: ignore[attr-defined]
        ws.registry.load("churn@1")


def test_aliases_move_and_keep_history(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    _register(ws, churn_model, churn_data)
    _register(ws, churn_model, churn_data)
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    ws.registry.set_alias("churn", "candidate", "2")
    ws.deploy.set_production("churn", 2, force=True, reason="set up")
    assert ws.registry.get_model("churn").aliases == {"candidate": 2, "production": 2}
    assert ws.registry.get_version("churn@production").version == 2
    assert ws.registry.get_version("churn@2").aliases == ("candidate", "production")
    ws.registry.delete_alias("churn", "candidate")
    history = [(e.alias, e.previous_version, e.version) for e in ws.registry.alias_history("churn")]
    assert history == [
        ("production", None, 1),
        ("candidate", None, 2),
        ("production", 1, 2),
        ("candidate", 2, None),
    ]
    with pytest.raises(NotFoundError, match=r"no alias 'candidate' \(aliases: production\)"):
        ws.registry.get_version("churn@candidate")


def test_alias_to_missing_version(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    _register(ws, churn_model, churn_data)
    with pytest.raises(
        NotFoundError, match=r"has no version 7 \(latest is 1\); see 'ownloop versions churn'"
    ):
        ws.deploy.set_production("churn", 7, force=True, reason="set up")
    with pytest.raises(InvalidInputError, match="positive whole number"):
        ws.deploy.set_production("churn", "-1", force=True, reason="set up")
    assert ws.registry.alias_history("churn") == []


def test_unknown_model(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="model 'ghost' does not exist"):
        ws.registry.load("ghost@production")


def test_transfer_is_audited(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    _register(ws, churn_model, churn_data)
    ws.registry.add_team("growth")
    assert ws.registry.transfer("churn", "growth").owner == "growth"
    entry = ws.registry.audit_log(model="churn")[0]
    assert (entry.action, entry.actor, entry.before, entry.after) == (
        "model.transfer",
        "tester",
        {"owner": "risk"},
        {"owner": "growth"},
    )
    with pytest.raises(
        ConflictError, match="owned by team 'growth', not 'risk'.*ownloop transfer churn --to risk"
    ):
        ws.registry.register(churn_model, name="churn", owner="risk")


def test_every_state_change_is_audited(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    _register(ws, churn_model, churn_data)
    ws.registry.set_alias("churn", "candidate", 1)
    log = ws.registry.audit_log(model="churn")
    assert [e.action for e in log] == ["alias.set", "version.register", "model.create"]
    assert all(e.actor == "tester" and e.at.tzinfo is not None for e in log)
    assert log[1].after["artifact_digest"] == ws.registry.get_version("churn@1").artifact_digest


def test_entities_have_short_reprs(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    _register(ws, churn_model, churn_data)
    ws.registry.set_alias("churn", "candidate", 1)
    v = ws.registry.get_version("churn@1")
    assert repr(v) == (
        "ModelVersion(name='churn', version=1, format='skops', gate='not_evaluated', "
        "aliases=['candidate'])"
    )
    assert repr(ws.registry.get_model("churn")) == (
        "Model(name='churn', owner='risk', latest_version=1, aliases={'candidate': 1})"
    )
    assert repr(ws.registry.get_team("risk")) == (
        "Team(name='risk', members=['tester'], email='risk@example.com')"
    )
    entry = ws.registry.audit_log(model="churn")[0]
    assert repr(entry).startswith("AuditEntry(at='") and "action='alias.set'" in repr(entry)
    assert max(len(repr(x)) for x in (v, entry)) < 200


def test_audit_log_of_an_unknown_model_is_not_found(ws: Workspace, team: str) -> None:
    with pytest.raises(NotFoundError, match=r"model 'typo' does not exist \(no models"):
        ws.registry.audit_log(model="typo")
