"""Request decoding against a signature: the fast numeric path and the precise error path agree."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ownloop import InvalidInputError
from ownloop.server._decode import (
    check_depth,
    decode_columnar,
    decode_csv,
    decode_records,
    decode_split,
    decode_v2,
    parse_json,
)
from ownloop.signature import Feature, Signature

NUMERIC = Signature(
    (Feature("a", "float"), Feature("b", "integer"), Feature("c", "float")),
    "classification",
    (0, 1),
)
MIXED = Signature(
    (
        Feature("a", "float", nullable=True),
        Feature("flag", "boolean"),
        Feature("s", "string", nullable=True),
    ),
    "regression",
)


def test_numeric_records_take_the_one_matrix_path() -> None:
    cols = decode_records(NUMERIC, [{"a": 1.5, "b": 2, "c": 3}, {"c": 0.0, "b": 7, "a": -1}])
    assert cols.matrix is not None
    np.testing.assert_array_equal(cols.matrix, [[1.5, 2, 3], [-1, 7, 0]])
    np.testing.assert_array_equal(cols.data["b"], [2, 7])


def test_row_lists_and_split_give_the_same_columns() -> None:
    rows = [[1.5, 2, 3], [-1, 7, 0]]
    a = decode_records(NUMERIC, rows)
    b = decode_split(NUMERIC, {"columns": ["c", "a", "b"], "data": [[3, 1.5, 2], [0, -1, 7]]})
    for name in ("a", "b", "c"):
        np.testing.assert_array_equal(a.data[name], b.data[name])


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (float("nan"), "row 1, feature 'b': nan is not allowed"),
        (2.5, "row 1, feature 'b': expected a whole number"),
        (True, "row 1, feature 'b': expected a number, got true"),
        (None, "row 1, feature 'b': expected a number, got null"),
        ("7", "row 1, feature 'b': expected a number, got \"7\""),
        ([7], "row 1, feature 'b': expected a number, got [7]"),
    ],
)
def test_a_bad_value_on_the_fast_path_is_named_precisely(value: Any, match: str) -> None:
    rows = [{"a": 1.0, "b": 2, "c": 3.0}, {"a": 1.0, "b": value, "c": 3.0}]
    with pytest.raises(InvalidInputError, match=match.replace("[", r"\[").replace("]", r"\]")):
        decode_records(NUMERIC, rows)


def test_nullable_features_accept_null_and_missing() -> None:
    cols = decode_records(MIXED, [{"a": None, "flag": True}, {"a": 2.0, "flag": False, "s": "x"}])
    assert np.isnan(cols.data["a"][0])
    assert cols.data["s"].tolist() == [None, "x"]
    with pytest.raises(InvalidInputError, match="row 0: missing feature 'flag'"):
        decode_records(MIXED, [{"a": 1.0}])
    with pytest.raises(InvalidInputError, match="row 0, feature 'a': inf is not allowed"):
        decode_records(MIXED, [{"a": float("inf"), "flag": True}])


def test_v2_matrix_of_bytes_converts_numbers_and_booleans() -> None:
    cols = decode_v2(
        MIXED,
        [
            {
                "name": "x",
                "datatype": "BYTES",
                "shape": [2, 3],
                "data": ["1.5", "true", "a", "nan", "0", "b"],
            }
        ],
    )
    assert cols.data["flag"].tolist() == [True, False]
    assert cols.data["a"][0] == 1.5
    assert np.isnan(cols.data["a"][1])
    with pytest.raises(InvalidInputError, match="row 0, feature 'flag': expected true or false"):
        decode_v2(
            MIXED,
            [{"name": "x", "datatype": "BYTES", "shape": [1, 3], "data": ["1", "maybe", "a"]}],
        )


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        ("[" * 20 + "]" * 20, True),
        (json.dumps({"s": "[" * 50}), False),
        (json.dumps({"s": '\\"[[[[[[[[[[[[[[[[[[[[[[' + "\\\\"}), False),
        ('{"a": "x\\\\"}' + "[" * 10 + "]" * 10, False),
    ],
)
def test_depth_limit_counts_structure_not_strings(text: str, deep: bool) -> None:
    if deep:
        with pytest.raises(InvalidInputError, match="nesting depth 20 exceeds the limit of 16"):
            check_depth(text.encode(), 16)
    else:
        check_depth(text.encode(), 16)


@pytest.mark.parametrize("bad", ["\ud800", "ok\udfff x"])
def test_text_utf8_cannot_hold_is_refused_naming_row_and_feature(bad: str) -> None:
    rows = [{"a": 1.0, "flag": True, "s": "x"}, {"a": None, "flag": False, "s": bad}]
    with pytest.raises(InvalidInputError, match="row 1, feature 's': .* is not valid Unicode"):
        decode_records(MIXED, rows)
    with pytest.raises(InvalidInputError, match="row 1, feature 's'"):
        decode_split(
            MIXED, {"columns": ["a", "flag", "s"], "data": [list(r.values()) for r in rows]}
        )
    # null (allowed here) and ordinary non-ASCII text pass
    cols = decode_records(
        MIXED, [{"a": 1.0, "flag": True, "s": None}, {"a": 1.0, "flag": True, "s": "é😀"}]
    )
    assert cols.data["s"].tolist() == [None, "é😀"]


def test_invalid_utf8_in_csv_is_refused_naming_row_and_feature() -> None:
    body = b"a,flag,s\n1.5,true,x\n,false,\xff\n"
    with pytest.raises(InvalidInputError, match="row 1, feature 's': .* is not valid Unicode"):
        decode_csv(MIXED, body)
    cols = decode_csv(MIXED, b"\xef\xbb\xbfs,a,flag\nx,,true\n,2,0\n")
    assert np.isnan(cols.data["a"][0]) and cols.data["a"][1] == 2.0
    assert cols.data["flag"].tolist() == [True, False]
    assert cols.data["s"].tolist() == ["x", ""]


def test_integers_beyond_float_range_are_refused_on_both_paths() -> None:
    with pytest.raises(InvalidInputError, match="row 1, feature 'b': .* beyond the range"):
        decode_records(NUMERIC, [{"a": 1.0, "b": 2, "c": 3.0}, {"a": 1.0, "b": 10**400, "c": 3.0}])
    with pytest.raises(InvalidInputError, match="too long to read"):
        parse_json(b'{"a": ' + b"1" * 5000 + b"}", 16)
    assert decode_records(NUMERIC, [[1.0, 10**18, 2.0]]).data["b"][0] == 1e18


def test_columnar_inputs_check_names_and_lengths() -> None:
    cols = decode_columnar(NUMERIC, {"c": [1.0, 2.0], "a": [3.0, 4.0], "b": [5, 6]})
    assert cols.n == 2 and cols.data["a"].tolist() == [3.0, 4.0]
    with pytest.raises(InvalidInputError, match="different lengths"):
        decode_columnar(NUMERIC, {"c": [1.0], "a": [3.0, 4.0], "b": [5, 6]})
    with pytest.raises(InvalidInputError, match="unknown feature 'z'"):
        decode_columnar(NUMERIC, {"z": [1.0], "a": [3.0], "b": [5], "c": [1.0]})
