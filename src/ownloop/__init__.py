"""ownloop: own your models in production.

>>> import ownloop  # doctest: +SKIP
>>> ownloop.register(clf, name="churn", owner="risk", reference=train_df, target="churned")  # doctest: +SKIP
>>> model = ownloop.load("churn@production")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ownloop.access import Actor
from ownloop.clock import FrozenClock, SystemClock
from ownloop.config import Config
from ownloop.errors import (
    AlreadyExistsError,
    ConflictError,
    EnvironmentMismatchError,
    GateFailedError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    OwnloopError,
    PermissionDeniedError,
    SchemaOutOfDateError,
    StoreUnavailableError,
    UnsafeFormatError,
)
from ownloop.evaluation import CheckResult, EvalResult, Suite, Verdict
from ownloop.labels import LabelReport
from ownloop.monitoring import DriftReport, DriftSettings, drift, estimate_performance
from ownloop.profile import ReferenceProfile
from ownloop.registry import AuditEntry, Model, ModelVersion, Team
from ownloop.signature import Feature, Signature
from ownloop.workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AlreadyExistsError",
    "AuditEntry",
    "CheckResult",
    "Config",
    "ConflictError",
    "DriftReport",
    "DriftSettings",
    "EnvironmentMismatchError",
    "EvalResult",
    "Feature",
    "FrozenClock",
    "GateFailedError",
    "IntegrityError",
    "InvalidInputError",
    "LabelReport",
    "Model",
    "ModelVersion",
    "NotFoundError",
    "OwnloopError",
    "PermissionDeniedError",
    "ReferenceProfile",
    "SchemaOutOfDateError",
    "Signature",
    "StoreUnavailableError",
    "Suite",
    "SystemClock",
    "Team",
    "UnsafeFormatError",
    "Verdict",
    "Workspace",
    "add_team",
    "drift",
    "estimate_performance",
    "evaluate",
    "load",
    "record_labels",
    "register",
]


def register(
    model: Any = None,
    *,
    name: str,
    path: str | Path | None = None,
    owner: str | None = None,
    reference: pd.DataFrame | str | Path | None = None,
    target: str | None = None,
    signature: Signature | Mapping[str, Any] | str | Path | None = None,
    trust: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    description: str | None = None,
    code_commit: str | None = None,
    requirements: str | Path | Sequence[str] | None = None,
    workspace: Workspace | None = None,
) -> ModelVersion:
    """Register a fitted model (or a model file) as the next version of ``name``.

    >>> ownloop.register(clf, name="churn", owner="risk", reference=df, target="churned")  # doctest: +SKIP
    """
    with _use(workspace) as ws:
        return ws.registry.register(
            model,
            name=name,
            path=path,
            owner=owner,
            reference=reference,
            target=target,
            signature=signature,
            params=params,
            metrics=metrics,
            description=description,
            code_commit=code_commit,
            requirements=requirements,
            trust=trust,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )


def record_labels(
    model: str,
    labels: pd.DataFrame | Sequence[Mapping[str, Any]] | str | Path,
    *,
    source: str = "api",
    workspace: Workspace | None = None,
) -> LabelReport:
    """Store labels for logged predictions of ``model``: a frame, a list of dicts or a CSV/Parquet path.

    >>> ownloop.record_labels("churn", [{"prediction_id": pid, "label": 1}])  # doctest: +SKIP
    """
    from ownloop import labels as _labels

    with _use(workspace) as ws:
        table = _labels.labels_table(_labels.label_rows(labels), at=ws.clock.now(), source=source)
        return _labels.record_labels(
            ws.registry,
            ws.config.predictions_dir,
            model,
            table,
            max_rows=ws.config.max_label_rows,
        )


def load(ref: str, *, workspace: Workspace | None = None) -> Any:
    """Load ``model@version`` or ``model@alias`` after checking the artifact's digest."""
    with _use(workspace) as ws:
        return ws.registry.load(ref)


def add_team(
    name: str,
    *,
    email: str | None = None,
    webhook_url: str | None = None,
    slack_webhook_url: str | None = None,
    members: Sequence[str] = (),
    escalate_to: str | None = None,
    escalate_after_s: float | None = None,
    workspace: Workspace | None = None,
) -> Team:
    """Create a team that can own models and receive their alerts (and pass on unacknowledged
    pages to ``escalate_to`` after ``escalate_after_s`` seconds)."""
    with _use(workspace) as ws:
        return ws.registry.add_team(
            name,
            email=email,
            webhook_url=webhook_url,
            slack_webhook_url=slack_webhook_url,
            members=members,
            escalate_to=escalate_to,
            escalate_after_s=escalate_after_s,
        )


def evaluate(
    ref: str,
    suite: Suite | Mapping[str, Any] | str | Path | None = None,
    *,
    baseline: str | None = None,
    data: pd.DataFrame | str | Path | None = None,
    label: str | None = None,
    store: bool = True,
    workspace: Workspace | None = None,
) -> EvalResult:
    """Run an evaluation gate on ``ref`` and store its verdict on the version.

    ``suite`` is a YAML file, a mapping of the same shape, or a ``Suite``; without one, the
    default suite runs on ``data``. Same arguments as ``Workspace.evaluations.evaluate``.

    >>> result = ownloop.evaluate("churn@4", suite="evals/churn.yaml", baseline="production")  # doctest: +SKIP
    >>> result.verdict, result.to_frame()  # doctest: +SKIP
    """
    with _use(workspace) as ws:
        return ws.evaluations.evaluate(
            ref, suite=suite, baseline=baseline, data=data, label=label, store=store
        )


class _use:
    """Use the caller's workspace, or open (and close) one from the environment."""

    def __init__(self, workspace: Workspace | None) -> None:
        self._given = workspace
        self._opened: Workspace | None = None

    def __enter__(self) -> Workspace:
        if self._given is not None:
            return self._given
        self._opened = Workspace()
        return self._opened

    def __exit__(self, *exc: object) -> None:
        if self._opened is not None:
            self._opened.close()
