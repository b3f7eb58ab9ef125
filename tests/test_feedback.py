"""export-evalset on a real prediction log and store (SQLite and PostgreSQL): rows and flags
against simulated labels of known truth, sampler weights carried, nothing written on refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ownloop import AlreadyExistsError, InvalidInputError, PermissionDeniedError, Workspace, predlog
from ownloop.access import Actor
from ownloop.demo import log_predictions, make_churn_data
from ownloop.evaluation import load_suite
from ownloop.labels import label_rows, labels_table, record_labels
from ownloop.monitoring import write_sample
from ownloop.predlog import label_key

# Labels are matched to the log by the time in their prediction ids, which ``new_ids`` mints
# now: the simulated traffic starts at this minute (and runs into the next hours).
T0 = datetime.now(UTC).replace(second=0, microsecond=0)
END = T0 + timedelta(days=1)


def post_labels(ws: Workspace, rows: list[dict[str, Any]], model: str = "churn") -> None:
    """Labels through the real ingestion path (checked against the log, audited, published)."""
    table = labels_table(rows, at=ws.clock.now(), source="test")
    record_labels(ws.registry, ws.config.predictions_dir, model, table)


@pytest.fixture
def served(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> tuple[Workspace, pd.DataFrame, pa.Table]:
    """churn@1 answered 600 rows at T0 (one every 10 s); the true outcomes are known."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    frame = make_churn_data(600, seed=41)
    logged = log_predictions(
        ws, "churn@1", frame.drop(columns="churned"), T0, step=timedelta(seconds=10), seed=1
    )
    return ws, frame, logged


@pytest.fixture
def evals(tmp_path: Path) -> Path:
    """An empty folder for the exported files (the workspace lives beside it)."""
    folder = tmp_path / "evals"
    folder.mkdir()
    return folder


def truth_rows(frame: pd.DataFrame, logged: pa.Table, idx: np.ndarray) -> list[dict[str, Any]]:
    ids = logged["prediction_id"].to_pylist()
    return [{"prediction_id": ids[i], "label": int(frame["churned"].iloc[i])} for i in idx]


def export(ws: Workspace, out: Path, **kw: Any) -> Any:
    return ws.feedback.export_evalset("churn", out, since=timedelta(days=1), end=END, **kw)


def test_rows_and_flags_match_the_known_truth(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    idx = np.sort(np.random.default_rng(5).choice(600, 250, replace=False))
    # a wrong label first, then the true one: the latest label of an id wins
    post_labels(ws, [{**r, "label": 1 - r["label"]} for r in truth_rows(frame, logged, idx[:40])])
    post_labels(ws, truth_rows(frame, logged, idx))
    done = export(ws, evals / "prod.parquet")
    got = pd.read_parquet(evals / "prod.parquet")

    pred = np.array(logged["prediction"].to_pylist())[idx]
    conf = logged["confidence"].to_numpy()[idx]
    truth = frame["churned"].to_numpy()[idx]
    assert done.rows == len(got) == 250
    assert done.predictions == 600
    assert done.versions == {1: 250}
    assert got["prediction_id"].tolist() == [logged["prediction_id"][int(i)].as_py() for i in idx]
    assert got["churned"].tolist() == truth.tolist()  # the model's classes, as ints
    assert got["misclassified"].tolist() == [
        label_key(t) != p for t, p in zip(truth, pred, strict=True)
    ]
    assert done.misclassified == int(got["misclassified"].sum()) > 0
    assert got["low_confidence"].tolist() == (conf < 0.6).tolist()
    assert done.low_confidence == int((conf < 0.6).sum()) > 0
    features = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]
    assert list(got.columns[:7]) == [*features, "churned"]
    expected = frame.iloc[idx][features].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[features], expected, check_dtype=False)
    assert got["weight"].tolist() == [1.0] * 250  # labelled without the sampler
    assert done.weighted == 0
    assert ws.feedback.labelled_count("churn", since=timedelta(days=1), end=END) == 250


