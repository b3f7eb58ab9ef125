"""Evaluation gates end to end: suites on registered models, stored verdicts, reports, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import ownloop
from ownloop import Config, EvalResult, InvalidInputError, NotFoundError, Workspace
from ownloop.cli import cli
from ownloop.demo import make_churn_data, make_model
from ownloop.evaluation import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    to_html,
    to_json,
    to_junit,
    to_markdown,
)
from ownloop.store import tables as t

OWNLOOP = str(Path(sys.executable).parent / "ownloop")


def env_for(config: Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OWNLOOP_")}
    env.update(
        OWNLOOP_HOME=str(config.home), OWNLOOP_DB_URL=config.db_url, OWNLOOP_USER=config.user
    )
    return env


SUITE = """
level: 0.95
min_slice_rows: 200
bootstrap: {{resamples: 300, seed: 1}}
baseline: production
datasets:
  holdout: {{path: {data}, label: churned}}
slices:
  - column: plan
  - column: tenure_months
    bins: [0, 12, .inf]
checks:
{checks}
"""
PASSING = """
  - metric: accuracy
    at_least: 0.45
  - metric: roc_auc
    at_least: 0.5
  - type: non_inferiority
    metric: accuracy
    margin: 0.1
    slices: false
"""
EVERY_TYPE = """
  - metric: accuracy
    at_least: 0.6
  - metric: log_loss
    at_most: 0.7
    slices: false
  - type: non_inferiority
    metric: roc_auc
    margin: 0.05
  - type: superiority
    metric: accuracy
    margin: 0.2
    slices: false
  - type: pass_rate
    name: obvious cases
    at_least: 0.5
    cases:
      - {age: 30, tenure_months: 1, monthly_charges: 120, support_calls: 7, plan: basic, region: north, expected: 1}
      - {age: 60, tenure_months: 90, monthly_charges: 30, support_calls: 0, plan: enterprise, region: south, expected: 0}
      - {age: 60, tenure_months: 90, monthly_charges: 30, support_calls: 0, plan: enterprise, region: south, expected: 1}
  - type: invariance
    feature: region
    values: [north, south, east, west]
    at_most: 0.5
  - type: directional
    feature: support_calls
    delta: 1
    at_most: 0.5
  - type: latency
    at_most: 10000
    rows: 40
  - type: model_size
    at_most: 0.001
