"""The current shape of the metadata tables, for queries. Migrations own how it got here."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "alert_deliveries",
    "alert_notifications",
    "alert_rules",
    "alerts",
    "alias_history",
    "aliases",
    "api_tokens",
    "audit",
    "deploy_policies",
    "deployments",
    "evaluations",
    "leases",
    "metadata",
    "models",
    "monitor_results",
    "monitor_runs",
    "monitor_settings",
    "rollback_checks",
    "rollout_events",
    "rollouts",
    "schema_versions",
    "team_members",
    "teams",
    "ui_sessions",
    "versions",
]

metadata = sa.MetaData()
_ts = sa.DateTime(timezone=True)

schema_versions = sa.Table(
    "ownloop_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", _ts, nullable=False),
)

teams = sa.Table(
    "teams",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("email", sa.String(320)),
    sa.Column("webhook_url", sa.String(2000)),
    sa.Column("slack_webhook_url", sa.String(2000)),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("escalate_to", sa.String(64)),  # the team paged when a page stays unacknowledged
    sa.Column("escalate_after_s", sa.Float),
)

team_members = sa.Table(
    "team_members",
    metadata,
    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), primary_key=True),
    sa.Column("member", sa.String(64), primary_key=True),
    sa.Column("added_at", _ts, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("latest_version", sa.Integer, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

versions = sa.Table(
    "versions",
    metadata,
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
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("needs", sa.JSON),
    sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
)

aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("previous_version", sa.Integer),
    sa.Column("at", _ts, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", _ts, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("model", sa.String(64)),
    sa.Column("before", sa.JSON),
    sa.Column("after", sa.JSON),
)

evaluations = sa.Table(
    "evaluations",
    metadata,
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
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
)

monitor_settings = sa.Table(
    "monitor_settings",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

monitor_runs = sa.Table(
    "monitor_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("window_start", _ts, nullable=False),
    sa.Column("window_end", _ts, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("started_at", _ts, nullable=False),
    sa.Column("finished_at", _ts, nullable=False),
    sa.Column("run_by", sa.String(200), nullable=False),
    # migration 9: the arms the window counted, "stable,canary" (NULL: stored before, the default)
    sa.Column("arms", sa.String(64)),
)

monitor_results = sa.Table(
    "monitor_results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("monitor_runs.id"), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("window_end", _ts, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("method", sa.String(200)),
    sa.Column("value", sa.Float),
    sa.Column("lower", sa.Float),
    sa.Column("upper", sa.Float),
    # legacy: alpha for tests, a distance for distance methods, the reference share or mean for
    # missing values and confidence; kept for older readers. Rules use reference/bound/compare.
    sa.Column("threshold", sa.Float),
    sa.Column("p_value", sa.Float),
    sa.Column("alert", sa.Boolean),
    sa.Column("n", sa.BigInteger),
    sa.Column("detail", sa.Text),
    # the explicit comparison (migration 7), per kind in docs/alerts.md ("what each stored
    # figure is compared with"); `alert` stays the monitor's verdict where it gives one
    sa.Column("reference", sa.Float),  # the reference figure the value is compared with
    sa.Column("bound", sa.Float),  # the bound the value (or p_value, for 'test') is held to
    sa.Column("compare", sa.String(16)),  # 'above' | 'below' | 'test' | NULL (no direction)
    # migration 9: drift rows' histogram, {"kind", "edges", "labels", "reference", "current"}
    sa.Column("bins", sa.JSON),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("stable_version", sa.Integer),
    sa.Column("candidate_version", sa.Integer),
    sa.Column("candidate_arm", sa.String(16)),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("routing_key", sa.String(200)),
    sa.Column("rollout_id", sa.Integer),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
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
    sa.Column("started_at", _ts, nullable=False),
    sa.Column("step_started_at", _ts, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("finished_at", _ts),
    sa.Column("created_by", sa.String(200), nullable=False),
)

rollout_events = sa.Table(
    "rollout_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), nullable=False),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("at", _ts, nullable=False),
    sa.Column("from_state", sa.String(16)),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("evidence", sa.JSON),
    sa.Column("by", sa.String(200), nullable=False),
)

deploy_policies = sa.Table(
    "deploy_policies",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", _ts, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
)

rollback_checks = sa.Table(
    "rollback_checks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("current_version", sa.Integer, nullable=False),
    sa.Column("target_version", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(16), nullable=False),
    sa.Column("acted", sa.Boolean, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("at", _ts, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
)

alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("open_fingerprint", sa.String(64), unique=True),  # NULL once resolved
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
    sa.Column("opened_at", _ts, nullable=False),
    sa.Column("last_seen_at", _ts, nullable=False),
    sa.Column("last_notified_at", _ts),
    sa.Column("acked_at", _ts),
    sa.Column("acked_by", sa.String(200)),
    sa.Column("escalated_at", _ts),
    sa.Column("escalated_to", sa.String(64)),
    sa.Column("resolved_at", _ts),
    sa.Column("resolved_by", sa.String(200)),
    sa.Column("resolve_note", sa.Text),
    sa.Column("action", sa.JSON),  # the retrain trigger's outcome
)

alert_notifications = sa.Table(
    "alert_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("team", sa.String(64), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("target", sa.String(2000), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", _ts, nullable=False),
    sa.Column("claimed_by", sa.String(200)),
    sa.Column("claimed_until", _ts),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("delivered_at", _ts),
    sa.Column("last_error", sa.Text),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "notification_id", sa.Integer, sa.ForeignKey("alert_notifications.id"), nullable=False
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", _ts, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration_s", sa.Float),
    sa.Column("by", sa.String(200), nullable=False),
)

# Indexes the migrations create; declared here too, so the declared schema is the whole schema.
sa.Index("ix_alias_history_model_alias", alias_history.c.model_id, alias_history.c.alias)
sa.Index("ix_audit_model_at", audit.c.model, audit.c.at)
sa.Index("ix_audit_at", audit.c.at)
sa.Index("ix_evaluations_version", evaluations.c.version_id, evaluations.c.id)
sa.Index("ix_monitor_runs_model_end", monitor_runs.c.model, monitor_runs.c.window_end)
sa.Index("ix_monitor_runs_end", monitor_runs.c.window_end)
sa.Index(
    "ix_monitor_results_model_kind_end",
    monitor_results.c.model,
    monitor_results.c.kind,
    monitor_results.c.window_end,
)
sa.Index("ix_monitor_results_run", monitor_results.c.run_id)
sa.Index(  # migration 9: one figure's windows over time (the dashboard's series)
    "ix_monitor_results_series",
    monitor_results.c.model,
    monitor_results.c.kind,
    monitor_results.c.name,
    monitor_results.c.window_end,
)
sa.Index("ix_rollouts_model", rollouts.c.model, rollouts.c.id)
sa.Index("ix_rollout_events_rollout", rollout_events.c.rollout_id, rollout_events.c.id)
sa.Index("ix_rollback_checks_model", rollback_checks.c.model, rollback_checks.c.id)
sa.Index("ix_alerts_model_id", alerts.c.model, alerts.c.id)
sa.Index("ix_alerts_team_state", alerts.c.team, alerts.c.state)
sa.Index(
    "ix_alert_notifications_due",
    alert_notifications.c.state,
    alert_notifications.c.next_attempt_at,
)
sa.Index("ix_alert_deliveries_notification", alert_deliveries.c.notification_id)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("team", sa.String(64)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("expires_at", _ts),
    sa.Column("revoked_at", _ts),
    sa.Column("revoked_by", sa.String(200)),
    sa.Column("last_used_at", _ts),
)
sa.Index("ix_api_tokens_name", api_tokens.c.name)

ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("token_id", sa.Integer, nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("expires_at", _ts, nullable=False),
    sa.Column("closed_at", _ts),
)
sa.Index("ix_ui_sessions_token", ui_sessions.c.token_id)
