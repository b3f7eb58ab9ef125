"""A team's escalation: where its unacknowledged pages go and after how long."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from ownloop import Config, Workspace
from ownloop.cli import cli
from ownloop.errors import InvalidInputError, NotFoundError
from tests.conftest import env_for


@pytest.fixture
def run(config: Config) -> Callable[..., Result]:
    env = env_for(config)

    def _run(*args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env=env)

    return _run


def test_add_team_with_escalation(ws: Workspace) -> None:
    ws.registry.add_team("platform")
    team = ws.registry.add_team("risk", escalate_to="platform", escalate_after_s=1800)
    assert (team.escalate_to, team.escalate_after_s) == ("platform", 1800.0)
    assert ws.registry.get_team("risk").escalate_to == "platform"


def test_escalation_to_a_missing_team_is_refused_and_nothing_written(ws: Workspace) -> None:
    with pytest.raises(NotFoundError, match="team 'nobody' does not exist"):
        ws.registry.add_team("risk", escalate_to="nobody", escalate_after_s=60)
    assert [t.name for t in ws.registry.list_teams()] == []


@pytest.mark.parametrize(
    ("to", "after", "match"),
    [
        ("risk", 60.0, "cannot escalate to itself"),
        ("platform", None, "needs a delay"),
        ("platform", 0.0, "must be positive"),
        ("platform", -5.0, "must be positive"),
        ("platform", float("nan"), "must be positive"),
        (None, 60.0, "needs --escalate-to"),
    ],
)
def test_bad_escalation_is_refused(
    ws: Workspace, to: str | None, after: float | None, match: str
) -> None:
    ws.registry.add_team("platform")
    with pytest.raises(InvalidInputError, match=match):
        ws.registry.add_team("risk", escalate_to=to, escalate_after_s=after)


def test_update_sets_changes_and_clears_escalation(ws: Workspace) -> None:
    ws.registry.add_team("platform")
    ws.registry.add_team("sre")
    ws.registry.add_team("risk")
    with pytest.raises(InvalidInputError, match="needs a delay"):
        ws.registry.update_team("risk", escalate_to="platform")
    ws.registry.update_team("risk", escalate_to="platform", escalate_after_s=600)
    team = ws.registry.update_team("risk", escalate_to="sre")  # keeps the stored delay
    assert (team.escalate_to, team.escalate_after_s) == ("sre", 600.0)
    assert ws.registry.update_team("risk", escalate_after_s=60).escalate_after_s == 60.0
    with pytest.raises(InvalidInputError, match="cannot escalate to itself"):
        ws.registry.update_team("risk", escalate_to="risk")
    with pytest.raises(NotFoundError, match="team 'ghost' does not exist"):
        ws.registry.update_team("risk", escalate_to="ghost")
    assert ws.registry.get_team("risk").escalate_to == "sre"
    cleared = ws.registry.update_team("risk", escalate_to="")
    assert (cleared.escalate_to, cleared.escalate_after_s) == (None, None)


def test_cli_sets_and_shows_escalation(run: Callable[..., Result], ws: Workspace) -> None:
    assert run("team", "add", "platform").exit_code == 0
    added = run("team", "add", "risk", "--escalate-to", "platform", "--escalate-after", "30m")
    assert added.exit_code == 0, added.output
    shown = run("team", "show", "risk")
    assert "to platform after 30m unacknowledged" in shown.output
    changed = run("team", "set", "risk", "--escalate-after", "2h")
    assert changed.exit_code == 0, changed.output
    assert ws.registry.get_team("risk").escalate_after_s == 7200.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--escalate-to", "ghost", "--escalate-after", "30m"], "team 'ghost' does not exist"),
        (["--escalate-to", "risk", "--escalate-after", "30m"], "cannot escalate to itself"),
        (["--escalate-to", "platform", "--escalate-after", "30"], "has no unit"),
        (["--escalate-to", "platform", "--escalate-after", "-5m"], "must be positive"),
    ],
)
def test_cli_bad_escalation_is_a_clear_error(
    run: Callable[..., Result], args: list[str], message: str
) -> None:
    run("team", "add", "platform")
    run("team", "add", "risk")
    result = run("team", "set", "risk", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
