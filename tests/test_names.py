from __future__ import annotations

from pathlib import Path

import pytest

from ownloop.artifacts import ArtifactStore
from ownloop.errors import InvalidInputError
from ownloop.names import (
    MAX_FEATURE_NAME_LENGTH,
    VersionRef,
    parse_ref,
    validate_alias,
    validate_feature_name,
    validate_name,
)
from ownloop.store import tables


@pytest.mark.parametrize("name", ["churn", "Churn_v2", "a", "risk-team", "m.1", "x" * 64])
def test_valid_names_pass(name: str) -> None:
    assert validate_name("model", name) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a/b", "not allowed"),
        ("..", "not allowed"),
        ("a..b", "not allowed"),
        ("with space", "not allowed"),
        ("-leading", "not allowed"),
        ("x" * 300, "300 characters"),
        ("", "non-empty"),
        ("back\\slash", "not allowed"),
        ("nul\x00byte", "not allowed"),
    ],
)
def test_bad_names_are_refused_with_the_rule(name: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        validate_name("model", name)


def test_reference_forms() -> None:
    assert parse_ref("churn") == VersionRef("churn")
    assert parse_ref("churn@latest") == VersionRef("churn")
    assert parse_ref("churn@3") == VersionRef("churn", version=3)
    assert parse_ref("churn@production") == VersionRef("churn", alias="production")


def test_reference_with_bad_alias_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="alias name"):
        parse_ref("churn@../x")


@pytest.mark.parametrize("alias", ["3", "latest"])
def test_aliases_that_would_be_ambiguous_are_refused(alias: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_alias(alias)


# -- a trailing newline is not part of a valid name (re "$" would accept it) ---------------


@pytest.mark.parametrize("kind", ["model", "team", "alias", "member"])
@pytest.mark.parametrize("value", ["nl\n", "production\n", "a\r", "x\n\n"])
def test_names_ending_in_a_newline_are_refused(kind: str, value: str) -> None:
    with pytest.raises(InvalidInputError, match="not allowed"):
        validate_name(kind, value)


@pytest.mark.parametrize("alias", ["production\n", "3\n"])
def test_alias_ending_in_a_newline_is_refused(alias: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_alias(alias)


@pytest.mark.parametrize(
    "ref", ["nl\n", "churn\n@3", "churn@production\n", "churn@3\n", "churn@３"]
)
def test_refs_ending_in_a_newline_or_odd_digits_are_refused(ref: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_ref(ref)


@pytest.mark.parametrize("name", ["age\n", "a\tb", "x\x00", "\n", "", "x\x85"])
def test_feature_names_with_control_characters_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="feature name"):
        validate_feature_name(name)


@pytest.mark.parametrize("name", ["age", "monthly charges", "[/bad]", "größe", "f" * 200])
def test_ordinary_feature_names_pass(name: str) -> None:
    assert validate_feature_name(name) == name


def test_feature_name_limit_is_the_column_that_stores_it() -> None:
    assert tables.monitor_results.c.name.type.length == MAX_FEATURE_NAME_LENGTH  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match="250 characters; the limit is 200"):
        validate_feature_name("f" * 250)


def test_digest_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a sha256 digest"):
        ArtifactStore(tmp_path).path("a" * 64 + "\n")
