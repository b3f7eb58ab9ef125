"""Request bodies to validated feature columns: size and depth limits, then the signature check.

Values are checked per column with C-speed passes (``set(map(type, column))``, numpy); the slow
row-by-row search runs only to name the first bad row once a column is known to be bad.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

from ownloop.errors import InvalidInputError, PayloadTooLargeError
from ownloop.signature import Feature, Signature

__all__ = [
    "MAX_MESSAGE",
    "Columns",
    "bounded",
    "check_depth",
    "decode_columnar",
    "decode_csv",
    "decode_records",
    "decode_split",
    "decode_v2",
    "inflate",
    "parse_json",
    "printable",
]

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_NUMBER_TYPES = frozenset({int, float})
_MISSING = object()
V2_NUMERIC = frozenset(
    {
        "FP16",
        "FP32",
        "FP64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
    }
)
V2_TYPE = {"float": "FP64", "integer": "INT64", "boolean": "BOOL", "string": "BYTES"}


@dataclass(frozen=True)
class Columns:
    """Validated inputs: one numpy array per feature (signature order) and the row count."""

    n: int
    data: dict[str, np.ndarray]
    matrix: np.ndarray | None = None  # the same values as one float (n, features) array, if numeric


def _numeric_fast(signature: Signature, rows: Sequence[Sequence[Any]]) -> Columns | None:
    """All-number features checked in one pass over row tuples in signature order.

    None when the signature has other features or any value is off; the per-column path then
    finds and names the bad value.
    """
    features = signature.features
    if not all(f.type in ("float", "integer") and not f.nullable for f in features):
        return None
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        return None
    try:
        matrix = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond float range: the per-column path names it
        return None
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        return None
    whole = [i for i, f in enumerate(features) if f.type == "integer"]
    if whole and not (matrix[:, whole] == np.floor(matrix[:, whole])).all():
        return None
    data = {f.name: matrix[:, i] for i, f in enumerate(features)}
    return Columns(len(rows), data, matrix)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress a gzip/deflate body, refusing to inflate past ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise InvalidInputError(
            f"Content-Encoding '{encoding}' is not supported; send the body plain or gzip-compressed"
        )
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(
            f"request body inflates to more than {limit} bytes (the limit); send smaller batches"
        )
    return out


def check_depth(body: bytes, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` before the parser sees it."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return
    clean = _ESCAPE.sub(b"", body) if b"\\" in body else body
    structure = clean.translate(None, _NOT_STRUCTURE)  # keep only quotes and brackets
    a = np.frombuffer(structure, dtype=np.uint8)
    in_string = np.bitwise_xor.accumulate((a == 34).astype(np.uint8)).astype(bool)
    delta = ((a == 91) | (a == 123)).astype(np.int32) - ((a == 93) | (a == 125))
    delta[in_string] = 0
    depth = int(np.cumsum(delta).max(initial=0))
    if depth > limit:
        raise InvalidInputError(
            f"JSON nesting depth {depth} exceeds the limit of {limit}; send flat records"
        )


def parse_json(body: bytes, depth_limit: int) -> Any:
    check_depth(body, depth_limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # strict JSON failed: the lenient parser reads NaN/Infinity so validation can name them
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
    except ValueError as exc:  # an integer literal longer than Python converts (4,300 digits)
        raise InvalidInputError(
            f"request body holds a number too long to read ({exc}); send numbers as "
            "JSON numbers within float range"
        ) from None
    except RecursionError:
        raise InvalidInputError("JSON nesting is too deep; send flat records") from None


# -- one column against one feature -------------------------------------------------------


def _first_bad(values: Sequence[Any], ok: Any) -> tuple[int, Any]:
    for i, v in enumerate(values):
        if not ok(v):
            return i, v
    return -1, None  # pragma: no cover - only called when a bad value exists


MAX_MESSAGE = 1_000  # characters of an error message answered; the rest is cut


def bounded(text: str) -> str:
    """``text`` cut to ``MAX_MESSAGE`` characters: however much client text a message quotes,
    the answer stays small."""
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "… (truncated)"


def printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot hold (lone surrogates) shown as escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _clip(text: str, limit: int = 64) -> str:
    """Client text in a message, cut short so an error never echoes a huge value back."""
    return printable(text if len(text) <= limit else text[:limit] + "...")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(feature: Feature, values: Sequence[Any]) -> None:
    """Refuse text UTF-8 cannot hold (a lone surrogate, or invalid UTF-8 read as one)."""
    texts = [v for v in values if v is not None] if feature.nullable else values
    if _encodable("".join(texts)):
        return
    row = next(i for i, v in enumerate(values) if isinstance(v, str) and not _encodable(v))
    raise InvalidInputError(
        f"row {row}, feature '{feature.name}': {_shown(values[row])} is not valid Unicode text "
        "(a lone UTF-16 surrogate or invalid UTF-8); send UTF-8 text"
    )


def _shown(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the field is missing)"
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _bad(feature: Feature, row: int, value: Any, want: str) -> InvalidInputError:
    if value is _MISSING:
        return InvalidInputError(f"row {row}: missing feature '{feature.name}' ({feature.type})")
    return InvalidInputError(
        f"row {row}, feature '{feature.name}': expected {want}, got {_shown(value)}"
    )


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBER_TYPES


def column(feature: Feature, values: Sequence[Any], *, from_text: bool = False) -> np.ndarray:
    """Validate one column of JSON values for ``feature``; return its numpy array."""
    types = set(map(type, values))
    nullable = feature.nullable
    if feature.type in ("float", "integer"):
        if from_text and types <= {str, bytes}:
            values = _numbers_from_text(feature, values)
            types = {float}
        allowed: set[type] = set(_NUMBER_TYPES) | ({type(None)} if nullable else set())
        if not types <= allowed:
            row, v = _first_bad(
                values, lambda x: type(x) in allowed and not (x is None and not nullable)
            )
            want = "a number" + (" or null" if nullable else "")
            raise _bad(feature, row, v, want)
        arr = _floats(feature, values)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = ~finite & ~np.isnan(arr) if nullable else ~finite
            if bad.any():
                row = int(np.argmax(bad))
                raise InvalidInputError(
                    f"row {row}, feature '{feature.name}': {_shown(values[row])} is not allowed; "
                    "send a finite number" + (" or null" if nullable else "")
                )
        if feature.type == "integer":
            whole = (arr == np.floor(arr)) | np.isnan(arr)
            if not whole.all():
                row = int(np.argmin(whole))
                raise _bad(feature, row, values[row], "a whole number")
        return arr
    if feature.type == "boolean":
        if from_text and types <= {str, bytes}:
            values = [_bool_from_text(feature, row, v) for row, v in enumerate(values)]
            types = set(map(type, values))
        allowed = {bool, type(None)} if nullable else {bool}
        if not types <= allowed:
            row, v = _first_bad(values, lambda x: type(x) in allowed)
            raise _bad(feature, row, v, "true or false")
        return np.array(values, dtype=object if type(None) in types else bool)
    allowed = {str, type(None)} if nullable else {str}
    if from_text and bytes in types:
        values = [v.decode() if isinstance(v, bytes) else v for v in values]
        types = set(map(type, values))
    if not types <= allowed:
        row, v = _first_bad(values, lambda x: type(x) in allowed)
        raise _bad(feature, row, v, "a string")
    _check_text(feature, values)
    return np.array(values, dtype=object)


def _floats(feature: Feature, values: Sequence[Any]) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:  # a JSON integer beyond float range
        row, v = _first_bad(values, lambda x: type(x) is not int or abs(x) < 2**1023)
        raise InvalidInputError(
            f"row {row}, feature '{feature.name}': {_shown(v)} is beyond the range of a "
            "64-bit float; send a finite number"
        ) from None


def _bool_from_text(feature: Feature, row: int, value: Any) -> Any:
    text = value.decode() if isinstance(value, bytes) else value
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise _bad(feature, row, text, "true or false")


def _numbers_from_text(feature: Feature, values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for row, v in enumerate(values):
        try:
            number = float(v)
        except ValueError:
            raise _bad(feature, row, v, "a number") from None
        out.append(None if math.isnan(number) and feature.nullable else number)
    return out


# -- request shapes --------------------------------------------------------------------------


def _check_names(signature: Signature, given: Sequence[str], where: str) -> None:
    expected = signature.feature_names
    missing = [n for n in expected if n not in given]
    unknown = [n for n in given if n not in expected]
    if unknown:
        raise InvalidInputError(
            f"{where}unknown feature '{_clip(unknown[0])}'; the model takes: {', '.join(expected)}"
        )
    if missing:
        raise InvalidInputError(
            f"{where}missing feature '{missing[0]}'; the model takes: {', '.join(expected)}"
        )


def decode_records(signature: Signature, instances: Any) -> Columns:
    """``[{"age": 41, ...}, ...]`` (records) or ``[[41, ...], ...]`` (rows in signature order)."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInputError("'instances' must be a non-empty list of records")
    if all(type(r) is dict for r in instances):
        return _from_records(signature, instances)
    if all(type(r) is list for r in instances):
        return _from_rows(signature, signature.feature_names, instances)
    if type(instances[0]) not in (dict, list):
        raise InvalidInputError(
            f"row 0: every instance must be a record (object) or a row (list), "
            f"not {_shown(instances[0])}"
        )
    row = next(i for i, r in enumerate(instances) if type(r) is not type(instances[0]))
    kind = "records (objects)" if type(instances[0]) is dict else "rows (lists)"
    raise InvalidInputError(
        f"row {row}: every instance must be {kind} like row 0, not {_shown(instances[row])}"
    )