def test_only_the_window_and_the_answering_arms_count(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(0, 600, 2)))  # 300 labels
    # rows 0-359 lie in [T0, T0+1h); a window ending there leaves the others out
    early = ws.feedback.export_evalset(
        "churn", evals / "early.parquet", since=timedelta(hours=1), end=T0 + timedelta(hours=1)
    )
    assert (early.rows, early.predictions) == (180, 360)
    assert ws.feedback.labelled_count("churn", since=timedelta(hours=1), end=T0) == 0
    # the same inputs answered by a shadow arm: never returned, so left out unless asked for
    shadow = logged.slice(0, 100)
    shadow = shadow.set_column(
        shadow.schema.get_field_index("arm"), "arm", pa.array(["shadow"] * 100)
    )
    shadow = shadow.set_column(0, "prediction_id", pa.array(predlog.new_ids(100)))
    predlog.write_segment(ws.config.predictions_dir, "churn", shadow)
    post_labels(ws, [{"prediction_id": i, "label": 0} for i in shadow["prediction_id"].to_pylist()])
    assert export(ws, evals / "all.parquet").rows == 300
    only = export(ws, evals / "shadow.parquet", arm="shadow")
    assert (only.rows, only.arms) == (100, ("shadow",))
    assert set(pd.read_parquet(evals / "shadow.parquet")["arm"]) == {"shadow"}


def test_weights_from_the_quality_sampler_are_carried(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    sample = ws.monitor.sample("churn", 60, since=timedelta(days=1), end=END, seed=7)
    queue = write_sample(sample, evals / "review.csv")
    filled = pd.read_csv(queue)
    by_id = dict(zip(logged["prediction_id"].to_pylist(), frame["churned"], strict=True))
    filled["label"] = filled["prediction_id"].map(by_id)
    filled[["prediction_id", "label", "weight"]].to_csv(evals / "labels.csv", index=False)
    post_labels(ws, [dict(r) for r in label_rows(evals / "labels.csv")])
    sampled = set(filled["prediction_id"])
    others = [i for i in range(600) if logged["prediction_id"][i].as_py() not in sampled][:40]
    post_labels(ws, truth_rows(frame, logged, np.array(others)))  # labelled without sampling

    done = export(ws, evals / "prod.parquet")
    got = pd.read_parquet(evals / "prod.parquet").set_index("prediction_id")
    assert done.rows == 100 and done.weighted == 60
    want = filled.set_index("prediction_id")["weight"]
    assert got.loc[want.index, "weight"].tolist() == pytest.approx(want.tolist())
    assert set(want) != {1.0}  # the sampler's inverse inclusion probabilities, not ones
    assert (got.drop(index=want.index)["weight"] == 1.0).all()


def test_the_suite_beside_the_data_is_accepted_by_eval(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(300)))
    done = export(ws, evals / "prod.csv")
    assert done.format == "csv" and done.suite_path == evals / "prod.yaml"
    suite = load_suite(done.suite_path)
    spec = suite.datasets["production"]
    assert (spec.path, spec.label, suite.baseline) == (evals / "prod.csv", "churned", "1")
    result = ws.evaluations.evaluate("churn@1", done.suite_path, store=False)
    assert result.checks[0].n == 300


def test_no_labelled_rows_is_an_error_that_writes_nothing(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    with pytest.raises(InvalidInputError, match=r"no labelled predictions of 'churn'") as exc:
        export(ws, evals / "prod.parquet")
    assert "600 answered prediction(s)" in exc.value.message
    assert "POST /models/churn/labels" in exc.value.message
    assert "widen --since" in exc.value.message
    post_labels(ws, truth_rows(frame, logged, np.arange(10)))
    with pytest.raises(InvalidInputError, match=r"0 answered prediction\(s\) and the model has 10"):
        ws.feedback.export_evalset(
            "churn", evals / "prod.parquet", since=timedelta(hours=1), end=T0
        )
    assert list(evals.iterdir()) == []  # neither the file, the suite nor a hidden temp file


def test_an_existing_file_is_kept_unless_forced(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(50)))
    out = evals / "prod.parquet"
    out.write_bytes(b"keep me")
    with pytest.raises(AlreadyExistsError, match=r"prod.parquet already exists; pass --force"):
        export(ws, out)
    assert out.read_bytes() == b"keep me" and not (evals / "prod.yaml").exists()
    out.unlink()
    (evals / "prod.yaml").write_text("mine")
    with pytest.raises(AlreadyExistsError, match=r"--suite-out .*prod.yaml already exists"):
        export(ws, out)
    assert not out.exists()
    done = export(ws, out, force=True)
    assert done.rows == 50 and len(pd.read_parquet(out)) == 50
    assert load_suite(evals / "prod.yaml").datasets["production"].path == out
    assert sorted(p.name for p in evals.iterdir()) == ["prod.parquet", "prod.yaml"]


