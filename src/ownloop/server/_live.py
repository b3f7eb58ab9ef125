"""What a server routes, kept live: deploy's routes polled, new versions loaded, swapped whole.

A background thread polls ``ws.deploy.generations()`` every ``OWNLOOP_RELOAD_POLL_S``. When a
model's generation moves, the versions its route names are loaded in that thread (digest checked;
versions already loaded are reused) and the whole routing table is replaced by one reference
assignment, so a request sees either the old routing or the new one, never a mix. A version that
fails to load never replaces one that serves: the old one keeps answering and the failure is
reported (server log, ``/v2/health/ready``, ``/models``, ``ownloop_model_load_failures``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ownloop.deploy import MAX_KEY_CHARS, Deployments, Route, arm_for
from ownloop.errors import InvalidInputError, NotFoundError, OwnloopError
from ownloop.registry import Registry
from ownloop.server._decode import Columns
from ownloop.server._served import ServedModel, load_version
from ownloop.signature import Signature

__all__ = ["Live", "LiveModel", "find"]

log = logging.getLogger("ownloop.server")


@dataclass(frozen=True)
class LiveModel:
    """One model's effective routing: the stored route and the loaded versions that answer.

    ``candidate`` is None when the route has none or it failed to load (then every request is
    answered by ``stable``). ``problem`` says what failed to load while something else serves.
    """

    route: Route
    stable: ServedModel
    candidate: ServedModel | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.stable.name

    @property
    def canary(self) -> bool:
        return self.candidate is not None and self.route.candidate_arm == "canary"

    @property
    def shadow(self) -> ServedModel | None:
        """The candidate that scores every request off the request path, if any."""
        return self.candidate if self.route.candidate_arm == "shadow" else None

    @property
    def key_header(self) -> str | None:
        key = self.route.routing_key or ""
        return key.removeprefix("header:").lower() if key.startswith("header:") else None

    @property
    def key_feature(self) -> str | None:
        key = self.route.routing_key or ""
        return key.removeprefix("feature:") if key.startswith("feature:") else None

    def pick(self, key: str | None) -> tuple[ServedModel, str]:
        """The entry and arm that answer a request with routing ``key`` (None: random)."""
        if self.candidate is not None and arm_for(self.route, key) == "canary":
            return self.candidate, "canary"
        return self.stable, "stable"

    def version(self, version: str) -> tuple[ServedModel, str]:
        """The entry asked for by version: stable, or the canary version while it is live."""
        if version == str(self.stable.version):
            return self.stable, "stable"
        if self.candidate is not None and version == str(self.candidate.version):
            if self.canary:
                return self.candidate, "canary"
            raise NotFoundError(
                f"model '{self.name}' version {version} is in shadow: its answers are never "
                f"returned (version {self.stable.version} answers); it can be called directly "
                "once the rollout moves it to canary"
            )
        raise NotFoundError(
            f"model '{self.name}' version {version} is not served; version "
            f"{self.stable.version} is stable{self._candidate_text()}"
        )

    def _candidate_text(self) -> str:
        if self.candidate is None:
            return ""
        return f" and version {self.candidate.version} is {self.route.candidate_arm}"

    def describe(self) -> dict[str, Any]:
        """The model's routing for ``/models``."""
        candidate = self.candidate
        return {
            "name": self.name,
            "version": self.stable.version,
            "owner": self.stable.owner,
            "ready": self.stable.ready,
            "reason": self.stable.reason,
            "candidate": None
            if candidate is None
            else {
                "version": candidate.version,
                "arm": self.route.candidate_arm,
                "weight": self.route.weight,
                "routing_key": self.route.routing_key,
                "ready": candidate.ready,
            },
            "generation": self.route.generation,
            "problem": self.problem,
        }


def routing_key(value: str | None, source: str) -> str | None:
    """A routing key as sent, or a 400 when it is longer than ``MAX_KEY_CHARS``."""
    if value is not None and len(value) > MAX_KEY_CHARS:
        raise InvalidInputError(
            f"routing key {source} is {len(value)} characters; the limit is {MAX_KEY_CHARS}: "
            "send a shorter key (e.g. an id, or a hash of it)"
        )
    return value


def feature_key(cols: Columns, feature: str) -> str | None:
    """The routing key of a batch: ``feature``'s value in its first row (None when missing).

    A whole request goes to one arm, so the first row decides; a whole number is written without
    a decimal point so 42 and 42.0 route alike.
    """
    column = cols.data.get(feature)
    if column is None or cols.n == 0:
        return None
    value = column[0]
    if value is None:
        return None
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        number = float(value)
        if math.isnan(number):
            return None
        text = str(int(number)) if number.is_integer() else repr(number)
    else:
        text = str(value)
    return routing_key(text, f"feature '{feature}'")


