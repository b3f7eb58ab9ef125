from __future__ import annotations

import pandas as pd
import pytest

from ownloop import Actor, Config, PermissionDeniedError, Workspace
from ownloop.access import POLICY, Role, authorize


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
