"""The loop back into the gate: labelled production rows exported as an eval set."""

from __future__ import annotations

from ownloop.access import Actor
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.monitoring import Monitor
from ownloop.registry import Registry

__all__ = ["Feedback"]


class Feedback:
    def __init__(
        self, registry: Registry, monitor: Monitor, config: Config, clock: Clock, actor: Actor
    ) -> None:
        self.registry = registry
        self.monitor = monitor
        self.config = config
        self.clock = clock
        self.actor = actor
