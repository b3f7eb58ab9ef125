"""Drift-aware rollback: before production goes back to an earlier version, check that version
on today's data.

The check replays the current version's recent logged inputs through the target, judges the
window's drift against the target's own reference profile, estimates the target's accuracy on it
without labels, and, where labels exist, compares target and current on the same labelled rows.
The decision rule is in docs/deploy.md (block ``rollback``) with its reasons.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from ownloop import predlog
from ownloop.access import authorize
from ownloop.errors import (
    ConcurrentChangeError,
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    NotReadyError,
)
from ownloop.evaluation._data import Dataset, model_outputs
from ownloop.evaluation._stats import paired_accuracy_difference
from ownloop.intervals import wilson_interval, z_for
from ownloop.monitoring import DriftReport, Estimate, PartialSpec, WindowPartial, compute_partial
from ownloop.monitoring._drift import evaluate_drift
from ownloop.monitoring._partial import add_scores, proba_matrix
from ownloop.monitoring._performance import estimate_from_partial, support_from_profile
from ownloop.names import VersionRef, validate_name
from ownloop.profile import ReferenceProfile
from ownloop.registry import PRODUCTION, ModelVersion, version_number
from ownloop.store import aware
from ownloop.store import tables as t

if TYPE_CHECKING:
    from ownloop.deploy._service import Deployments

__all__ = [
    "LEVEL",
    "MIN_LABELLED",
    "MIN_ROWS",
    "ROLLBACK_ROWS",
    "TOLERANCE",
    "Paired",
    "RollbackCheck",
    "RollbackRefusedError",
    "RollbackVerdict",
    "StoredRollbackCheck",
    "check_rollback",
    "rollback",
]

ROLLBACK_ROWS = 10_000  # the window: the current version's last logged rows on the stable arm
MIN_ROWS = 30  # fewer scored rows than this and there is nothing to judge the target on
MIN_LABELLED = 30  # labelled rows needed before realised figures take part in the verdict
TOLERANCE = 0.02  # accuracy points under the target's reference accuracy that count as degraded
LEVEL = 0.95  # every interval and band
TOP_DRIFTED = 5  # drifted features shown in the report


class RollbackVerdict(StrEnum):
    SAFE = "SAFE"  # the target is healthy on today's data: roll back
    INSUFFICIENT = "INSUFFICIENT"  # the target is degraded too: rolling back only limits damage
    WORSE = "WORSE"  # the target does worse than the current version: refused unless forced


@dataclass(frozen=True)
class Paired:
    """Target and current on the same labelled rows: each realised figure and their difference."""

    metric: str  # "accuracy" (higher is better) or "mae" (lower is better)
    n: int
    target: float
    target_interval: tuple[float, float]
    current: float
    current_interval: tuple[float, float]
    difference: float  # target - current
    interval: tuple[float, float]
    method: str

    @property
    def target_worse(self) -> bool:
        """The interval of the difference lies wholly on the side where the target does worse."""
        return self.interval[1] < 0 if self.metric == "accuracy" else self.interval[0] > 0


@dataclass(frozen=True)
class RollbackCheck:
    """The figures that decided, the verdict and what to do next; stored per check."""

    model: str
    current: int
    target: int
    verdict: RollbackVerdict
    reasons: tuple[str, ...]
    next_step: str
    window: str  # which rows were replayed, in words
    rows: int
    window_start: datetime | None
    window_end: datetime
    drift_share: float | None  # share of drifted features, weighted by importance when known
    drift_share_by: str | None  # "importance" or "count": what the dataset verdict used
    drift_threshold: float | None
    dataset_drift: bool | None
    drift_summary: str
    top_drifted: tuple[dict[str, Any], ...]  # feature, effect (sd moved), detail
    reference_accuracy: float | None
    estimate: dict[str, Any] | None  # the target's label-free accuracy on the window
    current_estimate: dict[str, Any] | None  # the current version's, against its own reference
    paired: Paired | None
    labelled_rows: int
    notes: tuple[str, ...]
    timings: Mapping[str, float]
    acted: bool = False
    forced: bool = False
    reason: str | None = None
    check_id: int | None = None
    at: datetime | None = None
    by: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["verdict"] = str(self.verdict)
        for k in ("window_start", "window_end", "at"):
            value = getattr(self, k)
            out[k] = None if value is None else value.isoformat()
        return out


@dataclass(frozen=True)
class StoredRollbackCheck:
    """A rollback check as stored: who checked when, the verdict, whether it acted, and why."""

    id: int
    model: str
    at: datetime
    by: str
    current_version: int
    target_version: int
    verdict: str  # SAFE | INSUFFICIENT | WORSE
    acted: bool  # production moved to the target
    forced: bool
    reasons: tuple[str, ...]
    next_step: str | None
    summary: str  # one line: the verdict, the versions and the first reason
    report: Mapping[str, Any]  # the whole stored check (RollbackCheck.to_dict())


def stored_check(r: Any) -> StoredRollbackCheck:
    """A ``rollback_checks`` row read back."""
    report = dict(r.report) if isinstance(r.report, Mapping) else {}
    reasons = tuple(str(x) for x in report.get("reasons") or ())
    acted = bool(r.acted)
    forced = bool(report.get("forced", False))
    verb = "rolled back" if acted else "checked only"
    first = f": {reasons[0]}" if reasons else ""
    summary = (
        f"{r.verdict} rolling {r.model} back from version {r.current_version} to "
        f"{r.target_version} ({verb}{', forced' if forced else ''}){first}"
    )
    next_step = report.get("next_step")
    return StoredRollbackCheck(
        id=int(r.id),
        model=r.model,
        at=aware(r.at),
        by=r.by,
        current_version=int(r.current_version),
        target_version=int(r.target_version),
        verdict=str(r.verdict),
        acted=acted,
        forced=forced,
        reasons=reasons,
        next_step=str(next_step) if next_step is not None else None,
        summary=summary,
        report=report,
    )


class RollbackRefusedError(ConflictError):
    """A rollback the check refused (WORSE without force); ``check`` holds the figures."""

    def __init__(self, message: str, check: RollbackCheck) -> None:
        super().__init__(message)
        self.check = check


# -- the target ----------------------------------------------------------------------------


def _current_production(deploy: Deployments, model: str) -> int:
    aliases = deploy.registry.get_model(model).aliases
    if PRODUCTION not in aliases:
        raise NotFoundError(
            f"model '{model}' has no production version, so there is nothing to roll back; "
            f"deploy one with 'ownloop deploy {model}@N'"
        )
    return aliases[PRODUCTION]


def _previous(deploy: Deployments, model: str, current: int) -> int:
    """The version production pointed at before the current one (its alias history)."""
    for event in reversed(deploy.registry.alias_history(model, PRODUCTION)):
        if event.version == current and event.previous_version not in (None, current):
            return int(event.previous_version)
    raise NotFoundError(
        f"model '{model}' has no previous production version to roll back to (production has "
        f"only been version {current}); name one with --to N (see 'ownloop versions {model}')"
    )


def _target(deploy: Deployments, model: str, current: int, to: int | str | None) -> ModelVersion:
    number = _previous(deploy, model, current) if to is None else version_number(to)
    if number == current:
        raise InvalidInputError(
            f"version {number} of model '{model}' is already production; roll back to another "
            f"version with --to N (see 'ownloop versions {model}')"
        )
    return deploy.registry.get_version(VersionRef(model, version=number))


def _load(deploy: Deployments, target: ModelVersion) -> Any:
    try:
        return deploy.registry.load(target.ref)
    except IntegrityError as exc:
        raise IntegrityError(
            f"cannot roll back to {target.ref}: its artifact fails its digest check, so it will "
            f"not be loaded ({exc.message}); roll back to another version with --to N, or "
            "restore the artifact from backup and check again"
        ) from exc


# -- the window ----------------------------------------------------------------------------


def _window(
    deploy: Deployments, current: ModelVersion, target: ModelVersion, rows: int, end: datetime
) -> pa.Table:
    """The current version's last ``rows`` answered rows on the stable arm before ``end``."""
    missing = [
        f for f in target.signature.feature_names if f not in current.signature.feature_names
    ]
    if missing:
        raise InvalidInputError(
            f"{target.ref} takes feature(s) {', '.join(missing)} that {current.ref} does not, so "
            f"its logged inputs cannot be replayed through {target.ref}; pick another version "
            "with --to N"
        )
    columns = ["prediction_id", "ts", "status", "prediction", "proba", "prediction_value"]
    columns += [f"in.{f}" for f in target.signature.feature_names]
    table = predlog.read_log(
        deploy.config.predictions_dir,
        current.model,
        version=current.version,
        arm="stable",
        end=end,
        columns=columns,
        schema=predlog.prediction_schema(current.signature),
    ).table
    table = table.filter(pc.fill_null(pc.equal(table.column("status"), "ok"), False))
    if table.num_rows > rows:
        order = pc.sort_indices(table, [("ts", "ascending"), ("prediction_id", "ascending")])
        table = table.take(order[table.num_rows - rows :])
    return table


