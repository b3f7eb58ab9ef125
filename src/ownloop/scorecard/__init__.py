"""DevOps' four key metrics for models, per model and per team, beside model quality."""

from __future__ import annotations

from ownloop.access import Actor
from ownloop.clock import Clock
from ownloop.registry import Registry
from ownloop.store import Store

__all__ = ["Scorecards"]


class Scorecards:
    def __init__(self, store: Store, registry: Registry, clock: Clock, actor: Actor) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.actor = actor