def _from_records(signature: Signature, rows: list[dict[str, Any]]) -> Columns:
    names = signature.feature_names
    seen = set().union(*map(dict.keys, rows))
    unknown = [k for k in seen if k not in names]
    if unknown:
        row = next(i for i, r in enumerate(rows) if unknown[0] in r)
        raise InvalidInputError(
            f"row {row}: unknown feature '{_clip(unknown[0])}'; the model takes: {', '.join(names)}"
        )
    try:
        if len(names) == 1:
            values: list[Sequence[Any]] = [[r[names[0]] for r in rows]]
        else:
            tuples = list(map(itemgetter(*names), rows))
            fast = _numeric_fast(signature, tuples)
            if fast is not None:
                return fast
            values = list(zip(*tuples, strict=True))
    except KeyError:  # a missing field: null where allowed, else the error names the row
        data = {}
        for f in signature.features:
            default = None if f.nullable else _MISSING
            data[f.name] = column(f, [r.get(f.name, default) for r in rows])
        return Columns(len(rows), data)
    return Columns(
        len(rows), {f.name: column(f, v) for f, v in zip(signature.features, values, strict=True)}
    )


def _from_rows(
    signature: Signature, columns: Sequence[str], rows: list[Any], *, from_text: bool = False
) -> Columns:
    width = len(columns)
    lengths = set(map(len, rows)) if all(type(r) is list for r in rows) else None
    if lengths != {width}:
        row, r = next((i, r) for i, r in enumerate(rows) if type(r) is not list or len(r) != width)
        got = f"{len(r)} values" if type(r) is list else _shown(r)
        raise InvalidInputError(
            f"row {row} has {got} but there are {width} columns ({', '.join(columns)})"
        )
    if not from_text and list(columns) == signature.feature_names:
        fast = _numeric_fast(signature, rows)
        if fast is not None:
            return fast
    by_name = dict(zip(columns, zip(*rows, strict=True), strict=True))
    data = {f.name: column(f, by_name[f.name], from_text=from_text) for f in signature.features}
    return Columns(len(rows), data)


