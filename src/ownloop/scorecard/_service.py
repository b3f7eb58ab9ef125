"""The four key metrics and model quality, read from what the store already records.

Sources: every move of the ``production`` alias (``alias_history``: direct moves and rollouts that
promoted both move it through the registry), rollbacks (audit ``deploy.rollback``, or an acted
``rollback_checks`` row), aborted ``rollouts``, failed ``evaluations``, ``alerts`` and the stored
monitor figures. Nothing is written; the figures are recomputed on each call.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from ownloop.access import Acting, Actor, action
from ownloop.clock import Clock
from ownloop.errors import InvalidInputError
from ownloop.intervals import wilson_interval
from ownloop.monitoring import DEFAULT_ARMS
from ownloop.registry import PRODUCTION, Registry
from ownloop.scorecard._model import (
    DeployFrequency,
    Durations,
    FailureRate,
    KeyMetrics,
    ModelCard,
    Quality,
    Scorecard,
    TeamCard,
    TeamTrend,
    Week,
)
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["Scorecards"]

WEEK = timedelta(days=7)
LEVEL = 0.95
# an acted rollback check belongs to the production move it caused (same target) when the move
# follows it within this time; the audit row of the move itself is matched exactly
ROLLBACK_MATCH = timedelta(minutes=10)
# (kind, name) of the stored monitor figures each quality figure reads
QUALITY_SOURCES = {
    "realised_accuracy": ("realised_performance", "accuracy"),
    "estimated_accuracy": ("estimated_performance", "accuracy"),
    "latency_p99_s": ("system", "latency_p99_s"),
    "error_rate": ("system", "error_rate"),
    "cost_per_1k": ("system", "cost_per_1k"),
}


@dataclass(frozen=True)
class _Move:
    """One move of a model's production alias (``version`` None: the alias was removed)."""

    model: str
    version: int | None
    at: datetime
    rollback: bool


