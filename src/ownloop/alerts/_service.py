"""Rules and alerts: which rules are in force per model, evaluating them over the stored monitor
figures and deploy events, and the alert lifecycle (open, repeat, escalate, ack, resolve)."""

from __future__ import annotations

from ownloop.access import Actor
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.monitoring import Monitor
from ownloop.registry import Registry
from ownloop.store import Store

__all__ = ["Alerts"]


class Alerts:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        monitor: Monitor,
        config: Config,
        clock: Clock,
        actor: Actor,
    ) -> None:
        self.store = store
        self.registry = registry
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.actor = actor
