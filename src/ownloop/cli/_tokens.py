"""``ownloop token create|list|revoke``: API tokens, shown once, stored hashed."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

import click

from ownloop.cli._app import cli, console, echo_json, esc, table, when, workspace
from ownloop.cli._monitor import DURATION
from ownloop.tokens import ROLES, TokenInfo


@cli.group()
def token() -> None:
    """API tokens: sent as 'Authorization: Bearer <token>' to a server with auth on."""


def _info_json(info: TokenInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "team": info.team,
        "role": info.role,
        "created_at": info.created_at,
        "created_by": info.created_by,
        "expires_at": info.expires_at,
        "last_used_at": info.last_used_at,
        "revoked_at": info.revoked_at,
    }


def _opt(value: datetime | None) -> str:
    return "-" if value is None else when(value)


@token.command("create")
@click.option("--name", default=None, help="Token name (default: <team|admin>-<role>-<6 hex>).")
@click.option("--team", default=None, help="The team it acts for (viewer and owner tokens).")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What it may do.")
@click.option(
    "--expires", type=DURATION, default=None, help="Lifetime, e.g. 90d or 12h (default: never)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the token and its details as JSON.")
def token_create(
    name: str | None, team: str | None, role: str, expires: timedelta | None, as_json: bool
) -> None:
    """Make a token; its secret is printed this once and never stored."""
    # a long team name is cut so the default still fits the 64-character name limit
    name = name or f"{(team or 'admin')[:48]}-{role}-{secrets.token_hex(3)}"
    new = workspace().tokens.create(name, team=team, role=role, expires_in=expires)
    if as_json:
        echo_json({**_info_json(new.info), "token": new.secret})
        return
    scope = f"team '{new.info.team}'" if new.info.team else "every team"
    until = f"expires {when(new.info.expires_at)} UTC" if new.info.expires_at else "never expires"
    console.print(f"created token '{esc(new.info.name)}': {new.info.role} of {esc(scope)}, {until}")
    console.print("store it now; it is not shown again:")
    click.echo(new.secret)


@token.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def token_list(show_all: bool, as_json: bool) -> None:
    """Tokens with their team, role and dates (never their secrets)."""
    infos = workspace().tokens.list(include_revoked=show_all)
    if as_json:
        echo_json([_info_json(i) for i in infos])
        return
    if not infos:
        console.print("no tokens" if show_all else "no active tokens (see --all)")
        return
    rows = [
        [
            i.name,
            i.team or "-",
            i.role,
            when(i.created_at),
            _opt(i.expires_at),
            _opt(i.last_used_at),
            _opt(i.revoked_at),
        ]
        for i in infos
    ]
    columns = ["name", "team", "role", "created", "expires", "last used", "revoked"]
    table("API tokens (UTC)", columns, rows)


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke a token; servers refuse it within a second."""
    info = workspace().tokens.revoke(name)
    console.print(f"revoked token '{esc(info.name)}' at {_opt(info.revoked_at)} UTC")