def decode_split(signature: Signature, split: Any) -> Columns:
    """MLflow's ``dataframe_split``: ``{"columns": [...], "data": [[...], ...]}``."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InvalidInputError(
            "'dataframe_split' must be an object with 'columns' (names) and 'data' (rows)"
        )
    columns = split["columns"]
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise InvalidInputError("'dataframe_split.columns' must be distinct feature names")
    _check_names(signature, columns, "dataframe_split: ")
    rows = split.get("data")
    if not isinstance(rows, list) or not rows:
        raise InvalidInputError("'dataframe_split.data' must be a non-empty list of rows")
    return _from_rows(signature, columns, rows)


def _shape(tensor: dict[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 0 < len(shape) <= 8
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise InvalidInputError(f"input '{name}': 'shape' must be a list of non-negative integers")
    return shape


def _flat(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise InvalidInputError(f"input '{name}': 'data' must be a list")
    while data and type(data[0]) is list:
        if not all(type(d) is list for d in data):
            raise InvalidInputError(f"input '{name}': 'data' mixes nested lists and values")
        data = [v for d in data for v in d]
    return list(data)


def _tensor(raw: Any, i: int) -> tuple[str, str, list[int], list[Any]]:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"inputs[{i}] must be an object with name, shape, datatype, data")
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInputError(f"inputs[{i}]: 'name' must be a string")
    if len(name) > 200:
        raise InvalidInputError(
            f"inputs[{i}]: name '{_clip(name)}' is longer than any feature name"
        )
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or len(datatype) > 16:
        raise InvalidInputError(
            f"input '{name}': 'datatype' must be a v2 type such as FP64 or BYTES"
        )
    shape = _shape(raw, name)
    data = _flat(raw.get("data"), name)
    if math.prod(shape) != len(data):
        raise InvalidInputError(
            f"input '{name}': shape {shape} needs {math.prod(shape)} values but 'data' has {len(data)}"
        )
    return name, datatype.upper(), shape, data


def _check_datatype(feature: Feature, name: str, datatype: str) -> None:
    ok = (
        datatype in V2_NUMERIC
        if feature.type in ("float", "integer")
        else datatype == V2_TYPE[feature.type]
    )
    if not ok:
        raise InvalidInputError(
            f"input '{name}' has datatype {datatype}, but feature '{feature.name}' is "
            f"{feature.type}: send {V2_TYPE[feature.type]}"
        )


def decode_v2(signature: Signature, inputs: Any) -> Columns:
    """Open Inference Protocol inputs: one tensor per feature, or one [N, features] tensor."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")
    tensors = [_tensor(raw, i) for i, raw in enumerate(inputs)]
    names = signature.feature_names
    if len(tensors) == 1 and tensors[0][0] not in names:
        return _from_matrix(signature, *tensors[0])
    given = [t[0] for t in tensors]
    _check_names(signature, [g for g in given if g not in names] or names, "")
    counts = {t[0]: t[2][0] for t in tensors}
    data: dict[str, np.ndarray] = {}
    for name, datatype, shape, values in tensors:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInputError(
                f"input '{name}' has shape {shape}; a feature tensor is [N] or [N, 1]"
            )
        feature = signature.feature(name)
        _check_datatype(feature, name, datatype)
        data[name] = column(feature, values, from_text=datatype == "BYTES")
    _check_names(signature, given, "")
    if len(set(counts.values())) != 1:
        raise InvalidInputError(
            "inputs have different row counts: " + ", ".join(f"{k}={v}" for k, v in counts.items())
        )
    n = next(iter(counts.values()))
    if n == 0:
        raise InvalidInputError("inputs hold no rows")
    return Columns(n, {f: data[f] for f in names})


