"""Run in the MLflow venv: save the DataFrame-fitted benchmark model as an MLflow model folder."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature

sys.path.insert(0, str(Path(__file__).parent))
from _frame_model import TRUSTED, make_frame, make_frame_model

model = make_frame_model()
frame, _ = make_frame()
mlflow.sklearn.save_model(
    model,
    sys.argv[1],
    signature=infer_signature(frame.head(50), model.predict_proba(frame.head(50))),
    pyfunc_predict_fn="predict_proba",
    skops_trusted_types=TRUSTED,
)
