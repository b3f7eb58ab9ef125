"""The MLflow half of bench_gate.py; runs inside bench/.venv-mlflow. Prints one JSON line.

The same two models (loaded from the ownloop workspace, digest-checked) on the same rows:
``mlflow.models.evaluate`` for candidate and baseline, then ``validate_evaluation_results``
with the same bounds on point values. MLflow has no intervals and no negative margin
(``min_absolute_change`` must be > 0), so non-inferiority becomes "candidate >= baseline point
value - margin", computed here. Then one resample (evaluate x2 on a bootstrap draw) is timed to
show what intervals would cost through MLflow.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import MetricThreshold

import ownloop

TRUST = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


def _evaluate(uri: str, data: pd.DataFrame) -> object:
    return mlflow.models.evaluate(
        uri,
        data,
        targets="churned",
        model_type="classifier",
        evaluators=["default"],
        evaluator_config={"default": {"log_model_explainability": False}},
    )


def main() -> None:
    folder, margin, _resamples = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    warnings.filterwarnings("ignore")
    data = pd.read_parquet(folder / "holdout.parquet")
    models = {"candidate": ownloop.load("churn@2"), "baseline": ownloop.load("churn@1")}
    with mlflow.start_run():
        uris = {
            k: mlflow.sklearn.log_model(m, name=k, skops_trusted_types=TRUST).model_uri
            for k, m in models.items()
        }
        start, cpu = time.perf_counter(), time.process_time()
        cand, base = _evaluate(uris["candidate"], data), _evaluate(uris["baseline"], data)
        b = base.metrics  # type: ignore[attr-defined]
        thresholds = {
            "accuracy_score": MetricThreshold(
                threshold=max(0.70, b["accuracy_score"] - margin), greater_is_better=True
            ),
            "roc_auc": MetricThreshold(
                threshold=max(0.75, b["roc_auc"] - margin), greater_is_better=True
            ),
            "log_loss": MetricThreshold(threshold=0.55, greater_is_better=False),
            "f1_score": MetricThreshold(threshold=0.40, greater_is_better=True),
        }
        try:
            mlflow.validate_evaluation_results(
                candidate_result=cand, baseline_result=None, validation_thresholds=thresholds
            )
            verdict = "PASS"
        except mlflow.exceptions.MlflowException:
            verdict = "FAIL"
        point, point_cpu = time.perf_counter() - start, time.process_time() - cpu
        rng = np.random.default_rng(0)
        draw = data.iloc[rng.integers(0, len(data), len(data))].reset_index(drop=True)
        start = time.perf_counter()
        _evaluate(uris["candidate"], draw)
        _evaluate(uris["baseline"], draw)
        per_resample = time.perf_counter() - start
    print(
        json.dumps(
            {
                "point": point,
                "point_cpu": point_cpu,
                "per_resample": per_resample,
                "verdict": verdict,
                "version": mlflow.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
