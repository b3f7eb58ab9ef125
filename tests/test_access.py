from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from ownloop import Actor, Config, InvalidInputError, PermissionDeniedError, Workspace
from ownloop.access import POLICY, Role, action, action_of, authorize


def test_every_action_names_a_role() -> None:
    assert POLICY
    assert all(isinstance(role, Role) for role in POLICY.values())


def test_owner_actions_need_membership_of_the_owning_team() -> None:
    member = Actor("ana", teams=frozenset({"risk"}))
    authorize(member, "alias.set", "risk")
    with pytest.raises(PermissionDeniedError, match="team 'risk'"):
        authorize(Actor("bob", teams=frozenset({"growth"})), "alias.set", "risk")


def test_predicting_needs_a_viewer_and_only_admins_create_teams() -> None:
    authorize(Actor("ci"), "model.predict")
    with pytest.raises(PermissionDeniedError, match="needs viewer"):
        authorize(Actor("anon", viewer=False), "model.predict")
    with pytest.raises(PermissionDeniedError):
        authorize(Actor("ana", teams=frozenset({"risk"})), "team.create")


def test_registry_checks_the_actor(
    config: Config, churn_model: object, churn_data: pd.DataFrame
) -> None:
    with Workspace(config) as admin:
        admin.registry.add_team("risk")
        admin.registry.add_team("growth")
        admin.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
    with Workspace(config, actor=Actor("bob", teams=frozenset({"growth"}))) as outsider:
        with pytest.raises(PermissionDeniedError, match="deploy.promote"):
            outsider.deploy.set_production("churn", 1, force=True, reason="set up")
        assert outsider.registry.get_version("churn@1").version == 1  # viewers may read
    with Workspace(config, actor=Actor("ana", teams=frozenset({"risk"}))) as owner:
        assert owner.deploy.set_production("churn", 1, force=True, reason="set up").aliases == (
            "production",
        )


def test_an_action_outside_policy_fails_when_the_method_is_defined() -> None:
    with pytest.raises(InvalidInputError, match="unknown action 'model.frobnicate'"):

        class _Service:
            @action("model.frobnicate")
            def frobnicate(self) -> None: ...

    @action("model.read")
    def read() -> None: ...

    assert action_of(read) == "model.read"


def test_a_denial_is_audited_in_its_own_transaction(config: Config) -> None:
    with Workspace(config) as admin:
        admin.registry.add_team("risk")
    anonymous = Actor("anonymous", viewer=False)
    with Workspace(config, actor=anonymous) as ws:
        with pytest.raises(PermissionDeniedError, match="team.create"):
            ws.registry.add_team("growth")
        with ws.acting_as(Actor.local("root")):
            names = [team.name for team in ws.registry.list_teams()]
            (denial, *_) = ws.registry.audit_log(limit=1)
    assert names == ["risk"]
    assert (denial.actor, denial.action, denial.target, denial.after) == (
        "anonymous",
        "access.denied",
        "team:growth",
        {"action": "team.create", "owner_team": None},
    )


def test_a_store_failure_while_auditing_a_denial_still_denies(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    with Workspace(config, actor=Actor("anonymous", viewer=False)) as ws:
        with ws.store.write() as conn:
            conn.execute(sa.text("DROP TABLE audit"))
        with pytest.raises(PermissionDeniedError, match="team.read"):
            ws.registry.list_teams()
    assert "could not audit the denial of team.read to anonymous" in caplog.text