def test_a_failed_write_leaves_no_file(
    served: tuple[Workspace, pd.DataFrame, pa.Table],
    evals: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(50)))

    written: list[str] = []

    def disk_full(table: pa.Table, where: str, **kw: Any) -> None:
        written.append(Path(where).name)
        Path(where).write_bytes(b"PAR1 half a file")  # torn, as a full disk leaves it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ownloop.feedback.pq.write_table", disk_full)
    with pytest.raises(InvalidInputError, match=r"cannot write .*No space left on device"):
        export(ws, evals / "prod.parquet")
    assert written[0].startswith(".prod.parquet.tmp-")  # never under the name a reader opens
    assert list(evals.iterdir()) == []  # and the torn temp file is gone
    assert [a.action for a in ws.registry.audit_log("churn")].count("evalset.export") == 0


@pytest.mark.parametrize(
    ("out", "match"),
    [
        ("prod.json", r"write the eval set as .parquet or .csv"),
        ("nosuch/prod.parquet", r"folder .*nosuch does not exist; create it"),
    ],
)
def test_bad_paths_are_refused(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path, out: str, match: str
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(50)))
    with pytest.raises(InvalidInputError, match=match):
        export(ws, evals / out)
    with pytest.raises(InvalidInputError, match=r"name the suite file .yaml"):
        export(ws, evals / "prod.parquet", suite_out=evals / "suite.txt")
    assert list(evals.iterdir()) == []


def test_the_export_needs_the_owning_team_and_is_audited(
    served: tuple[Workspace, pd.DataFrame, pa.Table], evals: Path
) -> None:
    ws, frame, logged = served
    post_labels(ws, truth_rows(frame, logged, np.arange(50)))
    with (
        ws.acting_as(Actor("mallory", teams=frozenset({"other"}))),
        pytest.raises(PermissionDeniedError, match=r"may not evalset.export: it needs team 'risk'"),
    ):
        export(ws, evals / "prod.parquet")
    with ws.acting_as(Actor("tess", teams=frozenset({"risk"}))):
        export(ws, evals / "prod.parquet")
    row = next(a for a in ws.registry.audit_log("churn") if a.action == "evalset.export")
    assert row.actor == "tess"
    assert row.after["rows"] == 50 and row.after["path"] == str(evals / "prod.parquet")


def test_a_regressor_gets_an_absolute_error_column_and_an_mae_gate(
    ws: Workspace, team: str, evals: Path
) -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = make_churn_data(2000, seed=31).drop(columns=["churned", "plan", "region"])
    reg = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(
        data.drop(columns="monthly_charges"), data["monthly_charges"]
    )
    ws.registry.register(reg, name="charges", owner=team, reference=data, target="monthly_charges")
    frame = make_churn_data(200, seed=32)
    logged = log_predictions(ws, "charges@1", frame, T0, step=timedelta(seconds=1))
    ids = logged["prediction_id"].to_pylist()
    y = frame["monthly_charges"].to_numpy()
    post_labels(
        ws,
        [{"prediction_id": i, "label": float(v)} for i, v in zip(ids, y, strict=True)],
        "charges",
    )
    done = ws.feedback.export_evalset(
        "charges", evals / "charges.parquet", since=timedelta(days=1), end=END
    )
    got = pd.read_parquet(evals / "charges.parquet")
    err = np.abs(y - logged["prediction_value"].to_numpy())
    assert got["abs_error"].to_numpy() == pytest.approx(err)
    assert done.mean_abs_error == pytest.approx(err.mean())
    assert (done.misclassified, done.low_confidence) == (None, None)
    assert "misclassified" not in got.columns and "monthly_charges" in got.columns
    check = load_suite(done.suite_path).checks[0]
    assert (check.type, check.metric) == ("non_inferiority", "mae")
    assert ws.evaluations.evaluate("charges@1", done.suite_path, store=False).passed
