"""Typed results: one ``CheckResult`` per check (and slice), one ``EvalResult`` per run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import pandas as pd

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "SKIPPED",
    "CheckResult",
    "EvalResult",
    "Verdict",
    "decide",
    "overall_verdict",
]


class Verdict(StrEnum):
    """A check's status and a run's verdict: the same words as a version's gate status.

    The values are what ownloop stores (``'passed'``, ``'failed'``, ...). Results written
    before this vocabulary said ``'PASS'``/``'FAIL'``; a member still compares equal (``==``)
    to that old spelling, and reading an old report maps it to the member.

    >>> Verdict.PASS == "passed", Verdict.PASS == "PASS", str(Verdict.FAIL)
    (True, True, 'failed')
    """

    PASS = "passed"
    FAIL = "failed"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"  # a slice too small to judge; never a run's verdict

    @classmethod
    def parse(cls, value: str) -> Verdict:
        """The member for ``value`` in either spelling (``'passed'`` or the older ``'PASS'``)."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            try:
                return cls[str(value).upper()]
            except KeyError:
                known = ", ".join(repr(m.value) for m in cls)
                raise ValueError(f"unknown verdict {value!r}; one of {known}") from None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str) and not isinstance(other, Verdict):
            return str.__eq__(self, other) or other == self.name
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__


# The members under their short names, typed as text so tables keyed by status take plain strings.
PASS: str = Verdict.PASS
FAIL: str = Verdict.FAIL
INCONCLUSIVE: str = Verdict.INCONCLUSIVE
SKIPPED: str = Verdict.SKIPPED
_ROW_COLUMNS = (
    "name", "type", "status", "dataset", "metric", "slice", "estimate", "lower", "upper",
    "bound", "pvalue", "candidate", "baseline", "n", "level", "method", "message",
)  # fmt: skip


class _Counts(dict[str, int]):
    """Checks per status; also looked up by the older spelling (``counts["PASS"]``)."""

    def __missing__(self, key: object) -> int:
        return self[Verdict.parse(str(key))]


