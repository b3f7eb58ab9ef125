"""The metrics a rule may watch, their defaults with the reason for each, and checking overrides.

Every model in production gets one rule per metric (the rule is named after its metric). A
rule's settings can be overridden per model in the store or from a YAML file kept beside the
model's code; what is not overridden keeps the default, and each rule says where it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from difflib import SequenceMatcher
from typing import Any

from ownloop.alerts._model import Rule, RuleAction, Severity
from ownloop.errors import InvalidInputError

__all__ = ["METRICS", "MIN_LABELLED", "Metric", "check_settings", "default_rule", "merge"]

MIN_LABELLED = 50  # labelled rows in a window before realised accuracy may open an alert


@dataclass(frozen=True)
class Metric:
    """A figure a rule compares, its default comparison and why that default."""

    name: str
    compare: str  # 'above' | 'below' | 'event'
    threshold: float | None  # None: the monitor's own verdict (see ``reason``)
    for_windows: int
    severity: Severity
    reason: str
    low: float | None = None  # the smallest threshold that makes sense (inclusive)
    high: float | None = None  # the largest (inclusive)
    unit: str = ""

    @property
    def is_event(self) -> bool:
        return self.compare == "event"


_W, _P = Severity.WARNING, Severity.PAGE

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "dataset_drift",
            "above",
            None,
            2,
            _W,
            "the monitor's own dataset verdict: the share of drifted features (weighted by the "
            "model's importance when the profile has it) above the model's drift share (0.5 by "
            "default, as Evidently); two windows in a row so one odd hour does not wake anyone",
            0.0,
            1.0,
        ),
        Metric(
            "top_feature_drift",
            "above",
            0.2,
            2,
            _W,
            "a drifted feature that carries more than 20% of the model's importance (uniform "
            "when the profile has none) moves predictions even when most features are quiet",
            0.0,
            1.0,
        ),
        Metric(
            "prediction_drift",
            "below",
            None,
            2,
            _W,
            "the monitor's test decision on the predictions (its alpha, corrected for the number "
            "of checks); with a threshold, the smallest corrected p-value of the prediction "
            "checks below it. Drifting outputs mean decisions change before labels arrive",
            0.0,
            1.0,
        ),
        Metric(
            "confidence_drop",
            "above",
            0.05,
            2,
            _W,
            "the reference's mean confidence minus the window's, above 0.05: a model that is "
            "less sure of itself on today's inputs is usually less right too",
            0.0,
            1.0,
        ),
        Metric(
            "estimated_accuracy_drop",
            "above",
            0.05,
            2,
            _P,
            "the reference accuracy minus the label-free estimate, counted only when the "
            "estimate's upper bound is below reference - 0.05, so the drop is larger than the "
            "estimate's own uncertainty (NannyML alerts on its bounds the same way)",
            0.0,
            1.0,
        ),
        Metric(
            "realised_accuracy_drop",
            "above",
            0.05,
            1,
            _P,
            f"the reference accuracy minus the accuracy on labelled rows, counted only when the "
            f"interval's upper bound is below reference - 0.05 and at least {MIN_LABELLED} rows "
            "are labelled; labels are the ground truth, so one window is enough",
            0.0,
            1.0,
        ),
        Metric(
            "latency_p99",
            "above",
            1.0,
            3,
            _W,
            "the 99th percentile of the model's answer time above 1 s for three windows: slow "
            "enough that callers time out, long enough not to be one slow batch",
            0.0,
            None,
            " s",
        ),
        Metric(
            "error_rate",
            "above",
            0.05,
            2,
            _P,
            "more than 5% of requests answered with an error (refused inputs and model "
            "failures) for two windows: callers are getting no answer",
            0.0,
            1.0,
        ),
        Metric(
            "cost_per_1k",
            "above",
            0.5,
            3,
            _W,
            "cost per 1,000 predictions more than 50% above the model's own median over its "
            "previous windows (at least 3): relative, because what is expensive differs per model",
            0.0,
            None,
        ),
        Metric(
            "canary_aborted",
            "event",
            None,
            1,
            _W,
            "a rollout of this model was aborted: the candidate did worse than the stable version",
        ),
        Metric(
            "gate_failed",
            "event",
            None,
            1,
            _W,
            "a version of this model failed its evaluation gate",
        ),
        Metric(
            "rollback_insufficient",
            "event",
            None,
            1,
            _W,
            "a rollback check found the previous version degraded too: rolling back only "
            "limits the damage, so the model needs retraining",
        ),
    )
}

_SETTINGS = ("threshold", "for_windows", "severity", "enabled", "action")


def default_rule(name: str) -> Rule:
    m = METRICS[name]
    return Rule(
        name=name,
        metric=name,
        compare=m.compare,
        threshold=m.threshold,
        for_windows=m.for_windows,
        severity=m.severity,
        enabled=True,
        reason=m.reason,
        source="default",
    )


def known_metric(name: str) -> Metric:
    """The metric called ``name``, or an error listing the known ones, closest first."""
    if name in METRICS:
        return METRICS[name]
    ranked = sorted(METRICS, key=lambda k: -SequenceMatcher(None, name, k).ratio())
    raise InvalidInputError(
        f"unknown alert metric '{name}' (did you mean '{ranked[0]}'?); "
        f"known: {', '.join(sorted(METRICS))}"
    )


def action_to_json(action: RuleAction | None) -> dict[str, Any] | None:
    if action is None:
        return None
    return {
        "command": None if action.command is None else list(action.command),
        "webhook": action.webhook,
        "timeout_s": action.timeout_s,
    }


def action_from_json(data: Mapping[str, Any] | None) -> RuleAction | None:
    if not data:
        return None
    command = data.get("command")
    return RuleAction(
        command=None if command is None else tuple(str(c) for c in command),
        webhook=data.get("webhook"),
        timeout_s=float(data.get("timeout_s", 600.0)),
    )


def _check_action(name: str, action: RuleAction) -> None:
    if (action.command is None) == (action.webhook is None):
        raise InvalidInputError(
            f"rule '{name}': a retrain action needs either a command or a webhook URL, not "
            f"{'both' if action.command else 'neither'}"
        )
    if action.command is not None and (
        not action.command or not all(isinstance(c, str) and c for c in action.command)
    ):
        raise InvalidInputError(
            f"rule '{name}': the retrain command must be a non-empty list of words, "
            "e.g. ['python', 'retrain.py']"
        )
    if action.webhook is not None and not (
        isinstance(action.webhook, str) and action.webhook.startswith(("http://", "https://"))
    ):
        raise InvalidInputError(
            f"rule '{name}': retrain webhook '{action.webhook}' is not an http(s) URL"
        )
    if not (isinstance(action.timeout_s, int | float) and 0 < action.timeout_s <= 86400):
        raise InvalidInputError(
            f"rule '{name}': the retrain timeout {action.timeout_s!r} must be between 0 and "
            "86400 seconds"
        )


def _check_threshold(m: Metric, compare: str, value: Any) -> float:
    if m.is_event:
        raise InvalidInputError(
            f"rule '{m.name}' fires on a deploy event and takes no threshold; "
            "change its severity, or --disable it"
        )
    if compare != m.compare:
        raise InvalidInputError(
            f"rule '{m.name}' compares its figure {m.compare} a threshold; "
            f"use --{m.compare} instead of --{compare}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(
            f"rule '{m.name}': threshold {value!r} is not a number; e.g. --{m.compare} "
            f"{m.threshold if m.threshold is not None else 0.5}"
        )
    x = float(value)
    if not math.isfinite(x):
        raise InvalidInputError(f"rule '{m.name}': threshold {value} must be a finite number")
    if (m.low is not None and x < m.low) or (m.high is not None and x > m.high):
        span = f"{m.low:g}..{m.high:g}" if m.high is not None else f"{m.low:g} or more"
        what = "a drop" if m.name.endswith("_drop") else "a share or rate"
        raise InvalidInputError(
            f"rule '{m.name}': threshold {x:g} is out of range ({what} lies in {span}"
            f"{'; a drop below 0 would be a rise' if m.name.endswith('_drop') else ''})"
        )
    return x


def check_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an override of rule ``name``; the JSON stored in ``alert_rules.settings``.

    ``settings`` holds any of ``above``/``below`` (a threshold), ``for_windows``,
    ``severity``, ``enabled`` and ``action`` (a RuleAction or its JSON).
    """
    m = known_metric(name)
    out: dict[str, Any] = {}
    unknown = set(settings) - {"above", "below", "for_windows", "severity", "enabled", "action"}
    if unknown:
        raise InvalidInputError(
            f"rule '{name}': unknown setting(s) {', '.join(sorted(unknown))}; "
            "use above, below, for, severity, enabled, command or retrain_webhook"
        )
    if "above" in settings and "below" in settings:
        raise InvalidInputError(f"rule '{name}': give --above or --below, not both")
    for compare in ("above", "below"):
        if compare in settings:
            out["threshold"] = _check_threshold(m, compare, settings[compare])
    if "for_windows" in settings:
        n = settings["for_windows"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n > 1000:
            raise InvalidInputError(
                f"rule '{name}': for {n!r} must be a whole number of windows from 1 to 1000"
            )
        if m.is_event and n != 1:
            raise InvalidInputError(f"rule '{name}' fires on each deploy event; 'for' must be 1")
        out["for_windows"] = n
    if "severity" in settings:
        try:
            out["severity"] = str(Severity(settings["severity"]))
        except ValueError:
            raise InvalidInputError(
                f"rule '{name}': unknown severity {settings['severity']!r}; "
                f"use one of {', '.join(s.value for s in Severity)}"
            ) from None
    if "enabled" in settings:
        if not isinstance(settings["enabled"], bool):
            raise InvalidInputError(f"rule '{name}': enabled must be true or false")
        out["enabled"] = settings["enabled"]
    if "action" in settings:
        action = settings["action"]
        if isinstance(action, Mapping):
            action = action_from_json(action)
        if action is not None:
            if not isinstance(action, RuleAction):
                raise InvalidInputError(f"rule '{name}': action must be a command or a webhook")
            _check_action(name, action)
        out["action"] = action_to_json(action)
    return out


def merge(name: str, stored: Mapping[str, Any] | None, source: str) -> Rule:
    """The default rule ``name`` with its stored override (if any) applied."""
    rule = default_rule(name)
    if not stored:
        return rule
    changes: dict[str, Any] = {k: stored[k] for k in _SETTINGS if k in stored}
    if "severity" in changes:
        changes["severity"] = Severity(changes["severity"])
    if "action" in changes:
        changes["action"] = action_from_json(changes["action"])
    return replace(rule, **changes, source=source)