def _frame(table: pa.Table, target: ModelVersion) -> pd.DataFrame:
    """The logged inputs as a frame in the target's signature order."""
    names = target.signature.feature_names
    return pd.DataFrame({f: table.column(f"in.{f}").to_pandas() for f in names}, columns=names)


# -- the figures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Replay:
    pred_keys: np.ndarray  # the target's predicted classes as label keys (or values, regression)
    proba: np.ndarray | None


def _replay(model: Any, frame: pd.DataFrame, target: ModelVersion) -> _Replay:
    data = Dataset("rollback window", frame, frame, None, "", 0)
    out = model_outputs(model, data, target.signature)
    if target.signature.task != "classification":
        return _Replay(np.asarray(out.pred, dtype=float), None)
    keys = np.asarray([predlog.label_key(c) for c in out.classes], dtype=object)
    return _Replay(keys[out.pred].astype(str), out.proba)


def _accuracy(part: WindowPartial, spec: PartialSpec, profile: ReferenceProfile) -> Estimate | None:
    """The label-free accuracy of a window partial, as the monitor computes it."""
    if spec.task != "classification" or not spec.classes:
        return None
    estimates = estimate_from_partial(
        part.score_counts,
        part.score_c,
        part.score_c2,
        n_classes=len(spec.classes),
        pred_c=part.pred_c,
        pred_c2=part.pred_c2,
        n_rows=int(part.confidence.sum()),
        calibrated=spec.calibration is not None,
        level=LEVEL,
        support=support_from_profile(profile),
        pred_c_boot=part.pred_c_boot if part.pred_c_boot.size else None,
        confidence=part.confidence,
    )
    return next((e for e in estimates if e.metric == "accuracy"), None)


