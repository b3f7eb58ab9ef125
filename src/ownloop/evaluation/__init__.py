"""Evaluation gates: suites of checks judged on confidence limits, baseline comparison,
slices, behavioural and operational checks, reports, and the verdict stored on the version.

>>> result = ws.evaluations.evaluate("churn@2", "evals/churn.yaml", baseline="production")  # doctest: +SKIP
>>> print(result.summary)  # doctest: +SKIP
PASS: churn@2 vs churn@1 (production): 7 passed, 0 failed, 0 inconclusive
"""

from __future__ import annotations

from ownloop.evaluation._checks import judge_outputs
from ownloop.evaluation._html import to_html
from ownloop.evaluation._metrics import CLASSIFIER_METRICS, METRICS, REGRESSOR_METRICS, Outputs
from ownloop.evaluation._reports import to_json, to_junit, to_markdown, write_report
from ownloop.evaluation._results import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIPPED,
    CheckResult,
    EvalResult,
    Verdict,
)
from ownloop.evaluation._service import Evaluations, StoredEvaluation
from ownloop.evaluation._suite import CHECK_TYPES, CheckSpec, Suite, load_suite, parse_suite

__all__ = [
    "CHECK_TYPES",
    "CLASSIFIER_METRICS",
    "FAIL",
    "INCONCLUSIVE",
    "METRICS",
    "PASS",
    "REGRESSOR_METRICS",
    "SKIPPED",
    "CheckResult",
    "CheckSpec",
    "EvalResult",
    "Evaluations",
    "Outputs",
    "StoredEvaluation",
    "Suite",
    "Verdict",
    "judge_outputs",
    "load_suite",
    "parse_suite",
    "to_html",
    "to_json",
    "to_junit",
    "to_markdown",
    "write_report",
]
