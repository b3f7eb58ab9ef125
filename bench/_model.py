"""The benchmark model, built the same way in every venv: 20 features, gradient boosting."""

from __future__ import annotations

from typing import Any

import numpy as np

N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def make_data(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).round(4)
    logit = X[:, :5] @ np.array([1.0, -0.8, 0.6, 0.4, -0.3]) + 0.5 * X[:, 5] * X[:, 6]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def make_model() -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = make_data()
    return GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(X, y)
