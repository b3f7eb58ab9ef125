"""Evaluation runs: the gate verdict of a version with its suite, datasets and report."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = "evaluations: gate verdicts with suite digest, dataset digests and report"


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("versions", md, sa.Column("id", sa.Integer, primary_key=True))
    evaluations = sa.Table(
        "evaluations",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(20), nullable=False),
        sa.Column("baseline", sa.String(200)),
        sa.Column("suite_source", sa.String(1000), nullable=False),
        sa.Column("suite_digest", sa.String(64), nullable=False),
        sa.Column("dataset_digests", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    evaluations.create(conn)
    sa.Index("ix_evaluations_version", evaluations.c.version_id, evaluations.c.id).create(conn)
