"""The one place that checks text lengths against the declared column lengths.

SQLite stores a 300-character value in a ``VARCHAR(200)``; PostgreSQL refuses it with
``StringDataRightTruncation``. Every insert and update is checked here before it reaches either
backend, so both answer the same ``InvalidInputError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ownloop.errors import InvalidInputError

__all__ = ["check_statement", "length_limit"]

# What a user calls a column, for the message; anything else is shown as table.column.
_LABELS = {
    "created_by": "user name (OWNLOOP_USER or the token's name)",
    "updated_by": "user name (OWNLOOP_USER or the token's name)",
    "actor": "user name (OWNLOOP_USER or the token's name)",
    "by": "user name (OWNLOOP_USER or the token's name)",
    "run_by": "user name (OWNLOOP_USER or the token's name)",
    "webhook_url": "webhook URL",
    "slack_webhook_url": "Slack webhook URL",
    "email": "email address",
    "member": "member name",
    "target": "audit target",
    "baseline": "baseline reference",
}


def length_limit(column: sa.Column[Any]) -> int:
    """The declared length of a string column."""
    length = getattr(column.type, "length", None)
    if not isinstance(length, int):
        raise TypeError(f"column {column} has no declared length")
    return length


def _label(table: str, column: str) -> str:
    return _LABELS.get(column, f"{table}.{column}")


def check_value(table: str, column: str, value: object, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        shown = value[:40] + "..." if len(value) > 40 else value
        raise InvalidInputError(
            f"{_label(table, column)} {shown!r} is {len(value)} characters; the limit is {limit}. "
            "Use a shorter value"
        )


def check_statement(context: Any) -> None:
    """Refuse an INSERT or UPDATE whose text values are longer than their columns allow.

    Called with SQLAlchemy's execution context before the statement reaches the database.
    """
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    if not isinstance(statement, sa.Insert | sa.Update) or not isinstance(
        statement.table, sa.Table
    ):
        return
    table = statement.table
    limits = {
        c.key: c.type.length
        for c in table.columns
        if isinstance(c.type, sa.String) and isinstance(c.type.length, int)
    }
    rows: Sequence[Mapping[str, Any]] = context.compiled_parameters or ()
    for row in rows:
        for key, value in row.items():
            if key in limits:
                check_value(table.name, key, value, limits[key])
