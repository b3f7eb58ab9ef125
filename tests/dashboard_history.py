"""A scripted history for the dashboard's tests and bench, built through the real services.

Two teams (risk, growth); churn (risk) with two versions, gate runs, a production release and a
canary rollout of its second version, a prediction log over ``windows`` known 5-minute windows
(the last ``drifted`` of them drifted), labels for half of the rows (realised accuracy), a monitor
run per window and the alerts the rules open on them; upsell (growth) with a passed and a failed
gate run, in production, and no monitor runs at all. Windows end at the current time rounded down
to 5 minutes, so every page's default range (the last day) holds them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ownloop import Config, Workspace, record_labels
from ownloop.alerts import AlertState
from ownloop.demo import log_predictions, make_churn_data, make_model

__all__ = ["WINDOW", "History", "build_history"]

WINDOW = timedelta(minutes=5)
FEATURES = ["age", "tenure_months", "monthly_charges", "support_calls", "plan", "region"]
OWNER_TOKEN = "risk-owner"
VIEWER_TOKEN = "risk-viewer"
GROWTH_TOKEN = "growth-owner"


@dataclass
class History:
    """What the tests need to know about the history they read."""

    config: Config
    windows: int  # monitor runs of churn, one per window
    window_ends: list[datetime]  # oldest first
    drifted: int  # the last this many windows drifted
    models: dict[str, str]  # model -> owner team
    monitored: str  # the model with monitor runs
    unmonitored: str  # the model with none
    features: list[str]
    open_alerts: list[int]  # ids of churn's open alerts, newest first
    evaluations: dict[str, int]  # "churn@1", "upsell@2", ... -> its (latest) gate run id
    failed_evaluation: int  # a gate run that failed
    rollout: int  # churn's active canary rollout
    tokens: dict[str, str] = field(default_factory=dict)  # owner, viewer, growth -> secret


def _window_ends(now: datetime, windows: int) -> list[datetime]:
    last = now.replace(second=0, microsecond=0)
    last -= timedelta(minutes=last.minute % 5)
    return [last - WINDOW * (windows - 1 - i) for i in range(windows)]


def _gate(ws: Workspace, ref: str, holdout: Path, accuracy: float) -> int:
    ws.evaluations.evaluate(
        ref,
        {
            "datasets": {"holdout": {"path": str(holdout), "label": "churned"}},
            "checks": [
                {"metric": "accuracy", "at_least": accuracy},
                {"metric": "roc_auc", "at_least": 0.5},
                {"type": "model_size", "at_most": 1000},
            ],
        },
    )
    stored = ws.evaluations.latest(ref)
    assert stored is not None
    return stored.id


def _register(ws: Workspace, name: str, owner: str, seed: int) -> tuple[str, pd.DataFrame]:
    data = make_churn_data(1500, seed=seed)
    model = make_model(max_iter=20).fit(data[FEATURES], data["churned"])
    version = ws.registry.register(model, name=name, owner=owner, reference=data, target="churned")
    return version.ref, data


def build_history(
    home: Path,
    *,
    db_url: str | None = None,
    windows: int = 12,
    drifted: int = 4,
    rows: int = 300,
    now: datetime | None = None,
) -> History:
    """Fill the store under ``home`` (or at ``db_url``) with the history this module describes."""
    config = Config(home=home, db_url_override=db_url, user="builder")
    ends = _window_ends(now or datetime.now(UTC), windows)
    data_dir = home / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    holdout = data_dir / "holdout.parquet"
    make_churn_data(1000, seed=3).to_parquet(holdout)
    evaluations: dict[str, int] = {}
    with Workspace(config) as ws:
        ws.registry.add_team("risk", email="risk@example.com")
        ws.registry.add_team("growth", email="growth@example.com")
        churn1, _ = _register(ws, "churn", "risk", seed=11)
        evaluations[churn1] = _gate(ws, churn1, holdout, 0.6)
        ws.deploy.deploy(churn1)  # the first production version goes live at once
        upsell1, _ = _register(ws, "upsell", "growth", seed=12)
        evaluations[upsell1] = _gate(ws, upsell1, holdout, 0.6)
        ws.deploy.deploy(upsell1)
        upsell2, _ = _register(ws, "upsell", "growth", seed=13)
        failed = _gate(ws, upsell2, holdout, 0.99)  # no churn model is 99% right: it fails
        evaluations[upsell2] = failed
        _log_windows(ws, churn1, ends, drifted, rows)
        churn2, _ = _register(ws, "churn", "risk", seed=14)
        evaluations[churn2] = _gate(ws, churn2, holdout, 0.6)
        # waits a week for samples that never come: the rollout stays at its first canary step
        rollout = ws.deploy.deploy(
            churn2, strategy="canary", steps=(10, 50, 100), min_samples=10**6, max_wait_s=7 * 86400
        )
        ws.deploy.tick()
        for end in ends:
            ws.monitor.run("churn", window=WINDOW, end=end)
        ws.alerts.evaluate()
        open_alerts = [
            a.id
            for a in ws.alerts.list(model="churn", open_only=True)
            if a.state is AlertState.FIRING
        ]
        tokens = {
            "owner": ws.tokens.create(OWNER_TOKEN, team="risk", role="owner").secret,
            "viewer": ws.tokens.create(VIEWER_TOKEN, team="risk", role="viewer").secret,
            "growth": ws.tokens.create(GROWTH_TOKEN, team="growth", role="owner").secret,
        }
    return History(
        config=config,
        windows=windows,
        window_ends=ends,
        drifted=drifted,
        models={"churn": "risk", "upsell": "growth"},
        monitored="churn",
        unmonitored="upsell",
        features=FEATURES,
        open_alerts=open_alerts,
        evaluations=evaluations,
        failed_evaluation=failed,
        rollout=rollout.id,
        tokens=tokens,
    )


def _log_windows(ws: Workspace, ref: str, ends: list[datetime], drifted: int, rows: int) -> None:
    """``rows`` predictions of ``ref`` in each window, the last ``drifted`` windows shifted, and
    labels for every other row (the true churn of the simulated customer)."""
    step = WINDOW / (rows + 1)
    rng = np.random.default_rng(5)
    for i, end in enumerate(ends):
        shift = 1.0 if i >= len(ends) - drifted else 0.0
        frame = make_churn_data(rows, seed=100 + i, shift=shift)
        logged = log_predictions(
            ws, ref, frame[FEATURES], end - WINDOW + step, step=step, seed=int(rng.integers(1e9))
        )
        ids = logged.column("prediction_id").to_pylist()
        labels: list[dict[str, Any]] = [
            {"prediction_id": pid, "label": int(y)}
            for pid, y in zip(ids[::2], frame["churned"].to_numpy()[::2], strict=True)
        ]
        record_labels("churn", labels, source="history", workspace=ws)
