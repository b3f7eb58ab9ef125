"""Reports of a gate run: JUnit XML (CI), Markdown (pull-request comment), JSON."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ownloop._files import private_folder, replace_private_text
from ownloop.errors import InvalidInputError
from ownloop.evaluation._results import FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckResult, EvalResult

__all__ = ["to_json", "to_junit", "to_markdown", "write_report"]

_ICON = {PASS: "✅ PASS", FAIL: "❌ FAIL", INCONCLUSIVE: "⚠️ INCONCLUSIVE", SKIPPED: "➖ too small"}


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.4g}"


def _interval(iv: tuple[float, float] | None) -> str:
    return "–" if iv is None else f"[{_num(iv[0])}, {_num(iv[1])}]"


def to_json(result: EvalResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=False, allow_nan=False)


def to_junit(result: EvalResult) -> str:
    """One test case per check; FAIL is a failure, INCONCLUSIVE an error, a small slice skipped."""
    counts = result.counts()
    suite = ET.Element(
        "testsuite",
        name=f"ownloop eval {result.ref}",
        tests=str(len(result.checks)),
        failures=str(counts[FAIL]),
        errors=str(counts[INCONCLUSIVE]),
        skipped=str(counts[SKIPPED]),
        time=f"{result.seconds:.3f}",
        timestamp=result.started_at.isoformat(),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", result.verdict),
        ("baseline", result.baseline_ref or ""),
        ("suite_digest", result.suite_digest),
        *((f"dataset_sha256.{k}", v) for k, v in result.dataset_digests.items()),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    for c in result.checks:
        case = ET.SubElement(
            suite, "testcase", classname=f"ownloop.{c.type}", name=c.name, time="0"
        )
        text = f"{c.message}\nmethod: {c.method}"
        if c.status == FAIL:
            ET.SubElement(case, "failure", message=c.message, type="GateFailed").text = text
        elif c.status == INCONCLUSIVE:
            ET.SubElement(case, "error", message=c.message, type="Inconclusive").text = text
        elif c.status == SKIPPED:
            ET.SubElement(case, "skipped", message=c.message)
        else:
            ET.SubElement(case, "system-out").text = text
    root = ET.Element("testsuites", name="ownloop", tests=suite.get("tests", "0"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _side_by_side(c: CheckResult) -> tuple[str, str]:
    if c.candidate is not None:
        return (
            f"{_num(c.candidate)} {_interval(c.candidate_interval)}",
            f"{_num(c.baseline)} {_interval(c.baseline_interval)}",
        )
    if c.estimate is not None:
        return f"{_num(c.estimate)} {_interval(c.interval)}", "–"
    return "–", "–"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(result: EvalResult) -> str:
    """A pull-request comment: the verdict first, then one table row per check."""
    lines = [
        f"### ownloop gate: {_ICON[result.verdict]} — `{result.ref}`"
        + (f" vs `{result.baseline_ref}`" if result.baseline_ref else ""),
        "",
        result.summary,
        "",
        "| check | status | candidate | baseline | bound | method | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result.checks:
        cand, base = _side_by_side(c)
        if c.candidate is not None and c.estimate is not None:
            change = "ratio" if c.type == "latency" else "Δ"  # candidate / baseline latency
            cand = f"{cand}; {change} {_num(c.estimate)} {_interval(c.interval)}"
        bound = "–" if c.bound is None else _num(c.bound)
        lines.append(
            f"| {_md(c.name)} | {_ICON[c.status]} | {cand} | {base} | {bound} | {_md(c.method)} | {c.n:,} |"
        )
    not_passed = [c for c in result.checks if c.status in (FAIL, INCONCLUSIVE)]
    if not_passed:
        lines += ["", "**Why**", ""]
        lines += [f"- **{_md(c.name)}** ({c.status}): {_md(c.message)}" for c in not_passed]
    failing = [c for c in result.checks if c.details.get("failing")]
    for c in failing:
        lines += ["", f"<details><summary>failing cases of {_md(c.name)}</summary>", ""]
        lines += [f"- `{json.dumps(row, default=str)}`" for row in c.details["failing"]]
        lines += ["", "</details>"]
    lines += [
        "",
        f"Intervals are two-sided {result.level:.0%}; each bound is judged on the limit at that level "
        "(one-sided {:.1%}); slices are Holm-adjusted.".format((1 - result.level) / 2),
        f"Suite `{result.suite_source}` sha256 `{result.suite_digest[:12]}`; datasets "
        + ", ".join(
            f"{k} ({result.dataset_rows.get(k, 0):,} rows, sha256 `{v[:12]}`)"
            for k, v in result.dataset_digests.items()
        )
        + ".",
    ]
    lines += [f"> {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_report(path: str | Path, text: str) -> Path:
    """Write a report file (creating its folder); a path that cannot be written is an input error."""
    p = Path(path)
    try:
        private_folder(p.parent)
        replace_private_text(p, text, p.with_name(p.name + ".tmp"))
    except OSError as exc:
        raise InvalidInputError(f"cannot write report {p}: {exc.strerror or exc}") from exc
    return p
