"""Monitoring: per-model settings, monitor runs and their per-window results."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "monitoring: settings per model, monitor runs, per-window results"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table("models", md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "monitor_settings",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    runs = sa.Table(
        "monitor_runs",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("window_start", ts, nullable=False),
        sa.Column("window_end", ts, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("finished_at", ts, nullable=False),
        sa.Column("run_by", sa.String(200), nullable=False),
    )
    results = sa.Table(
        "monitor_results",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("monitor_runs.id"), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("window_end", ts, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("method", sa.String(200)),
        sa.Column("value", sa.Float),
        sa.Column("lower", sa.Float),
        sa.Column("upper", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("p_value", sa.Float),
        sa.Column("alert", sa.Boolean),
        sa.Column("n", sa.BigInteger),
        sa.Column("detail", sa.Text),
    )
    md.create_all(conn)
    sa.Index("ix_monitor_runs_model_end", runs.c.model, runs.c.window_end).create(conn)
    sa.Index(
        "ix_monitor_results_model_kind_end", results.c.model, results.c.kind, results.c.window_end
    ).create(conn)
    sa.Index("ix_monitor_results_run", results.c.run_id).create(conn)
