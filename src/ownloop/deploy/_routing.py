"""Which arm answers a request: a hash of the routing key, the same in every server process."""

from __future__ import annotations

import hashlib
import secrets

from ownloop.deploy._model import Route

__all__ = ["MAX_KEY_CHARS", "arm_for", "bucket"]

MAX_KEY_CHARS = 256  # a longer routing key is refused (400), never hashed


def bucket(model: str, rollout_id: int, key: str | None) -> float:
    """A point in [0, 100) for ``key``: stable for one rollout, independent between rollouts.

    Salting with the rollout id keeps one customer from landing in every canary of a model.
    Without a key each request draws at random (not sticky).
    """
    if key is None:
        return secrets.randbelow(1_000_000) / 10_000
    digest = hashlib.blake2b(
        f"{model}\x00{rollout_id}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % 1_000_000 / 10_000


def arm_for(route: Route, key: str | None) -> str:
    """``canary`` when this request goes to the candidate, else ``stable`` (shadow: stable)."""
    if route.candidate is None or route.candidate_arm != "canary" or route.weight <= 0:
        return "stable"
    if route.weight >= 100:
        return "canary"
    return "canary" if bucket(route.model, route.rollout_id or 0, key) < route.weight else "stable"
