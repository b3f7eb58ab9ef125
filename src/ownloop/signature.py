"""What a model takes and gives: feature names and types, task, classes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.names import validate_feature_name

__all__ = [
    "FEATURE_TYPES",
    "Feature",
    "Signature",
    "check_columns",
    "infer_signature",
    "is_classifier",
    "model_inputs",
    "read_signature",
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
    names = model_inputs(model).names
    if names is not None:
        missing = [c for c in names if c not in columns]
        extra = [c for c in columns if c not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"not used by the model: {', '.join(extra)}")
            raise InvalidInputError(
                f"reference columns do not match the model ({'; '.join(parts)}); the model was "
                f"trained on: {', '.join(names)}. Name the label column with target= and drop the rest"
            )
        return names
    n = getattr(model, "n_features_in_", None)
    if n is not None and int(n) != len(columns):
        raise InvalidInputError(
            f"the model takes {n} features but the reference has {len(columns)} feature columns "
            f"({', '.join(columns)}); name the label column with target= and drop the rest"
        )
    return list(columns)


# -- what the model itself says it takes ---------------------------------------------------


@dataclass(frozen=True)
class ModelInputs:
    """Input names the model recorded (None when it did not), and the types it can vouch for."""

    names: list[str] | None
    types: dict[str, str]

    @property
    def complete(self) -> bool:
        return self.names is not None and all(n in self.types for n in self.names)


def model_inputs(model: Any) -> ModelInputs:
    """Feature names and types from the model: ONNX inputs, a pipeline's ColumnTransformer, ...

    Only what the model knows is returned: a column a transformer drops has a name but no type.
    """
    onnx_types = getattr(model, "input_types", None)
    if isinstance(onnx_types, dict):
        return ModelInputs(list(onnx_types), {k: v for k, v in onnx_types.items() if v})
    raw = getattr(model, "feature_names_in_", None)
    if raw is None:
        return ModelInputs(None, {})
    names = [str(n) for n in raw]
    steps = getattr(model, "steps", None)
    first = steps[0][1] if steps else model
    if hasattr(first, "transformers_"):
        return ModelInputs(names, _column_transformer_types(first, names))
    categories = _categories(first)
    if categories is not None and len(categories) == len(names):  # an encoder on every column
        return ModelInputs(
            names, {n: _category_type(c) for n, c in zip(names, categories, strict=True)}
        )
    inner = getattr(first, "_preprocessor", None)  # HistGradientBoosting's native categoricals
    types = {n: "float" for n in names}
    if inner is not None and hasattr(inner, "transformers_"):
        types.update({k: v for k, v in _column_transformer_types(inner, names).items()})
    return ModelInputs(names, types)


def _column_transformer_types(ct: Any, names: list[str]) -> dict[str, str]:
    types: dict[str, str] = {}
    for _, transformer, columns in ct.transformers_:
        cols = _column_names(columns, names)
        if isinstance(transformer, str):
            if transformer == "passthrough":  # handed as-is to a numeric estimator
                types.update({c: "float" for c in cols})
            continue  # "drop": the model needs the column but says nothing about its type
        categories = _categories(transformer)
        if categories is None:
            types.update({c: "float" for c in cols})
        else:
            types.update(
                {c: _category_type(cats) for c, cats in zip(cols, categories, strict=False)}
            )
    return types


def _column_names(columns: Any, names: list[str]) -> list[str]:
    if isinstance(columns, slice):
        return names[columns]
    items = [columns] if isinstance(columns, str | int | np.integer) else list(columns)
    if items and all(isinstance(c, bool | np.bool_) for c in items):
        return [n for n, keep in zip(names, items, strict=False) if keep]
    return [names[int(c)] if isinstance(c, int | np.integer) else str(c) for c in items]


def _categories(transformer: Any) -> list[Any] | None:
    """``categories_`` of an encoder, also inside a nested pipeline (imputer, then encoder)."""
    found = getattr(transformer, "categories_", None)
    if found is not None:
        return list(found)
    for _, step in getattr(transformer, "steps", []):
        found = _categories(step)
        if found is not None:
            return found
    return None


def _category_type(categories: Any) -> str:
    values = [v for v in np.asarray(categories, dtype=object).tolist() if not _missing(v)]
    if values and all(isinstance(v, bool | np.bool_) for v in values):
        return "boolean"
    if values and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        return "integer"
    if values and all(isinstance(v, int | float | np.number) for v in values):
        return "float"
    return "string"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# -- an explicit signature -------------------------------------------------------------------

_SIGNATURE_KEYS = {"features", "target", "task", "classes", "output"}


def read_signature(source: Signature | Mapping[str, Any] | str | Path) -> Mapping[str, Any]:
    """An explicit signature as a plain mapping: from a Signature, a dict, or a JSON/YAML file.

    >>> read_signature({"features": [{"name": "age", "type": "float"}]})["features"][0]["name"]
    'age'
    """
    if isinstance(source, Signature):
        return source.to_dict()
    if isinstance(source, Mapping):
        data: Any = source
    else:
        data = _load_signature_file(Path(source))
    if not isinstance(data, Mapping) or not isinstance(data.get("features"), list):
        raise InvalidInputError(
            'a signature needs a "features" list: {"features": [{"name": "age", "type": "float"}, ...]}'
        )
    unknown = sorted(set(data) - _SIGNATURE_KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown signature keys: {', '.join(map(str, unknown))}; known: {', '.join(sorted(_SIGNATURE_KEYS))}"
        )
    return data


def _load_signature_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"signature file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read signature file {path}: {exc}") from exc
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(f"signature file {path} is not valid JSON or YAML: {exc}") from exc


def _explicit_features(data: Mapping[str, Any]) -> tuple[Feature, ...]:
    features = []
    for i, item in enumerate(data["features"]):
        if not isinstance(item, Mapping) or not {"name", "type"} <= set(item):
            raise InvalidInputError(
                f'signature feature #{i + 1} needs a name and a type, like {{"name": "age", "type": "float"}}'
            )
        if item["type"] not in FEATURE_TYPES:
            raise InvalidInputError(
                f"signature feature {item['name']!r} has type {item['type']!r}; "
                f"use one of {', '.join(FEATURE_TYPES)}"
            )
        features.append(Feature(item["name"], item["type"], bool(item.get("nullable", False))))
    names = [f.name for f in features]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(f"the signature names {', '.join(twice)} more than once")
    return tuple(features)


# -- putting it together ---------------------------------------------------------------------

_NUMERIC = {"float", "integer", "boolean"}

HOW_TO_SAY = (
    "pass reference data (reference=, a DataFrame or a Parquet/CSV file), an explicit signature "
    '(signature=, a Signature, a dict or a JSON/YAML file like {"features": [{"name": "age", '
    '"type": "float"}]}), or a model that records its input types (a pipeline whose '
    "ColumnTransformer encodes the string columns, or an ONNX model with one named input per feature)"
)


def infer_signature(
    model: Any,
    reference: pd.DataFrame | None,
    target: str | None,
    explicit: Signature | Mapping[str, Any] | str | Path | None = None,
) -> Signature:
    """The signature from an explicit one, reference data, or the model; never a guess.

    Where two sources exist they must agree: a column the model needs that the reference or
    the signature lacks is an error naming it, and so is a string column the model encodes
    that the reference holds as numbers (or the other way round).
    """
    inputs = model_inputs(model)
    data = None if explicit is None else read_signature(explicit)
    if data is not None:
        features = _explicit_features(data)
        _agree(inputs, features, "the signature")
        n = getattr(model, "n_features_in_", None)
        if inputs.names is None and n is not None and int(n) != len(features):
            raise InvalidInputError(
                f"the model takes {n} features but the signature names {len(features)}"
            )
        if reference is not None:
            _agree_reference(features, reference)
        target = target if target is not None else data.get("target")
    elif reference is not None:
        ordered = check_columns(model, [str(c) for c in reference.columns if c != target])
        features = tuple(
            Feature(c, column_type(c, reference[c]), bool(reference[c].isna().any()))
            for c in ordered
        )
        _agree(inputs, features, "the reference data")
    elif inputs.complete and inputs.names is not None:
        features = tuple(Feature(n, inputs.types[n]) for n in inputs.names)
    else:
        raise InvalidInputError(_unknown_inputs(inputs) + HOW_TO_SAY)
    for f in features:
        validate_feature_name(f.name)
    return _with_output(model, features, reference, target, data)


def _unknown_inputs(inputs: ModelInputs) -> str:
    if inputs.names is None:
        return "cannot tell which features this model takes, or their types: "
    unknown = [n for n in inputs.names if n not in inputs.types]
    return f"the model does not record the types of {', '.join(unknown)}: "


def _kind(feature_type: str) -> str:
    return "number" if feature_type in _NUMERIC else "string"


def _agree(inputs: ModelInputs, features: Sequence[Feature], source: str) -> None:
    names = [f.name for f in features]
    if inputs.names is not None:
        missing = [n for n in inputs.names if n not in names]
        if missing:
            raise InvalidInputError(
                f"the model needs {', '.join(missing)}, which {source} does not have; "
                f"the model takes: {', '.join(inputs.names)}"
            )
        extra = [n for n in names if n not in inputs.names]
        if extra:
            raise InvalidInputError(
                f"{source} has {', '.join(extra)}, which the model does not take; "
                f"the model takes: {', '.join(inputs.names)}"
            )
    for f in features:
        known = inputs.types.get(f.name)
        if known is not None and _kind(known) != _kind(f.type):
            raise InvalidInputError(
                f"feature '{f.name}' is {f.type} in {source} but the model was fitted on "
                f"{known} values; fix {source} or refit the model"
            )


def _agree_reference(features: Sequence[Feature], reference: pd.DataFrame) -> None:
    missing = [f.name for f in features if f.name not in reference.columns]
    if missing:
        raise InvalidInputError(
            f"the reference data has no column {', '.join(missing)}, which the signature names"
        )
    for f in features:
        actual = column_type(f.name, reference[f.name])
        if _kind(actual) != _kind(f.type):
            raise InvalidInputError(
                f"feature '{f.name}' is {f.type} in the signature but {actual} in the reference data"
            )


def _with_output(
    model: Any,
    features: tuple[Feature, ...],
    reference: pd.DataFrame | None,
    target: str | None,
    data: Mapping[str, Any] | None,
) -> Signature:
    output: Mapping[str, Any] = {}
    if data is not None:
        nested = data.get("output")
        output = nested if isinstance(nested, Mapping) else data
    task = output.get("task")
    if task is None:
        task = "classification" if is_classifier(model) else "regression"
    if task not in ("classification", "regression"):
        raise InvalidInputError(f"task {task!r} is not classification or regression")
    if task == "regression":
        return Signature(features, "regression", None, target)
    classes = output.get("classes")
    if classes is None:
        classes = getattr(model, "classes_", None)
    if classes is None and reference is not None and target is not None:
        classes = np.unique(reference[target].dropna())
    return Signature(
        features,
        "classification",
        None if classes is None else tuple(_python(c) for c in classes),
        target,
    )
