"""The rollout controller that every serve process runs, and exactly one at a time drives.

Each process tries to take (or renew) the ``deploy.controller`` lease every tick, in a thread of
its own; while it holds it, another thread calls ``ws.deploy.tick()`` every tick. The lease lasts
three ticks, so when its holder dies another process takes over within about three ticks, and
resumes from the state stored in the database. Renewing apart from ticking keeps the lease with
its holder through a tick that takes longer than the lease (a large window, many rollouts):
otherwise a second process would take it and both would analyse the same rollouts at once.
"""

from __future__ import annotations

import logging
import threading

from ownloop.deploy import CONTROLLER_LEASE, Deployments, Lease
from ownloop.errors import OwnloopError

__all__ = ["Controller"]

log = logging.getLogger("ownloop.server")

TTL_TICKS = 3  # a holder may miss two renewals (a busy store, a starved thread) and keep it


class Controller:
    """Take the lease, tick while holding it, let it go on shutdown."""

    def __init__(self, deploy: Deployments, *, tick_s: float) -> None:
        self.deploy = deploy
        self.tick_s = tick_s
        self.lease = Lease(deploy.store, deploy.clock, CONTROLLER_LEASE, ttl_s=TTL_TICKS * tick_s)
        self.holding = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._renewing, name="ownloop-deploy-lease", daemon=True),
            threading.Thread(target=self._ticking, name="ownloop-deploy", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads = []
        if self.holding:
            try:
                self.lease.release()
            except OwnloopError as exc:  # it expires on its own a little later
                log.warning("could not release the deploy lease: %s", exc)
            self.holding = False

    def _renewing(self) -> None:
        while not self._stop.is_set():
            self.renew()
            self._stop.wait(self.tick_s)

    def _ticking(self) -> None:
        while not self._stop.wait(self.tick_s):  # the first round after the lease's first try
            if self.holding:
                self.tick()

    def step(self) -> None:
        """One round: renew or take the lease; tick if held."""
        self.renew()
        if self.holding:
            self.tick()

    def renew(self) -> None:
        """Take the lease, or renew it while held; ``holding`` says which."""
        try:
            held = self.lease.acquire()
        except OwnloopError as exc:
            log.warning("could not reach the deploy lease: %s", exc)
            held = False
        if held != self.holding:
            log.info(
                "%s the deploy controller lease (%s)",
                "took" if held else "lost",
                self.lease.holder,
            )
        self.holding = held

    def tick(self) -> None:
        """Advance every active rollout once; an error is logged and the next tick tries again."""
        try:
            events = self.deploy.tick()
        except OwnloopError as exc:
            log.error("deploy tick failed: %s", exc)
            return
        except Exception:  # the thread boundary: a bug is logged and the next tick tries again
            log.exception("deploy tick failed")
            return
        for e in events:
            log.info(
                "rollout #%d of %s: %s -> %s (%s)",
                e.rollout_id,
                e.model,
                e.from_state.value if e.from_state is not None else "start",
                e.to_state.value,
                e.reason or "no reason given",
            )
