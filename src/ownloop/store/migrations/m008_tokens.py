"""API tokens: a name, a team and a role, the secret stored only as a keyed hash."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "access: API tokens (hashed), with team, role, expiry and revocation"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    tokens = sa.Table(
        "api_tokens",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        # the public part of a token (sent in front of the secret), used to find its row
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("team", sa.String(64)),  # NULL for an admin token
        sa.Column("role", sa.String(16), nullable=False),  # viewer | owner | admin
        sa.Column("secret_hash", sa.String(200), nullable=False),  # scheme$params$salt$hash
        sa.Column("created_at", ts, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("expires_at", ts),
        sa.Column("revoked_at", ts),
        sa.Column("revoked_by", sa.String(200)),
        sa.Column("last_used_at", ts),
    )
    md.create_all(conn)
    sa.Index("ix_api_tokens_name", tokens.c.name).create(conn)
