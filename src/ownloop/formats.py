"""Model file formats: skops (default, trusted-type list), ONNX (extra), pickle/joblib (opt-in only).

Nothing here ever unpickles unless the caller passes ``allow_pickle=True``, which registry
sets only for versions a person explicitly registered with ``--allow-unsafe-pickle``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ownloop.errors import InvalidInputError, PayloadTooLargeError, UnsafeFormatError

__all__ = [
    "FORMATS",
    "OnnxModel",
    "check_archive",
    "detect_format",
    "dump_skops",
    "inline_onnx",
    "load_model",
    "read_header",
    "sniff_format",
    "untrusted_types",
]

log = logging.getLogger(__name__)

FORMATS = ("skops", "onnx", "pickle", "joblib")
PICKLE_FORMATS = frozenset({"pickle", "joblib"})

_COMPRESSED = (b"\x78", b"\x1f\x8b", b"\xfd7zXZ", b"BZh", b"\x04\x22\x4d\x18")


HEADER_BYTES = 64
_CHUNK = 1 << 20
_PROTOCOL_0_1 = b"(c]})"  # first opcodes of protocol 0/1 pickles: MARK, GLOBAL, EMPTY_LIST, ...


def read_header(path: Path) -> bytes:
    """The first bytes of a file: enough to name its format without reading the rest."""
    with path.open("rb") as f:
        return f.read(HEADER_BYTES)


def sniff_format(header: bytes, filename: str | None = None) -> str:
    """Name a model file's format from its first bytes (and extension): ``zip``, ``onnx``,
    ``pickle`` or ``joblib``. A ``zip`` is a skops file only once :func:`check_archive` says so."""
    name = (filename or "").lower()
    shown = filename or "model file"
    if not header:
        raise InvalidInputError(f"{shown} is empty")
    if header[:4] == b"PK\x03\x04":
        return "zip"
    if _looks_like_onnx(header):
        return "onnx"
    if name.endswith(".onnx"):
        raise InvalidInputError(f"{shown} is named .onnx but does not start like an ONNX model")
    pickled = header[:1] == b"\x80" and len(header) > 1 and 2 <= header[1] <= 5
    legacy = name.endswith((".pkl", ".pickle", ".joblib")) and header[:1] in _PROTOCOL_0_1
    if pickled or legacy:
        return "joblib" if name.endswith(".joblib") else "pickle"
    if name.endswith((".joblib", ".pkl", ".pickle")) and header.startswith(_COMPRESSED):
        return "joblib"
    raise InvalidInputError(
        f"{shown} is not a model file ownloop can read: expected skops (.skops), "
        "ONNX (.onnx), or pickle/joblib (with allow_unsafe_pickle=True)"
    )


def _looks_like_onnx(header: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, a small varint), then another field."""
    if len(header) < 3 or header[0] != 0x08 or not 1 <= header[1] <= 0x7F:
        return False
    field, wire = header[2] >> 3, header[2] & 7
    return 2 <= field <= 20 and wire in (0, 2)


def check_archive(path: Path, max_bytes: int, filename: str | None = None) -> str:
    """Make sure a zip is a skops file whose members inflate to at most ``max_bytes``.

    The zip directory's sizes are checked first; then every member is inflated in chunks and
    counted, so an archive whose directory understates its sizes is refused too.
    """
    shown = filename or path.name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if "schema.json" not in {i.filename for i in infos}:
                raise InvalidInputError(f"{shown} is a zip archive but not a skops file")
            _refuse_if_over(sum(i.file_size for i in infos), max_bytes, shown)
            total = 0
            for info in infos:
                with zf.open(info) as member:
                    while chunk := member.read(_CHUNK):
                        total += len(chunk)
                        _refuse_if_over(total, max_bytes, shown)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise InvalidInputError(f"{shown} is a damaged zip archive: {exc}") from exc
    return "skops"


def _refuse_if_over(size: int, max_bytes: int, shown: str) -> None:
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"{shown} inflates to more than {max_bytes:,} bytes, the limit "
            "(OWNLOOP_MAX_MODEL_BYTES); it was not loaded. Raise the limit if you trust the file"
        )


