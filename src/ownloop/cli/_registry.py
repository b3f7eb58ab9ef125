"""Registry commands: team, register, models, versions, show, alias, transfer, audit, db."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from ownloop import needs
from ownloop.cli._app import cli, console, echo_json, esc, table, when, workspace
from ownloop.cli._monitor import DURATION
from ownloop.errors import NotFoundError, OwnloopError
from ownloop.profile import ClassificationProfile, FeatureProfile, NumericProfile
from ownloop.registry import PRODUCTION, ModelVersion, Team
from ownloop.store.migrations import latest_version

_json = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
_escalate_to = click.option(
    "--escalate-to", help="Team paged when a page stays unacknowledged ('' to stop escalating)."
)
_escalate_after = click.option(
    "--escalate-after", type=DURATION, help="How long a page may stay unacknowledged (e.g. 30m)."
)


# -- teams ------------------------------------------------------------------------------


@cli.group()
def team() -> None:
    """Teams own models and receive their alerts."""


@team.command("add")
@click.argument("name")
@click.option("--email", help="Address alerts are mailed to.")
@click.option("--webhook", help="Alertmanager-compatible webhook URL.")
@click.option("--slack-webhook", help="Slack-compatible incoming webhook URL.")
@click.option("--member", "members", multiple=True, help="A member's user name (repeatable).")
@_escalate_to
@_escalate_after
def team_add(
    name: str,
    email: str | None,
    webhook: str | None,
    slack_webhook: str | None,
    members: tuple[str, ...],
    escalate_to: str | None,
    escalate_after: timedelta | None,
) -> None:
    """Create team NAME with its notification routes."""
    t = workspace().registry.add_team(
        name,
        email=email,
        webhook_url=webhook,
        slack_webhook_url=slack_webhook,
        members=members,
        escalate_to=escalate_to,
        escalate_after_s=None if escalate_after is None else escalate_after.total_seconds(),
    )
    console.print(f"team [bold]{esc(t.name)}[/] created")
    _print_team(t)


@team.command("set")
@click.argument("name")
@click.option("--email")
@click.option("--webhook")
@click.option("--slack-webhook")
@_escalate_to
@_escalate_after
def team_set(
    name: str,
    email: str | None,
    webhook: str | None,
    slack_webhook: str | None,
    escalate_to: str | None,
    escalate_after: timedelta | None,
) -> None:
    """Change team NAME's notification routes (pass '' to clear one).

    --escalate-to '' stops escalating.
    """
    changes: dict[str, Any] = {}
    if escalate_to is not None:
        changes["escalate_to"] = escalate_to
    if escalate_after is not None:
        changes["escalate_after_s"] = escalate_after.total_seconds()
    if email is not None:
        changes["email"] = email
    if webhook is not None:
        changes["webhook_url"] = webhook
    if slack_webhook is not None:
        changes["slack_webhook_url"] = slack_webhook
    if not changes:
        raise click.UsageError(
            "nothing to change: pass --email, --webhook, --slack-webhook, --escalate-to or "
            "--escalate-after"
        )
    _print_team(workspace().registry.update_team(name, **changes))


@team.command("list")
@_json
def team_list(as_json: bool) -> None:
    """All teams and how to reach them."""
    teams = workspace().registry.list_teams()
    if as_json:
        echo_json(teams)
        return
    table(
        None,
        ["team", "members", "email", "webhook", "slack"],
        [
            [t.name, ", ".join(t.members), t.email, t.webhook_url, t.slack_webhook_url]
            for t in teams
        ],
    )


@team.command("show")
@click.argument("name")
@_json
def team_show(name: str, as_json: bool) -> None:
    """One team, its routes and the models it owns."""
    ws = workspace()
    t = ws.registry.get_team(name)
    if as_json:
        echo_json(t)
        return
    _print_team(t)
    owned = [m.name for m in ws.registry.list_models(owner=name)]
    console.print(f"owns: {esc(', '.join(owned)) or '(no models yet)'}")


@team.group("member")
def team_member() -> None:
    """Add or remove team members."""


@team_member.command("add")
@click.argument("team_name")
@click.argument("member")
def member_add(team_name: str, member: str) -> None:
    _print_team(workspace().registry.add_member(team_name, member))


@team_member.command("remove")
@click.argument("team_name")
@click.argument("member")
def member_remove(team_name: str, member: str) -> None:
    _print_team(workspace().registry.remove_member(team_name, member))


def _escalation(t: Team) -> str:
    if not t.escalate_to or t.escalate_after_s is None:
        return "-"
    return f"to {t.escalate_to} after {_span(t.escalate_after_s)} unacknowledged"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _print_team(t: Team) -> None:
    table(
        f"team {t.name}",
        ["field", "value"],
        [
            ["members", ", ".join(t.members) or "-"],
            ["email", t.email or "-"],
            ["webhook", t.webhook_url or "-"],
            ["slack webhook", t.slack_webhook_url or "-"],
            ["escalates", _escalation(t)],
            ["created", f"{when(t.created_at)} by {t.created_by}"],
        ],
    )


# -- models -----------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.argument("model_file", type=click.Path(path_type=Path))
@click.option("--owner", help="Owning team (required for a new model).")
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Training or validation data (Parquet/CSV) to build the signature and profile from.",
)
@click.option("--target", help="Label column in the reference data.")
@click.option(
    "--signature",
    "signature_file",
    type=click.Path(path_type=Path),
    help='Feature names and types (JSON or YAML): {"features": [{"name": "age", "type": "float"}]}.',
)
@click.option(
    "--trust", multiple=True, help="A skops type you have checked and trust (repeatable)."
)
@click.option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Accept a pickle/joblib file. It can run any code when loaded: only for files you trust.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    metavar="NAME=VALUE",
    help="A metric to record (repeatable).",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter to record (repeatable).",
)
@click.option("--description")
@click.option(
    "--requirements",
    "requirements_file",
    type=click.Path(path_type=Path),
    help="A pip requirements file of what the model needs to run (recorded; checked at deploy).",
)
@_json
def register(
    name: str,
    model_file: Path,
    owner: str | None,
    reference: Path | None,
    target: str | None,
    signature_file: Path | None,
    trust: tuple[str, ...],
    allow_unsafe_pickle: bool,
    metrics: tuple[str, ...],
    params: tuple[str, ...],
    description: str | None,
    requirements_file: Path | None,
    as_json: bool,
) -> None:
    """Register MODEL_FILE (skops, ONNX; pickle only with opt-in) as the next version of NAME.

    Feature types come from --signature, from --reference, or from the model when it records
    them (a pipeline's ColumnTransformer, ONNX inputs). What the model needs to run (library
    versions at training time, --requirements) is recorded and checked at deploy; see
    'ownloop show NAME@N'.
    """
    with _flags():
        v = workspace().registry.register(
            name=name,
            path=model_file,
            owner=owner,
            reference=reference,
            target=target,
            signature=signature_file,
            trust=trust,
            allow_unsafe_pickle=allow_unsafe_pickle,
            metrics=_pairs(metrics, numeric=True),
            params=_pairs(params) if params else None,
            description=description,
            requirements=requirements_file,
        )
    if as_json:
        echo_json(v)
        return
    console.print(
        f"registered [bold]{esc(v.ref)}[/] (owner {esc(v.owner)}, {v.artifact_format}, sha256 {v.artifact_digest[:12]})"
    )
    if v.unsafe_pickle:
        console.print(
            "[yellow]warning:[/] this version is a pickle; loading it runs code from the file"
        )


# The library's messages name Python arguments; on the command line they are flags.
_FLAGS = [
    ("reference=, a DataFrame or a Parquet/CSV file", "--reference FILE, Parquet or CSV"),
    ("signature=, a Signature, a dict or a JSON/YAML file", "--signature FILE, JSON or YAML"),
    ("allow_unsafe_pickle=True", "--allow-unsafe-pickle"),
    ("owner=TEAM", "--owner TEAM"),
    ("reference=", "--reference"),
    ("signature=", "--signature"),
    ("target=", "--target"),
    ("(path=)", "(MODEL_FILE)"),
]


def cli_words(message: str) -> str:
    """A register error in command-line terms: ``target=`` becomes ``--target``, and so on."""
    for python, flag in _FLAGS:
        message = message.replace(python, flag)
    return re.sub(
        r"trust=\[([^\]]*)\]",
        lambda m: " ".join(f"--trust {t.strip()}" for t in m.group(1).replace("'", "").split(",")),
        message,
    )


@contextmanager
def _flags() -> Iterator[None]:
    try:
        yield
    except OwnloopError as exc:
        raise type(exc)(cli_words(exc.message)) from exc


def _pairs(items: tuple[str, ...], numeric: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' should look like NAME=VALUE")
        if numeric:
            try:
                out[key] = float(value)
            except ValueError:
                raise click.BadParameter(f"metric '{key}' needs a number, not '{value}'") from None
        else:
            out[key] = value
    return out


@cli.command()
@click.option("--owner", help="Only models owned by this team.")
@_json
def models(owner: str | None, as_json: bool) -> None:
    """All models: owner, latest version, aliases."""
    found = workspace().registry.list_models(owner=owner)
    if as_json:
        echo_json(found)
        return
    if not found:
        console.print(
            "no models yet: register one with 'ownloop register NAME FILE --owner TEAM', "
            "or see the whole loop with 'ownloop demo'"
        )
        return
    table(
        None,
        ["model", "owner", "latest", "aliases"],
        [
            [m.name, m.owner, m.latest_version, ", ".join(f"{a}→{v}" for a, v in m.aliases.items())]
            for m in found
        ],
    )


@cli.command()
@click.argument("name")
@_json
def versions(name: str, as_json: bool) -> None:
    """Versions of NAME: created, by, digest, format, gate status, last rollout, aliases."""
    ws = workspace()
    found = ws.registry.list_versions(name)
    if as_json:
        echo_json(found)
        return
    last: dict[int, str] = {}
    for r in reversed(ws.deploy.rollouts(name, limit=1000)):  # oldest first: the newest wins
        last[r.candidate] = f"{r.state} (#{r.id})"
    table(
        f"model {name}",
        ["version", "created", "by", "sha256", "format", "gate", "rollout", "aliases"],
        [
            [
                v.version,
                when(v.created_at),
                v.created_by,
                v.artifact_digest[:12],
                _format(v),
                v.gate_status,
                last.get(v.version, "-"),
                ", ".join(v.aliases),
            ]
            for v in found
        ],
    )


def _format(v: ModelVersion) -> str:
    return (
        f"{v.artifact_format} (UNSAFE pickle, opted in)" if v.unsafe_pickle else v.artifact_format
    )


@cli.command()
@click.argument("ref")
@_json
def show(ref: str, as_json: bool) -> None:
    """One version (REF is name, name@3 or name@alias): lineage, signature, profile, metrics, params."""
    reg = workspace().registry
    v = reg.get_version(ref)
    try:
        profile = reg.load_profile(v.ref)
    except NotFoundError:
        profile = None
    if as_json:
        here = [m.to_dict() for m in needs.check_runnable(v.needs)]
        echo_json(
            {
                "version": v,
                "profile": None if profile is None else profile.to_dict(),
                "environment": None if v.needs is None else here,
            }
        )
        return
    table(
        f"{v.ref} (owner {v.owner})",
        ["lineage", ""],
        [
            ["created", f"{when(v.created_at)} by {v.created_by}"],
            ["artifact", f"sha256 {v.artifact_digest} ({v.artifact_size:,} bytes, {_format(v)})"],
            ["trusted types", ", ".join(v.trusted_types) or "-"],
            ["training data", f"sha256 {v.data_digest}" if v.data_digest else "-"],
            ["code commit", v.code_commit or "-"],
            ["gate", v.gate_status],
            ["aliases", ", ".join(v.aliases) or "-"],
            ["description", v.description or "-"],
        ],
    )
    sig = v.signature
    out = (
        f"classification, classes {list(sig.classes or [])}"
        if sig.task == "classification"
        else "regression"
    )
    console.print(
        f"signature: {len(sig.features)} features -> {out}"
        + (f", target '{sig.target}'" if sig.target else ""),
        markup=False,
    )
    rows = []
    importance = profile.importance if profile else None
    for f in sig.features:
        p = profile.features.get(f.name) if profile else None
        row = [f.name, f.type, "yes" if f.nullable else "no", _profile_summary(p)]
        if importance is not None:
            row.append(f"{importance.get(f.name, 0.0):.1%}")
        rows.append(row)
    header = ["feature", "type", "nullable", "reference profile"]
    table(None, header + (["importance"] if importance is not None else []), rows)
    if profile:
        pred = profile.prediction
        line = f"reference: {profile.row_count:,} rows"
        if profile.importance_method:
            line += f"; importance by {profile.importance_method}"
        if isinstance(pred, ClassificationProfile):
            if pred.confidence.mean is not None:
                line += f"; mean confidence {pred.confidence.mean:.3f}"
            shares = [n / max(profile.row_count, 1) for n in pred.predicted_counts]
            line += "; predicted " + ", ".join(
                f"{c}: {s:.1%}" for c, s in zip(pred.classes, shares, strict=True)
            )
        if pred.performance is not None:
            line += "; on reference " + ", ".join(
                f"{k} {val:.4f}" for k, val in pred.performance.metrics.items() if val is not None
            )
        console.print(line, markup=False)
    _print_needs(v)
    if v.metrics:
        table(None, ["metric", "value"], [[k, m] for k, m in v.metrics.items()])
    if v.params:
        table(None, ["param", "value"], [[k, p] for k, p in sorted(v.params.items())])


def _print_needs(v: ModelVersion) -> None:
    """What the version needs to run, and how this environment compares."""
    if v.needs is None:
        console.print("needs: not recorded (registered before ownloop recorded them)")
        return
    found = {m.library: m for m in needs.check_runnable(v.needs)}
    python = v.needs.get("python") or "-"
    rows = [["python", python, "interpreter", "registration", _here(found.get("python"))]]
    for name, info in v.needs.get("libraries", {}).items():
        source = info.get("source", "")
        rows.append(
            [name, info.get("version") or "-", info.get("role", ""), source, _here(found.get(name))]
        )
    for module in v.needs.get("modules", []):
        rows.append([module, "importable", "model", "module", _here(found.get(module))])
    for spec in v.needs.get("requirements", []):
        name = needs.requirement_name(spec)
        rows.append([spec, "", "requirement", "--requirements", _here(found.get(name))])
    table(f"needs of {v.ref}", ["needs", "version", "role", "recorded from", "here"], rows)


def _here(m: needs.Mismatch | None) -> str:
    if m is None:
        return "ok"
    has = "missing" if m.found is None else m.found
    return f"{has}: {'REFUSED' if m.blocking else 'note'} ({m.reason})"


def _profile_summary(p: FeatureProfile | None) -> str:
    if p is None:
        return "-"
    nulls = f"{p.nulls / max(p.count, 1):.1%} null"
    ident = ", identifier-like" if p.identifier else ""
    if isinstance(p, NumericProfile):
        if p.min is None or p.max is None or p.mean is None:
            return f"no finite values, {nulls}"
        q = p.quantiles
        return f"min {p.min:.4g}  median {q[len(q) // 2]:.4g}  max {p.max:.4g}  mean {p.mean:.4g}, {nulls}{ident}"
    top = ", ".join(f"{k} {v / max(p.count, 1):.0%}" for k, v in list(p.categories.items())[:4])
    return f"{p.distinct} categories ({top}), {nulls}{ident}"


# -- aliases, ownership, audit ----------------------------------------------------------


@cli.group()
def alias() -> None:
    """Named pointers to versions: production, candidate, anything."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name")
