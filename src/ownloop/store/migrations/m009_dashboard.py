"""Dashboard: browser sessions opened with a token, and each window's histogram per feature."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "dashboard: browser sessions; per-window histograms on drift results"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sessions = sa.Table(
        "ui_sessions",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        # sha256 of the 256-bit random session key the browser holds in its cookie
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_id", sa.Integer, nullable=False),  # api_tokens.id it was opened with
        sa.Column("csrf", sa.String(64), nullable=False),  # the form token of this session
        sa.Column("created_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
        sa.Column("closed_at", ts),
    )
    md.create_all(conn)
    sa.Index("ix_ui_sessions_token", sessions.c.token_id).create(conn)
    # reference and current shares per bin, with the bins' real edges (JSON), for drill-downs
    conn.execute(sa.text("ALTER TABLE monitor_results ADD COLUMN bins JSON"))