def detect_format(data: bytes, filename: str | None = None) -> str:
    """Name the format of model bytes held in memory (a live object's skops dump, a test)."""
    fmt = sniff_format(data[:HEADER_BYTES], filename)
    if fmt == "zip":
        if not _is_skops(data):
            raise InvalidInputError(
                f"{filename or 'model file'} is a zip archive but not a skops file"
            )
        return "skops"
    return fmt


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
    what: str = "a model",
) -> Any:
    """Turn verified artifact bytes into a model object (``what`` names it in the log)."""
    if fmt == "skops":
        return _load_skops(data, trusted)
    if fmt == "onnx":
        return OnnxModel(data)
    if fmt in PICKLE_FORMATS:
        if not allow_pickle:
            raise UnsafeFormatError(
                f"this file is a {fmt}, which can run arbitrary code when loaded; convert it to "
                "skops (skops.io.dump) or ONNX, or register it with allow_unsafe_pickle=True if you "
                "trust its source"
            )
        # shown on every load, not only at registration: whoever serves it should know
        log.warning(
            "loading %s, a %s file registered with allow_unsafe_pickle: it runs whatever code it "
            "holds; re-register it as skops or ONNX to stop trusting its source",
            what,
            fmt,
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
        raise UnsafeFormatError(
            f"the skops file contains types nobody has trusted: {', '.join(extra)}; "
            f"check them, then register with trust={extra!r}"
        )
    try:
        return sio.loads(data, trusted=list(trusted))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"the skops file could not be loaded: {exc}") from exc


def _external_locations(model: Any) -> list[str]:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [
        entry.value
        for tensor in _get_all_tensors(model)
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    ]


def _decode_errors() -> tuple[type[Exception], ...]:
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    return (DecodeError, ValueError)


def _onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError as exc:
        raise InvalidInputError(
            "reading this ONNX model needs the onnx package; run: pip install 'ownloop[onnx]'"
        ) from exc
    return onnx


def inline_onnx(path: Path) -> bytes | None:
    """The bytes of an ONNX model with its external data inlined, or None if it has none.

    Every external data file must lie in the model's own folder (or below it), reached with no
    symbolic link: a location like ``../x``, an absolute path or a link is refused, so a model
    file cannot make ownloop read any other file.
    """
    onnx = _onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except _decode_errors() as exc:
        raise InvalidInputError(f"{path.name} is not a valid ONNX model: {exc}") from exc
    locations = _external_locations(model)
    if not locations:
        return None
    folder = path.absolute().parent
    for location in locations:
        _check_external(folder, location, path.name)
    onnx.load_external_data_for_model(model, str(folder))
    return bytes(model.SerializeToString())


def _check_external(folder: Path, location: str, shown: str) -> None:
    target = Path(os.path.normpath(folder / location))
    if Path(location).is_absolute() or not target.is_relative_to(folder) or target == folder:
        raise InvalidInputError(
            f"{shown} keeps its weights in '{location}', outside the model's folder; put the "
            "external data file beside the model (or below it) and save the model again"
        )
    current = folder
    for part in target.relative_to(folder).parts:
        current = current / part
        if current.is_symlink():
            raise InvalidInputError(
                f"{shown} keeps its weights in '{location}', reached through the symbolic link "
                f"{current}; external data must be real files in the model's folder"
            )
    if not target.is_file():
        raise InvalidInputError(
            f"{shown} keeps its weights in '{location}', which is not a file beside the model"
        )


class OnnxModel:
    """An ONNX graph behind the scikit-learn predict/predict_proba interface.

    A stored model is one self-contained file: a graph that still points at external data is
    refused, since its location would be read relative to wherever the server runs.
    """

    def __init__(self, data: bytes) -> None:
        self._refuse_external(data)
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
        self.input_types: dict[str, str | None] | None = None
        if len(self._inputs) > 1:
            self.feature_names_in_ = np.array([i.name for i in self._inputs], dtype=object)
            self.input_types = {i.name: _FEATURE_TYPES.get(i.type) for i in self._inputs}
        elif self._inputs[0].shape and isinstance(self._inputs[0].shape[-1], int):
            self.n_features_in_ = int(self._inputs[0].shape[-1])

    @staticmethod
    def _refuse_external(data: bytes) -> None:
        if b"location" not in data:  # cheap: every external data entry has this key
            return
        try:
            model = _onnx().load_model_from_string(data)
        except _decode_errors() as exc:
            raise InvalidInputError(f"not a valid ONNX model: {exc}") from exc
        locations = _external_locations(model)
        if locations:
            raise InvalidInputError(
                f"this ONNX model points at external data ({', '.join(locations[:3])}); ownloop "
                "stores a model as one file: register it from its path so the data is checked "
                "and included"
            )

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


_FEATURE_TYPES = {
    "tensor(float)": "float",
    "tensor(double)": "float",
    "tensor(float16)": "float",
    "tensor(int64)": "integer",
    "tensor(int32)": "integer",
    "tensor(string)": "string",
    "tensor(bool)": "boolean",
}


def _onnx_dtype(onnx_type: str) -> Any:
    return {
        "tensor(float)": np.float32,
        "tensor(double)": np.float64,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(string)": object,
        "tensor(bool)": bool,
    }.get(onnx_type, np.float32)