def _from_matrix(
    signature: Signature, name: str, datatype: str, shape: list[int], values: list[Any]
) -> Columns:
    width = len(signature.features)
    if len(shape) != 2 or shape[1] != width:
        raise InvalidInputError(
            f"input '{name}' is not a feature of the model; a single input must have shape "
            f"[N, {width}] with the features in order ({', '.join(signature.feature_names)}), "
            f"got shape {shape}"
        )
    if datatype != "BYTES" and any(f.type in ("boolean", "string") for f in signature.features):
        raise InvalidInputError(
            f"input '{name}' has datatype {datatype}, but the model has boolean or string "
            "features: send BYTES for a single [N, features] input, or one input per feature"
        )
    if datatype != "BYTES" and datatype not in V2_NUMERIC:
        raise InvalidInputError(f"input '{name}' has unknown datatype {datatype}")
    if shape[0] == 0:
        raise InvalidInputError("inputs hold no rows")
    rows = [values[i : i + width] for i in range(0, len(values), width)]
    return _from_rows(signature, signature.feature_names, rows, from_text=datatype == "BYTES")


# -- MLflow's scoring formats ---------------------------------------------------------------


def decode_columnar(signature: Signature, inputs: Any) -> Columns:
    """MLflow's columnar ``inputs``: ``{"age": [41, 52], "plan": ["pro", "basic"]}``."""
    if not isinstance(inputs, dict) or not inputs:
        raise InvalidInputError(
            "'inputs' must be records like [{\"age\": 41, ...}] or columns like "
            '{"age": [41, ...], ...}'
        )
    _check_names(signature, list(inputs), "inputs: ")
    lengths = {name: len(v) if isinstance(v, list) else -1 for name, v in inputs.items()}
    if -1 in lengths.values():
        name = next(n for n, k in lengths.items() if k == -1)
        raise InvalidInputError(f"inputs: column '{name}' must be a list of values")
    if len(set(lengths.values())) != 1:
        raise InvalidInputError(
            "inputs: columns have different lengths: "
            + ", ".join(f"{k}={v}" for k, v in lengths.items())
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise InvalidInputError("inputs hold no rows")
    return Columns(n, {f.name: column(f, inputs[f.name]) for f in signature.features})


def decode_csv(signature: Signature, body: bytes) -> Columns:
    """A CSV body with a header row (MLflow's ``text/csv``); an empty cell is a missing value."""
    # invalid UTF-8 becomes lone surrogates, which validation refuses naming row and feature
    text = body.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    try:
        table = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidInputError(f"CSV body could not be read: {exc}") from None
    if len(table) < 2:
        raise InvalidInputError("CSV body needs a header row and at least one row of values")
    header, rows = table[0], [r for r in table[1:] if r]
    if len(set(header)) != len(header):
        raise InvalidInputError("CSV header must name distinct features")
    _check_names(signature, header, "CSV: ")
    kinds = {f.name: f.type for f in signature.features}
    blank = ["nan" if kinds[name] in ("float", "integer") else "" for name in header]
    width = len(blank)
    filled = [[v if v or i >= width else blank[i] for i, v in enumerate(r)] for r in rows]
    return _from_rows(signature, header, filled, from_text=True)
