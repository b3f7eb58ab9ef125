"""A workspace: one configuration, one store, one artifact folder, one clock, one actor."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from ownloop.access import Acting, Actor
from ownloop.alerts import Alerts, Outbox
from ownloop.artifacts import ArtifactStore
from ownloop.clock import Clock, SystemClock
from ownloop.config import Config
from ownloop.deploy import Deployments
from ownloop.evaluation import Evaluations
from ownloop.feedback import Feedback
from ownloop.monitoring import Monitor
from ownloop.outbound import Outbound
from ownloop.registry import Registry
from ownloop.scorecard import Scorecards
from ownloop.store import Store
from ownloop.tokens import Tokens

__all__ = ["Workspace"]

log = logging.getLogger("ownloop.workspace")

# the audit columns a denial fills (store/_schema.py: actor 200, target 200 characters)
_AUDIT_TEXT = 200


class Workspace:
    """Everything ownloop does hangs off one of these.

    >>> with Workspace(Config.from_env({"OWNLOOP_HOME": "/tmp/ownloop-doc"})) as ws:  # doctest: +SKIP
    ...     ws.registry.list_models()
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        actor: Actor | None = None,
        check_schema: bool = True,
        outbound: Outbound | None = None,
    ) -> None:
        self.config = config if config is not None else Config.from_env()
        self.clock: Clock = clock if clock is not None else SystemClock()
        # one seam says who acts: every service reads its actor from here
        self.acting = Acting(actor if actor is not None else Actor.local(self.config.user))
        self.config.ensure_home()
        self.store = Store(self.config.db_url, check_schema=check_schema)
        self.acting.on_denied = self._audit_denial
        self.artifacts = ArtifactStore(self.config.artifacts_dir)
        self.registry = Registry(
            self.store,
            self.artifacts,
            self.clock,
            self.acting,
            max_model_bytes=self.config.max_model_bytes,
        )
        self.evaluations = Evaluations(self.registry)
        self.monitor = Monitor(self.store, self.registry, self.config, self.clock, self.acting)
        self.deploy = Deployments(
            self.store,
            self.registry,
            self.evaluations,
            self.monitor,
            self.config,
            self.clock,
            self.acting,
        )
        self.feedback = Feedback(self.registry, self.monitor, self.config, self.clock, self.acting)
        # one outbound HTTP client per workspace; tests pass one with a replaced transport
        self.outbound = outbound if outbound is not None else Outbound(self.config)
        self.alerts = Alerts(
            self.store,
            self.registry,
            self.monitor,
            self.config,
            self.clock,
            self.acting,
            self.feedback,
        )
        self.outbox = Outbox(self.store, self.config, self.clock, self.acting, self.outbound)
        self.scorecard = Scorecards(self.store, self.registry, self.clock, self.acting)
        self.tokens = Tokens(self.store, self.registry, self.clock, self.acting)

    @property
    def actor(self) -> Actor:
        """Who acts now: the actor of the current request, else the workspace's own."""
        return self.acting.actor

    @contextmanager
    def acting_as(self, actor: Actor) -> Iterator[Workspace]:
        """Within this block every service of this workspace acts as ``actor``: its permission
        checks and its audit rows (one actor per request; threads started from here inherit it
        when they copy the context, as anyio's worker threads do)."""
        with self.acting.as_actor(actor):
            yield self

    def _audit_denial(
        self, actor: Actor, action: str, owner_team: str | None, target: str | None
    ) -> None:
        """One ``access.denied`` audit row, in a transaction of its own (the refused change rolls
        back, its denial stays). Never raises: a store failure here must not hide the denial."""
        try:
            with self.store.write() as conn:
                self.store.audit(
                    conn,
                    at=self.clock.now(),
                    actor=actor.name[:_AUDIT_TEXT],
                    action="access.denied",
                    target=(target or action)[:_AUDIT_TEXT],
                    after={"action": action, "owner_team": owner_team},
                )
        except Exception as exc:  # logged, not raised: the caller raises the denial itself
            log.warning("could not audit the denial of %s to %s: %s", action, actor.name, exc)

    def close(self) -> None:
        self.outbound.close()
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
