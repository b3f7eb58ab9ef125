"""Datasets for a gate: read, check against the model's signature, predict, map labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ownloop.datasets import file_digest, read_frame
from ownloop.errors import InvalidInputError
from ownloop.evaluation._metrics import Outputs
from ownloop.evaluation._suite import DatasetSpec
from ownloop.profile import predict_frame
from ownloop.signature import Signature

__all__ = ["Dataset", "load_dataset", "model_outputs", "score_of"]


@dataclass(frozen=True)
class Dataset:
    name: str
    frame: pd.DataFrame  # rows kept after the NaN policy, index reset
    X: pd.DataFrame
    y: np.ndarray | None
    digest: str
    dropped: int
    note: str | None = None

    @property
    def n(self) -> int:
        return len(self.frame)


def load_dataset(
    spec: DatasetSpec, signature: Signature, *, frame: pd.DataFrame | None = None
) -> Dataset:
    """Read one suite dataset and check it fits the model; every problem is one clear error."""
    where = f"dataset '{spec.name}' ({spec.path})"
    if frame is None:
        frame = read_frame(spec.path)
        digest = file_digest(spec.path)
    else:
        from ownloop.datasets import frame_digest

        digest = frame_digest(frame)
    if len(frame) == 0:
        raise InvalidInputError(f"{where} has no rows; point the suite at data with rows")
    features = signature.feature_names
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"{where} lacks feature column(s) {', '.join(missing)} that the model takes"
        )
    label = spec.label if spec.label is not None else signature.target
    if spec.label is None and label not in frame.columns:
        label = (
            None  # unlabelled rows (expectation cases, behaviour checks); metric checks refuse them
        )
    if label is not None and label not in frame.columns:
        raise InvalidInputError(
            f"{where} has no label column '{label}' (columns: {', '.join(map(str, frame.columns))}); "
            "set 'label:' on the dataset in the suite"
        )
    frame, dropped, note = _apply_nan_policy(frame, features, label, spec, where)
    frame = frame.reset_index(drop=True)
    y = None if label is None else frame[label].to_numpy()
    if y is not None and signature.task == "classification":
        _check_labels(y, signature, where, label or "")
    if y is not None and signature.task == "regression":
        try:
            y = y.astype(float)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{where}: label column '{label}' must be numeric for a regressor"
            ) from None
    return Dataset(spec.name, frame, frame[features], y, digest, dropped, note)


def _apply_nan_policy(
    frame: pd.DataFrame, features: list[str], label: str | None, spec: DatasetSpec, where: str
) -> tuple[pd.DataFrame, int, str | None]:
    nulls = frame[features].isna().sum()
    bad = {str(c): int(v) for c, v in nulls.items() if v > 0}
    label_nulls = int(frame[label].isna().sum()) if label is not None else 0
    if label_nulls:
        bad[f"{label} (label)"] = label_nulls
    if not bad:
        return frame, 0, None
    listed = ", ".join(f"{c}: {v} rows" for c, v in bad.items())
    if spec.nan_policy == "error" or (spec.nan_policy == "keep" and label_nulls):
        raise InvalidInputError(
            f"{where} has missing values ({listed}); set 'nan_policy: drop' on the dataset to "
            "drop those rows, or 'nan_policy: keep' if the model handles missing features"
        )
    if spec.nan_policy == "keep":
        return frame, 0, f"{spec.name}: kept rows with missing features ({listed})"
    cols = [*features, *([label] if label is not None else [])]
    kept = frame.dropna(subset=cols)
    if len(kept) == 0:
        raise InvalidInputError(f"{where}: every row has a missing value ({listed})")
    dropped = len(frame) - len(kept)
    return kept, dropped, f"{spec.name}: dropped {dropped} rows with missing values ({listed})"


def _check_labels(y: np.ndarray, signature: Signature, where: str, label: str) -> None:
    classes = list(signature.classes or [])
    if not classes:
        return
    known = set(classes)
    unseen = sorted({v for v in pd.unique(y) if _plain(v) not in known}, key=str)
    if unseen:
        shown = ", ".join(repr(_plain(v)) for v in unseen[:10])
        raise InvalidInputError(
            f"{where}: label column '{label}' has values the model never saw: {shown} "
            f"(the model's classes: {', '.join(map(repr, classes))}); fix the labels or the dataset"
        )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def model_outputs(
    model: Any, data: Dataset, signature: Signature, positive_label: Any = None
) -> Outputs:
    """Predictions of ``model`` on ``data`` as metric-ready outputs (labels as class indices)."""
    pred, proba = predict_frame(model, data.X, signature)
    if signature.task != "classification":
        y = np.full(data.n, np.nan) if data.y is None else data.y.astype(float)
        return Outputs(y, np.asarray(pred, dtype=float), None, ())
    classes = tuple(signature.classes or ())
    lookup = {c: i for i, c in enumerate(classes)}
    pred_idx = _class_index(np.asarray(pred), classes)
    y_idx = np.full(data.n, -1, dtype=np.int64) if data.y is None else _class_index(data.y, classes)
    positive = 1 if len(classes) > 1 else 0
    if positive_label is not None:
        if positive_label not in lookup:
            raise InvalidInputError(
                f"positive_label {positive_label!r} is not one of the model's classes {list(classes)}"
            )
        positive = lookup[positive_label]
    return Outputs(y_idx, pred_idx, proba, classes, positive)


def _class_index(values: np.ndarray, classes: tuple[Any, ...]) -> np.ndarray:
    """Positions of ``values`` in ``classes`` (every value is known: labels were checked)."""
    index = pd.Index(list(classes))
    found = np.asarray(index.get_indexer(pd.Index(values)), dtype=np.int64)
    if np.any(found < 0):  # numbers read back as another type (1.0 vs 1): match one by one
        lookup = {c: i for i, c in enumerate(classes)}
        found = np.fromiter((lookup[_plain(v)] for v in values), dtype=np.int64, count=len(values))
    return found


def score_of(model: Any, X: pd.DataFrame, signature: Signature, positive: int = 1) -> np.ndarray:
    """One number per row: the positive-class probability (binary) or the regression output."""
    pred, proba = predict_frame(model, X, signature)
    if signature.task == "classification":
        if proba is None or proba.shape[1] != 2:
            raise InvalidInputError(
                "a directional check needs a score: a binary classifier with predict_proba or a regressor"
            )
        return proba[:, positive]
    return np.asarray(pred, dtype=float)
