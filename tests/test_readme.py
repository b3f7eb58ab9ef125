"""The README's Python examples run as written: every ```python block, in order, in one
namespace, in a fresh home and working folder. Blocks fenced ```python no-test are not run."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.M | re.S)


def python_blocks(text: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["info"].strip() == "python"]


def test_the_readme_has_python_examples() -> None:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    joined = "\n".join(blocks)
    for call in ("ownloop.register(", "ownloop.load(", "ownloop.evaluate(", "ownloop.drift(",
                 "ownloop.estimate_performance(", "to_frame()", "read_window("):  # fmt: skip
        assert call in joined, call


@pytest.mark.slow
def test_the_readme_python_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("OWNLOOP_DB_URL", "OWNLOOP_USER", "OWNLOOP_NO_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OWNLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OWNLOOP_DB_URL", db_url)
    namespace: dict[str, object] = {"__name__": "readme"}
    out = io.StringIO()
    for i, block in enumerate(python_blocks(README.read_text(encoding="utf-8"))):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
    printed = out.getvalue()
    assert "churn@1 not_evaluated" in printed
    assert "PASS: churn@1" in printed
    assert "DATASET DRIFT" in printed
