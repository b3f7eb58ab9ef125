"""Reference profile: the training data's shape, kept so drift and rollback never need raw rows.

Numeric features keep 201 quantiles (0.5% steps), quantile bins (counts per bin, for PSI and
Jensen-Shannon), a 30-bin histogram for plots, null and non-finite counts. Categorical features keep
category counts. The model's predictions and confidence on the reference are profiled the same way.

Bin convention, used by every reader: with interior ``cuts`` c0 < c1 < ... the bin of value v is
``searchsorted(cuts, v, side="right")``: bins are (-inf, c0), [c0, c1), ..., [c_last, inf).

Format 2 adds, for numeric columns, a fine ``grid`` (the distinct 0.5% quantiles together with
the cuts, so it refines the quantile bins) with exact ``grid_counts`` under the same convention;
monitoring bins current data on it for KS and Wasserstein without raw reference rows. For
classifiers with labels it adds per-bin probability sums to the calibration bins and an isotonic
calibration map per class. Readers treat a profile without ``format`` or with format 1 as having
none of these and fall back to the quantile bins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ownloop.errors import InvalidInputError
from ownloop.signature import Signature

__all__ = [
    "PROFILE_FORMAT",
    "ReferenceProfile",
    "bin_index",
    "compute_profile",
    "numeric_profile",
    "predict_frame",
]

PROFILE_FORMAT = 2
N_QUANTILES = 201
N_QUANTILE_BINS = 20
N_HIST_BINS = 30
MAX_CATEGORIES = 1000
PROB_EDGES = np.linspace(0.0, 1.0, 21)


def _f(x: Any) -> float | None:
    """A JSON-safe float (None for NaN or infinity)."""
    v = float(x)
    return v if np.isfinite(v) else None


def bin_index(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The quantile bin of each value under the profile's convention."""
    return np.searchsorted(cuts, values, side="right")


def numeric_profile(values: np.ndarray) -> dict[str, Any]:
    """Profile one numeric column (NaN = missing)."""
    x = np.asarray(values, dtype=float)
    nulls = int(np.isnan(x).sum())
    finite = x[np.isfinite(x)]
    nonfinite = int(x.size - nulls - finite.size)
    out: dict[str, Any] = {
        "kind": "numeric",
        "count": int(x.size),
        "nulls": nulls,
        "nonfinite": nonfinite,
    }
    if finite.size == 0:
        out.update(
            min=None, max=None, mean=None, std=None, quantiles=[], cuts=[], bin_counts=[finite.size]
        )
        out.update(hist_edges=[], hist_counts=[], grid=[], grid_counts=[0])
        return out
    s = np.sort(finite)
    qs = _sorted_quantiles(s, np.linspace(0.0, 1.0, N_QUANTILES))
    cuts = np.unique(_sorted_quantiles(s, np.linspace(0.0, 1.0, N_QUANTILE_BINS + 1)[1:-1]))
    counts = np.diff(np.concatenate(([0], np.searchsorted(s, cuts, side="left"), [s.size])))
    hist_counts, hist_edges = np.histogram(s, bins=N_HIST_BINS)
    grid = np.unique(np.concatenate((qs, cuts)))
    grid_counts = np.diff(np.concatenate(([0], np.searchsorted(s, grid, side="left"), [s.size])))
    out.update(
        min=_f(s[0]),
        max=_f(s[-1]),
        mean=_f(s.mean()),
        std=_f(s.std()),
        quantiles=[float(q) for q in qs],
        cuts=[float(c) for c in cuts],
        bin_counts=[int(c) for c in counts],
        hist_edges=[float(e) for e in hist_edges],
        hist_counts=[int(c) for c in hist_counts],
        grid=[float(g) for g in grid],
        grid_counts=[int(c) for c in grid_counts],
    )
    return out


def _sorted_quantiles(s: np.ndarray, probs: np.ndarray) -> np.ndarray:
    pos = probs * (s.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, s.size - 1)
    frac = pos - lo
    result: np.ndarray = s[lo] * (1 - frac) + s[hi] * frac
    return result


def categorical_profile(series: pd.Series) -> dict[str, Any]:
    nulls = int(series.isna().sum())
    counts = series.dropna().astype(str).value_counts(sort=True)
    top = counts.iloc[:MAX_CATEGORIES]
    return {
        "kind": "categorical",
        "count": int(series.size),
        "nulls": nulls,
        "distinct": int(counts.size),
        "categories": {str(k): int(v) for k, v in top.items()},
        "other": int(counts.iloc[MAX_CATEGORIES:].sum()),
    }


