"""Running a gate on a version and storing its verdict; queries the deploy step relies on."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from ownloop import progress
from ownloop.access import action
from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.evaluation._checks import Context, run_checks
from ownloop.evaluation._data import Dataset, load_dataset, model_outputs
from ownloop.evaluation._metrics import Outputs
from ownloop.evaluation._results import EvalResult, overall_verdict
from ownloop.evaluation._suite import CheckSpec, DatasetSpec, Suite, load_suite
from ownloop.names import parse_ref
from ownloop.registry import PRODUCTION, ModelVersion, Registry
from ownloop.store import aware
from ownloop.store import tables as t

__all__ = ["Evaluations", "StoredEvaluation"]

COMPARISONS = ("non_inferiority", "superiority")
NEEDS_OUTPUTS = ("metric", *COMPARISONS)


@dataclass(frozen=True)
class StoredEvaluation:
    """A gate run as stored on its version."""

    id: int
    model: str
    version: int
    verdict: str  # 'passed', 'failed' or 'inconclusive'
    baseline: str | None
    suite_source: str
    suite_digest: str
    dataset_digests: dict[str, str]
    created_at: datetime
    created_by: str
    report: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.version}"

    @property
    def result(self) -> EvalResult:
        return EvalResult.from_dict(self.report)


class Evaluations:
    """Evaluate versions against suites; store verdicts (audited); answer 'did the gate pass?'.

    >>> ws.evaluations.evaluate("churn@2", "evals/churn.yaml", baseline="production")  # doctest: +SKIP
    >>> ws.evaluations.gate_passed("churn@2")  # doctest: +SKIP
    True
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.acting = registry.acting

    # -- running -------------------------------------------------------------------------

    @action("version.evaluate")
    def evaluate(
        self,
        ref: str,
        suite: Suite | Mapping[str, Any] | str | Path | None = None,
        *,
        baseline: str | None = None,
        data: pd.DataFrame | str | Path | None = None,
        label: str | None = None,
        store: bool = True,
    ) -> EvalResult:
        """Run ``suite`` on ``ref``; store the verdict on the version unless ``store=False``.

        ``suite`` is a YAML file's path, a mapping shaped like that file (relative dataset paths
        are then relative to the working directory; see ``Suite.from_dict``) or a ``Suite``.
        Everything is computed before anything is written: a bad input leaves no verdict behind.
        """
        started_at, start = self.registry.clock.now(), time.perf_counter()
        version = self.registry.get_version(ref)
        if store:
            self.acting.check("version.evaluate", version.owner, target=version.ref)
        else:
            self.acting.check("model.read", version.owner, target=version.ref)
        notes: list[str] = []
        frames: dict[str, pd.DataFrame] = {}
        if suite is None:
            suite, note = self._default_suite(version, data, label, baseline, frames)
            notes.append(note)
        elif isinstance(suite, Mapping):
            suite = Suite.from_dict(suite)
        elif not isinstance(suite, Suite):
            suite = load_suite(suite)
        base_version = self._baseline(version, suite, baseline)
        ctx = self._context(version, base_version, suite, frames, notes)
        checks = run_checks(ctx)
        result = EvalResult(
            ref=version.ref,
            baseline_ref=None
            if base_version is None
            else _baseline_label(base_version, suite, baseline),
            verdict=overall_verdict(checks),
            checks=tuple(checks),
            suite_source=suite.source,
            suite_digest=suite.digest,
            dataset_digests={k: d.digest for k, d in ctx.datasets.items()},
            dataset_rows={k: d.n for k, d in ctx.datasets.items()},
            level=suite.level,
            resamples=suite.resamples,
            started_at=started_at,
            seconds=time.perf_counter() - start,
            notes=tuple(notes),
            plots=_plots(ctx),
        )
        if not store:
            return result
        return replace(result, evaluation_id=self._store(version, result))

    def _baseline(
        self, version: ModelVersion, suite: Suite, baseline: str | None
    ) -> ModelVersion | None:
        name = (
            baseline
            or suite.baseline
            or next((c.baseline for c in suite.checks if c.baseline), None)
        )
        if name is None:
            return None
        ref = name if "@" in name else f"{version.model}@{name}"
        try:
            base = self.registry.get_version(ref)
        except NotFoundError as exc:
            raise NotFoundError(f"baseline {exc.message}") from exc
        if base.signature.task != version.signature.task or (
            base.signature.classes != version.signature.classes
        ):
            raise InvalidInputError(
                f"baseline {base.ref} ({base.signature.task}, classes {base.signature.classes}) "
                f"cannot be compared with {version.ref} ({version.signature.task}, classes "
                f"{version.signature.classes}); pick a baseline with the same output"
            )
        return base

    def _context(
        self,
        version: ModelVersion,
        base_version: ModelVersion | None,
        suite: Suite,
        frames: dict[str, pd.DataFrame],
        notes: list[str],
    ) -> Context:
        sig = version.signature
        datasets: dict[str, Dataset] = {}
        for name, spec in suite.datasets.items():
            datasets[name] = load_dataset(spec, sig, frame=frames.get(name))
            if base_version is not None:
                missing = [
                    c for c in base_version.signature.feature_names if c not in datasets[name].frame
                ]
                if missing:
                    raise InvalidInputError(
                        f"dataset '{name}' lacks column(s) {', '.join(missing)} that baseline "
                        f"{base_version.ref} takes"
                    )
            if datasets[name].note:
                notes.append(str(datasets[name].note))
        candidate = self.registry.load(version.ref)
        base_model = None if base_version is None else self.registry.load(base_version.ref)
        used = {str(c.dataset) for c in suite.checks if c.type in NEEDS_OUTPUTS}
        outputs: dict[str, Outputs] = {}
        base_outputs: dict[str, Outputs] = {}
        scored = used | {str(c.dataset) for c in suite.checks if c.type == "directional"}
        for name in progress.track([n for n in suite.datasets if n in scored], "scoring datasets"):
            d = datasets[name]
            outputs[name] = model_outputs(candidate, d, sig, suite.positive_label)
            if base_version is not None and name in used:
                bsig = base_version.signature
                bdata = replace(d, X=d.frame[bsig.feature_names])
                base_outputs[name] = model_outputs(base_model, bdata, bsig, suite.positive_label)
        if (
            base_version is not None
            and base_version.version == version.version
            and base_version.model == version.model
        ):
            notes.append(f"the baseline is {version.ref} itself: comparisons are trivially equal")
        return Context(
            suite=suite,
            signature=sig,
            candidate=candidate,
            baseline=base_model,
            baseline_ref=None if base_version is None else base_version.ref,
            artifact_size=version.artifact_size,
            datasets=datasets,
            outputs=outputs,
            base_outputs=base_outputs,
        )

    def _default_suite(
        self,
        version: ModelVersion,
        data: pd.DataFrame | str | Path | None,
        label: str | None,
        baseline: str | None,
        frames: dict[str, pd.DataFrame],
    ) -> tuple[Suite, str]:
        """Non-inferiority against production on the given held-out data; says what it chose."""
        if data is None:
            raise InvalidInputError(
                f"no suite given for {version.ref}: pass --suite FILE, or --data FILE for the default "
                "suite (non-inferiority against production); ownloop keeps a profile of the "
                "reference data, not its rows"
            )
        base = baseline or PRODUCTION
        aliases = self.registry.get_model(version.model).aliases
        if "@" not in base and not base.isdigit() and base not in aliases:
            raise NotFoundError(
                f"no suite given and model '{version.model}' has no '{base}' alias to compare against "
                f"(aliases: {', '.join(aliases) or 'none'}); pass --baseline VERSION or --suite FILE"
            )
        if isinstance(data, pd.DataFrame):
            frames["data"] = data
            path = Path("(data frame)")
        else:
            path = Path(data)
        sig = version.signature
        if sig.task == "classification":
            metrics = [("accuracy", 0.01)] + (
                [("roc_auc", 0.01)] if len(sig.classes or ()) == 2 else []
            )
        else:
            metrics = [("r2", 0.01)]
        checks = tuple(
            CheckSpec(
                type="non_inferiority",
                name=f"{m} non-inferiority",
                dataset="data",
                metric=m,
                margin=margin,
            )
            for m, margin in metrics
        )
        suite = Suite(
            datasets={"data": DatasetSpec("data", path, label)},
            checks=checks,
            baseline=base,
            source="(default suite)",
        )
        words = ", ".join(f"{m} within {margin}" for m, margin in metrics)
        return suite, (
            f"no suite given: default suite = non-inferiority against {base} ({words}) on {path.name}"
        )

    # -- storing -------------------------------------------------------------------------

    def _store(self, version: ModelVersion, result: EvalResult) -> int:
        now = self.registry.clock.now()
        actor = self.registry.actor.name
        report = result.to_dict()
        with self.registry.store.write() as conn:
            version_id, before = conn.execute(
                sa.select(t.versions.c.id, t.versions.c.gate_status)
                .join(t.models, t.models.c.id == t.versions.c.model_id)
                .where(t.models.c.name == version.model, t.versions.c.version == version.version)
            ).one()
            eval_id = conn.execute(
                t.evaluations.insert().values(
                    version_id=version_id,
                    model=version.model,
                    version=version.version,
                    verdict=result.gate_status,
                    baseline=result.baseline_ref,
                    suite_source=result.suite_source[:1000],
                    suite_digest=result.suite_digest,
                    dataset_digests=result.dataset_digests,
                    report={**report, "evaluation_id": None},
                    created_at=now,
                    created_by=actor,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            conn.execute(
                t.versions.update()
                .where(t.versions.c.id == version_id)
                .values(gate_status=result.gate_status)
            )
            self.registry.store.audit(
                conn,
                at=now,
                actor=actor,
                action="version.evaluate",
                target=version.ref,
                model=version.model,
                before={"gate_status": before},
                after={
                    "gate_status": result.gate_status,
                    "evaluation": int(eval_id),
                    "baseline": result.baseline_ref,
                    "suite_digest": result.suite_digest,
                    "dataset_digests": result.dataset_digests,
                },
            )
        return int(eval_id)

    # -- queries -------------------------------------------------------------------------

    @action("evaluation.read")
    def history(self, ref: str, limit: int = 50) -> list[StoredEvaluation]:
        """Gate runs of one version, newest first."""
        version = self.registry.get_version(ref)
        self.acting.check("evaluation.read", version.owner, target=version.ref)
        with self.registry.store.read() as conn:
            rows = conn.execute(
                sa.select(t.evaluations)
                .where(
                    t.evaluations.c.model == version.model,
                    t.evaluations.c.version == version.version,
                )
                .order_by(t.evaluations.c.id.desc())
                .limit(limit)
            ).all()
        return [_stored(r) for r in rows]

    @action("evaluation.read")
    def get(self, evaluation_id: int) -> StoredEvaluation:
        """One gate run by its id (NotFoundError when there is none)."""
        if (
            isinstance(evaluation_id, bool)
            or not isinstance(evaluation_id, int)
            or not 1 <= evaluation_id < 2**63
        ):
            raise InvalidInputError(
                f"evaluation id {evaluation_id!r} must be a whole number, 1 or more"
            )
        with self.registry.store.read() as conn:
            row = conn.execute(
                sa.select(t.evaluations).where(t.evaluations.c.id == evaluation_id)
            ).first()
        if row is None:
            self.acting.check("evaluation.read", target=f"evaluation:{evaluation_id}")
            raise NotFoundError(
                f"gate run {evaluation_id} does not exist; a model's page lists the gate runs "
                "of each of its versions"
            )
        found = _stored(row)
        owner = self.registry.get_model(found.model).owner
        self.acting.check("evaluation.read", owner, target=found.ref)
        return found

    @action("evaluation.read")
    def latest(self, ref: str) -> StoredEvaluation | None:
        """The newest gate run of a version, or None when it was never evaluated."""
        found = self.history(ref, limit=1)
        return found[0] if found else None

    @action("evaluation.read")
    def latest_verdict(self, ref: str) -> str:
        """'passed', 'failed', 'inconclusive' or 'not_evaluated' for a version (alias or number)."""
        version = self.registry.get_version(ref)
        self.acting.check("evaluation.read", version.owner, target=version.ref)
        return version.gate_status

    @action("evaluation.read")
    def gate_passed(self, ref: str) -> bool:
        """True only when the version's latest gate run passed (what deploy checks)."""
        return self.latest_verdict(ref) == "passed"


def _stored(r: Any) -> StoredEvaluation:
    report = dict(r.report)
    report["evaluation_id"] = r.id
    return StoredEvaluation(
        id=r.id,
        model=r.model,
        version=r.version,
        verdict=r.verdict,
        baseline=r.baseline,
        suite_source=r.suite_source,
        suite_digest=r.suite_digest,
        dataset_digests=dict(r.dataset_digests),
        created_at=aware(r.created_at),
        created_by=r.created_by,
        report=report,
    )


def _baseline_label(base: ModelVersion, suite: Suite, given: str | None) -> str:
    name = given or suite.baseline or ""
    alias = parse_ref(name if "@" in name else f"{base.model}@{name}").alias if name else None
    return f"{base.ref} ({alias})" if alias else base.ref


def _plots(ctx: Context) -> dict[str, Any]:
    """Data for the HTML report: confusion matrices and calibration, candidate and baseline."""
    if not ctx.outputs:
        return {}
    name = next(iter(ctx.outputs))
    out = ctx.outputs[name]
    if not out.classes or ctx.datasets[name].y is None:
        return {"dataset": name}
    plots: dict[str, Any] = {"dataset": name, "classes": [str(c) for c in out.classes]}
    for who, o in (("candidate", out), ("baseline", ctx.base_outputs.get(name))):
        if o is None:
            continue
        k = len(o.classes)
        plots[f"{who}_confusion"] = (
            np.bincount(o.y * k + o.pred, minlength=k * k).reshape(k, k).tolist()
        )
        if o.proba is not None:
            plots[f"{who}_calibration"] = _calibration(o)
    return plots


def _calibration(o: Outputs) -> list[dict[str, float]]:
    """Top-label reliability: per confidence bin, mean confidence vs observed accuracy."""
    assert o.proba is not None
    conf = o.proba.max(axis=1)
    correct = (o.pred == o.y).astype(float)
    bins = np.clip((conf * 10).astype(int), 0, 9)
    rows = []
    for b in range(10):
        m = bins == b
        if m.any():
            rows.append(
                {
                    "confidence": float(conf[m].mean()),
                    "accuracy": float(correct[m].mean()),
                    "n": int(m.sum()),
                }
            )
    return rows
