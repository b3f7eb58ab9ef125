"""Name rules, enforced in one place before any filesystem or database use."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ownloop.errors import InvalidInputError
from ownloop.store import length_limit
from ownloop.store import tables as t

__all__ = [
    "MAX_FEATURE_NAME_LENGTH",
    "MAX_NAME_LENGTH",
    "VersionRef",
    "parse_ref",
    "validate_feature_name",
    "validate_name",
]

# Derived from the columns that hold them, so a name valid here fits on every backend.
MAX_NAME_LENGTH = min(length_limit(c) for c in (t.models.c.name, t.teams.c.name, t.aliases.c.alias))
MAX_FEATURE_NAME_LENGTH = length_limit(t.monitor_results.c.name)
# Always matched with fullmatch: "$" would accept a trailing newline ("nl\n").
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED_ALIASES = frozenset({"latest"})


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a safe name for a model, team, alias or member; raise otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{kind} name must be a non-empty string")
    shown = value if len(value) <= 40 else value[:40] + "..."
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"{kind} name '{shown}' is {len(value)} characters; the limit is {MAX_NAME_LENGTH}"
        )
    if ".." in value or not _NAME.fullmatch(value):
        raise InvalidInputError(
            f"{kind} name '{shown}' is not allowed: use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit (no '/', '..' or spaces)"
        )
    return value


# Any printable text (column names have spaces, brackets, non-ASCII letters), but no control
# characters: a trailing newline or a tab makes look-alike columns.
_FEATURE = re.compile(r"[^\x00-\x1f\x7f-\x9f]+")


def validate_feature_name(value: object) -> str:
    """Return ``value`` if it can name a feature (a column the model takes); raise otherwise."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"feature name must be a non-empty string, not {value!r}")
    if len(value) > MAX_FEATURE_NAME_LENGTH:
        raise InvalidInputError(
            f"feature name {value[:40] + '...'!r} is {len(value)} characters; the limit is "
            f"{MAX_FEATURE_NAME_LENGTH}: rename the column"
        )
    if not _FEATURE.fullmatch(value):
        raise InvalidInputError(
            f"feature name {value!r} has control characters (a newline, a tab, ...); rename the column"
        )
    return value


def _digits(text: str) -> bool:
    """ASCII digits only ('３' and '²' are digits to str.isdigit but not to int)."""
    return text.isascii() and text.isdigit()


def validate_alias(value: object) -> str:
    alias = validate_name("alias", value)
    if _digits(alias):
        raise InvalidInputError(f"alias '{alias}' is all digits and would read as a version number")
    if alias in RESERVED_ALIASES:
        raise InvalidInputError(f"alias '{alias}' is reserved; pick another name")
    return alias


@dataclass(frozen=True)
class VersionRef:
    """``churn`` (latest), ``churn@3`` (a version) or ``churn@production`` (an alias)."""

    model: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.model}@{self.version}"
        if self.alias is not None:
            return f"{self.model}@{self.alias}"
        return self.model


def parse_ref(ref: str | VersionRef) -> VersionRef:
    """Parse ``model[@version|@alias]``; ``@latest`` means the newest version."""
    if isinstance(ref, VersionRef):
        return ref
    if not isinstance(ref, str):
        raise InvalidInputError(f"a model reference must be a string like 'churn@3', not {ref!r}")
    model, sep, rest = ref.partition("@")
    validate_name("model", model)
    if not sep or rest == "latest":
        return VersionRef(model)
    if _digits(rest):
        return VersionRef(model, version=int(rest))
    validate_name("alias", rest)
    return VersionRef(model, alias=rest)
