"""Alerts: rules per model, alerts with their lifecycle, an outbox of notifications and every
delivery attempt; escalation on teams; an explicit comparison on every stored monitor figure."""

from __future__ import annotations

import sqlalchemy as sa

DESCRIPTION = (
    "alerts: rules, alerts, notification outbox, delivery attempts, escalation, figure comparisons"
)


def upgrade(conn: sa.Connection) -> None:
    md = sa.MetaData()
    ts = sa.DateTime(timezone=True)
    sa.Table("models", md, sa.Column("id", sa.Integer, primary_key=True))
    rules = sa.Table(
        "alert_rules",
        md,
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("rule", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    alerts = sa.Table(
        "alerts",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        # the fingerprint while the alert is open (firing or acknowledged), NULL once resolved:
        # at most one open alert per fingerprint, enforced by the database
        sa.Column("open_fingerprint", sa.String(64), unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("next_step", sa.Text),
        sa.Column("link", sa.String(2000)),
        sa.Column("opened_at", ts, nullable=False),
        sa.Column("last_seen_at", ts, nullable=False),
        sa.Column("last_notified_at", ts),
        sa.Column("acked_at", ts),
        sa.Column("acked_by", sa.String(200)),
        sa.Column("escalated_at", ts),
        sa.Column("escalated_to", sa.String(64)),
        sa.Column("resolved_at", ts),
        sa.Column("resolved_by", sa.String(200)),
        sa.Column("resolve_note", sa.Text),
        sa.Column("action", sa.JSON),
    )
    notifications = sa.Table(
        "alert_notifications",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(2000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("claimed_by", sa.String(200)),
        sa.Column("claimed_until", ts),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("delivered_at", ts),
        sa.Column("last_error", sa.Text),
    )
    deliveries = sa.Table(
        "alert_deliveries",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "notification_id",
            sa.Integer,
            sa.ForeignKey("alert_notifications.id"),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_s", sa.Float),
        sa.Column("by", sa.String(200), nullable=False),
    )
    md.create_all(conn, tables=[rules, alerts, notifications, deliveries])
    sa.Index("ix_alerts_model_id", alerts.c.model, alerts.c.id).create(conn)
    sa.Index("ix_alerts_team_state", alerts.c.team, alerts.c.state).create(conn)
    sa.Index(
        "ix_alert_notifications_due", notifications.c.state, notifications.c.next_attempt_at
    ).create(conn)
    sa.Index("ix_alert_deliveries_notification", deliveries.c.notification_id).create(conn)
    for table, column in (
        ("teams", sa.Column("escalate_to", sa.String(64))),
        ("teams", sa.Column("escalate_after_s", sa.Float)),
        # what a stored figure is compared with: the reference figure it came from, the bound,
        # and the direction ('above': worse when value > bound; 'below': worse when value <
        # bound; 'test': the test's decision is in `alert`, its alpha in `bound` against p_value)
        ("monitor_results", sa.Column("reference", sa.Float)),
        ("monitor_results", sa.Column("bound", sa.Float)),
        ("monitor_results", sa.Column("compare", sa.String(16))),
    ):
        ddl = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column.name} {ddl}"))
