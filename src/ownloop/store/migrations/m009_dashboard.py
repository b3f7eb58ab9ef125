"""Dashboard: browser sessions opened with a token, and each window's histogram per feature."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = (
    "dashboard: browser sessions; per-window histograms on drift results; the arms of each run"
)


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
    # the arms a run counted ("stable,canary"), so reads filter runs by arm in SQL; older runs
    # carry them in their summary (NULL when they predate arms: every arm, then all stable)
    conn.execute(sa.text("ALTER TABLE monitor_runs ADD COLUMN arms VARCHAR(64)"))
    runs = sa.table(
        "monitor_runs",
        sa.column("id", sa.Integer),
        sa.column("summary", sa.JSON),
        sa.column("arms"),
    )
    found = conn.execute(sa.select(runs.c.id, runs.c.summary)).all()
    by_arms: dict[str, list[int]] = {}
    for row in found:
        summary = row.summary if isinstance(row.summary, dict) else {}
        arms = summary.get("arms")
        if isinstance(arms, list) and arms:
            by_arms.setdefault(",".join(str(a) for a in arms), []).append(int(row.id))
    for text, ids in by_arms.items():
        for i in range(0, len(ids), 500):
            conn.execute(runs.update().where(runs.c.id.in_(ids[i : i + 500])).values(arms=text))
    conn.execute(sa.text("CREATE INDEX ix_monitor_runs_end ON monitor_runs (window_end)"))
    # one figure's windows over time: a series reads a tight range per (kind, name)
    conn.execute(
        sa.text(
            "CREATE INDEX ix_monitor_results_series "
            "ON monitor_results (model, kind, name, window_end)"
        )
    )
