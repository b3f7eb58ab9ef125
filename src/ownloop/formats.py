"""Model file formats: skops (default, trusted-type list), ONNX (extra), pickle/joblib (opt-in only).

Nothing here ever unpickles unless the caller passes ``allow_pickle=True``, which registry
sets only for versions a person explicitly registered with ``--allow-unsafe-pickle``.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ownloop.errors import InvalidInputError, UnsafeFormatError

__all__ = ["FORMATS", "OnnxModel", "detect_format", "dump_skops", "load_model", "untrusted_types"]

FORMATS = ("skops", "onnx", "pickle", "joblib")
PICKLE_FORMATS = frozenset({"pickle", "joblib"})

_COMPRESSED = (b"\x78", b"\x1f\x8b", b"\xfd7zXZ", b"BZh", b"\x04\x22\x4d\x18")


def detect_format(data: bytes, filename: str | None = None) -> str:
    """Name the format of a model file from its bytes (and extension for ONNX); never loads it."""
    name = (filename or "").lower()
    if not data:
        raise InvalidInputError(f"model file {filename or ''} is empty".replace("  ", " "))
    if data[:4] == b"PK\x03\x04":
        if _is_skops(data):
            return "skops"
        raise InvalidInputError(f"{filename or 'model file'} is a zip archive but not a skops file")
    if name.endswith(".onnx"):
        return "onnx"
    if data[:1] == b"\x80" and len(data) > 1 and 2 <= data[1] <= 5:
        return "joblib" if name.endswith(".joblib") else "pickle"
    if name.endswith((".joblib", ".pkl", ".pickle")) and data.startswith(_COMPRESSED):
        return "joblib"
    raise InvalidInputError(
        f"{filename or 'model file'} is not a model file ownloop can read: expected skops (.skops), "
        "ONNX (.onnx), or pickle/joblib (with --allow-unsafe-pickle)"
    )


def _is_skops(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return "schema.json" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def dump_skops(model: Any) -> bytes:
    """Serialise a live object with skops."""
    import skops.io as sio

    try:
        data: bytes = sio.dumps(model)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidInputError(
            f"cannot save {type(model).__name__} with skops: {exc}; save it as ONNX, or as a "
            "pickle with allow_unsafe_pickle=True if you accept the risk"
        ) from exc
    return data


def untrusted_types(data: bytes) -> list[str]:
    """Types in a skops file that skops does not trust by default."""
    import skops.io as sio

    try:
        return sorted(sio.get_untrusted_types(data=data))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError) as exc:
        raise InvalidInputError(f"the skops file is damaged or not a skops file: {exc}") from exc


def load_model(
    data: bytes,
    fmt: str,
    *,
    trusted: Sequence[str] = (),
    allow_pickle: bool = False,
) -> Any:
    """Turn verified artifact bytes into a model object."""
    if fmt == "skops":
        return _load_skops(data, trusted)
    if fmt == "onnx":
        return OnnxModel(data)
    if fmt in PICKLE_FORMATS:
        if not allow_pickle:
            raise UnsafeFormatError(
                f"this file is a {fmt}, which can run arbitrary code when loaded; convert it to "
                "skops (skops.io.dump) or ONNX, or pass --allow-unsafe-pickle if you trust its source"
            )
        if fmt == "joblib":
            import joblib

            return joblib.load(io.BytesIO(data))
        return pickle.loads(data)
    raise InvalidInputError(f"unknown model format '{fmt}'; known: {', '.join(FORMATS)}")


def _load_skops(data: bytes, trusted: Sequence[str]) -> Any:
    import skops.io as sio

    extra = [t for t in untrusted_types(data) if t not in set(trusted)]
    if extra:
        flags = " ".join(f"--trust {t}" for t in extra)
        raise UnsafeFormatError(
            f"the skops file contains types nobody has trusted: {', '.join(extra)}; "
            f"check them, then register with {flags}"
        )
    try:
        return sio.loads(data, trusted=list(trusted))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"the skops file could not be loaded: {exc}") from exc


class OnnxModel:
    """An ONNX graph behind the scikit-learn predict/predict_proba interface."""

    def __init__(self, data: bytes) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise InvalidInputError(
                "ONNX models need onnxruntime; run: pip install 'ownloop[onnx]'"
            ) from exc
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        bad_graph = (
            ort_errors.InvalidProtobuf,
            ort_errors.InvalidGraph,
            ort_errors.InvalidArgument,
            ort_errors.Fail,
            ort_errors.NotImplemented,
            ort_errors.RuntimeException,
        )
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except bad_graph as exc:
            raise InvalidInputError(f"not a valid ONNX model: {exc}") from exc
        self._inputs = self._session.get_inputs()
        self._outputs = [o.name for o in self._session.get_outputs()]
        self.classes_: np.ndarray | None = None
        if len(self._inputs) > 1:
            self.feature_names_in_ = np.array([i.name for i in self._inputs], dtype=object)
        elif self._inputs[0].shape and isinstance(self._inputs[0].shape[-1], int):
            self.n_features_in_ = int(self._inputs[0].shape[-1])

    @property
    def is_classifier(self) -> bool:
        return len(self._outputs) >= 2

    def _feed(self, X: Any) -> dict[str, np.ndarray]:
        frame = X if isinstance(X, pd.DataFrame) else None
        if len(self._inputs) == 1:
            arr = np.asarray(frame.to_numpy() if frame is not None else X)
            return {self._inputs[0].name: arr.astype(_onnx_dtype(self._inputs[0].type))}
        if frame is None:
            raise InvalidInputError("this ONNX model takes one input per feature: pass a DataFrame")
        feed = {}
        for inp in self._inputs:
            col = frame[inp.name].to_numpy().reshape(-1, 1)
            feed[inp.name] = col.astype(_onnx_dtype(inp.type))
        return feed

    def _run(self, X: Any) -> list[Any]:
        result: list[Any] = self._session.run(None, self._feed(X))
        return result

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self._run(X)[0]).ravel()

    def predict_proba(self, X: Any) -> np.ndarray:
        if not self.is_classifier:
            raise AttributeError("this ONNX model has no probability output")
        probs = self._run(X)[1]
        if isinstance(probs, list):  # ZipMap output: one dict per row
            keys = list(probs[0].keys()) if probs else []
            if self.classes_ is None:
                self.classes_ = np.array(keys)
            return np.array([[row[k] for k in keys] for row in probs], dtype=float)
        arr = np.asarray(probs, dtype=float)
        if self.classes_ is None:
            self.classes_ = np.arange(arr.shape[1])
        return arr


def _onnx_dtype(onnx_type: str) -> Any:
    return {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(string)": object,
        "tensor(bool)": bool,
    }.get(onnx_type, np.float32)
