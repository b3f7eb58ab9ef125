"""The demo's eval step and the documented example suite."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.demo import run_demo
from ownloop.evaluation import CHECK_TYPES, parse_suite
from ownloop.store import tables as t

DOCS = Path(__file__).resolve().parents[1] / "docs" / "eval-suite.md"


def test_demo_evaluates_the_candidate_and_stores_the_verdict(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(home, say=lines.append)
    assert "eval" in result.steps
    with Workspace(Config(home=home, user="tester")) as ws:
        stored = ws.evaluations.latest("churn@2")
        assert stored is not None
        assert stored.baseline == "churn@1 (production)"
        assert ws.registry.get_version("churn@2").gate_status == stored.verdict
        with ws.store.read() as conn:
            rows = conn.execute(sa.select(t.evaluations.c.model, t.evaluations.c.version)).all()
        assert [tuple(r) for r in rows] == [("churn", 2)]
    assert (home / "evals" / "churn.yaml").exists()
    assert {p.name for p in (home / "reports").iterdir()} == {
        "eval.xml",
        "eval.md",
        "eval.html",
        "eval.json",
    }
    assert any(
        line.startswith("5. eval gate for churn@2 against churn@1 (production)") for line in lines
    )


def test_the_documented_example_suite_parses_with_every_check_type() -> None:
    text = DOCS.read_text()
    block = re.search(r"```yaml\n(# evals/churn.yaml.*?)```", text, re.S)
    assert block is not None
    suite = parse_suite(block.group(1), source="docs example")
    assert {c.type for c in suite.checks} == set(CHECK_TYPES)
    assert [s.column for s in suite.slices] == ["plan", "tenure_months"]
    assert suite.datasets["holdout"].nan_policy == "error"
