"""Suite files and suite dicts: every unknown key refused with where it is and the closest known key."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from ownloop import InvalidInputError, Workspace
from ownloop.demo import make_churn_data, make_model
from ownloop.evaluation import PASS, Suite, load_suite, parse_suite

GOOD = """\
level: 0.95
bootstrap: {resamples: 200, seed: 3}
datasets:
  holdout: {path: holdout.parquet, label: churned}
slices:
  - column: plan
  - column: tenure_months
    bins: [0, 12, .inf]
checks:
  - metric: accuracy
    at_least: 0.5
  - type: latency
    at_most: 10000
    rows: 20
"""

# (typo'd text, the line the message must name, the unknown key, the suggestion, where it is)
TYPOS = {
    "check key": (
        GOOD.replace("    at_least: 0.5", "    at_lest: 0.5"),
        10,
        "at_lest",
        "at_least",
        "check 1 (accuracy)",
    ),
    "top-level key": (GOOD.replace("level: 0.95", "levle: 0.95"), 1, "levle", "level", "top level"),
    "dataset key": (
        GOOD.replace("label: churned", "lable: churned"),
        4,
        "lable",
        "label",
        "dataset 'holdout'",
    ),
    "slice key": (GOOD.replace("    bins:", "    bin:"), 7, "bin", "bins", "slice 'tenure_months'"),
    "bootstrap key": (GOOD.replace("seed: 3", "sed: 3"), 2, "sed", "seed", "bootstrap"),
    "second check key": (
        GOOD.replace("    rows: 20", "    row: 20"),
        12,
        "row",
        "rows",
        "check 2 (latency)",
    ),
}


@pytest.mark.parametrize("case", list(TYPOS))
def test_a_typo_at_any_level_names_the_key_the_line_and_the_closest_known_key(case: str) -> None:
    text, line, key, close, where = TYPOS[case]
    with pytest.raises(InvalidInputError) as info:
        parse_suite(text, source="s.yaml")
    message = info.value.message
    assert message.startswith(f"suite s.yaml line {line}: {where}: unknown key '{key}'"), message
    assert f"did you mean '{close}'?" in message
    assert "None" not in message


def test_the_reported_at_lest_typo_no_longer_talks_about_none() -> None:
    text = "datasets:\n  d: d.parquet\nchecks:\n  - metric: accuracy\n    at_lest: 0.7\n"
    with pytest.raises(
        InvalidInputError,
        match=re.escape(
            "suite (suite) line 4: check 1 (accuracy): unknown key 'at_lest' "
            "(did you mean 'at_least'?); known keys there: type, name,"
        ),
    ):
        parse_suite(text)


def test_several_unknown_keys_are_named_together_and_a_far_off_one_gets_no_guess() -> None:
    text = GOOD.replace("    at_least: 0.5", "    at_least: 0.5\n    colour: red\n    marginn: 0.1")
    with pytest.raises(InvalidInputError) as info:
        parse_suite(text)
    assert "unknown keys 'colour', 'marginn' (did you mean 'margin'?)" in info.value.message


def test_a_typo_in_a_check_type_suggests_the_type() -> None:
    with pytest.raises(InvalidInputError, match=r"type 'latncy' \(did you mean 'latency'\?\)"):
        parse_suite(GOOD.replace("type: latency", "type: latncy"))


def test_values_and_slices_flags_must_have_their_types() -> None:
    invariance = "  - {type: invariance, feature: region, values: north, at_most: 0.1}\n"
    with pytest.raises(InvalidInputError, match=r"'values' must be a list like \[a, b\]"):
        parse_suite(GOOD + invariance)
    with pytest.raises(InvalidInputError, match="'slices' must be true or false, not 'no way'"):
        parse_suite(GOOD.replace("    at_least: 0.5", "    at_least: 0.5\n    slices: no way"))


def test_a_latency_option_on_another_check_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="'clock' applies to latency checks only"):
        parse_suite(GOOD.replace("    at_least: 0.5", "    at_least: 0.5\n    clock: cpu"))


# -- suites from a dict ----------------------------------------------------------------------------

DICT: dict[str, Any] = {
    "level": 0.95,
    "bootstrap": {"resamples": 200, "seed": 3},
    "datasets": {"holdout": {"path": "holdout.parquet", "label": "churned"}},
    "slices": [{"column": "plan"}, {"column": "tenure_months", "bins": [0, 12, float("inf")]}],
    "checks": [
        {"metric": "accuracy", "at_least": 0.5},
        {"type": "latency", "at_most": 10000, "rows": 20},
    ],
}


def test_a_dict_gives_the_same_suite_as_the_yaml_text(tmp_path: Path) -> None:
    from_text = parse_suite(GOOD, base=tmp_path)
    given = copy.deepcopy(DICT)
    from_dict = Suite.from_dict(given, base_dir=tmp_path)
    assert from_dict.digest == from_text.digest
    assert from_dict.datasets == from_text.datasets
    assert from_dict.datasets["holdout"].path == tmp_path / "holdout.parquet"
    assert given == DICT  # the caller's mapping is not changed


def test_a_dict_without_base_dir_reads_paths_from_the_working_directory() -> None:
    suite = Suite.from_dict(DICT)
    assert suite.datasets["holdout"].path == Path("holdout.parquet")
    assert suite.source == "(suite from a dict)"


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda d: d["checks"][0].update(at_lest=0.7),
            r"^suite \(suite from a dict\): check 1 \(accuracy\): unknown key 'at_lest' \(did you mean 'at_least'\?\)",
        ),
        (
            lambda d: d["datasets"]["holdout"].update(nan_polcy="drop"),
            r"dataset 'holdout': unknown key 'nan_polcy' \(did you mean 'nan_policy'\?\)",
        ),
        (
            lambda d: d["slices"][1].update(bnis=[0, 1]),
            r"slice 'tenure_months': unknown key 'bnis' \(did you mean 'bins'\?\)",
        ),
        (
            lambda d: d.update(basline="production"),
            r"top level: unknown key 'basline' \(did you mean 'baseline'\?\)",
        ),
        (lambda d: d.update(level=2), r"level 2.0 must be between 0.5 and 1"),
        (lambda d: d.update(checks=[]), r"'checks' must be a non-empty list of checks"),
    ],
)
def test_a_dict_is_validated_like_the_yaml_file(change: Any, pattern: str) -> None:
    bad = copy.deepcopy(DICT)
    change(bad)
    with pytest.raises(InvalidInputError, match=pattern):
        Suite.from_dict(bad)


def test_a_dict_may_hold_numpy_numbers() -> None:
    import numpy as np

    given = copy.deepcopy(DICT)
    given["checks"][0]["at_least"] = np.float32(0.5)
    given["checks"][1]["rows"] = np.int64(20)
    suite = Suite.from_dict(given)
    assert (suite.checks[0].at_least, suite.checks[1].rows) == (0.5, 20)
    given["checks"][0]["at_least"] = "0.5"
    with pytest.raises(InvalidInputError, match="'at_least' must be a number, not '0.5'"):
        Suite.from_dict(given)


def test_a_suite_must_be_a_mapping() -> None:
    with pytest.raises(InvalidInputError, match="a suite must be a mapping .* not list"):
        Suite.from_dict([{"metric": "accuracy"}])  # type: ignore[arg-type]


@pytest.fixture
def churn(ws: Workspace, team: str, tmp_path: Path) -> Path:
    train = make_churn_data(1500, seed=31)
    model = make_model(max_iter=20).fit(train.drop(columns="churned"), train["churned"])
    ws.registry.register(model, name="churn", owner=team, reference=train, target="churned")
    make_churn_data(800, seed=32).to_parquet(tmp_path / "holdout.parquet")
    return tmp_path


def test_evaluate_takes_a_path_a_dict_or_a_suite_alike(ws: Workspace, churn: Path) -> None:
    (churn / "suite.yaml").write_text(GOOD)
    by_path = ws.evaluations.evaluate("churn@1", churn / "suite.yaml", store=False)
    by_suite = ws.evaluations.evaluate("churn@1", load_suite(churn / "suite.yaml"), store=False)
    by_dict = ws.evaluations.evaluate("churn@1", Suite.from_dict(DICT, base_dir=churn), store=False)
    assert by_path.suite_digest == by_suite.suite_digest == by_dict.suite_digest
    accuracy = [
        [c.estimate for c in r.checks if c.metric == "accuracy"] for r in (by_path, by_dict)
    ]
    assert accuracy[0] == accuracy[1]
    assert by_dict.verdict == PASS, [c.message for c in by_dict.checks if c.status != PASS]


def test_evaluate_takes_a_plain_dict_and_refuses_a_bad_one_storing_nothing(
    ws: Workspace, churn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(churn)  # a dict's relative paths are relative to the working directory
    result = ws.evaluations.evaluate("churn@1", DICT)
    assert result.suite_source == "(suite from a dict)"
    assert ws.evaluations.latest_verdict("churn@1") == result.gate_status
    bad = copy.deepcopy(DICT)
    bad["checks"][0]["at_lest"] = 0.9
    with pytest.raises(InvalidInputError, match="unknown key 'at_lest'"):
        ws.evaluations.evaluate("churn@1", bad)
    assert len(ws.evaluations.history("churn@1")) == 1