def _scores(proba: np.ndarray, spec: PartialSpec) -> WindowPartial:
    part = WindowPartial(rows=proba.shape[0])
    usable = proba[np.isfinite(proba).all(axis=1)]
    add_scores(part, usable, spec.calibration, bootstrap=spec.bootstrap)
    return part


def _estimate_dict(e: Estimate | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {
        "value": e.value,
        "lower": e.lower,
        "upper": e.upper,
        "n": e.n,
        "status": e.status,
        "method": e.method,
        "warnings": list(e.warnings),
        "note": e.note,
    }


def _paired(
    table: pa.Table, replay: _Replay, labels: pa.Table, task: str
) -> tuple[Paired | None, int]:
    """Target and current on the same labelled rows (labels weighted by a review sample count
    once each here: the comparison is paired, so both sides see the same rows)."""
    if labels.num_rows == 0 or table.num_rows == 0:
        return None, 0
    joined = predlog.join_labels(table.select(["prediction_id"]), labels)
    if task == "classification":
        has = pc.is_valid(joined.column("label")).to_numpy(zero_copy_only=False)
        n = int(has.sum())
        if n < MIN_LABELLED:
            return None, n
        y = predlog.label_keys(joined.column("label").filter(pa.array(has)).to_pylist())
        cur = predlog.label_keys(table.column("prediction").filter(pa.array(has)).to_pylist())
        tgt_ok = replay.pred_keys[has] == y.astype(str)
        cur_ok = cur.astype(str) == y.astype(str)
        return _paired_accuracy(tgt_ok, cur_ok), n
    y = joined.column("label_value").to_numpy(zero_copy_only=False).astype(float)
    cur_v = table.column("prediction_value").to_numpy(zero_copy_only=False).astype(float)
    has = np.isfinite(y) & np.isfinite(cur_v) & np.isfinite(replay.pred_keys)
    n = int(has.sum())
    if n < MIN_LABELLED:
        return None, n
    return _paired_mae(np.abs(replay.pred_keys[has] - y[has]), np.abs(cur_v[has] - y[has])), n


def _paired_accuracy(tgt_ok: np.ndarray, cur_ok: np.ndarray) -> Paired:
    n = int(tgt_ok.size)
    diff = paired_accuracy_difference(tgt_ok, cur_ok, 0.0, LEVEL)
    return Paired(
        "accuracy",
        n,
        float(tgt_ok.mean()),
        wilson_interval(float(tgt_ok.sum()), n, LEVEL),
        float(cur_ok.mean()),
        wilson_interval(float(cur_ok.sum()), n, LEVEL),
        diff.estimate,
        diff.interval,
        f"paired on {n:,} labelled rows: McNemar interval of the difference "
        f"({diff.candidate_only} rows only the target got right, {diff.baseline_only} only the "
        "current); Wilson intervals for each",
    )


def _paired_mae(tgt_err: np.ndarray, cur_err: np.ndarray) -> Paired:
    n = int(tgt_err.size)
    z = z_for(LEVEL)

    def mean_ci(x: np.ndarray) -> tuple[float, float]:
        half = z * float(x.std(ddof=1)) / np.sqrt(n)
        return float(x.mean()) - half, float(x.mean()) + half

    d = tgt_err - cur_err
    return Paired(
        "mae",
        n,
        float(tgt_err.mean()),
        mean_ci(tgt_err),
        float(cur_err.mean()),
        mean_ci(cur_err),
        float(d.mean()),
        mean_ci(d),
        f"paired on {n:,} labelled rows: normal interval of the mean difference of absolute errors",
    )


# -- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Evidence:
    drift: DriftReport | None
    estimate: Estimate | None
    current_estimate: Estimate | None
    reference_accuracy: float | None
    paired: Paired | None


@dataclass(frozen=True)
class _Band:
    value: float
    lower: float
    upper: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lower:.3f}, {self.upper:.3f}]"


