"""Rules in force per model: defaults with reasons, overrides from the store and YAML, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ownloop import Config, Workspace
from ownloop.access import Actor
from ownloop.alerts import METRICS, RuleAction, Severity
from ownloop.errors import InvalidInputError, NotFoundError, PermissionDeniedError


@pytest.fixture
def model(ws: Workspace, team: str, churn_model: object) -> str:
    ws.registry.register(churn_model, name="churn", owner=team)
    return "churn"


def test_every_metric_has_a_default_with_a_reason(ws: Workspace, model: str) -> None:
    rules = ws.alerts.rules(model)
    assert [r.name for r in rules] == list(METRICS)
    assert {
        "dataset_drift",
        "top_feature_drift",
        "prediction_drift",
        "confidence_drop",
        "estimated_accuracy_drop",
        "realised_accuracy_drop",
        "latency_p99",
        "error_rate",
        "cost_per_1k",
        "canary_aborted",
        "gate_failed",
        "rollback_insufficient",
    } == set(METRICS)
    for r in rules:
        assert r.source == "default"
        assert r.enabled
        assert len(r.reason) > 30


def test_set_merges_with_the_default_and_reset_restores_it(ws: Workspace, model: str) -> None:
    rule = ws.alerts.set_rule(model, "estimated_accuracy_drop", above=0.1, for_windows=3)
    assert (rule.threshold, rule.for_windows, rule.severity, rule.source) == (
        0.1,
        3,
        Severity.PAGE,
        "store",
    )
    rule = ws.alerts.set_rule(model, "estimated_accuracy_drop", severity="warning")
    assert (rule.threshold, rule.for_windows, rule.severity) == (0.1, 3, Severity.WARNING)
    assert ws.alerts.reset_rule(model, "estimated_accuracy_drop").source == "default"
    actions = [e.action for e in ws.registry.audit_log(model) if e.action.startswith("alert")]
    assert actions == ["alert.rules"] * 3
    with pytest.raises(NotFoundError, match="no override"):
        ws.alerts.reset_rule(model, "estimated_accuracy_drop")


def test_yaml_file_loads_with_its_source_and_replaces_its_earlier_load(
    ws: Workspace, model: str, tmp_path: Path
) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        "rules:\n"
        "  estimated_accuracy_drop: {above: 0.08, for: 2, severity: page}\n"
        "  cost_per_1k: {enabled: false}\n"
        "  dataset_drift: {command: python retrain.py}\n"
    )
    rules = {r.name: r for r in ws.alerts.load_rules(model, path)}
    assert rules["estimated_accuracy_drop"].threshold == 0.08
    assert rules["estimated_accuracy_drop"].source == f"file:{path}"
    assert rules["cost_per_1k"].enabled is False
    assert rules["dataset_drift"].action == RuleAction(command=("python", "retrain.py"))
    path.write_text("rules:\n  latency_p99: {above: 0.5}\n")
    rules = {r.name: r for r in ws.alerts.load_rules(model, path)}
    assert rules["latency_p99"].threshold == 0.5
    assert rules["cost_per_1k"].enabled is True
    assert rules["estimated_accuracy_drop"].source == "default"


def test_a_bad_rule_in_a_file_loads_nothing(ws: Workspace, model: str, tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("rules:\n  latency_p99: {above: 0.5}\n  error_rat: {above: 0.1}\n")
    with pytest.raises(InvalidInputError, match="did you mean 'error_rate'"):
        ws.alerts.load_rules(model, path)
    assert all(r.source == "default" for r in ws.alerts.rules(model))
    path.write_text("- not a mapping\n")
    with pytest.raises(InvalidInputError, match="'rules:' mapping"):
        ws.alerts.load_rules(model, path)
    path.write_text("rules: {a: [\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        ws.alerts.load_rules(model, path)
    with pytest.raises(InvalidInputError, match="cannot read"):
        ws.alerts.load_rules(model, tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("estimated_acuracy_drop", {"above": 0.1}, "did you mean 'estimated_accuracy_drop'"),
        ("estimated_accuracy_drop", {"above": -0.1}, "a drop below 0 would be a rise"),
        ("error_rate", {"above": 1.5}, "out of range"),
        ("error_rate", {"above": float("nan")}, "finite"),
        ("error_rate", {"above": "0.1"}, "not a number"),
        ("error_rate", {"above": True}, "not a number"),
        ("error_rate", {"below": 0.1}, "use --above"),
        ("error_rate", {"for_windows": 0}, "whole number of windows"),
        ("error_rate", {"severity": "critical"}, "unknown severity 'critical'"),
        ("gate_failed", {"above": 1.0}, "takes no threshold"),
        ("error_rate", {"action": RuleAction()}, "command or a webhook"),
        ("error_rate", {"action": RuleAction(webhook="ftp://x")}, "not an http"),
        ("error_rate", {}, "nothing to set"),
    ],
)
def test_bad_settings_are_refused_and_nothing_is_written(
    ws: Workspace, model: str, name: str, kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        ws.alerts.set_rule(model, name, **kwargs)  # type: ignore[arg-type]
    assert all(r.source == "default" for r in ws.alerts.rules(model))


def test_unknown_model_and_other_teams_are_refused(
    ws: Workspace, model: str, config: Config
) -> None:
    with pytest.raises(NotFoundError, match="model 'nosuch' does not exist"):
        ws.alerts.rules("nosuch")
    with pytest.raises(NotFoundError, match="model 'nosuch'"):
        ws.alerts.set_rule("nosuch", "error_rate", above=0.1)
    mallory = Actor("mallory", teams=frozenset({"other"}))
    with (
        Workspace(config, actor=mallory) as other,
        pytest.raises(PermissionDeniedError, match="alert.rules"),
    ):
        other.alerts.set_rule(model, "error_rate", above=0.1)
    with Workspace(config, actor=Actor("ann", teams=frozenset({"risk"}))) as own:
        assert own.alerts.set_rule(model, "error_rate", above=0.1).threshold == 0.1


def test_metrics_cover_monitor_figures_with_one_meaning() -> None:
    """Each window metric names its comparison; the drops and rates are bounded in [0, 1]."""
    for m in METRICS.values():
        assert m.compare in ("above", "below", "event")
        if m.name.endswith("_drop") or m.name == "error_rate":
            assert (m.low, m.high) == (0.0, 1.0)