@click.argument("version")
@click.option("--force", is_flag=True, help="production only: skip the gate check (audited).")
@click.option("--reason", help="Why the gate is skipped; required with --force.")
def alias_set(name: str, alias_name: str, version: str, force: bool, reason: str | None) -> None:
    """Point ALIAS_NAME of model NAME at VERSION.

    `production` is what `ownloop serve` answers with, and only deploy moves it: setting it here
    goes through the same gate check as `ownloop deploy NAME@VERSION --strategy direct`.
    """
    ws = workspace()
    if alias_name == PRODUCTION:
        v = ws.deploy.set_production(name, version, force=force, reason=reason)
    elif force:
        raise click.UsageError("--force only applies to the production alias")
    else:
        v = ws.registry.set_alias(name, alias_name, version)
    console.print(f"{name}@{alias_name} -> version {v.version}", markup=False)


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name")
def alias_rm(name: str, alias_name: str) -> None:
    """Remove ALIAS_NAME from model NAME."""
    workspace().registry.delete_alias(name, alias_name)
    console.print(f"{name}@{alias_name} removed", markup=False)


@alias.command("history")
@click.argument("name")
@click.option("--alias", "alias_name")
@_json
def alias_history(name: str, alias_name: str | None, as_json: bool) -> None:
    """Every move of NAME's aliases."""
    events = workspace().registry.alias_history(name, alias_name)
    if as_json:
        echo_json(events)
        return
    table(
        f"aliases of {name}",
        ["when", "by", "alias", "from", "to"],
        [
            [when(e.at), e.by, e.alias, e.previous_version or "-", e.version or "(removed)"]
            for e in events
        ],
    )


