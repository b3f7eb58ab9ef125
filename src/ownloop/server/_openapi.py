"""The OpenAPI document, generated from the same route table the app is built from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from ownloop.access import required_role

__all__ = ["openapi"]


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
        "properties": {
            "dataframe_split": {"type": "object"},
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "instances": {"type": "array"},
            "inputs": {"oneOf": [{"type": "array"}, {"type": "object"}]},
            "params": {"type": "object", "maxProperties": 0},
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
        "items": {
            "type": "object",
            "required": ["prediction_id", "label"],
            "properties": {
                "prediction_id": {"type": "string"},
                "label": _SCALAR,
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
    "model_metadata": ("404",),
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
_WHY = {
    "400": "Invalid input (names the field and the row)",
    "403": "Not allowed",
    "404": "Unknown model or version",
    "413": "Body (after decompression) over the limit",
    "503": "Model not ready (e.g. its artifact failed its digest check)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(spec: _Spec) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": spec.summary,
        "operationId": f"{spec.handler}_{spec.method.lower()}_{len(spec.path)}",
        "x-ownloop-access": {
            "action": spec.action,
            "role": required_role(spec.action).name.lower(),
        },
    }
    params = re.findall(r"{(\w+)}", spec.path)
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    request, response = _BODIES.get(spec.handler, (None, None))
    if request is not None:
        content: dict[str, Any] = {"application/json": {"schema": _ref(request)}}
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
    for status in _ERRORS.get(spec.handler, ()):
        health = status == "400" and spec.handler in _HEALTH_WHY
        schema = {"type": "object"} if spec.handler == "server_ready" else _ref("Error")
        op["responses"][status] = {
            "description": _HEALTH_WHY[spec.handler] if health else _WHY[status],
            "content": {"application/json": {"schema": schema}},
        }
    return op


def openapi(
    routes: Sequence[_Spec], version: str, *, max_label_rows: int = 10_000
) -> dict[str, Any]:
    """OpenAPI 3.1 for ``routes``: every path, method, body, error shape and access rule."""
    schemas = dict(SCHEMAS)
    schemas["LabelsRequest"] = {**SCHEMAS["LabelsRequest"], "maxItems": max_label_rows}
    paths: dict[str, Any] = {}
    for spec in routes:
        paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ownloop",
            "version": version,
            "description": "Inference (Open Inference Protocol v2 and simple JSON), labels, metrics.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
