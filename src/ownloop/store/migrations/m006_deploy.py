"""Deploy: what is live per model and arm, rollouts and their events, leases, rollback checks."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "deploy: live routing per model, rollouts, rollout events, leases, rollback checks"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table("models", md, sa.Column("id", sa.Integer, primary_key=True))
    deployments = sa.Table(
        "deployments",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("stable_version", sa.Integer),
        sa.Column("candidate_version", sa.Integer),
        sa.Column("candidate_arm", sa.String(16)),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("routing_key", sa.String(200)),
        sa.Column("rollout_id", sa.Integer),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    rollouts = sa.Table(
        "rollouts",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        # set to model_id while the rollout is active, NULL once it ends: one active per model
        sa.Column("active_model_id", sa.Integer, unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("candidate_version", sa.Integer, nullable=False),
        sa.Column("stable_version", sa.Integer),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("analysis", sa.JSON),
        sa.Column("reason", sa.Text),
        sa.Column("gate_evaluation_id", sa.Integer),
        sa.Column("started_at", ts, nullable=False),
        sa.Column("step_started_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("finished_at", ts),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    events = sa.Table(
        "rollout_events",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("evidence", sa.JSON),
        sa.Column("by", sa.String(200), nullable=False),
    )
    sa.Table(
        "deploy_policies",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("policy", sa.JSON, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    sa.Table(
        "leases",
        md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", ts, nullable=False),
        sa.Column("expires_at", ts, nullable=False),
    )
    checks = sa.Table(
        "rollback_checks",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer, nullable=False),
        sa.Column("target_version", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("acted", sa.Boolean, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("by", sa.String(200), nullable=False),
    )
    md.create_all(conn)
    sa.Index("ix_rollouts_model", rollouts.c.model, rollouts.c.id).create(conn)
    sa.Index("ix_rollout_events_rollout", events.c.rollout_id, events.c.id).create(conn)
    sa.Index("ix_rollback_checks_model", checks.c.model, checks.c.id).create(conn)
    # what a version needs to run (library versions at registration, a requirements file)
    conn.execute(sa.text("ALTER TABLE versions ADD COLUMN needs JSON"))
    # what was live before deploy existed: every production alias becomes the stable arm
    rows = conn.execute(
        sa.text(
            "SELECT a.model_id, m.name, v.version, a.updated_at, a.updated_by "
            "FROM aliases a JOIN models m ON m.id = a.model_id "
            "JOIN versions v ON v.id = a.version_id WHERE a.alias = 'production'"
        )
    ).all()
    for r in rows:
        conn.execute(
            deployments.insert().values(
                model_id=r.model_id,
                model=r.name,
                stable_version=r.version,
                weight=0.0,
                generation=1,
                updated_at=r.updated_at,
                updated_by=r.updated_by,
            )
        )