@dataclass
class _History:
    """Everything the figures need for the chosen models, loaded once per card."""

    moves: dict[str, list[_Move]] = field(default_factory=lambda: defaultdict(list))
    aborted: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    failed_gates: dict[tuple[str, int], list[datetime]] = field(
        default_factory=lambda: defaultdict(list)
    )
    registered: dict[tuple[str, int], datetime] = field(default_factory=dict)
    restores: dict[str, list[tuple[datetime, datetime]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    samples: dict[tuple[str, str], list[tuple[datetime, int, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )


class Scorecards:
    """DevOps' four key metrics per model and per team, beside model quality.

    >>> card = ws.scorecard.card(team="risk", since=timedelta(days=30))  # doctest: +SKIP
    >>> card.team("risk").key.change_failure_rate.rate  # doctest: +SKIP
    0.25
    """

    def __init__(
        self, store: Store, registry: Registry, clock: Clock, actor: Actor | Acting
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.acting = Acting.of(actor)

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("scorecard.read")
    def card(
        self,
        *,
        team: str | None = None,
        model: str | None = None,
        since: timedelta = timedelta(days=90),
        until: datetime | None = None,
    ) -> Scorecard:
        """The scorecard over the period ``since`` long ending at ``until`` (default now), for
        one team, one model or all.

        Teams are the models' current owners (after a transfer, a model's history counts for its
        new team). Each figure carries its count; an empty period gives counts of 0 and no values.
        """
        self.acting.check("scorecard.read", team, target=f"model:{model}" if model else "scorecard")
        if not isinstance(since, timedelta) or since <= timedelta(0):
            raise InvalidInputError(f"period {since!r} must be a positive duration, e.g. 90d")
        until = self._until(until)
        start = until - since
        owners = self._owners(team, model)
        history = self._load(list(owners), start, until)
        return self._card(history, owners, team, model, start, until)

    @action("scorecard.read")
    def trend(
        self,
        *,
        team: str | None = None,
        model: str | None = None,
        periods: int = 12,
        period: timedelta = timedelta(days=7),
        until: datetime | None = None,
    ) -> list[Scorecard]:
        """``periods`` consecutive scorecards, each over one ``period``, the last ending at
        ``until`` (default now); oldest first. The history is read once for the whole span.
        """
        self.acting.check("scorecard.read", team, target=f"model:{model}" if model else "scorecard")
        if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= 520:
            raise InvalidInputError(f"periods {periods!r} must be a whole number from 1 to 520")
        if not isinstance(period, timedelta) or period <= timedelta(0):
            raise InvalidInputError(f"period {period!r} must be a positive duration, e.g. 7d")
        until = self._until(until)
        owners = self._owners(team, model)
        history = self._load(list(owners), until - periods * period, until)
        out = []
        for k in reversed(range(periods)):
            end = until - k * period
            out.append(
                self._card(
                    _within(history, end - period, end), owners, team, model, end - period, end
                )
            )
        return out

    def _until(self, until: datetime | None) -> datetime:
        if until is None:
            return self.clock.now()
        if not isinstance(until, datetime) or until.tzinfo is None:
            raise InvalidInputError(
                f"until {until!r} must be a timezone-aware datetime (UTC), e.g. datetime.now(UTC)"
            )
        return until

    def _card(
        self,
        history: _History,
        owners: dict[str, str],
        team: str | None,
        model: str | None,
        start: datetime,
        until: datetime,
    ) -> Scorecard:
        models = tuple(
            ModelCard(
                name,
                owner,
                _key_metrics(history, [name], start, until),
                _quality(history, [name], latest=True),
            )
            for name, owner in sorted(owners.items())
        )
        if model is not None:
            by_team = {owners[model]: [model]}
        else:
            teams = [team] if team is not None else [x.name for x in self.registry.list_teams()]
            by_team = {tm: sorted(n for n, o in owners.items() if o == tm) for tm in teams}
        team_cards = tuple(
            TeamCard(
                tm,
                tuple(names),
                _key_metrics(history, names, start, until),
                _quality(history, names, latest=False),
            )
            for tm, names in sorted(by_team.items())
        )
        trends = tuple(
            TeamTrend(tm, _weeks(history, names, start, until))
            for tm, names in sorted(by_team.items())
        )
        return Scorecard(start, until, models, team_cards, trends)

    # -- what to score ----------------------------------------------------------------------

    def _owners(self, team: str | None, model: str | None) -> dict[str, str]:
        """The chosen models and their current owners (NotFoundError for an unknown name)."""
        if team is not None:
            self.registry.get_team(team)
        if model is not None:
            m = self.registry.get_model(model)
            if team is not None and m.owner != team:
                raise InvalidInputError(
                    f"model '{model}' belongs to team '{m.owner}', not '{team}'; drop --team "
                    f"or use --team {m.owner}"
                )
            return {m.name: m.owner}
        return {m.name: m.owner for m in self.registry.list_models(owner=team)}

    # -- loading ----------------------------------------------------------------------------

    def _load(self, models: Sequence[str], start: datetime, until: datetime) -> _History:
        h = _History()
        if not models:
            return h
        with self.store.read() as conn:
            self._load_moves(conn, models, h)
            for r in conn.execute(
                sa.select(
                    t.rollouts.c.model, t.rollouts.c.finished_at, t.rollouts.c.updated_at
                ).where(t.rollouts.c.model.in_(models), t.rollouts.c.state == "aborted")
            ):
                h.aborted[r.model].append(aware(r.finished_at or r.updated_at))
            for r in conn.execute(
                sa.select(
                    t.evaluations.c.model, t.evaluations.c.version, t.evaluations.c.created_at
                ).where(t.evaluations.c.model.in_(models), t.evaluations.c.verdict == "failed")
            ):
                h.failed_gates[r.model, int(r.version)].append(aware(r.created_at))
            for r in conn.execute(
                sa.select(t.models.c.name, t.versions.c.version, t.versions.c.created_at)
                .select_from(t.versions.join(t.models, t.models.c.id == t.versions.c.model_id))
                .where(t.models.c.name.in_(models))
            ):
                h.registered[r.name, int(r.version)] = aware(r.created_at)
            for r in conn.execute(
                sa.select(t.alerts.c.model, t.alerts.c.opened_at, t.alerts.c.resolved_at).where(
                    t.alerts.c.model.in_(models), t.alerts.c.resolved_at.is_not(None)
                )
            ):
                h.restores[r.model].append((aware(r.opened_at), aware(r.resolved_at)))
            self._load_samples(conn, models, start, until, h)
        return h

    def _load_moves(self, conn: sa.Connection, models: Sequence[str], h: _History) -> None:
        """Every production move, each marked when it was a rollback."""
        marked: set[tuple[str, datetime, int | None]] = set()
        for r in conn.execute(
            sa.select(t.audit.c.model, t.audit.c.at, t.audit.c.after).where(
                t.audit.c.model.in_(models), t.audit.c.action == "deploy.rollback"
            )
        ):
            after = r.after if isinstance(r.after, dict) else {}
            version = after.get("version")
            marked.add((r.model, aware(r.at), int(version) if version is not None else None))
        checks: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        for r in conn.execute(
            sa.select(
                t.rollback_checks.c.model,
                t.rollback_checks.c.at,
                t.rollback_checks.c.target_version,
            ).where(t.rollback_checks.c.model.in_(models), t.rollback_checks.c.acted.is_(True))
        ):
            checks[r.model].append((aware(r.at), int(r.target_version)))
        rows = conn.execute(
            sa.select(t.models.c.name, t.alias_history.c.version, t.alias_history.c.at)
            .select_from(
                t.alias_history.join(t.models, t.models.c.id == t.alias_history.c.model_id)
            )
            .where(t.models.c.name.in_(models), t.alias_history.c.alias == PRODUCTION)
            .order_by(t.alias_history.c.at, t.alias_history.c.id)
        )
        for r in rows:
            at = aware(r.at)
            version = None if r.version is None else int(r.version)
            rollback = (r.name, at, version) in marked or any(
                v == version and timedelta(0) <= at - when <= ROLLBACK_MATCH
                for when, v in checks[r.name]
            )
            h.moves[r.name].append(_Move(r.name, version, at, rollback))

    def _load_samples(
        self,
        conn: sa.Connection,
        models: Sequence[str],
        start: datetime,
        until: datetime,
        h: _History,
    ) -> None:
        """The quality figures of windows ending in the period that counted stable and canary."""
        res, runs = t.monitor_results, t.monitor_runs
        wanted = sa.or_(
            *(sa.and_(res.c.kind == k, res.c.name == n) for k, n in QUALITY_SOURCES.values())
        )
        rows = conn.execute(
            sa.select(
                res.c.model,
                res.c.kind,
                res.c.name,
                res.c.value,
                res.c.window_end,
                res.c.id,
                runs.c.summary,
            )
            .select_from(res.join(runs, runs.c.id == res.c.run_id))
            .where(
                res.c.model.in_(models),
                wanted,
                res.c.value.is_not(None),
                res.c.window_end > start,
                res.c.window_end <= until,
            )
        )
        names = {v: k for k, v in QUALITY_SOURCES.items()}
        for r in rows:
            summary = r.summary if isinstance(r.summary, dict) else {}
            if list(summary.get("arms", DEFAULT_ARMS)) != list(DEFAULT_ARMS):
                continue  # a shadow-only or single-arm window: not what clients were served
            figure = names[r.kind, r.name]
            h.samples[r.model, figure].append((aware(r.window_end), int(r.id), float(r.value)))


# -- the figures -------------------------------------------------------------------------------


def _within(h: _History, start: datetime, until: datetime) -> _History:
    """``h`` with only the quality samples of windows ending in ``(start, until]`` (the other
    figures already count only events in the period they are asked for)."""
    return _History(
        moves=h.moves,
        aborted=h.aborted,
        failed_gates=h.failed_gates,
        registered=h.registered,
        restores=h.restores,
        samples=defaultdict(
            list,
            {k: [x for x in v if start < x[0] <= until] for k, v in h.samples.items()},
        ),
    )


def _key_metrics(
    h: _History, models: Iterable[str], start: datetime, until: datetime
) -> KeyMetrics:
    """The four figures over ``(start, until]`` for ``models`` pooled."""
    promotions = 0
    lead: list[float] = []
    changes = failed = 0
    restore: list[float] = []
    for model in models:
        moves = h.moves.get(model, [])
        first_seen: set[int] = set()
        for i, move in enumerate(moves):
            if move.version is None or move.rollback:
                continue
            is_first = move.version not in first_seen
            first_seen.add(move.version)
            if not start < move.at <= until:
                continue
            promotions += 1
            changes += 1
            failed += _failed(h, moves, i)
            registered = h.registered.get((model, move.version))
            if is_first and registered is not None:
                lead.append((move.at - registered).total_seconds())
        aborted = [a for a in h.aborted.get(model, []) if start < a <= until]
        changes += len(aborted)
        failed += len(aborted)
        restore += [
            (resolved - opened).total_seconds()
            for opened, resolved in h.restores.get(model, [])
            if start < resolved <= until
        ]
    weeks = (until - start) / WEEK
    return KeyMetrics(
        DeployFrequency(promotions, promotions / weeks, weeks),
        _durations(lead),
        _failure_rate(failed, changes),
        _durations(restore),
    )


def _failed(h: _History, moves: Sequence[_Move], i: int) -> int:
    """1 when the promotion ``moves[i]`` failed: the next move rolled it back, or a gate run on
    its version failed while it was production."""
    move = moves[i]
    after = moves[i + 1] if i + 1 < len(moves) else None
    if after is not None and after.rollback:
        return 1
    assert move.version is not None
    gates = h.failed_gates.get((move.model, move.version), [])
    return int(any(move.at <= g and (after is None or g < after.at) for g in gates))


def _durations(values: list[float]) -> Durations:
    return Durations(statistics.median(values) if values else None, len(values))


def _failure_rate(failed: int, changes: int) -> FailureRate:
    if changes == 0:
        return FailureRate(0, 0, None, None, None, LEVEL)
    lo, hi = wilson_interval(failed, changes, LEVEL)
    return FailureRate(failed, changes, failed / changes, lo, hi, LEVEL)


def _quality(h: _History, models: Sequence[str], *, latest: bool) -> dict[str, Quality]:
    out = {}
    for figure in QUALITY_SOURCES:
        samples = [s for m in models for s in h.samples.get((m, figure), [])]
        if not samples:
            out[figure] = Quality(None, None, None, 0)
            continue
        last = max(samples)
        mean = math.fsum(s[2] for s in samples) / len(samples)
        out[figure] = Quality(
            last[2] if latest else None, last[0] if latest else None, mean, len(samples)
        )
    return out


def _weeks(
    h: _History, models: Sequence[str], start: datetime, until: datetime
) -> tuple[Week, ...]:
    """Weeks ending at ``until`` back to ``start`` (the oldest clipped to it), oldest first."""
    count = max(1, math.ceil((until - start) / WEEK - 1e-9))
    out = []
    for k in reversed(range(count)):
        end = until - k * WEEK
        begin = max(start, end - WEEK)
        out.append(Week(begin, end, _key_metrics(h, models, begin, end)))
    return tuple(out)
