"""The alert evaluator: rules evaluated and the outbox delivered by one process per store at a time.

Whatever runs monitors runs one of these: ``ownloop monitor`` (once, or ``--every``) and every
``ownloop serve`` process. They all try to take the ``alerts.evaluator`` lease; the one holding it
evaluates the rules over the stored figures and deploy events, and delivers the outbox. So two
processes never open the same alert twice or send the same notification twice (the unique open
fingerprint and the outbox's claim are the second line of defence).

Three threads, so that none waits on another: one renews the lease, one evaluates, one delivers.
A webhook that hangs holds up only the delivering thread, for at most the outbound timeout per
notification; monitoring and serving never wait on a route. A process that dies between opening
an alert and delivering it leaves the notification in the outbox, and whoever holds the lease
next delivers it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ownloop.alerts._model import Alert, Delivery
from ownloop.alerts._outbox import Outbox
from ownloop.alerts._service import Alerts
from ownloop.errors import OwnloopError
from ownloop.store.lease import Lease

__all__ = ["ALERTS_LEASE", "AlertLoop", "Round"]

log = logging.getLogger("ownloop.alerts")
T = TypeVar("T")

ALERTS_LEASE = "alerts.evaluator"
TTL_TICKS = 3  # a holder may miss two renewals (a busy store, a starved thread) and keep it
MIN_TTL_S = 15.0


@dataclass(frozen=True)
class Round:
    """What one synchronous round did: whether this process held the lease, and what changed."""

    holding: bool
    alerts: tuple[Alert, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)


class AlertLoop:
    """Take the evaluator lease; while held, evaluate rules and deliver the outbox.

    >>> loop = AlertLoop(ws.alerts, ws.outbox, tick_s=30)  # doctest: +SKIP
    >>> loop.start()  # doctest: +SKIP  (threads; loop.wake() asks for a round now)
    >>> loop.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        alerts: Alerts,
        outbox: Outbox,
        *,
        tick_s: float,
        before_evaluate: Callable[[], object] | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self.alerts = alerts
        self.outbox = outbox
        self.tick_s = tick_s
        self.before_evaluate = before_evaluate
        self.models = list(models) if models is not None else None
        self.lease = Lease(
            alerts.store, alerts.clock, ALERTS_LEASE, ttl_s=max(TTL_TICKS * tick_s, MIN_TTL_S)
        )
        self.holding = False
        self._stop = threading.Event()
        self._evaluate_now = threading.Event()
        self._deliver_now = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- one round, in the caller's thread (ownloop monitor without --every) ---------------------

    def run_once(self) -> Round:
        """Renew or take the lease; if held, evaluate and deliver what is due, then return."""
        if not self.renew():
            return Round(holding=False)
        errors: list[str] = []
        self._monitors(errors)
        alerts = self._guarded("evaluate", self._evaluate, errors) or []
        deliveries = self._guarded("deliver", self._deliver, errors) or []
        return Round(True, tuple(alerts), tuple(deliveries), tuple(errors))

    # -- threads (ownloop serve, ownloop monitor --every) ----------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._renewing, name="ownloop-alerts-lease", daemon=True),
            threading.Thread(target=self._evaluating, name="ownloop-alerts", daemon=True),
            threading.Thread(target=self._delivering, name="ownloop-alerts-out", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Evaluate (and then deliver) as soon as possible: new figures were just stored."""
        self._evaluate_now.set()

    def stop(self) -> None:
        self._stop.set()
        self._evaluate_now.set()
        self._deliver_now.set()
        for thread in self._threads:
            thread.join(timeout=60)
        self._threads = []
        if self.holding:
            try:
                self.lease.release()
            except OwnloopError as exc:  # it expires on its own a little later
                log.warning("could not release the alerts lease: %s", exc)
            self.holding = False

    def renew(self) -> bool:
        """Take the lease, or renew it while held; ``holding`` says which."""
        try:
            held = self.lease.acquire()
        except OwnloopError as exc:
            log.warning("could not reach the alerts lease: %s", exc)
            held = False
        if held != self.holding:
            log.info(
                "%s the alert evaluator lease (%s)", "took" if held else "lost", self.lease.holder
            )
        self.holding = held
        return held

    def _renewing(self) -> None:
        while not self._stop.is_set():
            if self._guarded("lease", self.renew, []) is None:
                self.holding = False  # an unexpected failure: act as if lost, never as if held
            self._stop.wait(self.tick_s)

    def _evaluating(self) -> None:
        while not self._stop.is_set():
            self._evaluate_now.wait(self.tick_s)
            self._evaluate_now.clear()
            if self._stop.is_set():
                return
            if self.holding:
                self._monitors([])
                changed = self._guarded("evaluate", self._evaluate, [])
                if changed:
                    self._deliver_now.set()

    def _delivering(self) -> None:
        while not self._stop.is_set():
            self._deliver_now.wait(self.tick_s)
            self._deliver_now.clear()
            if self._stop.is_set():
                return
            if self.holding:
                self._guarded("deliver", self._deliver, [])

    # -- the work --------------------------------------------------------------------------------

    def _monitors(self, errors: list[str]) -> None:
        """Run ``before_evaluate`` (serve's monitors); its failure must not silence the rules,
        which also cover deploy events and earlier windows."""
        if self.before_evaluate is not None:
            self._guarded("monitor", self.before_evaluate, errors)

    def _evaluate(self) -> list[Alert]:
        changed = self.alerts.evaluate(self.models)
        for a in changed:
            log.info(
                "alert #%d %s: %s %s (%s, team %s)",
                a.id,
                a.state.value,
                a.model,
                a.rule,
                a.severity.value,
                a.team,
            )
        return changed

    def _deliver(self) -> list[Delivery]:
        done: list[Delivery] = []
        while not self._stop.is_set():
            batch = self.outbox.deliver_due()
            done.extend(batch)
            if not batch:
                return done
        return done

    def _guarded(self, what: str, work: Callable[[], T], errors: list[str]) -> T | None:
        """Run one piece of work; an error is logged and the next round tries again."""
        try:
            return work()
        except OwnloopError as exc:
            log.error("alerts %s failed: %s", what, exc)
            errors.append(f"{what}: {exc.message}")
        except Exception as exc:  # the thread boundary: a bug is logged, the loop goes on
            log.exception("alerts %s failed", what)
            errors.append(f"{what}: {type(exc).__name__}")
        return None
