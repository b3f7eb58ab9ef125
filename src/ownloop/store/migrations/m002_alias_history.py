"""Alias history and the indexes that audit and history queries filter on."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "alias history; audit indexes by model and time"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("models", md, sa.Column("id", sa.Integer, primary_key=True))
    history = sa.Table(
        "alias_history",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("previous_version", sa.Integer),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
    )
    history.create(conn)
    sa.Index("ix_alias_history_model_alias", history.c.model_id, history.c.alias).create(conn)
    audit = sa.Table(
        "audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True)),
        sa.Column("model", sa.String(64)),
    )
    sa.Index("ix_audit_model_at", audit.c.model, audit.c.at).create(conn)
    sa.Index("ix_audit_at", audit.c.at).create(conn)
