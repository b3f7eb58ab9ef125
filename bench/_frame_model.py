"""The DataFrame benchmark model: HistGradientBoosting fitted on a 20-column DataFrame.

Most scikit-learn users fit on a DataFrame, so the model remembers its column names
(``feature_names_in_``); the same data as ``_model.py``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from _model import FEATURES, make_data

# skops refuses to load these unless trusted; we built the file ourselves
TRUSTED = [
    "functools.partial",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]


def make_frame() -> tuple[pd.DataFrame, Any]:
    X, y = make_data()
    return pd.DataFrame(X, columns=FEATURES), y


def make_frame_model() -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    frame, y = make_frame()
    return HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(frame, y)
