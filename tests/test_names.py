from __future__ import annotations

import pytest

from ownloop.errors import InvalidInputError
from ownloop.names import VersionRef, parse_ref, validate_alias, validate_name


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
