"""The one way out: every outbound HTTP request (alert webhooks, Slack, retrain triggers) goes
through one httpx client built here, whose transport tests can replace.

Webhook URLs are attacker-controlled input to a process inside the network: the host is resolved
at send time and loopback, private, link-local (cloud metadata) and multicast addresses are
refused unless ``OWNLOOP_ALLOW_PRIVATE_WEBHOOKS`` allows them; redirects are never followed; the
time and the size of the answer are bounded; an answer's body is never copied into logs or alerts.
"""

from __future__ import annotations

import httpx

from ownloop.config import Config

__all__ = ["Outbound"]


class Outbound:
    """The process's outbound HTTP client (one per workspace)."""

    def __init__(self, config: Config, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport

    def close(self) -> None:
        """Close the underlying client."""