def decide(*, n: int, min_rows: int, evidence: bool, point_passes: bool) -> Verdict:
    """PASS when the evidence clears the bound at the stated confidence; FAIL when even the
    point estimate misses it; otherwise (or with too few rows) INCONCLUSIVE."""
    if n < min_rows:
        return Verdict.INCONCLUSIVE
    if evidence:
        return Verdict.PASS
    return Verdict.FAIL if not point_passes else Verdict.INCONCLUSIVE


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: status, the words and numbers behind it, and how it was computed."""

    name: str
    type: str
    status: str  # a Verdict (given as either spelling, kept as the member)
    message: str
    method: str
    n: int
    level: float
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    bound: float | None = None
    pvalue: float | None = None
    dataset: str | None = None
    metric: str | None = None
    slice: str | None = None
    candidate: float | None = None
    candidate_interval: tuple[float, float] | None = None
    baseline: float | None = None
    baseline_interval: tuple[float, float] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Verdict.parse(self.status))

    def __repr__(self) -> str:
        where = f", slice={self.slice!r}" if self.slice else ""
        return f"CheckResult(name={self.name!r}{where}, status={str(self.status)!r}, message={self.message!r})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(asdict(self))
        out["status"] = str(self.status)
        return out

    def to_row(self) -> dict[str, Any]:
        """The check as one flat row (what ``EvalResult.to_frame`` stacks)."""
        lower, upper = self.interval if self.interval is not None else (None, None)
        return {
            "name": self.name,
            "type": self.type,
            "status": str(self.status),
            "dataset": self.dataset,
            "metric": self.metric,
            "slice": self.slice,
            "estimate": self.estimate,
            "lower": lower,
            "upper": upper,
            "bound": self.bound,
            "pvalue": self.pvalue,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "n": self.n,
            "level": self.level,
            "method": self.method,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        data = dict(data)
        for key in ("interval", "candidate_interval", "baseline_interval"):
            if data.get(key) is not None:
                data[key] = tuple(float("nan") if v is None else v for v in data[key])
        return cls(**data)


def overall_verdict(checks: list[CheckResult]) -> Verdict:
    statuses = {Verdict.parse(c.status) for c in checks}
    if Verdict.FAIL in statuses:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in statuses:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


@dataclass(frozen=True)
class EvalResult:
    """A whole gate run: the verdict first, then every check, with what it ran on.

    >>> result = ownloop.evaluate("churn@2", suite="evals/churn.yaml", baseline="production")  # doctest: +SKIP
    >>> result.verdict, result.passed  # doctest: +SKIP
    ('PASS', True)
    """

    ref: str
    baseline_ref: str | None
    verdict: Verdict
    checks: tuple[CheckResult, ...]
    suite_source: str
    suite_digest: str
    dataset_digests: dict[str, str]
    dataset_rows: dict[str, int]
    level: float
    resamples: int
    started_at: datetime
    seconds: float
    notes: tuple[str, ...] = ()
    plots: dict[str, Any] = field(default_factory=dict)
    evaluation_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict.parse(self.verdict))

    def __repr__(self) -> str:
        return (
            f"EvalResult(ref={self.ref!r}, baseline_ref={self.baseline_ref!r}, "
            f"verdict={str(self.verdict)!r}, checks={len(self.checks)}, "
            f"evaluation_id={self.evaluation_id!r})"
        )

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def gate_status(self) -> Verdict:
        """The status stored on the version: the verdict itself (the same vocabulary)."""
        return self.verdict

    def counts(self) -> dict[str, int]:
        out = _Counts({PASS: 0, FAIL: 0, INCONCLUSIVE: 0, SKIPPED: 0})
        for c in self.checks:
            out[Verdict.parse(c.status)] += 1
        return out

    @property
    def summary(self) -> str:
        """One line: verdict and the counts behind it."""
        c = self.counts()
        base = f" vs {self.baseline_ref}" if self.baseline_ref else ""
        parts = [f"{c[PASS]} passed", f"{c[FAIL]} failed", f"{c[INCONCLUSIVE]} inconclusive"]
        if c[SKIPPED]:
            parts.append(f"{c[SKIPPED]} too small to judge")
        return f"{self.verdict.name}: {self.ref}{base}: {', '.join(parts)}"

    def to_frame(self) -> pd.DataFrame:
        """One row per check (and slice): status, estimate, interval, bound, p-value, n, method."""
        rows = [c.to_row() for c in self.checks]
        return pd.DataFrame(rows, columns=list(_ROW_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(
            {
                "ref": self.ref,
                "baseline_ref": self.baseline_ref,
                "verdict": str(self.verdict),
                "summary": self.summary,
                "suite": {"source": self.suite_source, "digest": self.suite_digest},
                "datasets": {
                    k: {"sha256": v, "rows": self.dataset_rows.get(k)}
                    for k, v in self.dataset_digests.items()
                },
                "level": self.level,
                "resamples": self.resamples,
                "started_at": self.started_at.isoformat(),
                "seconds": round(self.seconds, 3),
                "notes": list(self.notes),
                "checks": [c.to_dict() for c in self.checks],
                "plots": self.plots,
                "evaluation_id": self.evaluation_id,
            }
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            ref=data["ref"],
            baseline_ref=data.get("baseline_ref"),
            verdict=data["verdict"],
            checks=tuple(CheckResult.from_dict(c) for c in data["checks"]),
            suite_source=data["suite"]["source"],
            suite_digest=data["suite"]["digest"],
            dataset_digests={k: v["sha256"] for k, v in data["datasets"].items()},
            dataset_rows={k: v["rows"] for k, v in data["datasets"].items()},
            level=data["level"],
            resamples=data["resamples"],
            started_at=datetime.fromisoformat(data["started_at"]),
            seconds=data["seconds"],
            notes=tuple(data.get("notes", ())),
            plots=data.get("plots", {}),
            evaluation_id=data.get("evaluation_id"),
        )
