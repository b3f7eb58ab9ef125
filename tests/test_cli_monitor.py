"""``ownloop monitor`` through the real CLI (click's runner, the real store and log): exit codes, inputs."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from ownloop import Workspace
from ownloop.cli import cli
from ownloop.errors import InvalidInputError
from ownloop.monitoring import DriftSettings, parse_duration
from tests.conftest import env_for
from tests.test_monitor import armed, logged

__all__ = ["armed", "logged"]  # churn@1: one quiet hour, then one drifted hour (+ arms)


def _run(ws: Workspace, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env_for(ws.config), catch_exceptions=False)


def test_fail_on_drift_exits_1_and_says_what_it_found(logged: Workspace) -> None:
    plain = _run(logged, "monitor", "churn", "--window", "1000d")
    assert plain.exit_code == 0  # without --fail-on a finding is printed, not an exit code
    assert "DATASET DRIFT" in plain.output
    found = _run(logged, "monitor", "churn", "--window", "1000d", "--fail-on", "drift")
    assert found.exit_code == 1
    assert "found: drift: churn@1: DATASET DRIFT" in found.output
    anything = _run(logged, "monitor", "churn", "--window", "1000d", "--fail-on", "any")
    assert anything.exit_code == 1


def test_fail_on_nothing_found_exits_0(logged: Workspace) -> None:
    quiet = _run(logged, "monitor", "churn", "--window", "1s", "--fail-on", "drift,estimated-drop")
    assert quiet.exit_code == 0, quiet.output
    assert "found:" not in quiet.output


def test_fail_on_with_json_keeps_stdout_json(logged: Workspace) -> None:
    import json

    res = CliRunner().invoke(
        cli,
        ["monitor", "churn", "--window", "1000d", "--fail-on", "drift", "--json"],
        env=env_for(logged.config),
    )
    assert res.exit_code == 1
    assert json.loads(res.stdout)[0]["model"] == "churn"
    assert "found: drift" in res.stderr


def test_unknown_condition_is_a_usage_error(logged: Workspace) -> None:
    res = _run(logged, "monitor", "churn", "--fail-on", "drfit")
    assert res.exit_code == 2
    assert "use drift, estimated-drop, any" in res.output


def test_threshold_for_an_unknown_feature_is_refused_and_not_saved(logged: Workspace) -> None:
    res = _run(logged, "monitor", "churn", "--threshold", "tenure_monts=0.2", "--save")
    assert res.exit_code == 2
    assert "has no feature 'tenure_monts'" in res.output
    assert "known (closest first): tenure_months, " in res.output
    assert logged.monitor.settings("churn") == DriftSettings()
    ok = _run(logged, "monitor", "churn", "--threshold", "tenure_months=0.3", "--save")
    assert ok.exit_code == 0, ok.output
    assert logged.monitor.settings("churn").feature_thresholds == {"tenure_months": 0.3}


def test_python_configure_refuses_an_unknown_feature(logged: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="has no feature 'nosuchfeature'"):
        logged.monitor.configure("churn", DriftSettings(feature_thresholds={"nosuchfeature": 0.2}))


@pytest.mark.parametrize(
    "command", [["drift", "churn", "--since"], ["monitor", "churn", "--window"]]
)
def test_a_duration_needs_a_unit(logged: Workspace, command: list[str]) -> None:
    res = _run(logged, *command, "2")
    assert res.exit_code == 2
    assert "duration '2' has no unit; add one of s, m, h, d, w" in res.output


def test_durations_with_units() -> None:
    assert parse_duration("2s") == timedelta(seconds=2)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    with pytest.raises(InvalidInputError, match="has no unit"):
        parse_duration("90")


def test_error_rate_line_says_what_it_counts(logged: Workspace) -> None:
    res = _run(logged, "monitor", "churn", "--rows", "500")
    assert res.exit_code == 0, res.output
    assert "500 predictions" in res.output
    assert "the rate counts refused inputs (400) and model errors" in res.output


def test_monitor_prints_the_headline_and_why_it_is_realised(logged: Workspace) -> None:
    from tests.test_monitor_figures import _label_first_hour

    _label_first_hour(logged, 400, flip=0.3, seed=3)
    res = _run(logged, "monitor", "churn", "--window", "1000d", "--fail-on", "estimated-drop")
    assert "  accuracy " in res.output and "(realised): estimated accuracy" in res.output
    assert "realised on 400 labelled rows" in res.output and "showing realised" in res.output
    assert res.exit_code == 1  # the realised figure lies below the reference's accuracy
    assert "found: estimated-drop: churn@1: realised accuracy" in res.output


def test_monitor_arm_counts_that_arm_s_rows(armed: Workspace) -> None:
    import json

    res = CliRunner().invoke(
        cli,
        ["monitor", "churn", "--window", "1000d", "--arm", "shadow", "--json"],
        env=env_for(armed.config),
    )
    assert res.exit_code == 0, res.output
    [shadow] = json.loads(res.stdout)
    assert (shadow["rows"], shadow["arms"]) == (600, ["shadow"])
    plain = _run(armed, "monitor", "churn", "--window", "1000d")
    assert "2,700 predictions (arms stable and canary)" in plain.output  # 2,400 + 300
    canary = _run(armed, "monitor", "churn", "--window", "1000d", "--arm", "canary")
    assert "300 predictions (arm canary)" in canary.output
    assert [r.summary["arms"] for r in armed.monitor.runs("churn")[:3]] == [
        ["canary"],
        ["stable", "canary"],
        ["shadow"],
    ]


def test_monitor_help_says_shadow_is_left_out_by_default(logged: Workspace) -> None:
    out = _run(logged, "monitor", "--help").output
    assert "shadow rows are never returned to clients" in " ".join(out.split())


def test_an_unknown_arm_is_a_usage_error(logged: Workspace) -> None:
    res = _run(logged, "monitor", "churn", "--arm", "blue")
    assert res.exit_code == 2
    assert "'blue' is not one of 'stable', 'canary', 'shadow'" in res.output


# -- ownloop monitor runs: the stored runs -------------------------------------------------------


@pytest.fixture
def registered(
    ws: Workspace, team: str, churn_model: object, churn_data: pd.DataFrame
) -> Workspace:
    """churn@1 registered, nothing logged or stored."""
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    return ws


def _stored_runs(ws: Workspace) -> list[int]:
    """Three stored runs of churn@1 (two default-arm hours, one canary hour), oldest first."""
    from tests.test_monitor import T0

    ids = [
        ws.monitor.run("churn", window=timedelta(hours=1), end=T0 + timedelta(hours=h))[0].run_id
        for h in (1, 2)
    ]
    canary = ws.monitor.run(
        "churn", window=timedelta(hours=1), end=T0 + timedelta(hours=1), arm="canary"
    )[0]
    return [*(i for i in ids if i is not None), canary.run_id or 0]


def test_monitor_runs_lists_the_stored_runs_newest_first(armed: Workspace) -> None:
    import json

    quiet, drifted, canary = _stored_runs(armed)
    res = _run(armed, "monitor", "runs", "churn")
    assert res.exit_code == 0, res.output
    assert "3 monitor run(s), newest first" in res.output
    lines = [line for line in res.output.splitlines() if " churn " in line]
    assert [int(line.split()[1]) for line in lines] == [drifted, canary, quiet]
    assert "stable,canary" in lines[0] and "2026-05-04 09:00:00 to 2026-05-04 10:00:00" in lines[0]
    got = json.loads(_run(armed, "monitor", "runs", "churn", "--json").stdout)
    assert [r["id"] for r in got] == [drifted, canary, quiet]
    assert got[0]["summary"]["drift_share"] > got[2]["summary"]["drift_share"]
    assert got[0]["window_end"] == "2026-05-04T10:00:00+00:00"

    def ids(*args: str) -> list[int]:
        out = _run(armed, "monitor", "runs", *args, "--json")
        assert out.exit_code == 0, out.output
        return [r["id"] for r in json.loads(out.stdout)]

    assert ids("churn", "--arm", "canary") == [canary]
    assert ids("churn", "--arm", "default") == [drifted, quiet]
    assert ids("churn", "--since", "2026-05-04T09:30:00Z") == [drifted]
    assert ids("churn", "--until", "2026-05-04T09:00:00") == [canary, quiet]  # UTC when no zone
    assert ids("churn", "--version", "2") == []
    assert ids("churn", "--limit", "1") == [drifted]
    assert ids("--status", "ok") == [drifted, canary, quiet]
    assert ids("churn", "--since", "1h") == []  # the runs are months before now


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["churn", "--since", "yesterday"], "neither a duration back from now"),
        (["churn", "--until", "2026-13-01"], "neither a duration back from now"),
        (["nope"], "model 'nope'"),
        (["--version", "1"], "--version needs a MODEL"),
        (["churn", "--arm", "blue"], "'blue' is not one of"),
        (["churn", "--limit", "0"], "0 is not in the range"),
        (["churn", "--since", "2026-05-05T00:00:00Z", "--until", "2026-05-04T00:00:00Z"], "swap"),
    ],
)
def test_monitor_runs_bad_filters_are_usage_errors(
    registered: Workspace, args: list[str], says: str
) -> None:
    res = _run(registered, "monitor", "runs", *args)
    assert res.exit_code == 2, res.output
    assert says in res.output
    assert "Traceback" not in res.output


def test_monitor_runs_with_none_stored_says_how_to_store_one(registered: Workspace) -> None:
    res = _run(registered, "monitor", "runs", "churn")
    assert res.exit_code == 0, res.output
    assert "no stored monitor runs of model 'churn' match" in res.output
    assert "ownloop monitor churn" in res.output


def test_a_model_named_runs_is_monitored_after_a_double_dash(registered: Workspace) -> None:
    help_text = _run(registered, "monitor", "runs", "--help").output
    assert "The stored monitor runs of MODEL" in help_text
    assert "ownloop monitor -- runs" in _run(registered, "monitor", "--help").output
    res = _run(registered, "monitor", "--", "runs")
    assert res.exit_code == 2 and "model 'runs'" in res.output  # monitored, not listed
