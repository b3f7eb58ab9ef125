"""Deploy: what is live per model and arm (stable, canary, shadow), rollouts, rollback checks.

The one place that decides what a server routes; the ``production`` alias is its record.

>>> ws.deploy.set_production("churn", 4)  # doctest: +SKIP  (the gate must have passed)
"""

from ownloop.deploy._model import (
    ACTIVE_STATES,
    Guardrail,
    Outcome,
    Plan,
    Rollout,
    RolloutEvent,
    Route,
    State,
    StepAnalysis,
    Strategy,
)
from ownloop.deploy._rollback import (
    Paired,
    RollbackCheck,
    RollbackRefusedError,
    RollbackVerdict,
    StoredRollbackCheck,
)
from ownloop.deploy._rollout import DeployStatus, merge_plan, placed, position, span
from ownloop.deploy._routing import MAX_KEY_CHARS, arm_for, bucket
from ownloop.deploy._service import Analyser, Deployments
from ownloop.store.lease import Lease, LeaseHolder, holder_id

CONTROLLER_LEASE = "deploy.controller"  # the lease whose holder runs the rollout controller

__all__ = [
    "ACTIVE_STATES",
    "CONTROLLER_LEASE",
    "MAX_KEY_CHARS",
    "Analyser",
    "DeployStatus",
    "Deployments",
    "Guardrail",
    "Lease",
    "LeaseHolder",
    "Outcome",
    "Paired",
    "Plan",
    "RollbackCheck",
    "RollbackRefusedError",
    "RollbackVerdict",
    "Rollout",
    "RolloutEvent",
    "Route",
    "State",
    "StepAnalysis",
    "StoredRollbackCheck",
    "Strategy",
    "arm_for",
    "bucket",
    "holder_id",
    "merge_plan",
    "placed",
    "position",
    "span",
]
