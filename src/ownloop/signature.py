"""What a model takes and gives: feature names and types, task, classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ownloop.errors import InvalidInputError

__all__ = [
    "FEATURE_TYPES",
    "Feature",
    "Signature",
    "check_columns",
    "infer_signature",
    "is_classifier",
]

FEATURE_TYPES = ("float", "integer", "boolean", "string")


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    nullable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


@dataclass(frozen=True)
class Signature:
    """Inputs in model order, and the output: ``classification`` with ``classes`` or ``regression``."""

    features: tuple[Feature, ...]
    task: str
    classes: tuple[Any, ...] | None = None
    target: str | None = None

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise InvalidInputError(
            f"unknown feature '{name}'; the model takes: {', '.join(self.feature_names)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [f.to_dict() for f in self.features],
            "task": self.task,
            "classes": None if self.classes is None else list(self.classes),
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        classes = data.get("classes")
        return cls(
            features=tuple(
                Feature(f["name"], f["type"], bool(f.get("nullable"))) for f in data["features"]
            ),
            task=data["task"],
            classes=None if classes is None else tuple(classes),
            target=data.get("target"),
        )


def is_classifier(model: Any) -> bool:
    flag = getattr(model, "is_classifier", None)
    if isinstance(flag, bool):
        return flag
    return hasattr(model, "predict_proba") and hasattr(model, "classes_")


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def column_type(name: str, series: pd.Series) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if (
        pd.api.types.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(dtype)
    ):
        return "string"
    raise InvalidInputError(
        f"column '{name}' has type {dtype}, which ownloop cannot profile; "
        "convert it to a number, boolean or string column"
    )


def check_columns(model: Any, columns: Sequence[str]) -> list[str]:
    """The feature columns in model order; raise when the data does not match what the model takes."""
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        expected = [str(n) for n in names]
        missing = [c for c in expected if c not in columns]
        extra = [c for c in columns if c not in expected]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"not used by the model: {', '.join(extra)}")
            raise InvalidInputError(
                f"reference columns do not match the model ({'; '.join(parts)}); the model was "
                f"trained on: {', '.join(expected)}. Pass --target for the label column and drop the rest"
            )
        return expected
    n = getattr(model, "n_features_in_", None)
    if n is not None and int(n) != len(columns):
        raise InvalidInputError(
            f"the model takes {n} features but the reference has {len(columns)} feature columns "
            f"({', '.join(columns)}); pass --target for the label column and drop the rest"
        )
    return list(columns)


def infer_signature(model: Any, reference: pd.DataFrame | None, target: str | None) -> Signature:
    """Build the signature from reference data (preferred) or the model's ``feature_names_in_``."""
    if reference is not None:
        feature_cols = [str(c) for c in reference.columns if c != target]
        ordered = check_columns(model, feature_cols)
        features = tuple(
            Feature(c, column_type(c, reference[c]), bool(reference[c].isna().any()))
            for c in ordered
        )
    elif getattr(model, "feature_names_in_", None) is not None:
        features = tuple(Feature(str(n), "float") for n in model.feature_names_in_)
    else:
        raise InvalidInputError(
            "cannot tell which features this model takes: pass reference data (--reference)"
        )
    if is_classifier(model):
        classes = getattr(model, "classes_", None)
        if classes is None and reference is not None and target is not None:
            classes = np.unique(reference[target].dropna())
        return Signature(
            features,
            "classification",
            None if classes is None else tuple(_python(c) for c in classes),
            target,
        )
    return Signature(features, "regression", None, target)