"""


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any, pd.DataFrame]:
    train = make_churn_data(2000, seed=21)
    X, y = train.drop(columns="churned"), train["churned"]
    return make_model(max_iter=30).fit(X, y), make_model(max_iter=10, max_depth=2).fit(X, y), train


@pytest.fixture
def churn(ws: Workspace, team: str, models: tuple[Any, Any, pd.DataFrame], tmp_path: Path) -> Path:
    """churn@1 = production, churn@2 = candidate; a held-out file; returns the folder."""
    good, weak, train = models
    for m in (good, weak):
        ws.registry.register(m, name="churn", owner=team, reference=train, target="churned")
    ws.deploy.set_production("churn", 1, force=True, reason="set up")
    make_churn_data(1200, seed=22).to_parquet(tmp_path / "holdout.parquet")
    return tmp_path


def _suite(
    folder: Path, checks: str, name: str = "suite.yaml", data: str = "holdout.parquet"
) -> Path:
    path = folder / name
    path.write_text(SUITE.format(data=data, checks=checks))
    return path


def _stored(ws: Workspace) -> int:
    with ws.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t.evaluations)).scalar_one())


# -- library ---------------------------------------------------------------------------------------


def test_every_check_type_runs_and_the_verdict_is_stored(ws: Workspace, churn: Path) -> None:
    result = ws.evaluations.evaluate("churn@2", _suite(churn, EVERY_TYPE))
    by_type: dict[str, set[str]] = {}
    for c in result.checks:
        by_type.setdefault(c.type, set()).add(c.status)
        assert c.message
        assert c.method
        assert c.n >= 1
    assert set(by_type) == {
        "metric", "non_inferiority", "superiority", "pass_rate", "invariance",
        "directional", "latency", "model_size",
    }  # fmt: skip
    assert by_type["model_size"] == {FAIL}  # a 1 kB budget
    assert by_type["latency"] == {PASS}  # a 10 s budget
    assert by_type["superiority"] == {FAIL}  # 20 points better is not what the weaker model is
    assert result.verdict == FAIL
    assert result.gate_status == "failed"
    assert ws.registry.get_version("churn@2").gate_status == "failed"
    stored = ws.evaluations.latest("churn@2")
    assert stored is not None
    assert stored.id == result.evaluation_id
    assert stored.verdict == "failed"
    assert stored.baseline == "churn@1 (production)"
    assert stored.suite_digest == result.suite_digest
    assert set(stored.dataset_digests) == {"holdout"}
    assert stored.result.checks == result.checks
    audit = ws.registry.audit_log(model="churn", limit=1)[0]
    assert (audit.action, audit.target) == ("version.evaluate", "churn@2")
    assert audit.before == {"gate_status": "not_evaluated"}
    assert audit.after["gate_status"] == "failed"
    assert audit.after["evaluation"] == result.evaluation_id


def test_pass_rate_lists_the_failing_cases(ws: Workspace, churn: Path) -> None:
    result = ws.evaluations.evaluate("churn@1", _suite(churn, EVERY_TYPE), store=False)
    (cases,) = [c for c in result.checks if c.type == "pass_rate"]
    assert cases.n == 3
    assert cases.details["failing_cases"] >= 1
    assert {"expected", "got", "plan"} <= set(cases.details["failing"][0])


def test_a_passing_gate_then_a_failing_one(ws: Workspace, churn: Path) -> None:
    passed = ws.evaluations.evaluate("churn@1", _suite(churn, PASSING), baseline="1")
    assert passed.verdict == PASS, [(c.name, c.message) for c in passed.checks if c.status != PASS]
    assert ws.evaluations.gate_passed("churn@1")
    assert ws.evaluations.gate_passed("churn@production")
    assert ws.evaluations.latest_verdict("churn@1") == "passed"
    failing = _suite(churn, "  - metric: accuracy\n    at_least: 0.99\n", name="strict.yaml")
    assert ws.evaluations.evaluate("churn@1", failing).verdict == FAIL
    assert not ws.evaluations.gate_passed("churn@1")
    assert [e.verdict for e in ws.evaluations.history("churn@1")] == ["failed", "passed"]
    assert ws.evaluations.latest("churn@2") is None
    assert ws.evaluations.latest_verdict("churn@2") == "not_evaluated"


def test_slices_judge_each_value_and_range_with_holm(ws: Workspace, churn: Path) -> None:
    result = ws.evaluations.evaluate("churn@1", _suite(churn, PASSING), store=False)
    slices = {c.slice: c for c in result.checks if c.type == "metric" and c.metric == "accuracy"}
    assert set(slices) == {
        None,
        "plan=basic",
        "plan=enterprise",
        "plan=pro",
        "tenure_months in [0, 12)",
        "tenure_months in [12, inf)",
    }
    small = [c for c in slices.values() if c.status == SKIPPED]
    assert small
    assert all("too small to judge" in c.message for c in small)
    assert all(c.n < 200 for c in small)
    judged = [c for c in slices.values() if c.slice and c.status != SKIPPED]
    assert judged
    assert all("Holm" in c.details.get("multiple_comparisons", "") for c in judged)


def test_twenty_rows_give_inconclusive_and_it_is_stored(ws: Workspace, churn: Path) -> None:
    make_churn_data(20, seed=5).to_parquet(churn / "tiny.parquet")
    suite = _suite(
        churn, "  - metric: accuracy\n    at_least: 0.5\n    slices: false\n", data="tiny.parquet"
    )
    result = ws.evaluations.evaluate("churn@1", suite)
    assert [c.status for c in result.checks] == [INCONCLUSIVE]
    assert result.checks[0].estimate is not None
    assert result.checks[0].estimate >= 0.5
    assert ws.registry.get_version("churn@1").gate_status == "inconclusive"
    assert not ws.evaluations.gate_passed("churn@1")


def test_default_suite_is_non_inferiority_against_production(ws: Workspace, churn: Path) -> None:
    result = ws.evaluations.evaluate("churn@2", data=churn / "holdout.parquet", store=False)
    assert result.notes[0].startswith(
        "no suite given: default suite = non-inferiority against production"
    )
    assert {c.metric for c in result.checks} == {"accuracy", "roc_auc"}
    assert result.baseline_ref == "churn@1 (production)"


def test_top_level_evaluate_returns_a_typed_result(
    config: Config, churn: Path, ws: Workspace
) -> None:
    result = ownloop.evaluate(
        "churn@1", suite=_suite(churn, PASSING), baseline="production", workspace=ws
    )
    assert isinstance(result, EvalResult)
    assert result.passed
    assert EvalResult.from_dict(json.loads(to_json(result))).checks == result.checks


def test_nan_policy_drop_applies_and_says_so(ws: Workspace, churn: Path) -> None:
    data = make_churn_data(600, seed=8)
    data.loc[:9, "age"] = np.nan
    data.to_parquet(churn / "gappy.parquet")
    path = churn / "s.yaml"
    path.write_text(
        "datasets:\n  d: {path: gappy.parquet, label: churned, nan_policy: drop}\n"
        "checks:\n  - metric: accuracy\n    at_least: 0.5\n"
    )
    result = ws.evaluations.evaluate("churn@1", path, store=False)
    assert result.dataset_rows["d"] == 590
    assert "dropped 10 rows with missing values (age: 10 rows)" in result.notes[0]


# -- reports ---------------------------------------------------------------------------------------


def test_reports_in_every_format(ws: Workspace, churn: Path) -> None:
    result = ws.evaluations.evaluate("churn@2", _suite(churn, EVERY_TYPE), store=False)
    root = ET.fromstring(to_junit(result))
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == len(result.checks)
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == result.counts()[FAIL]
    assert failures[0].find("failure").get("message")  # type: ignore[union-attr]
    assert len([c for c in cases if c.find("skipped") is not None]) == result.counts()[SKIPPED]
    md = to_markdown(result)
    assert md.startswith("### ownloop gate: ❌ FAIL — `churn@2` vs `churn@1 (production)`")
    assert "| check | status | candidate | baseline | bound | method | n |" in md
    assert "failing cases of obvious cases" in md
    data = json.loads(to_json(result))
    assert data["verdict"] == FAIL
    assert len(data["checks"]) == len(result.checks)
    html = to_html(result)
    assert (
        html.count("<svg") >= len(result.checks) // 2 + 3
    )  # interval charts, 2 confusion, calibration
    assert "calibration" in html
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        ET.fromstring(svg)  # every drawing is well-formed markup
    assert "confusion matrix, candidate" in html
    assert "http://" not in html
    assert "https://" not in html
    assert "<script" not in html


# -- bad input: clear error, nothing stored ---------------------------------------------------------

BAD_INPUTS = {
    "yaml syntax": (
        "datasets:\n  d: {path: holdout.parquet\nchecks: []\n",
        r"not valid YAML at line 3",
    ),
    "unknown metric": (
        "datasets:\n  d: {path: holdout.parquet, label: churned}\nchecks:\n  - metric: acuracy\n    at_least: 0.5\n",
        r"line 4: unknown metric 'acuracy'; did you mean 'accuracy'\? known metrics: classifiers accuracy, balanced_accuracy",
    ),
    "no label column": (
        "datasets:\n  d: {path: holdout.parquet, label: left}\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"dataset 'd' \(.*holdout.parquet\) has no label column 'left' \(columns: age, ",
    ),
    "no target column": (
        "datasets:\n  d: nolabel.parquet\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"dataset 'd' has no label column \(the model's target is 'churned'\); add that column or set 'label: COLUMN'",
    ),
    "unseen labels": (
        "datasets:\n  d: {path: odd_labels.parquet, label: churned}\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"label column 'churned' has values the model never saw: 2, 7 \(the model's classes: 0, 1\)",
    ),
    "missing baseline": (
        "baseline: champion\ndatasets:\n  d: {path: holdout.parquet, label: churned}\nchecks:\n  - type: non_inferiority\n    metric: accuracy\n",
        r"baseline model 'churn' has no alias 'champion' \(aliases: production\)",
    ),
    "NaN in features": (
        "datasets:\n  d: {path: gappy.parquet, label: churned}\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"has missing values \(age: 3 rows, plan: 2 rows\); set 'nan_policy: drop'",
    ),
    "empty dataset": (
        "datasets:\n  d: {path: empty.parquet, label: churned}\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"dataset 'd' \(.*empty.parquet\) has no rows",
    ),
    "regression metric": (
        "datasets:\n  d: {path: holdout.parquet, label: churned}\nchecks:\n  - metric: rmse\n    at_most: 0.5\n",
        r"metric 'rmse' is for regression models but this model is a classifier; use one of: accuracy",
    ),
    "slice column missing": (
        "datasets:\n  d: {path: holdout.parquet, label: churned}\nslices: [segment]\nchecks:\n  - metric: accuracy\n    at_least: 0.5\n",
        r"slice column 'segment' is not in dataset 'd' \(columns: age, ",
    ),
    "comparison without baseline": (
        "datasets:\n  d: {path: holdout.parquet, label: churned}\nchecks:\n  - type: superiority\n    metric: roc_auc\n",
        r"compares against a baseline, but none was given: pass --baseline production",
    ),
}


def _bad_files(folder: Path) -> None:
    base = make_churn_data(200, seed=9)
    odd = base.copy()
    odd.loc[0, "churned"], odd.loc[1, "churned"] = 2, 7
    odd.to_parquet(folder / "odd_labels.parquet")
    gappy = base.copy()
    gappy.loc[:2, "age"] = np.nan
    gappy.loc[5:6, "plan"] = None
    gappy.to_parquet(folder / "gappy.parquet")
    base.head(0).to_parquet(folder / "empty.parquet")
    base.drop(columns="churned").to_parquet(folder / "nolabel.parquet")


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_exit_2_with_one_line_and_nothing_stored(
    ws: Workspace, config: Config, churn: Path, case: str
) -> None:
    text, pattern = BAD_INPUTS[case]
    _bad_files(churn)
    (churn / "bad.yaml").write_text(text)
    report = churn / "out" / "eval.json"
    run = CliRunner().invoke(
        cli,
        ["eval", "churn@2", "--suite", str(churn / "bad.yaml"), "--json", str(report)],
        env=env_for(config),
    )
    assert run.exit_code == 2, run.output
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert _stored(ws) == 0
    assert ws.registry.get_version("churn@2").gate_status == "not_evaluated"
    assert not report.exists()


def test_library_raises_typed_errors(ws: Workspace, churn: Path) -> None:
    with pytest.raises(NotFoundError, match=r"suite file .* does not exist"):
        ws.evaluations.evaluate("churn@2", churn / "nope.yaml")
    with pytest.raises(
        InvalidInputError, match="no suite given for churn@2: pass --suite FILE, or --data FILE"
    ):
        ws.evaluations.evaluate("churn@2")
    with pytest.raises(NotFoundError, match="model 'churn' has no version 9"):
        ws.evaluations.evaluate("churn@9", data=churn / "holdout.parquet")
    assert _stored(ws) == 0


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_exit_codes_reports_and_versions_listing(
    config: Config, churn: Path, ws: Workspace
) -> None:
    env = env_for(config)
    out = churn / "reports"
    args = [
        "--junit",
        str(out / "e.xml"),
        "--markdown",
        str(out / "e.md"),
        "--html",
        str(out / "e.html"),
        "--json",
        str(out / "e.json"),
    ]
    ok = CliRunner().invoke(
        cli, ["eval", "churn@1", "--suite", str(_suite(churn, PASSING)), *args], env=env
    )
    assert ok.exit_code == 0, ok.output
    assert "PASS: churn@1 vs churn@1 (production)" in ok.output
    assert {p.name for p in out.iterdir()} == {"e.xml", "e.md", "e.html", "e.json"}
    failed = CliRunner().invoke(
        cli,
        ["eval", "churn@2", "--suite", str(_suite(churn, EVERY_TYPE)), "--baseline", "production"],
        env=env,
    )
    assert failed.exit_code == 1, failed.output
    assert "FAIL: churn@2 vs churn@1 (production)" in failed.output
    listing = CliRunner().invoke(cli, ["versions", "churn", "--json"], env=env)
    assert [v["gate_status"] for v in json.loads(listing.output)] == ["passed", "failed"]


def test_cli_in_a_real_process(config: Config, churn: Path, ws: Workspace) -> None:
    suite = _suite(churn, "  - metric: accuracy\n    at_least: 0.99\n    slices: false\n")
    proc = subprocess.run(
        [OWNLOOP, "eval", "churn@1", "--suite", str(suite)],
        env=env_for(config), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "FAIL: churn@1" in proc.stdout
    usage = subprocess.run(
        [OWNLOOP, "eval"],
        env=env_for(config), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert usage.returncode == 2


# -- regressors, range expectations, numeric perturbations -------------------------------------


def _house_prices(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    size = rng.uniform(40, 200, n)
    rooms = rng.integers(1, 6, n)
    price = 1000 + 12 * size + 30 * rooms + rng.normal(0, 60, n)
    return pd.DataFrame({"size": size, "rooms": rooms, "price": price})


def test_regressor_gate_with_ranges_and_numeric_perturbations(
    ws: Workspace, team: str, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression

    train = _house_prices(1500, seed=1)
    X, y = train[["size", "rooms"]], train["price"]
    ws.registry.register(
        LinearRegression().fit(X, y), name="price", owner=team, reference=train, target="price"
    )
    ws.registry.register(
        LinearRegression().fit(X[["size", "rooms"]].assign(rooms=0), y),
        name="price",
        owner=team,
        reference=train,
        target="price",
    )
    ws.deploy.set_production("price", 1, force=True, reason="set up")
    _house_prices(800, seed=2).to_csv(tmp_path / "holdout.csv", index=False)
    pd.DataFrame(
        {
            "size": [50.0, 150.0, 100.0],
            "rooms": [1, 4, 2],
            "expected_min": [1500, 2800, 9000],
            "expected_max": [1800, 3100, 9999],
        }
    ).to_csv(tmp_path / "cases.csv", index=False)
    suite = tmp_path / "price.yaml"
    suite.write_text(
        "baseline: production\nbootstrap: {resamples: 300}\n"
        "datasets:\n  holdout: {path: holdout.csv}\n  cases: {path: cases.csv}\n"
        "checks:\n"
        "  - {metric: mae, at_most: 60}\n  - {metric: rmse, at_most: 80}\n  - {metric: r2, at_least: 0.95}\n"
        "  - {metric: mape, at_most: 0.05}\n"
        "  - {type: non_inferiority, metric: mae, margin: 5}\n"
        "  - {type: pass_rate, name: price ranges, dataset: cases, at_least: 0.5}\n"
        "  - {type: invariance, feature: size, delta: 0.001, tolerance: 1.0, at_most: 0.01}\n"
        "  - {type: directional, feature: size, delta: 10, at_most: 0.01}\n"
        "  - {type: directional, name: more rooms never cheaper, feature: rooms, delta: 1, direction: decrease, at_most: 0.01}\n"
    )
    result = ws.evaluations.evaluate("price@1", suite)
    status = {c.name: c.status for c in result.checks}
    assert status["mae <= 60"] == PASS
    assert status["r2 >= 0.95"] == PASS
    assert status["mae non-inferiority"] == PASS  # the same model as production
    assert status["price ranges"] == INCONCLUSIVE  # 2 of 3 cases in range, 3 cases decide nothing
    (ranges,) = [c for c in result.checks if c.name == "price ranges"]
    assert ranges.details["failing"][0]["size"] == 100.0
    assert status["invariance size"] == PASS  # a tiny nudge moves the price by less than 1
    assert status["directional size"] == PASS
    assert status["more rooms never cheaper"] == FAIL  # direction decrease: rooms raise the price
    with pytest.raises(
        InvalidInputError,
        match="metric 'roc_auc' is for classification models but this model is a regressor",
    ):
        ws.evaluations.evaluate(
            "price@1", parse_suite_text(tmp_path, "  - {metric: roc_auc, at_least: 0.5}\n")
        )


def parse_suite_text(folder: Path, checks: str) -> Path:
    path = folder / "extra.yaml"
    path.write_text(f"datasets:\n  holdout: {{path: holdout.csv, label: price}}\nchecks:\n{checks}")
    return path


def test_cli_default_suite_says_what_it_did_and_no_store_leaves_no_verdict(
    config: Config, churn: Path, ws: Workspace
) -> None:
    run = CliRunner().invoke(
        cli,
        ["eval", "churn@2", "--data", str(churn / "holdout.parquet"), "--no-store"],
        env=env_for(config),
    )
    assert run.exit_code in (0, 1), run.output
    assert "no suite given: default suite = non-inferiority against production" in run.output
    assert _stored(ws) == 0
    assert ws.registry.get_version("churn@2").gate_status == "not_evaluated"


@pytest.mark.empty_store
def test_a_database_from_before_evaluations_upgrades(config: Config) -> None:
    from ownloop import SchemaOutOfDateError
    from ownloop.store import Store

    old = Store(config.db_url, check_schema=False)
    assert old.upgrade(target=2) == [1, 2]
    with pytest.raises(SchemaOutOfDateError, match="ownloop db upgrade"):
        old.ensure_schema()  # what opening a workspace on it does
    assert 3 in old.upgrade()
    old.close()
    with Workspace(config) as ws:
        assert ws.evaluations.history is not None
        with ws.store.read() as conn:
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(t.evaluations)).scalar_one()
                == 0
            )
