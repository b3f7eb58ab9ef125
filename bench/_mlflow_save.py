"""Run in the MLflow venv: save the same benchmark model as an MLflow model folder."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow.sklearn
import pandas as pd
from mlflow.models import infer_signature

sys.path.insert(0, str(Path(__file__).parent))
from _model import FEATURES, make_data, make_model

model = make_model()
X, _ = make_data(50, seed=1)
frame = pd.DataFrame(X, columns=FEATURES)
mlflow.sklearn.save_model(
    model,
    sys.argv[1],
    signature=infer_signature(frame, model.predict_proba(X)),
    pyfunc_predict_fn="predict_proba",
    skops_trusted_types=["sklearn.tree._tree.Tree"],  # we built this file ourselves
)
