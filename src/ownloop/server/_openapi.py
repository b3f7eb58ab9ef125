"""The OpenAPI document, generated from the same route table the app is built from."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ownloop.access import Role, required_role

__all__ = ["Served", "openapi"]


@dataclass(frozen=True)
class Served:
    """A model served when the document is built: its versions, and one row it accepts.

    ``row`` maps each feature to ``(value, v2 datatype)``; ``label`` is one label it accepts.
    """

    versions: tuple[str, ...]
    row: Mapping[str, tuple[Any, str]]
    label: Any


class _Spec(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def handler(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def summary(self) -> str: ...


_ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
}
_SCALAR = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "null"}]}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "PredictRequest": {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "properties": {
                    "instances": {
                        "type": "array",
                        "items": {
                            "oneOf": [
                                {"type": "object", "additionalProperties": _SCALAR},
                                {"type": "array", "items": _SCALAR},
                            ]
                        },
                    }
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["dataframe_records"],
                "properties": {
                    "dataframe_records": {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": _SCALAR},
                    }
                },
                "additionalProperties": False,
            },
            {
                "type": "object",
                "required": ["dataframe_split"],
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["columns", "data"],
                        "properties": {
                            "columns": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "array", "items": {"type": "array", "items": _SCALAR}},
                        },
                    }
                },
                "additionalProperties": False,
            },
        ]
    },
    "MlflowRequest": {
        "description": (
            "MLflow's scoring formats: exactly one of dataframe_split, dataframe_records, "
            "instances or inputs (rows, records or {column: values}); or a text/csv body with a "
            "header row"
        ),
        "type": "object",
        "oneOf": [
            {"required": [key]}
            for key in ("dataframe_split", "dataframe_records", "instances", "inputs")
        ],
        "properties": {
            "dataframe_split": {"type": "object"},
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "instances": {"type": "array"},
            "inputs": {"oneOf": [{"type": "array"}, {"type": "object"}]},
            "params": {"oneOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    "PredictResponse": {
        "type": "object",
        "required": ["predictions", "prediction_ids", "model", "version"],
        "properties": {
            "predictions": {"type": "array", "items": _SCALAR},
            "probabilities": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "number"}},
            },
            "prediction_ids": {"type": "array", "items": {"type": "string"}},
            "model": {"type": "string"},
            "version": {"type": "integer"},
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "items": _TENSOR},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "parameters": {"type": "object"},
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _TENSOR},
        },
    },
    "LabelsRequest": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["prediction_id", "label"],
            "properties": {
                "prediction_id": {"type": "string", "minLength": 1},
                "label": {
                    "description": "a class of the model, or a number (regression)",
                    "oneOf": [
                        {"type": "number"},
                        {"type": "boolean"},
                        {"type": "string", "minLength": 1},
                    ],
                },
                "weight": {"type": "number", "exclusiveMinimum": 0},
            },
            "additionalProperties": False,
        },
    },
    "LabelReport": {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "received": {"type": "integer"},
            "stored": {"type": "integer"},
            "replaced": {"type": "integer"},
            "unknown_count": {"type": "integer"},
            "unknown": {"type": "array", "items": {"type": "string"}},
        },
    },
}
_BODIES = {
    "predict": ("PredictRequest", "PredictResponse"),
    "model_invocations": ("MlflowRequest", "PredictResponse"),
    "invocations": ("MlflowRequest", "PredictResponse"),
    "infer": ("InferRequest", "InferResponse"),
    "post_labels": ("LabelsRequest", "LabelReport"),
}
_ERRORS = {
    "predict": ("400", "404", "413", "503"),
    "model_invocations": ("400", "404", "413", "503"),
    "invocations": ("400", "413", "503"),
    "infer": ("400", "404", "413", "503"),
    "post_labels": ("400", "403", "404", "413"),
    "model_metadata": ("400", "404"),
    "model_ready": ("400", "404"),
    "server_ready": ("400",),
}
# Health routes answer a boolean: 200 is true, a 4xx is false (Open Inference Protocol v2).
_HEALTH_WHY = {
    "model_ready": "Not ready: the error names why (e.g. its artifact failed its digest check)",
    "server_ready": (
        "Not every model is ready, or the prediction log writer's last write failed; the body "
        "maps each model to its readiness and gives the writer's error"
    ),
}
# Any route may be refused to its caller (no token, or a role too low for the action).
_ANY_ROUTE = ("401", "403")
_WHY = {
    "400": "Invalid input (names the field and the row)",
    "401": "No valid token (when authentication is on)",
    "403": "Not allowed",
    "404": "Unknown model or version",
    "413": "Body (after decompression) over the limit",
    "503": "Model not ready (e.g. its artifact failed its digest check)",
}


# API tokens ('ownloop token create'); required when auth is on (always off loopback)
SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer"}}
_AUTH_WHY = {
    "401": "No token where one is required, or a token unknown, expired or revoked",
    "403": "The token's role or team may not do this",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _path_parameter(name: str, served: Mapping[str, Served]) -> dict[str, Any]:
    """A path parameter; the names and versions served when the document was built are listed,
    so a client (or a fuzzer) can reach a real model. Any other value answers 404."""
    schema: dict[str, Any] = {"type": "string"}
    versions = {v for m in served.values() for v in m.versions}
    values = sorted(served) if name == "name" else sorted(versions)
    if values:
        schema["enum"] = values
    param: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
    if values:
        param["description"] = f"served now: {', '.join(values)} (others answer 404)"
        param["example"] = values[0]
    return param


def _example(handler: str, model: Served) -> Any:
    """A request body ``model`` accepts, in the shape ``handler`` reads."""
    if handler == "infer":
        inputs = [
            {"name": n, "shape": [1], "datatype": datatype, "data": [value]}
            for n, (value, datatype) in model.row.items()
        ]
        return {"inputs": inputs}
    if handler == "post_labels":
        return [{"prediction_id": "not-a-prediction", "label": model.label}]
    row = {n: value for n, (value, _) in model.row.items()}
    return {"instances": [row]} if handler == "predict" else {"dataframe_records": [row]}


def _operation(spec: _Spec, served: Mapping[str, Served]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": f"{spec.handler}_{spec.method.lower()}_{len(spec.path)}",
        "x-ownloop-access": {
            "action": spec.action,
            "role": required_role(spec.action).name.lower(),
        },
    }
    if required_role(spec.action) is not Role.ANYONE:
        op["security"] = [{"bearer": []}]
    params = re.findall(r"{(\w+)}", spec.path)
    if params:
        op["parameters"] = [_path_parameter(p, served) for p in params]
    request, response = _BODIES.get(spec.handler, (None, None))
    if request is not None:
        content: dict[str, Any] = {"application/json": {"schema": _ref(request)}}
        if served:
            content["application/json"]["examples"] = {
                name: {"summary": f"a row '{name}' accepts", "value": _example(spec.handler, m)}
                for name, m in sorted(served.items())
            }
        if request == "MlflowRequest":
            content["text/csv"] = {"schema": {"type": "string"}}
        op["requestBody"] = {"required": True, "content": content}
    ok: dict[str, Any] = {"description": "OK"}
    if spec.handler == "metrics_text":
        ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
    else:
        ok["content"] = {
            "application/json": {"schema": _ref(response) if response else {"type": "object"}}
        }
    op["responses"] = {"200": ok}
    for status in sorted({*_ERRORS.get(spec.handler, ()), *_ANY_ROUTE}):
        health = status == "400" and spec.handler in _HEALTH_WHY
        schema = {"type": "object"} if spec.handler == "server_ready" else _ref("Error")
        op["responses"][status] = {
            "description": _HEALTH_WHY[spec.handler] if health else _WHY[status],
            "content": {"application/json": {"schema": schema}},
        }
    if "security" in op:
        for status, why in _AUTH_WHY.items():
            op["responses"].setdefault(
                status,
                {"description": why, "content": {"application/json": {"schema": _ref("Error")}}},
            )
    return op


def openapi(
    routes: Sequence[_Spec],
    version: str,
    served: Mapping[str, Served] | None = None,
    *,
    max_label_rows: int = 10_000,
) -> dict[str, Any]:
    """OpenAPI 3.1 for ``routes``: every path, method, body, error shape and access rule.

    ``served`` describes the models served now: their names and versions become the values of
    the ``name`` and ``version`` path parameters, and a row each accepts the request examples.
    """
    schemas = dict(SCHEMAS)
    schemas["LabelsRequest"] = {**SCHEMAS["LabelsRequest"], "maxItems": max_label_rows}
    paths: dict[str, Any] = {}
    for spec in routes:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, served or {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ownloop",
            "version": version,
            "description": "Inference (Open Inference Protocol v2 and simple JSON), labels, metrics.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
    }
