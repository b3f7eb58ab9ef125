"""Delivering the outbox: each pending notification rendered for its channel and sent, every
attempt recorded, retried with backoff; a slow or failing route never blocks the caller."""

from __future__ import annotations

from ownloop.access import Actor
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.outbound import Outbound
from ownloop.store import Store

__all__ = ["Outbox"]


class Outbox:
    def __init__(
        self, store: Store, config: Config, clock: Clock, actor: Actor, outbound: Outbound
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.actor = actor
        self.outbound = outbound