def find(models: dict[str, LiveModel], name: str) -> LiveModel:
    """The live model ``name``, or a 404 that says what is served."""
    live = models.get(name)
    if live is None:
        have = ", ".join(sorted(models)) or "none"
        raise NotFoundError(
            f"model '{name}' is not served (served: {have}); a model is served once a version is "
            f"deployed: 'ownloop deploy {name}@VERSION' (running servers pick it up, no restart)"
        )
    return live


Loader = Callable[[str, int], ServedModel]


class Live:
    """The routing table of one server, and the thread that keeps it current."""

    def __init__(
        self,
        deploy: Deployments,
        registry: Registry,
        *,
        poll_s: float,
        allow_env_mismatch: bool = False,
        on_change: Callable[[dict[str, LiveModel]], None] | None = None,
        on_failure: Callable[[ServedModel], None] | None = None,
    ) -> None:
        self.deploy = deploy
        self.registry = registry
        self.poll_s = poll_s
        self.allow_env_mismatch = allow_env_mismatch
        self.models: dict[str, LiveModel] = {}
        self._on_change = on_change
        self._on_failure = on_failure
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._force = False
        self._thread: threading.Thread | None = None

    # -- reloading ---------------------------------------------------------------------------

    def reload(self, *, force: bool = False) -> list[str]:
        """Read the routes and swap in what changed (``force``: reload every model); the names."""
        with self._lock:
            routes = self.deploy.routes()
            current = self.models
            table: dict[str, LiveModel] = {}
            changed: list[str] = []
            for name, route in sorted(routes.items()):
                old = current.get(name)
                if old is not None and not force and old.route.generation == route.generation:
                    table[name] = old
                    continue
                built = self._build(route, old, force=force)
                if built is not None:
                    table[name] = built
                changed.append(name)
            changed += [n for n in current if n not in routes]
            self._seen = {n: r.generation for n, r in routes.items()}
            self.models = table  # the swap: one reference assignment
        if changed and self._on_change is not None:
            self._on_change(table)
        return changed

    def _build(self, route: Route, old: LiveModel | None, *, force: bool) -> LiveModel | None:
        if route.stable is None:
            log.info("model %s has no stable version any more: no longer served", route.model)
            return None
        reuse = [] if force or old is None else [old.stable, old.candidate]
        stable = self._entry(route.model, route.stable, reuse)
        problem = None
        if not stable.ready and old is not None and old.stable.ready:
            problem = (
                f"version {route.stable} failed to load, so version {old.stable.version} keeps "
                f"serving: {stable.reason}"
            )
            stable = old.stable
        candidate = None
        if route.candidate is not None and route.candidate_arm in ("canary", "shadow"):
            candidate = self._entry(route.model, route.candidate, reuse)
            if not candidate.ready:
                problem = (
                    f"{route.candidate_arm} version {route.candidate} failed to load, so version "
                    f"{stable.version} answers every request: {candidate.reason}"
                )
                candidate = None
        if problem is not None:
            log.error("model %s: %s", route.model, problem)
        live = LiveModel(route, stable, candidate, problem)
        log.info("model %s routes: %s", route.model, _summary(live))
        return live

    def _entry(self, name: str, version: int, reuse: list[ServedModel | None]) -> ServedModel:
        for entry in reuse:
            if entry is not None and entry.version == version and entry.ready:
                return entry
        try:
            entry = load_version(
                self.registry, name, version, allow_mismatch=self.allow_env_mismatch
            )
        except OwnloopError as exc:  # the version row itself is gone or unreadable
            log.error("model %s version %s cannot be loaded: %s", name, version, exc)
            entry = _missing(name, version, exc)
        if not entry.ready and self._on_failure is not None:
            self._on_failure(entry)
        return entry

    # -- the poller --------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ownloop-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def request_reload(self) -> None:
        """Reload every model now (SIGHUP): also retries a version that failed to load."""
        self._force = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            force, self._force = self._force, False
            try:
                if force or self.deploy.generations() != self._seen:
                    self.reload(force=force)
            except OwnloopError as exc:  # the store is away: keep serving what is loaded
                log.warning("could not read the deployments (%s); serving what is loaded", exc)
            except Exception:  # the thread boundary: a bug is logged and the poller lives on
                log.exception("reloading the deployments failed; serving what is loaded")


def _missing(name: str, version: int, exc: OwnloopError) -> ServedModel:
    entry = ServedModel(name, version, "", Signature(features=(), task="regression"))
    entry.reason = f"model '{name}' version {version} could not be loaded: {exc.message}"
    return entry


def _summary(live: LiveModel) -> str:
    text = f"stable {live.stable.version}"
    if live.candidate is not None:
        route = live.route
        share = f" at {route.weight:g}%" if route.candidate_arm == "canary" else ""
        text += f", {route.candidate_arm} {live.candidate.version}{share}"
    return text