def _band(e: Estimate | None) -> _Band | None:
    """The estimate's figure and band, or None when it has none (too few rows, empty)."""
    if e is None or e.status != "ok":
        return None
    value, lower, upper = e.value, e.lower, e.upper
    if value is None or lower is None or upper is None:
        return None
    return _Band(value, lower, upper)


def _worse(ev: _Evidence) -> str | None:
    """Why the target does worse than the current version, or None."""
    p = ev.paired
    if p is not None:
        if not p.target_worse:
            return None
        lo, hi = p.interval
        return (
            f"on the same {p.n:,} labelled rows the target's {p.metric} is {p.target:.3f} against "
            f"the current version's {p.current:.3f}: difference {p.difference:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] ({LEVEL:.0%}), wholly on the target's losing side"
        )
    e, c = _band(ev.estimate), _band(ev.current_estimate)
    if e is not None and c is not None and e.upper < c.lower:
        return (
            f"without labels: the target's estimated accuracy {e} lies wholly below the "
            f"current version's {c} (each against its own reference)"
        )
    return None


def _degraded(ev: _Evidence) -> list[str]:
    """Why the target is unhealthy on today's data (empty when nothing says so)."""
    out: list[str] = []
    d = ev.drift
    if d is not None and d.dataset_drift:
        out.append(f"today's inputs drifted against the target's own reference: {d.summary}")
    ref, p, e = ev.reference_accuracy, ev.paired, ev.estimate
    if ref is None:
        return out
    floor = ref - TOLERANCE
    if p is not None and p.metric == "accuracy" and p.target_interval[1] < floor:
        lo, hi = p.target_interval
        out.append(
            f"the target's realised accuracy {p.target:.3f} [{lo:.3f}, {hi:.3f}] on {p.n:,} "
            f"labelled rows is below its reference accuracy {ref:.3f} less {TOLERANCE}"
        )
    band = _band(e)
    if band is not None and band.upper < floor:
        out.append(
            f"the target's estimated accuracy {band} is below its reference accuracy "
            f"{ref:.3f} less {TOLERANCE}"
        )
    return out


