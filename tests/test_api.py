"""The Python surface has one shape: argument order, verdict words, summary, to_frame, reprs,
suites as dicts, and progress reported to whoever installs a reporter."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import ownloop
from ownloop import EvalResult, InvalidInputError, Verdict, Workspace, progress
from ownloop.demo import make_churn_data
from ownloop.evaluation import Evaluations
from ownloop.monitoring import ChunkDrift, ChunkPerformance, DriftReport, MonitorRun, WindowReport
from ownloop.registry import Registry

SUITE: dict[str, Any] = {
    "bootstrap": {"resamples": 200, "seed": 1},
    "min_slice_rows": 50,
    "datasets": {"holdout": {"path": "holdout.parquet", "label": "churned"}},
    "slices": [{"column": "plan"}],
    "checks": [
        {"metric": "accuracy", "at_least": 0.4},
        {"metric": "accuracy", "at_least": 0.99, "slices": False},
    ],
}
YAML = """
bootstrap: {resamples: 200, seed: 1}
min_slice_rows: 50
datasets:
  holdout: {path: holdout.parquet, label: churned}
slices:
  - column: plan
checks:
  - metric: accuracy
    at_least: 0.4
  - metric: accuracy
    at_least: 0.99
    slices: false
"""


@pytest.fixture
def churn(ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame) -> str:
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    return "churn@1"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    make_churn_data(600, seed=5).to_parquet(tmp_path / "holdout.parquet")
    (tmp_path / "suite.yaml").write_text(YAML, encoding="utf-8")
    return tmp_path


@pytest.fixture
def result(ws: Workspace, churn: str, folder: Path) -> EvalResult:
    return ownloop.evaluate(churn, suite=folder / "suite.yaml", workspace=ws)


# -- one argument order -------------------------------------------------------------------------


def _params(fn: Any) -> list[tuple[str, Any]]:
    return [
        (p.name, p.kind)
        for p in inspect.signature(fn).parameters.values()
        if p.name not in ("self", "workspace")
    ]


@pytest.mark.parametrize(
    ("top", "method"),
    [
        (ownloop.register, Registry.register),
        (ownloop.load, Registry.load),
        (ownloop.add_team, Registry.add_team),
        (ownloop.evaluate, Evaluations.evaluate),
    ],
    ids=["register", "load", "add_team", "evaluate"],
)
def test_top_level_functions_take_the_arguments_of_the_methods_they_call(
    top: Any, method: Any
) -> None:
    assert _params(top) == _params(method)
    first = next(iter(inspect.signature(top).parameters.values()))
    assert first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD  # the thing acted on comes first


# -- one vocabulary -----------------------------------------------------------------------------


def test_verdict_check_status_and_gate_status_use_the_same_words(
    result: EvalResult, ws: Workspace, churn: str
) -> None:
    assert result.verdict == "failed"  # the 0.99 check cannot pass
    assert result.verdict is Verdict.FAIL
    assert result.gate_status == result.verdict == ws.registry.get_version(churn).gate_status
    assert {c.status for c in result.checks} <= set(Verdict)
    assert ws.evaluations.latest_verdict(churn) == result.verdict


def test_the_older_spelling_still_compares_equal_and_reads_back() -> None:
    assert Verdict.PASS == "PASS"
    assert Verdict.PASS != "FAIL"
    assert "FAIL" == Verdict.FAIL  # noqa: SIM300  (the reflected comparison on purpose)
    assert Verdict.parse("INCONCLUSIVE") is Verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        Verdict.parse("maybe")


def test_a_report_stored_with_the_older_spelling_reads_back_as_members(
    result: EvalResult,
) -> None:
    old = result.to_dict()
    old["verdict"] = "FAIL"
    for check in old["checks"]:
        check["status"] = Verdict.parse(check["status"]).name  # 'PASS', 'FAIL', ...
    back = EvalResult.from_dict(old)
    assert back.verdict is Verdict.FAIL
    assert [c.status for c in back.checks] == [c.status for c in result.checks]
    assert back.counts()["PASS"] == back.counts()[Verdict.PASS]


# -- one kind of summary, frames, reprs -----------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [EvalResult, DriftReport, WindowReport, ChunkDrift, ChunkPerformance]
)
def test_summary_is_a_property_on_every_result(cls: type) -> None:
    assert isinstance(inspect.getattr_static(cls, "summary"), property)


def test_chunk_summaries_read_as_text(churn_data: pd.DataFrame) -> None:
    valid = churn_data.assign(p=0.3)
    current = make_churn_data(200, seed=8).assign(p=0.3)
    drifted = ownloop.drift(valid[["age", "plan"]], current[["age", "plan"]], chunk_size=100)
    assert drifted[1].summary.startswith("chunk 1 (rows 100 to 199): ")
    est = ownloop.estimate_performance(valid, current, y_pred_proba="p", y_true="churned")
    assert est[0].summary.startswith("chunk 0 (rows 0 to 199): accuracy 0.")


def test_monitor_run_summary_is_read_the_same_way() -> None:
    assert "summary" in MonitorRun.__dataclass_fields__  # an attribute, like the properties


def test_eval_summary_reads_as_text(result: EvalResult) -> None:
    assert result.summary.startswith("FAIL: churn@1: ")


def test_eval_result_to_frame_has_one_row_per_check(result: EvalResult) -> None:
    frame = result.to_frame()
    assert len(frame) == len(result.checks)
    assert list(frame["name"]) == [c.name for c in result.checks]
    assert list(frame["status"]) == [str(c.status) for c in result.checks]
    first = result.checks[0]
    assert first.interval is not None
    assert frame.loc[0, ["estimate", "lower", "upper", "bound", "n"]].tolist() == [
        first.estimate,
        first.interval[0],
        first.interval[1],
        first.bound,
        first.n,
    ]


def test_reprs_are_short(result: EvalResult) -> None:
    text = repr(result)
    assert len(text) < 200, text
    assert "churn@1" in text and "'failed'" in text
    for check in result.checks:
        assert len(repr(check)) < 100 + len(check.message) + len(check.name), repr(check)


# -- suites as dicts ------------------------------------------------------------------------------


def test_a_dict_suite_runs_like_the_same_yaml_file(
    ws: Workspace, churn: str, folder: Path, result: EvalResult
) -> None:
    suite = {
        **SUITE,
        "datasets": {"holdout": {"path": str(folder / "holdout.parquet"), "label": "churned"}},
    }
    top = ownloop.evaluate(churn, suite=suite, store=False, workspace=ws)
    method = ws.evaluations.evaluate(churn, suite=suite, store=False)
    for other in (top, method):
        assert other.suite_digest == result.suite_digest
        assert [(c.name, c.status) for c in other.checks] == [
            (c.name, c.status) for c in result.checks
        ]


def test_a_dict_suite_with_a_typo_names_the_key(ws: Workspace, churn: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown key.*levle"):
        ownloop.evaluate(churn, suite={**SUITE, "levle": 0.9}, store=False, workspace=ws)


def test_a_suite_that_is_no_mapping_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        ownloop.Suite.from_dict([1, 2])  # type: ignore[arg-type]


# -- progress ---------------------------------------------------------------------------------------


@dataclass
class Recorded:
    description: str
    total: float | None
    done: float = 0
    finished: int = 0

    def advance(self, amount: float = 1) -> None:
        self.done += amount

    def finish(self) -> None:
        self.finished += 1


@dataclass
class Recorder:
    tasks: list[Recorded] = field(default_factory=list)

    def start(self, description: str, total: float | None) -> Recorded:
        self.tasks.append(Recorded(description, total))
        return self.tasks[-1]

    def check_all_finished(self) -> None:
        assert self.tasks, "no task was reported"
        for t in self.tasks:
            assert t.finished == 1, t
            assert t.total is None or t.done == t.total, t


def test_nothing_is_reported_without_a_reporter() -> None:
    assert progress.current() is None
    with progress.task("quiet", total=2) as t:
        t.advance(2)


def test_register_reports_its_stages(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> None:
    with progress.reporting(Recorder()) as rec:
        ws.registry.register(
            churn_model, name="churn", owner=team, reference=churn_data, target="churned"
        )
    assert isinstance(rec, Recorder)
    rec.check_all_finished()
    assert any("profiling" in t.description for t in rec.tasks)
    assert any("artifact" in t.description for t in rec.tasks)


def test_evaluate_reports_scoring_and_checks(ws: Workspace, churn: str, folder: Path) -> None:
    with progress.reporting(Recorder()) as rec:
        ownloop.evaluate(churn, suite=folder / "suite.yaml", store=False, workspace=ws)
    assert isinstance(rec, Recorder)
    rec.check_all_finished()
    assert {"scoring datasets", "checks", "judging checks"} <= {t.description for t in rec.tasks}


def test_drift_and_estimates_report_their_chunks(churn_data: pd.DataFrame) -> None:
    current = make_churn_data(900, seed=8).drop(columns="churned")
    with progress.reporting(Recorder()) as rec:
        ownloop.drift(churn_data.drop(columns="churned"), current, chunk_size=300)
    assert isinstance(rec, Recorder)
    rec.check_all_finished()
    assert [(t.description, t.total) for t in rec.tasks] == [("drift chunks", 3)]