def predict_frame(
    model: Any, X: pd.DataFrame, signature: Signature
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions (and class probabilities for classifiers) on ``X``; user-model errors become input errors."""
    try:
        if signature.task == "classification" and hasattr(model, "predict_proba"):
            proba = np.asarray(model.predict_proba(X), dtype=float)
            classes = np.asarray(
                signature.classes if signature.classes is not None else model.classes_
            )
            return classes[np.argmax(proba, axis=1)], proba
        return np.asarray(model.predict(X)), None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise InvalidInputError(
            f"the model failed to predict on the reference data: {exc}"
        ) from exc


def _prediction_profile(
    signature: Signature, pred: np.ndarray, proba: np.ndarray | None, y: pd.Series | None
) -> dict[str, Any]:
    if signature.task == "regression" or proba is None:
        out: dict[str, Any] = {"kind": "regression", "values": numeric_profile(pred.astype(float))}
        if y is not None:
            err = pred.astype(float) - y.to_numpy(dtype=float)
            out["performance"] = {
                "n": int(err.size),
                "mae": _f(np.nanmean(np.abs(err))),
                "rmse": _f(np.sqrt(np.nanmean(err**2))),
            }
        return out
    classes = list(signature.classes or [])
    conf = proba.max(axis=1)
    out = {
        "kind": "classification",
        "classes": classes,
        "predicted_counts": [int((pred == c).sum()) for c in classes],
        "confidence": {
            "mean": _f(conf.mean()),
            "quantiles": [float(q) for q in np.quantile(conf, np.linspace(0, 1, 101))],
            "hist_edges": [float(e) for e in PROB_EDGES],
            "hist_counts": [int(c) for c in np.histogram(conf, bins=PROB_EDGES)[0]],
        },
        "probability": [
            {
                "class": c,
                "hist_counts": [int(n) for n in np.histogram(proba[:, i], bins=PROB_EDGES)[0]],
            }
            for i, c in enumerate(classes)
        ],
    }
    if y is not None:
        labels = y.to_numpy()
        out["target_counts"] = [int((labels == c).sum()) for c in classes]
        out["performance"] = {
            "n": int(labels.size),
            "accuracy": _f((pred == labels).mean()),
            "note": "on the reference data itself; optimistic if it is the training set",
        }
        bins = np.clip(np.digitize(proba, PROB_EDGES[1:-1]), 0, len(PROB_EDGES) - 2)
        out["calibration"] = [
            {
                "class": c,
                "counts": [int(n) for n in np.bincount(bins[:, i], minlength=len(PROB_EDGES) - 1)],
                "positives": [
                    int(n)
                    for n in np.bincount(
                        bins[:, i],
                        weights=(labels == c).astype(float),
                        minlength=len(PROB_EDGES) - 1,
                    )
                ],
                "prob_sums": [
                    float(v)
                    for v in np.bincount(
                        bins[:, i], weights=proba[:, i], minlength=len(PROB_EDGES) - 1
                    )
                ],
            }
            for i, c in enumerate(classes)
        ]
        out["calibration_map"] = [
            {"class": c, **isotonic_map(proba[:, i], (labels == c).astype(float))}
            for i, c in enumerate(classes)
        ]
    return out


def isotonic_map(scores: np.ndarray, outcomes: np.ndarray) -> dict[str, list[float]]:
    """Isotonic regression of outcomes on scores, as the knots of a piecewise-linear map."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, outcomes)
    return {
        "x": [float(v) for v in iso.X_thresholds_],
        "y": [float(v) for v in iso.y_thresholds_],
    }


@dataclass(frozen=True)
class ReferenceProfile:
    """A computed profile; ``data`` is plain JSON."""

    data: dict[str, Any]

    @property
    def format(self) -> int:
        return int(self.data.get("format", 1))

    @property
    def row_count(self) -> int:
        return int(self.data["rows"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        feats: dict[str, dict[str, Any]] = self.data["features"]
        return feats

    @property
    def prediction(self) -> dict[str, Any]:
        pred: dict[str, Any] = self.data["prediction"]
        return pred

    def to_bytes(self) -> bytes:
        return json.dumps(self.data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ReferenceProfile:
        return cls(json.loads(raw))


def compute_profile(model: Any, reference: pd.DataFrame, signature: Signature) -> ReferenceProfile:
    """Profile the reference features, target and the model's outputs on them."""
    if len(reference) == 0:
        raise InvalidInputError(
            "the reference data has no rows; pass the data the model was trained or validated on"
        )
    X = reference[signature.feature_names]
    features: dict[str, Any] = {}
    for feat in signature.features:
        col = X[feat.name]
        if feat.type in ("float", "integer"):
            features[feat.name] = numeric_profile(col.to_numpy(dtype=float, na_value=np.nan))
        else:
            features[feat.name] = categorical_profile(col)
    pred, proba = predict_frame(model, X, signature)
    y = reference[signature.target] if signature.target and signature.target in reference else None
    return ReferenceProfile(
        {
            "format": PROFILE_FORMAT,
            "rows": len(reference),
            "features": features,
            "prediction": _prediction_profile(signature, pred, proba, y),
        }
    )