@cli.command()
@click.argument("name")
@click.option("--to", "team_name", required=True, help="The team that will own the model.")
def transfer(name: str, team_name: str) -> None:
    """Hand model NAME over to another team."""
    m = workspace().registry.transfer(name, team_name)
    console.print(f"model {m.name} is now owned by team {m.owner}", markup=False)


@cli.command()
@click.option("--model", help="Only changes to this model.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_json
def audit(model: str | None, limit: int, as_json: bool) -> None:
    """Who changed what, when (newest first)."""
    entries = workspace().registry.audit_log(model=model, limit=limit)
    if as_json:
        echo_json(entries)
        return
    table(
        None,
        ["when", "actor", "action", "target", "before", "after"],
        [
            [when(e.at), e.actor, e.action, e.target, _short(e.before), _short(e.after)]
            for e in entries
        ],
    )


def _short(value: Any) -> str:
    if value is None:
        return ""
    text = (
        ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    )
    return text if len(text) <= 60 else text[:57] + "..."


@cli.group()
def db() -> None:
    """Metadata database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (back up the database first)."""
    ws = workspace(check_schema=False)
    ws.acting.check("store.upgrade", target="store:schema")
    store = ws.store
    before = store.schema_version()
    applied = store.upgrade()
    if applied:
        # right after the upgrade: the audit table's shape is the one this code knows only now
        after = store.schema_version()
        with store.write() as conn:
            store.audit(
                conn,
                at=ws.clock.now(),
                actor=ws.actor.name,
                action="store.upgrade",
                target="store:schema",
                before={"schema_version": before},
                after={"schema_version": after, "applied": applied},
            )
        console.print(
            f"applied migrations {', '.join(map(str, applied))}; schema is at {store.schema_version()}"
        )
    else:
        console.print(f"schema is up to date (version {store.schema_version()})")


@db.command("status")
def db_status() -> None:
    """Which schema version the database is at, and which this ownloop needs."""
    store = workspace(check_schema=False).store
    applied = store.applied_migrations()
    current, latest = max(applied, default=0), latest_version()
    pending = store.pending_migrations(applied)
    if current > latest:
        state = "newer than this ownloop: upgrade ownloop"
    elif pending:
        state = f"out of date (pending migrations {', '.join(map(str, pending))}): run 'ownloop db upgrade'"
    else:
        state = "up to date"
    console.print(f"schema version {current}, this ownloop needs {latest}: {state}")
