"""The documented example suite (the demo's eval step is checked in test_demo.py)."""

from __future__ import annotations

import re
from pathlib import Path

from ownloop.evaluation import CHECK_TYPES, parse_suite

DOCS = Path(__file__).resolve().parents[1] / "docs" / "eval-suite.md"


def test_the_documented_example_suite_parses_with_every_check_type() -> None:
    text = DOCS.read_text()
    block = re.search(r"```yaml\n(# evals/churn.yaml.*?)```", text, re.S)
    assert block is not None
    suite = parse_suite(block.group(1), source="docs example")
    assert {c.type for c in suite.checks} == set(CHECK_TYPES)
    assert [s.column for s in suite.slices] == ["plan", "tenure_months"]
    assert suite.datasets["holdout"].nan_policy == "error"
