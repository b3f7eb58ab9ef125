"""Typed results: one ``CheckResult`` per check (and slice), one ``EvalResult`` per run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "SKIPPED",
    "CheckResult",
    "EvalResult",
    "decide",
    "overall_verdict",
]

PASS, FAIL, INCONCLUSIVE, SKIPPED = "PASS", "FAIL", "INCONCLUSIVE", "SKIPPED"
GATE_STATUS = {PASS: "passed", FAIL: "failed", INCONCLUSIVE: "inconclusive"}


def decide(*, n: int, min_rows: int, evidence: bool, point_passes: bool) -> str:
    """PASS when the evidence clears the bound at the stated confidence; FAIL when even the
    point estimate misses it; otherwise (or with too few rows) INCONCLUSIVE."""
    if n < min_rows:
        return INCONCLUSIVE
    if evidence:
        return PASS
    return FAIL if not point_passes else INCONCLUSIVE


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
    status: str
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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        data = dict(data)
        for key in ("interval", "candidate_interval", "baseline_interval"):
            if data.get(key) is not None:
                data[key] = tuple(float("nan") if v is None else v for v in data[key])
        return cls(**data)


def overall_verdict(checks: list[CheckResult]) -> str:
    statuses = {c.status for c in checks}
    if FAIL in statuses:
        return FAIL
    if INCONCLUSIVE in statuses:
        return INCONCLUSIVE
    return PASS


@dataclass(frozen=True)
class EvalResult:
    """A whole gate run: the verdict first, then every check, with what it ran on.

    >>> result = ownloop.evaluate("churn@2", suite="evals/churn.yaml", baseline="production")  # doctest: +SKIP
    >>> result.verdict, result.passed  # doctest: +SKIP
    ('PASS', True)
    """

    ref: str
    baseline_ref: str | None
    verdict: str
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

    @property
    def passed(self) -> bool:
        return self.verdict == PASS

    @property
    def gate_status(self) -> str:
        return GATE_STATUS[self.verdict]

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, INCONCLUSIVE: 0, SKIPPED: 0}
        for c in self.checks:
            out[c.status] += 1
        return out

    def summary(self) -> str:
        """One line: verdict and the counts behind it."""
        c = self.counts()
        base = f" vs {self.baseline_ref}" if self.baseline_ref else ""
        parts = [f"{c[PASS]} passed", f"{c[FAIL]} failed", f"{c[INCONCLUSIVE]} inconclusive"]
        if c[SKIPPED]:
            parts.append(f"{c[SKIPPED]} too small to judge")
        return f"{self.verdict}: {self.ref}{base}: {', '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _clean(
            {
                "ref": self.ref,
                "baseline_ref": self.baseline_ref,
                "verdict": self.verdict,
                "summary": self.summary(),
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
