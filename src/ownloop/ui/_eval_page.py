"""The eval page: one stored gate run, failures first, its intervals on shared axes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from ownloop.evaluation import FAIL, INCONCLUSIVE, PASS, SKIPPED, CheckResult
from ownloop.ui._charts import Interval, intervals
from ownloop.ui._view import View, render

__all__ = ["eval_page", "interval_groups", "ordered"]

# failures first, then what could not be decided, then slices too small to judge, then passes
_ORDER = {FAIL: 0, INCONCLUSIVE: 1, SKIPPED: 2, PASS: 3}


@dataclass(frozen=True)
class Group:
    """One chart: the checks whose figures share a scale, so their lengths compare."""

    title: str
    unit: str
    chart: Markup


def eval_page(view: View, eval_id: int) -> str:
    stored = view.ws.evaluations.get(eval_id)
    result = stored.result
    checks = ordered(c for c in result.checks if c.slice is None)
    slices = ordered(c for c in result.checks if c.slice is not None)
    datasets = [
        (name, digest, result.dataset_rows.get(name))
        for name, digest in sorted(result.dataset_digests.items())
    ]
    return render(
        "evaluation.html",
        view,
        stored=stored,
        result=result,
        counts=result.counts(),
        checks=checks,
        slices=slices,
        datasets=datasets,
        groups=interval_groups(result.checks),
        comparisons=[c for c in checks if c.candidate is not None],
        num=num,
        interval_text=interval_text,
    )


def ordered(checks: Iterable[CheckResult]) -> list[CheckResult]:
    """Failures first, then inconclusive, then too small to judge, then passes (stable)."""
    return sorted(checks, key=lambda c: _ORDER.get(str(c.status), 1))


def interval_groups(checks: Sequence[CheckResult]) -> list[Group]:
    """One interval chart per metric: the checks (and slices) measuring the same figure on the
    same scale share its axis; a comparison's change and its candidate/baseline values are
    separate scales, so each gets its own chart."""
    rows: dict[tuple[str, str], list[Interval]] = {}
    for c in ordered(checks):
        if c.estimate is None and c.candidate is None:
            continue
        passed = None if c.status not in (PASS, FAIL) else c.status == PASS
        what = c.metric or c.type
        if c.candidate is not None:
            change = "ratio candidate / baseline" if c.type == "latency" else "change"
            rows.setdefault((f"{what}: {change}", ""), []).append(
                _row(c.name, c.estimate, c.interval, c.bound, passed)
            )
            values = rows.setdefault((f"{what}: candidate and baseline", _unit(c)), [])
            values.append(_row(f"{c.name}: candidate", c.candidate, c.candidate_interval))
            values.append(_row(f"{c.name}: baseline", c.baseline, c.baseline_interval))
        else:
            rows.setdefault((what, _unit(c)), []).append(
                _row(c.name, c.estimate, c.interval, c.bound, passed)
            )
    return [
        Group(title, unit, intervals(group, title=title, unit=unit))
        for (title, unit), group in rows.items()
    ]


# the units a check type's figures are in (the gate times latency in ms, sizes in MB)
_UNITS = {"latency": "ms", "model_size": "MB"}


def _unit(c: CheckResult) -> str:
    return _UNITS.get(c.type, "")


def _row(
    label: str,
    value: float | None,
    interval: tuple[float, float] | None,
    bound: float | None = None,
    passed: bool | None = None,
) -> Interval:
    lower, upper = interval if interval is not None else (None, None)
    return Interval(label, _finite(value), _finite(lower), _finite(upper), _finite(bound), passed)


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def num(x: float | None) -> str:
    """A figure as the reports write it (four significant digits; '-' for none)."""
    return "-" if _finite(x) is None else f"{x:.4g}"


def interval_text(iv: tuple[float, float] | None) -> str:
    return "-" if iv is None else f"[{num(iv[0])}, {num(iv[1])}]"
