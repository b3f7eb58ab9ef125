"""The monitor's stored runs and figures (tables ``monitor_runs`` and ``monitor_results`` of
``ownloop.store``): writing one window's report, and the queries dashboards and alert rules read.

The caller checks access first (``Monitor`` does, per method); the checks here are the
query's own (pages, spans, keys, kinds). The report types and their rows are in ``_report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ownloop.clock import Clock
from ownloop.errors import InvalidInputError
from ownloop.monitoring._report import (
    DEFAULT_ARMS,
    Bins,
    FeatureWindow,
    MonitorRun,
    Point,
    StoredResult,
    WindowReport,
    result_rows,
    select_arms,
    summary,
)
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["MonitorResults", "arms_text"]

RUN_STATUSES = ("ok", "no_data")
DRIFT_KINDS = ("feature_drift", "prediction_drift")
MAX_PAGE = 1000  # runs per read
MAX_KEYS = 100  # series keys per read


class MonitorResults:
    """Monitor runs and their per-window figures in the metadata store: one writer, the readers."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def record(self, rep: WindowReport, run_by: str) -> WindowReport:
        """Store ``rep`` with its figures and an audit row in one transaction; it gets its run id."""
        now = self.clock.now()
        rows = result_rows(rep)
        facts = summary(rep)
        status = "no_data" if rep.rows == 0 else "ok"
        with self.store.write() as conn:
            key = conn.execute(
                t.monitor_runs.insert().values(
                    model=rep.model,
                    version=rep.version,
                    window_start=rep.start,
                    window_end=rep.end,
                    rows=rep.rows,
                    status=status,
                    summary=facts,
                    arms=arms_text(rep.arms),
                    started_at=now,
                    finished_at=self.clock.now(),
                    run_by=run_by,
                )
            ).inserted_primary_key
            run_id = int(key[0]) if key is not None else 0
            if rows:
                conn.execute(
                    t.monitor_results.insert(),
                    [
                        {
                            **r,
                            "run_id": run_id,
                            "model": rep.model,
                            "version": rep.version,
                            "window_end": rep.end,
                        }
                        for r in rows
                    ],
                )
            self.store.audit(
                conn,
                at=now,
                actor=run_by,
                action="monitor.run",
                target=f"{rep.model}@{rep.version}",
                model=rep.model,
                after={"run": run_id, **facts},
            )
        return WindowReport(
            **{**{f: getattr(rep, f) for f in rep.__dataclass_fields__}, "run_id": int(run_id)}
        )

    def runs(
        self,
        model: str | None = None,
        *,
        version: int | None = None,
        arm: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[MonitorRun]:
        """Stored runs, newest window first (see :meth:`Monitor.runs`)."""
        _check_page(limit, offset)
        _check_span(since, until)
        if status is not None and status not in RUN_STATUSES:
            raise InvalidInputError(
                f"run status '{status}' is not one of {', '.join(RUN_STATUSES)}"
            )
        if version is not None:
            _check_version(version)
        if arm is not None and arm != "default":
            select_arms(arm)
        return self._select_runs(model, version, arm, since, until, status, limit, offset)

    def _select_runs(
        self,
        model: str | None,
        version: int | None,
        arm: str | None,
        since: datetime | None,
        until: datetime | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> list[MonitorRun]:
        runs = t.monitor_runs
        q = sa.select(runs)
        if model is not None:
            q = q.where(runs.c.model == model)
        if version is not None:
            q = q.where(runs.c.version == version)
        if arm is not None:
            q = q.where(_arms_clause(None if arm == "default" else arm))
        if since is not None:
            q = q.where(runs.c.window_end >= since)
        if until is not None:
            q = q.where(runs.c.window_end <= until)
        if status is not None:
            q = q.where(runs.c.status == status)
        q = q.order_by(runs.c.window_end.desc(), runs.c.id.desc()).limit(limit).offset(offset)
        with self.store.read() as conn:
            rows = conn.execute(q).all()
        return [_monitor_run(r) for r in rows]

    def series(
        self,
        model: str,
        keys: Sequence[tuple[str, str]],
        *,
        since: datetime,
        until: datetime | None = None,
        arm: str | None = None,
        version: int | None = None,
    ) -> dict[tuple[str, str], list[Point]]:
        """Stored figures by ``(kind, name)`` key, oldest window first (see :meth:`Monitor.series`)."""
        wanted = _check_keys(keys)
        _check_span(since, until, need_since=True)
        out: dict[tuple[str, str], list[Point]] = {k: [] for k in wanted}
        if not wanted:
            return out
        res, runs = t.monitor_results, t.monitor_runs
        q = (
            sa.select(
                res.c.kind,
                res.c.name,
                _raw(res.c.window_end),
                _raw(runs.c.window_start),
                res.c.version,
                res.c.value,
                res.c.lower,
                res.c.upper,
                res.c.n,
                res.c.detail,
                res.c.method,
            )
            .select_from(res.join(runs, runs.c.id == res.c.run_id))
            .where(
                res.c.model == model,
                res.c.kind.in_(sorted({k for k, _ in wanted})),
                res.c.name.in_(sorted({n for _, n in wanted})),
                res.c.window_end >= since,
                _arms_clause(select_arms(arm)[0] if arm is not None else None),
            )
        )
        if until is not None:
            q = q.where(res.c.window_end <= until)
        if version is not None:
            q = q.where(res.c.version == _check_version(version))
        with self.store.read() as conn:
            rows = conn.execute(q.order_by(res.c.window_end, res.c.id)).all()
        when = _Times()
        for kind, name, end, start, ver, value, lower, upper, n, detail, method in rows:
            found = out.get((kind, name))
            if found is not None:  # tuples and cached times: a month is 8,640 windows a key
                found.append(
                    Point(when(start), when.of(end), ver, value, lower, upper, n, detail, method)
                )
        return out

    def feature_history(
        self,
        model: str,
        feature: str,
        *,
        since: datetime,
        until: datetime | None = None,
        kind: str = "feature_drift",
    ) -> list[FeatureWindow]:
        """One feature's figures per window, oldest first (see :meth:`Monitor.feature_history`)."""
        if kind not in DRIFT_KINDS:
            raise InvalidInputError(f"drift kind '{kind}' is not one of {', '.join(DRIFT_KINDS)}")
        if not isinstance(feature, str) or not feature or len(feature) > 200:
            raise InvalidInputError(
                f"feature {feature!r} must be a name of 1 to 200 characters, as in the drift table"
            )
        _check_span(since, until, need_since=True)
        res, runs = t.monitor_results, t.monitor_runs
        r = res.c
        q = (
            sa.select(
                _raw(runs.c.window_start),
                _raw(r.window_end),
                *(r.version, r.status, r.method, r.value, r.p_value, r.alert, r.n, r.bins),
            )
            .select_from(res.join(runs, runs.c.id == r.run_id))
            .where(
                r.model == model,
                r.kind == kind,
                r.name == feature,
                r.window_end >= since,
                _arms_clause(None),
            )
        )
        if until is not None:
            q = q.where(r.window_end <= until)
        with self.store.read() as conn:
            rows = conn.execute(q.order_by(r.window_end, r.id)).all()
        when = _Times()
        return [
            FeatureWindow(
                when(start),
                when.of(end),
                version,
                kind,
                feature,
                status,
                method,
                value,
                p_value,
                alert,
                n,
                Bins.from_stored(bins),
            )
            for start, end, version, status, method, value, p_value, alert, n, bins in rows
        ]

    def results(
        self,
        model: str,
        *,
        kind: str | None = None,
        run_id: int | None = None,
        since: datetime | None = None,
    ) -> list[StoredResult]:
        """Stored per-window results, oldest window first (see :meth:`Monitor.results`)."""
        res, runs = t.monitor_results, t.monitor_runs
        q = (
            sa.select(res, runs.c.window_start)
            .select_from(res.outerjoin(runs, runs.c.id == res.c.run_id))
            .where(res.c.model == model)
        )
        if kind is not None:
            q = q.where(res.c.kind == kind)
        if run_id is not None:
            q = q.where(res.c.run_id == run_id)
        if since is not None:
            q = q.where(res.c.window_end >= since)
        with self.store.read() as conn:
            rows = conn.execute(q.order_by(res.c.window_end, res.c.id)).all()
        return [_stored_result(r) for r in rows]

    def latest_results(
        self, model: str, *, runs: int = 1, arm: str | None = None, version: int | None = None
    ) -> list[tuple[MonitorRun, list[StoredResult]]]:
        """The last ``runs`` windows with their figures, newest window first."""
        picked = self._select_runs(model, version, arm or "default", None, None, None, runs, 0)
        if not picked:
            return []
        ids = [r.id for r in picked]
        res, mr = t.monitor_results, t.monitor_runs
        q = (
            sa.select(res, mr.c.window_start)
            .select_from(res.outerjoin(mr, mr.c.id == res.c.run_id))
            .where(res.c.run_id.in_(ids))
            .order_by(res.c.id)
        )
        with self.store.read() as conn:
            rows = conn.execute(q).all()
        by_run: dict[int, list[StoredResult]] = {i: [] for i in ids}
        for r in rows:
            by_run[r.run_id].append(_stored_result(r))
        return [(run, by_run[run.id]) for run in picked]


def _raw(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A time column without SQLAlchemy's per-row parsing (SQLite hands back text): long series
    read it once per distinct value through :class:`_Times`."""
    return sa.type_coerce(col, sa.String)


class _Times:
    """Stored times as aware UTC datetimes, each distinct value converted once."""

    def __init__(self) -> None:
        self._seen: dict[Any, datetime] = {}

    def __call__(self, value: Any) -> datetime | None:
        return None if value is None else self.of(value)

    def of(self, value: Any) -> datetime:
        found = self._seen.get(value)
        if found is None:
            at = datetime.fromisoformat(value) if isinstance(value, str) else value
            found = self._seen[value] = aware(at)
        return found


def arms_text(arms: Sequence[str]) -> str:
    """The arms a run counted, as stored in ``monitor_runs.arms`` (``"stable,canary"``)."""
    return ",".join(arms)


def _arms_clause(arm: str | None) -> sa.ColumnElement[bool]:
    """Runs that counted exactly ``arm``; None: the default arms (rows stored before arms were
    recorded, NULL, counted every arm, which was then all stable: the default)."""
    col = t.monitor_runs.c.arms
    if arm is None:
        return sa.or_(col == arms_text(DEFAULT_ARMS), col.is_(None))
    return col == arms_text(select_arms(arm))


def _monitor_run(r: sa.Row[Any]) -> MonitorRun:
    return MonitorRun(
        r.id,
        r.model,
        r.version,
        aware(r.window_start),
        aware(r.window_end),
        r.rows,
        r.status,
        dict(r.summary),
        aware(r.started_at),
        r.run_by,
    )


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit {limit!r} must be a whole number from 1 to {MAX_PAGE}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInputError(f"offset {offset!r} must be a whole number, 0 or more")


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidInputError(f"version {version!r} must be a whole number, 1 or more")
    return version


def _check_span(
    since: datetime | None, until: datetime | None, *, need_since: bool = False
) -> None:
    """``since`` and ``until`` must be timezone-aware datetimes with ``since <= until``."""
    if need_since and since is None:
        raise InvalidInputError("since is required: the start of the span to read, e.g. now - 1d")
    for label, value in (("since", since), ("until", until)):
        if value is None:
            continue
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise InvalidInputError(
                f"{label} {value!r} must be a timezone-aware datetime (UTC), e.g. "
                "datetime.now(UTC) - timedelta(days=1)"
            )
    if since is not None and until is not None and since > until:
        raise InvalidInputError(
            f"since {since.isoformat()} is after until {until.isoformat()}; swap them"
        )


def _check_keys(keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
        raise InvalidInputError(
            f"keys {keys!r} must be a list of (kind, name) pairs, e.g. [('system', 'error_rate')]"
        )
    out: list[tuple[str, str]] = []
    for key in keys:
        if (
            not isinstance(key, tuple | list)
            or len(key) != 2
            or not all(isinstance(x, str) and x for x in key)
        ):
            raise InvalidInputError(
                f"series key {key!r} must be a (kind, name) pair, e.g. ('system', 'error_rate')"
            )
        out.append((key[0], key[1]))
    if len(out) > MAX_KEYS:
        raise InvalidInputError(f"{len(out)} series keys: read at most {MAX_KEYS} at once")
    return list(dict.fromkeys(out))


def _stored_result(r: sa.Row[Any]) -> StoredResult:
    return StoredResult(
        r.run_id,
        r.model,
        r.version,
        aware(r.window_end),
        r.kind,
        r.name,
        r.status,
        r.method,
        r.value,
        r.lower,
        r.upper,
        r.threshold,
        r.p_value,
        r.alert,
        r.n,
        r.detail,
        reference=r.reference,
        bound=r.bound,
        compare=r.compare,
        window_start=aware(r.window_start) if r.window_start is not None else None,
        bins=Bins.from_stored(r.bins),
    )