def _healthy(ev: _Evidence) -> list[str]:
    out: list[str] = []
    if ev.drift is not None:
        out.append(f"against the target's own reference: {ev.drift.summary}")
    band = _band(ev.estimate)
    if band is not None and ev.reference_accuracy is not None:
        out.append(
            f"the target's estimated accuracy {band} is not below its reference accuracy "
            f"{ev.reference_accuracy:.3f} less {TOLERANCE}"
        )
    if ev.paired is not None:
        p = ev.paired
        lo, hi = p.interval
        out.append(
            f"on the same {p.n:,} labelled rows: target {p.metric} {p.target:.3f}, current "
            f"{p.current:.3f}, difference {p.difference:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        )
    return out


def decide(ev: _Evidence) -> tuple[RollbackVerdict, tuple[str, ...]]:
    """WORSE when the target does worse than current; else INSUFFICIENT when it is degraded on
    today's data; else SAFE. The reasons name the figures that decided."""
    worse = _worse(ev)
    if worse is not None:
        return RollbackVerdict.WORSE, (worse,)
    degraded = _degraded(ev)
    if degraded:
        return RollbackVerdict.INSUFFICIENT, tuple(degraded)
    return RollbackVerdict.SAFE, tuple(_healthy(ev))


def _next_step(
    verdict: RollbackVerdict, model: str, current: int, target: int, labelled: int
) -> str:
    rows = f"{labelled:,} labelled production row(s) in the window to start from"
    if verdict is RollbackVerdict.SAFE:
        return (
            f"roll back: 'ownloop rollback {model} --to {target}'; then find what broke "
            f"{model}@{current} and evaluate its fix before deploying it again"
        )
    if verdict is RollbackVerdict.INSUFFICIENT:
        return (
            f"rolling back to {model}@{target} only limits damage: it is degraded on today's data "
            f"too; retrain on recent data ({rows}) and deploy the new version through its gate"
        )
    return (
        f"keep {model}@{current}: {model}@{target} does worse on today's data; retrain on recent "
        f"data ({rows}); roll back anyway only with --force --reason TEXT (audited)"
    )


# -- the check -----------------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _share(d: DriftReport) -> float | None:
    return d.weighted_share if d.verdict_by == "importance" else d.share


def _top_drifted(d: DriftReport | None) -> tuple[dict[str, Any], ...]:
    if d is None:
        return ()
    drifted = [f for f in d.features if f.feature in d.drifted_features]
    drifted.sort(key=lambda f: -(f.effect or 0.0))
    return tuple(
        {"feature": f.feature, "effect_sd": f.effect, "detail": f.detail}
        for f in drifted[:TOP_DRIFTED]
    )


def check_rollback(
    deploy: Deployments,
    model: str,
    *,
    to: int | str | None = None,
    rows: int = ROLLBACK_ROWS,
    permission: str = "deploy.read",
) -> RollbackCheck:
    """Check the rollback target of ``model`` on the current version's recent logged rows."""
    m = deploy.registry.get_model(validate_name("model", model))
    deploy.acting.check(permission, m.owner, target=f"model:{m.name}")
    if rows < MIN_ROWS:
        raise InvalidInputError(
            f"the rollback check needs a window of at least {MIN_ROWS} rows, not {rows}"
        )
    current = deploy.registry.get_version(
        VersionRef(model, version=_current_production(deploy, model))
    )
    target = _target(deploy, model, current.version, to)
    now = deploy.clock.now()
    timings: dict[str, float] = {}
    with _timed(timings, "read"):
        obj = _load(deploy, target)
        table = _window(deploy, current, target, rows, now)
        labels = predlog.read_labels(deploy.config.predictions_dir, model)
        profile = deploy.registry.load_profile(target.ref) if target.profile_digest else None
        cur_profile = deploy.registry.load_profile(current.ref) if current.profile_digest else None
    if table.num_rows < MIN_ROWS:
        raise NotReadyError(
            f"{current.ref} has {table.num_rows} answered logged row(s) on the stable arm and the "
            f"rollback check needs at least {MIN_ROWS}: there is no data of today to judge "
            f"{target.ref} on; wait for traffic, or move production without the check with "
            f"'ownloop alias set {model} production {target.version} --force --reason TEXT'"
        )
    with _timed(timings, "replay"):
        replay = _replay(obj, _frame(table, target), target)
    ev = _figures(deploy, table, replay, labels, target, profile, cur_profile, timings)
    return _assemble(deploy, model, current, target, table, now, rows, ev, timings, labels)


def _figures(
    deploy: Deployments,
    table: pa.Table,
    replay: _Replay,
    labels: pa.Table,
    target: ModelVersion,
    profile: ReferenceProfile | None,
    cur_profile: ReferenceProfile | None,
    timings: dict[str, float],
) -> tuple[_Evidence, int]:
    drift = estimate = current_estimate = None
    if profile is not None:
        spec = PartialSpec.from_profile(profile)
        with _timed(timings, "drift"):
            inputs = table.select([f"in.{f}" for f in target.signature.feature_names])
            drift = evaluate_drift(
                compute_partial(inputs, spec), profile, deploy.monitor.settings(target.model)
            )
        with _timed(timings, "estimate"):
            if replay.proba is not None:
                estimate = _accuracy(_scores(replay.proba, spec), spec, profile)
    with _timed(timings, "estimate"):
        if cur_profile is not None:
            cur_spec = PartialSpec.from_profile(cur_profile)
            if cur_spec.task == "classification" and cur_spec.classes:
                logged = proba_matrix(table.column("proba"), len(cur_spec.classes))
                current_estimate = _accuracy(_scores(logged, cur_spec), cur_spec, cur_profile)
        paired, labelled = _paired(table, replay, labels, target.signature.task)
    perf = profile.prediction.performance if profile is not None else None
    ref_acc = None if perf is None else perf.metrics.get("accuracy")
    ev = _Evidence(drift, estimate, current_estimate, ref_acc, paired)
    return ev, labelled


def _assemble(
    deploy: Deployments,
    model: str,
    current: ModelVersion,
    target: ModelVersion,
    table: pa.Table,
    now: datetime,
    rows: int,
    figures: tuple[_Evidence, int],
    timings: dict[str, float],
    labels: pa.Table,
) -> RollbackCheck:
    ev, labelled = figures
    notes: list[str] = []
    if ev.drift is None:
        notes.append(f"{target.ref} has no reference profile: no drift or label-free estimate")
    if ev.paired is None:
        notes.append(
            f"{labelled} labelled row(s) in the window (realised figures need {MIN_LABELLED})"
        )
    if ev.drift is None and ev.paired is None:
        raise NotReadyError(
            f"nothing to judge {target.ref} on: it has no reference profile and the window has "
            f"{labelled} labelled row(s) (at least {MIN_LABELLED} needed); label production rows "
            f"of {current.ref}, or roll back to a version registered with reference data"
        )
    verdict, reasons = decide(ev)
    ts = table.column("ts")
    start = pc.min(ts).as_py() if table.num_rows else None
    d = ev.drift
    return RollbackCheck(
        model=model,
        current=current.version,
        target=target.version,
        verdict=verdict,
        reasons=reasons,
        next_step=_next_step(verdict, model, current.version, target.version, labelled),
        window=(
            f"the last {table.num_rows:,} answered rows {current.ref} logged on the stable arm "
            f"(window of up to {rows:,} rows), replayed through {target.ref}"
        ),
        rows=table.num_rows,
        window_start=start,
        window_end=now,
        drift_share=None if d is None else _share(d),
        drift_share_by=None if d is None else d.verdict_by,
        drift_threshold=None if d is None else d.share_threshold,
        dataset_drift=None if d is None else d.dataset_drift,
        drift_summary="" if d is None else d.summary,
        top_drifted=_top_drifted(d),
        reference_accuracy=ev.reference_accuracy,
        estimate=_estimate_dict(ev.estimate),
        current_estimate=_estimate_dict(ev.current_estimate),
        paired=ev.paired,
        labelled_rows=labelled,
        notes=tuple(notes),
        timings=dict(timings),
        at=now,
        by=deploy.actor.name,
    )


# -- acting --------------------------------------------------------------------------------


def _store_check(
    deploy: Deployments, conn: sa.Connection, check: RollbackCheck, acted: bool, action: str
) -> int:
    """The check's row and its audit row, inside the caller's transaction."""
    report = check.to_dict() | {"acted": acted}
    at = check.at or deploy.clock.now()
    check_id = conn.execute(
        t.rollback_checks.insert()
        .values(
            model=check.model,
            current_version=check.current,
            target_version=check.target,
            verdict=str(check.verdict),
            acted=acted,
            report=report,
            at=at,
            by=deploy.actor.name,
        )
        .returning(t.rollback_checks.c.id)
    ).scalar_one()
    deploy.store.audit(
        conn,
        at=at,
        actor=deploy.actor.name,
        action=action,
        target=f"{check.model}@{check.target}",
        model=check.model,
        before={"production": check.current},
        after={"check_id": check_id, "verdict": str(check.verdict), "reasons": list(check.reasons)},
    )
    return int(check_id)


def _production_in(conn: sa.Connection, model_id: int) -> int | None:
    found = conn.execute(
        sa.select(t.versions.c.version)
        .select_from(t.aliases.join(t.versions, t.aliases.c.version_id == t.versions.c.id))
        .where(t.aliases.c.model_id == model_id, t.aliases.c.alias == PRODUCTION)
    ).scalar_one_or_none()
    return None if found is None else int(found)


def _evidence(check: RollbackCheck, check_id: int) -> dict[str, Any]:
    return {
        "check_id": check_id,
        "verdict": str(check.verdict),
        "reasons": list(check.reasons),
        "forced": check.forced,
        "rows": check.rows,
        "labelled_rows": check.labelled_rows,
    }


def rollback(
    deploy: Deployments,
    model: str,
    *,
    to: int | str | None = None,
    force: bool = False,
    check_only: bool = False,
    reason: str | None = None,
    rows: int = ROLLBACK_ROWS,
) -> RollbackCheck:
    """Check the target, then (unless ``check_only``) move production to it; WORSE needs ``force``."""
    if force and not (reason and reason.strip()):
        raise InvalidInputError(
            "--force needs --reason TEXT: say why the rollback overrides its check (kept in the "
            "audit log)"
        )
    if not check_only:
        with deploy.store.read() as conn:
            deploy.refuse_if_rolling_out(conn, deploy.registry.require_model_row(conn, model))
    check = check_rollback(deploy, model, to=to, rows=rows, permission="deploy.rollback")
    check = _with(check, forced=force and check.verdict is RollbackVerdict.WORSE, reason=reason)
    if check_only:
        with deploy.store.write() as conn:
            check_id = _store_check(deploy, conn, check, False, "deploy.rollback_check")
        return _with(check, check_id=check_id)
    if check.verdict is RollbackVerdict.WORSE and not force:
        with deploy.store.write() as conn:
            check_id = _store_check(deploy, conn, check, False, "deploy.rollback_refused")
        raise RollbackRefusedError(
            f"rollback of '{model}' from version {check.current} to {check.target} refused: the "
            f"check says WORSE ({check.reasons[0]}); check {check_id} is stored. "
            f"{check.next_step}",
            _with(check, check_id=check_id),
        )
    return _act(deploy, check)


def _act(deploy: Deployments, check: RollbackCheck) -> RollbackCheck:
    with deploy.store.write() as conn:
        row = deploy.registry.require_model_row(conn, check.model)
        authorize(deploy.actor, "deploy.rollback", row.owner)  # the owner may have changed
        deploy.refuse_if_rolling_out(conn, row)
        live = _production_in(conn, row.id)
        if live != check.current:
            raise ConcurrentChangeError(
                f"production of '{check.model}' moved from version {check.current} to {live} "
                "while the rollback was being checked; run 'ownloop rollback' again"
            )
        check_id = _store_check(deploy, conn, check, True, "deploy.rollback_check")
        deploy.move_production(
            conn,
            row,
            check.target,
            deploy.clock.now(),
            action="deploy.rollback",
            reason=check.reason,
            evidence=_evidence(check, check_id),
        )
    return _with(check, acted=True, check_id=check_id)


def _with(check: RollbackCheck, **changes: Any) -> RollbackCheck:
    return replace(check, **changes)
