"""Teams, members, models, versions, aliases and the audit log."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "registry: teams, members, models, versions, aliases, audit"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table(
        "teams",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("email", sa.String(320)),
        sa.Column("webhook_url", sa.String(2000)),
        sa.Column("slack_webhook_url", sa.String(2000)),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    sa.Table(
        "team_members",
        md,
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), primary_key=True),
        sa.Column("member", sa.String(64), primary_key=True),
        sa.Column("added_at", ts, nullable=False),
    )
    sa.Table(
        "models",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    sa.Table(
        "versions",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("artifact_digest", sa.String(64), nullable=False),
        sa.Column("artifact_format", sa.String(16), nullable=False),
        sa.Column("artifact_size", sa.BigInteger, nullable=False),
        sa.Column("trusted_types", sa.JSON, nullable=False),
        sa.Column("unsafe_pickle", sa.Boolean, nullable=False),
        sa.Column("data_digest", sa.String(64)),
        sa.Column("code_commit", sa.String(80)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("signature", sa.JSON, nullable=False),
        sa.Column("profile_digest", sa.String(64)),
        sa.Column("gate_status", sa.String(20), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    )
    sa.Table(
        "aliases",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    sa.Table(
        "audit",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", ts, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("model", sa.String(64)),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
    )
    md.create_all(conn)
