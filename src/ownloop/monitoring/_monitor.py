"""Monitor runs: windows over the prediction log, per model and version, stored in the metadata store.

A run reads the window's log segments through ``ownloop.predlog``, computes one partial per
segment (cached per segment: a segment never changes once written, so a long window reuses the
partials earlier runs computed), merges them, and turns the merged counts into a report against
the version's reference profile. The report and its per-window results are stored (small: one
row per figure) with an audit row in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from scipy import stats

from ownloop import objectstore, predlog, progress
from ownloop.access import Acting, Actor, action
from ownloop.clock import Clock
from ownloop.config import Config
from ownloop.errors import InvalidInputError, NotFoundError
from ownloop.monitoring._cache import PartialCache
from ownloop.monitoring._drift import DriftSettings, evaluate_drift
from ownloop.monitoring._engine import (
    Engine,
    SegmentTask,
    VersionInputs,
    of_arms,
    open_engine,
    segment_partials,
)
from ownloop.monitoring._html import render_drift_html
from ownloop.monitoring._partial import PartialSpec, WindowPartial, proba_matrix
from ownloop.monitoring._performance import (
    Estimate,
    Realised,
    choose_headline,
    estimate_from_partial,
    realised_performance,
    regression_performance,
    support_from_profile,
)
from ownloop.monitoring._report import (
    DEFAULT_ARMS,
    ConfidenceFigures,
    FeatureWindow,
    MonitorRun,
    Point,
    StoredResult,
    WindowReport,
    confidence_figures,
    select_arms,
    system_figures,
)
from ownloop.monitoring._results import MonitorResults
from ownloop.monitoring._sampler import ReviewSample, sample_rows
from ownloop.names import validate_name
from ownloop.profile import ReferenceProfile
from ownloop.registry import PRODUCTION, ModelVersion, Registry
from ownloop.store import Store, aware
from ownloop.store import tables as t

__all__ = ["Monitor"]

LOW_CONFIDENCE = 0.6
TREND_WINDOWS = 24  # a trend is fitted over at most this many recent windows
TREND_MIN_WINDOWS = 3  # ... and at least this many
TREND_MIN_SPAN = timedelta(hours=1)  # ... spanning at least this long (slopes are per hour)
_READ_ERRORS = (OSError, pa.ArrowException)
_READ_BATCH = 64  # log segments read at once for the realised figures


@dataclass
class _VersionContext:
    version: int
    profile: ReferenceProfile | None
    spec: PartialSpec | None
    digest: str
    notes: list[str] = field(default_factory=list)
    schema: pa.Schema | None = None  # the version's log columns and types, from its signature


@dataclass(frozen=True)
class _Window:
    """``[start, end)`` of ``arms``; with ``first_id``, rows at exactly ``start`` count from that id on."""

    start: datetime
    end: datetime
    first_id: str | None = None
    arms: tuple[str, ...] = DEFAULT_ARMS

    def of_arms(self, table: pa.Table) -> pa.Table:
        return of_arms(table, self.arms)

    def conditions(self) -> dict[str, Any]:
        out: dict[str, Any] = {"start": self.start, "end": self.end}
        if self.first_id is not None:
            out["first"] = (self.start, self.first_id)
        return out


def _version_schema(v: ModelVersion) -> pa.Schema | None:
    try:
        return predlog.prediction_schema(v.signature)
    except InvalidInputError:
        return None


def linear_trend(
    points: Sequence[tuple[datetime, float]], end: datetime
) -> tuple[float, float | None, int] | None:
    """Least-squares slope per hour of ``points`` (time, value), its p-value and the count.

    None with fewer than 3 points or when they all share one time.
    """
    if len(points) < 3:
        return None
    x = np.array([(when - end).total_seconds() / 3600 for when, _ in points])
    y = np.array([value for _, value in points])
    if np.ptp(x) == 0:
        return None
    fit = stats.linregress(x, y)
    p = float(fit.pvalue) if np.isfinite(fit.pvalue) else None
    return float(fit.slope), p, len(points)


class Monitor:
    """Run monitors and read their stored results.

    >>> report = ws.monitor.run("churn", window=timedelta(hours=1))[0]  # doctest: +SKIP
    """

    def __init__(
        self, store: Store, registry: Registry, config: Config, clock: Clock, actor: Actor | Acting
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config
        self.clock = clock
        self.acting = Acting.of(actor)
        self.cache = PartialCache(config.home)  # the per-segment partials, shared by every run

    # -- settings -------------------------------------------------------------------------

    @property
    def actor(self) -> Actor:
        """Who acts now: the request's actor, else the workspace's."""
        return self.acting.actor

    @action("monitor.read")
    def settings(self, model: str) -> DriftSettings:
        """The drift settings stored for ``model`` (defaults when none were saved)."""
        validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}")
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(t.monitor_settings.c.settings)
                .join(t.models, t.models.c.id == t.monitor_settings.c.model_id)
                .where(t.models.c.name == model)
            ).first()
        return DriftSettings.from_stored(row.settings) if row is not None else DriftSettings()

    @action("model.read")
    def known_features(self, model: str) -> list[str]:
        """Names a per-feature threshold may use: every version's features and prediction checks."""
        names: dict[str, None] = {}
        for v in self.registry.list_versions(model):
            names.update(dict.fromkeys(v.signature.feature_names))
            classes = v.signature.classes or ()
            if v.signature.task == "classification":
                names.update(dict.fromkeys(["predicted_class", *(f"score_{c}" for c in classes)]))
            else:
                names["predicted_value"] = None
        return list(names)

    @action("monitor.read")
    def check_settings(self, model: str, settings: DriftSettings) -> DriftSettings:
        """Refuse per-feature thresholds for features ``model`` does not have (closest names first)."""
        self.acting.check("monitor.read", target=f"model:{model}")
        known = self.known_features(model)
        for name in settings.feature_thresholds:
            if name not in known:
                ranked = sorted(known, key=lambda k: -SequenceMatcher(None, name, k).ratio())
                raise InvalidInputError(
                    f"model '{model}' has no feature '{name}' to set a drift threshold for; "
                    f"known (closest first): {', '.join(ranked)}"
                )
        return settings

    @action("monitor.configure")
    def configure(self, model: str, settings: DriftSettings) -> DriftSettings:
        """Store the drift settings of ``model`` (audited); thresholds must name known features."""
        m = self.registry.get_model(model)
        self.acting.check("monitor.configure", m.owner, target=f"model:{model}")
        self.check_settings(model, settings)
        data = json.loads(json.dumps(asdict(settings)))
        now = self.clock.now()
        with self.store.write() as conn:
            model_id = conn.execute(
                sa.select(t.models.c.id).where(t.models.c.name == model)
            ).scalar_one()
            before = conn.execute(
                sa.select(t.monitor_settings.c.settings).where(
                    t.monitor_settings.c.model_id == model_id
                )
            ).scalar()
            conn.execute(
                t.monitor_settings.delete().where(t.monitor_settings.c.model_id == model_id)
            )
            conn.execute(
                t.monitor_settings.insert().values(
                    model_id=model_id, settings=data, updated_at=now, updated_by=self.actor.name
                )
            )
            self.store.audit(
                conn,
                at=now,
                actor=self.actor.name,
                action="monitor.configure",
                target=model,
                model=model,
                before=before,
                after=data,
            )
        return settings

    # -- running ------------------------------------------------------------------------------

    @action("model.read")
    def monitored_models(self) -> list[str]:
        """Models with a production alias."""
        return [m.name for m in self.registry.list_models() if PRODUCTION in m.aliases]

    @action("monitor.run")
    def run(
        self,
        model: str | None = None,
        *,
        window: timedelta = timedelta(hours=1),
        end: datetime | None = None,
        version: int | None = None,
        settings: DriftSettings | None = None,
        store: bool = True,
        rows: int | None = None,
        arm: str | None = None,
        engine: str | Engine | None = None,
        scheduler: str | None = None,
    ) -> list[WindowReport]:
        """Monitor the window ending at ``end`` (now) for every version seen in it; store each report.

        With ``rows``, the window is the model's last ``rows`` predictions before ``end`` instead.
        ``arm`` (``stable``, ``canary`` or ``shadow``) counts that arm's rows only; by default
        every arm but ``shadow`` counts, since shadow answers are never returned to clients.
        ``engine`` and ``scheduler`` pick where the per-segment partials are computed (see
        :meth:`window_reports`); one engine serves every model of the run.
        """
        select_arms(arm)
        if model is None:  # every monitored model: the monitor loop, or an admin
            self.acting.check("monitor.run", target="models")
        elif store:
            self.acting.check(
                "monitor.run", self.registry.get_model(model).owner, target=f"model:{model}"
            )
        names = [model] if model is not None else self.monitored_models()
        end = end or self.clock.now()
        reports: list[WindowReport] = []
        with open_engine(engine, scheduler) as eng:
            for name in names:
                first_id = None
                if rows is None:
                    start = end - window
                else:
                    start, first_id = self.row_window(name, rows, end, arm=arm)
                for rep in self.window_reports(
                    name,
                    start,
                    end,
                    version=version,
                    settings=settings,
                    first_id=first_id,
                    arm=arm,
                    engine=eng,
                ):
                    reports.append(self._store(rep) if store else rep)
        return reports

    @action("monitor.read")
    def row_window_start(
        self, model: str, rows: int, end: datetime, *, arm: str | None = None
    ) -> datetime:
        """The start of the window holding the last ``rows`` log rows of ``model`` before ``end``."""
        return self.row_window(model, rows, end, arm=arm)[0]

    @action("monitor.read")
    def row_window(
        self, model: str, rows: int, end: datetime, *, arm: str | None = None
    ) -> tuple[datetime, str | None]:
        """Where the last ``rows`` log rows (of ``arm``, see :meth:`run`) before ``end`` start.

        The start is a time and the first prediction id.
        Rows logged at one instant (a batch request) are ordered by prediction id, so the window
        holds exactly ``rows`` rows even when it starts inside such a batch.
        """
        if rows < 1:
            raise InvalidInputError(f"a row-count window needs at least 1 row, not {rows}")
        self.acting.check("monitor.read", target=f"model:{validate_name('model', model)}")
        by_day: dict[str, list[Path]] = {}
        for seg in predlog.list_segments(self.config.predictions_dir, model, end=end):
            by_day.setdefault(seg.parent.name, []).append(seg)
        end_us = int(end.timestamp() * 1_000_000)
        stamps: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        for day in sorted(by_day, reverse=True):
            for seg in by_day[day]:
                ts, pid = _stamps(seg, select_arms(arm))
                stamps.append(ts[ts < end_us])
                ids.append(pid[ts < end_us])
            if sum(a.size for a in stamps) >= rows:
                break
        every = np.concatenate(stamps) if stamps else np.zeros(0, dtype=np.int64)
        if every.size == 0:
            return end - timedelta(microseconds=1), None
        every_id = np.concatenate(ids)
        order = np.lexsort((every_id, every))
        first = order[max(every.size - rows, 0)]
        start = datetime.fromtimestamp(int(every[first]) / 1_000_000, UTC)
        return start, str(every_id[first])

    @action("monitor.read")
    def window_reports(
        self,
        model: str,
        start: datetime,
        end: datetime,
        *,
        version: int | None = None,
        settings: DriftSettings | None = None,
        first_id: str | None = None,
        arm: str | None = None,
        engine: str | Engine | None = None,
        scheduler: str | None = None,
    ) -> list[WindowReport]:
        """Compute (without storing) one report per version with rows in ``[start, end)``.

        With ``first_id``, rows at exactly ``start`` count only from that prediction id on.
        ``arm`` counts that arm's rows only (default: every arm but ``shadow``).
        Log segments that cannot be read (or cast to the version's types) are left out and
        named in each report's ``skipped_segments`` and notes.
        ``engine`` maps the per-segment partial: ``"local"`` (in this process, the default),
        ``"dask"`` (on the Dask cluster at ``scheduler``, else a local one started for the call)
        or an open engine (see :mod:`ownloop.monitoring._engine`).
        """
        m = self.registry.get_model(model)
        self.acting.check("monitor.read", m.owner, target=f"model:{model}")
        s = settings or self.settings(model)
        root = self.config.predictions_dir
        window = _Window(start, end, first_id, select_arms(arm))
        segments = predlog.list_segments(root, model, start=start, end=end)
        contexts: dict[int, _VersionContext] = {}
        skipped: list[predlog.SkippedSegment] = []
        spans: dict[Path, tuple[str, str] | None] = {}  # the window's segments: id ranges
        with open_engine(engine, scheduler) as eng:
            merged = self._window_partials(
                eng, segments, model, window, version, contexts, skipped, spans
            )
        if version is not None and version not in merged:
            merged[version] = WindowPartial()
            self._context(model, version, contexts)
        if not merged and version is None:
            latest = self.registry.get_version(
                f"{model}@{PRODUCTION}" if PRODUCTION in m.aliases else model
            )
            merged[latest.version] = WindowPartial()
            self._context(model, latest.version, contexts)
        labels = _WindowLabels(root, model, spans)
        reports = [
            self._report(model, v, window, merged[v], contexts[v], s, labels, skipped)
            for v in sorted(merged)
        ]
        return [_with_skipped(r, skipped) for r in reports]

    def _context(
        self, model: str, version: int, contexts: dict[int, _VersionContext]
    ) -> _VersionContext:
        if version in contexts:
            return contexts[version]
        try:
            v = self.registry.get_version(f"{model}@{version}")
        except NotFoundError:
            ctx = _VersionContext(
                version, None, None, "none", [f"version {version} is not in the registry"]
            )
        else:
            if v.profile_digest is None:
                ctx = _VersionContext(
                    version,
                    None,
                    None,
                    "none",
                    [f"{v.ref} has no reference profile: no drift or estimates"],
                    _version_schema(v),
                )
            else:
                profile = self.registry.load_profile(v.ref)
                spec = PartialSpec.from_profile(profile)
                ctx = _VersionContext(
                    version, profile, spec, v.profile_digest, schema=_version_schema(v)
                )
                if spec.calibration is not None:
                    ctx.notes.append(
                        "probabilities re-calibrated with the reference's isotonic map (they failed a calibration test on the reference)"
                    )
        contexts[version] = ctx
        return ctx

    def _window_partials(
        self,
        engine: Engine,
        segments: Sequence[Path],
        model: str,
        window: _Window,
        version: int | None,
        contexts: dict[int, _VersionContext],
        skipped: list[predlog.SkippedSegment],
        spans: dict[Path, tuple[str, str] | None],
    ) -> dict[int, WindowPartial]:
        """The merged partial per version of ``segments``: cached ones read here, the rest mapped
        by ``engine``; merged in the segments' order whichever engine computed them. Each segment
        holding rows of the window goes to ``spans`` with its prediction id range."""
        merged: dict[int, WindowPartial] = {}
        slots: list[dict[int, WindowPartial] | None] = []  # per segment in order; None: pending
        done = 0

        def flush() -> None:  # merge the finished prefix and let it go
            nonlocal done
            while done < len(slots) and slots[done] is not None:
                for v, part in (slots[done] or {}).items():
                    merged[v] = merged[v].merge(part) if v in merged else part
                slots[done] = {}
                done += 1

        todo: list[tuple[int, Path, datetime | None, datetime | None, SegmentTask]] = []
        holds: set[int | None] = set()  # versions the segments to read hold (None: any)
        for seg in progress.track(segments, f"{model}: log segments"):
            planned = self._plan(seg, model, window, version, contexts, skipped, holds, spans)
            if planned is None:
                continue
            if isinstance(planned, dict):
                slots.append(planned)
                flush()
            else:
                todo.append((len(slots), seg, *planned))
                slots.append(None)
        if todo and None in holds:
            holds.update(v.version for v in self.registry.list_versions(model))
        for v in holds:
            if v is not None:
                self._context(model, v, contexts)
        inputs = {v: VersionInputs(c.spec, c.schema) for v, c in contexts.items()}
        results = engine.map(segment_partials, [task for *_, task in todo], inputs)
        for (slot, seg, lo, hi, task), result in zip(todo, results, strict=True):
            skipped.extend(predlog.SkippedSegment(seg, why) for why in result.skipped)
            for v in result.partials:
                self._context(model, v, contexts)
            if task.inside and not result.skipped:  # a segment read in part is not cached
                parts = {v: (contexts[v].digest, p) for v, p in result.partials.items()}
                self.cache.write(seg, model, window.arms, parts, lo, hi, spans.get(seg))
            slots[slot] = {
                v: p for v, p in result.partials.items() if version is None or v == version
            }
            flush()
        return merged

    def _plan(
        self,
        seg: Path,
        model: str,
        window: _Window,
        version: int | None,
        contexts: dict[int, _VersionContext],
        skipped: list[predlog.SkippedSegment],
        holds: set[int | None],
        spans: dict[Path, tuple[str, str] | None],
    ) -> dict[int, WindowPartial] | tuple[datetime | None, datetime | None, SegmentTask] | None:
        """A segment's cached partials; else its ``ts`` range and the task computing them;
        None when it holds no row of the window (or cannot be read: then it is in ``skipped``).
        The versions a task's segment holds go to ``holds`` (None when its footer does not say),
        its prediction id range to ``spans`` (None: unknown)."""
        entry = self.cache.read(seg, model, window.arms)
        lo: datetime | None
        hi: datetime | None
        ids: tuple[str, str] | None
        if entry is not None and entry.lo is not None and entry.hi is not None:
            lo, hi = entry.lo, entry.hi  # no need to open the segment
            held: set[int | None] = set(entry.versions)
            ids = entry.ids
        else:
            try:
                meta = objectstore.read_metadata(seg)
            except _READ_ERRORS as exc:
                skipped.append(predlog.SkippedSegment(seg, f"not a readable Parquet file ({exc})"))
                return None
            lo, hi = _ts_range(meta)
            span = _int_range(meta, "version")
            held = {None} if span is None else set(range(span[0], span[1] + 1))
            ids = _id_range(meta)
        if lo is not None and hi is not None and (hi < window.start or lo >= window.end):
            return None
        spans[seg] = ids
        inside = (
            lo is not None
            and hi is not None
            and (lo > window.start or (lo == window.start and window.first_id is None))
            and hi < window.end
        )
        if (
            inside
            and entry is not None
            and all(
                self._context(model, v, contexts).digest == d
                for v, (d, _) in entry.versions.items()
            )
        ):
            self.cache.hits += 1
            return {v: p for v, (_, p) in entry.versions.items() if version is None or v == version}
        if inside:
            self.cache.misses += 1
        holds.update(held)
        conditions = {} if inside else window.conditions()
        return lo, hi, SegmentTask(seg, conditions, window.arms, version, inside)

    def _report(
        self,
        model: str,
        version: int,
        window: _Window,
        part: WindowPartial,
        ctx: _VersionContext,
        s: DriftSettings,
        labels: _WindowLabels,
        skipped: list[predlog.SkippedSegment],
    ) -> WindowReport:
        start, end = window.start, window.end
        profile = ctx.profile
        notes = list(ctx.notes)
        drift = evaluate_drift(part, profile, s) if profile is not None else None
        conf = confidence_figures(part, profile, LOW_CONFIDENCE)
        if conf is not None:
            conf = self._with_trend(model, version, end, conf, window.arms)
        estimated: list[Estimate] = []
        classes = ctx.spec.classes if ctx.spec is not None else ()
        if ctx.spec is not None and ctx.spec.task == "classification" and classes:
            estimated = estimate_from_partial(
                part.score_counts,
                part.score_c,
                part.score_c2,
                n_classes=len(classes),
                pred_c=part.pred_c,
                pred_c2=part.pred_c2,
                n_rows=int(part.confidence.sum()),
                calibrated=ctx.spec.calibration is not None,
                support=support_from_profile(profile) if profile is not None else None,
                pred_c_boot=part.pred_c_boot if part.pred_c_boot.size else None,
                confidence=part.confidence,
            )
            if part.bad_proba:
                notes.append(
                    f"{part.bad_proba:,} prediction(s) logged probabilities outside [0, 1] or "
                    "not summing to 1; they are left out of the confidence figures and estimates"
                )
        read = _LogReader(labels, version, window, ctx.schema, skipped)
        realised = (
            self._realised_regression(read, labels, part.scored_rows)
            if ctx.spec is not None and ctx.spec.task == "regression"
            else self._realised(read, labels, classes, part.scored_rows)
        )
        headline = choose_headline(estimated, realised) if estimated or realised else None
        if part.rows == 0:
            notes.append("no predictions in the window")
        if part.refused:
            notes.append(
                f"{part.refused_requests:,} refused request(s) ({part.refused:,} log rows without "
                "inputs) count in the error rate only, not in drift or confidence"
            )
        return WindowReport(
            model,
            version,
            start,
            end,
            part.rows,
            drift,
            conf,
            tuple(estimated),
            tuple(realised),
            system_figures(part, self.config.cpu_hour_price),
            tuple(notes),
            reference_accuracy=_reference_accuracy(profile),
            reference_metrics=_reference_metrics(profile),
            headline=headline,
            arms=window.arms,
        )

    def _realised(
        self, read: _LogReader, labels: _WindowLabels, classes: Sequence[str], total: int
    ) -> list[Realised]:
        if not classes or total == 0 or labels.none():
            return []
        joined = predlog.join_labels(
            read(["prediction_id", "prediction", "proba", "status"]), labels.table, latest_only=True
        )
        has = pc.and_(pc.is_valid(joined.column("label")), pc.equal(joined.column("status"), "ok"))
        joined = joined.filter(pc.fill_null(has, False))
        y_true = _canonical(joined.column("label"))
        y_pred = _canonical(joined.column("prediction"))
        w = joined.column("weight")
        weights = w.to_numpy(zero_copy_only=False).astype(float) if w.null_count < len(w) else None
        score = None
        if len(classes) == 2 and joined.num_rows:
            score = proba_matrix(joined.column("proba"), 2)[:, 1]
            if not np.isfinite(score).all():
                score = None
        return realised_performance(
            y_true,
            y_pred,
            score=score,
            positive=predlog.label_key(classes[1]) if len(classes) == 2 else None,
            weights=weights,
            total_rows=total,
        )

    def _realised_regression(
        self, read: _LogReader, labels: _WindowLabels, total: int
    ) -> list[Realised]:
        if total == 0 or labels.none():
            return []
        joined = predlog.join_labels(
            read(["prediction_id", "prediction_value", "status"]), labels.table, latest_only=True
        )
        y = joined.column("label_value").to_numpy(zero_copy_only=False).astype(float)
        p = joined.column("prediction_value").to_numpy(zero_copy_only=False).astype(float)
        ok = pc.fill_null(pc.equal(joined.column("status"), "ok"), False).to_numpy(
            zero_copy_only=False
        )
        keep = np.isfinite(y) & np.isfinite(p) & ok
        w = joined.column("weight").to_numpy(zero_copy_only=False).astype(float)[keep]
        weights = w if np.isfinite(w).any() else None
        return regression_performance(y[keep], p[keep], weights=weights, total_rows=total)

    def _with_trend(
        self,
        model: str,
        version: int,
        end: datetime,
        conf: ConfidenceFigures,
        arms: tuple[str, ...],
    ) -> ConfidenceFigures:
        """Slopes of the mean confidence and of the low-confidence share over recent windows
        of the same ``arms`` (a canary's windows never bend the stable arm's trend)."""
        r = t.monitor_results.c
        with self.store.read() as conn:
            found = conn.execute(
                sa.select(r.name, r.window_end, r.value, t.monitor_runs.c.summary)
                .join(t.monitor_runs, t.monitor_runs.c.id == r.run_id)
                .where(
                    r.model == model,
                    r.version == version,
                    r.kind == "confidence",
                    r.name.in_(("mean", "low_share")),
                    r.window_end < end,
                    r.value.is_not(None),
                )
                .order_by(r.window_end.desc())
                .limit(8 * (TREND_WINDOWS - 1))  # both figures of the latest windows, any arms
            ).all()
        # Runs stored before arms were recorded counted every arm, then all stable.
        same = [x for x in found if tuple(x.summary.get("arms", DEFAULT_ARMS)) == arms]
        rows = [(x.name, x.window_end, x.value) for x in same][: 2 * (TREND_WINDOWS - 1)]
        fields: dict[str, Any] = {}
        for name, current, prefix in (
            ("mean", conf.mean, ""),
            ("low_share", conf.low_share, "low_share_"),
        ):
            points = [(aware(w), float(v)) for n, w, v in rows if n == name][: TREND_WINDOWS - 1]
            if current is not None:
                points.append((end, current))
            span = (end - min(w for w, _ in points)) if points else timedelta(0)
            if not prefix:
                fields["trend_span_s"] = span.total_seconds()
            if len(points) < TREND_MIN_WINDOWS or span < TREND_MIN_SPAN:
                if not prefix:
                    fields["trend_note"] = _no_trend(len(points), span)
                continue
            fit = linear_trend(points, end)
            if fit is not None:
                fields[f"{prefix}trend_per_hour"], fields[f"{prefix}trend_p"] = fit[0], fit[1]
                if not prefix:
                    fields["trend_windows"] = fit[2]
        return ConfidenceFigures(**{**asdict(conf), **fields})

    # -- review sample and report ------------------------------------------------------------

    @action("monitor.read")
    def sample(
        self,
        model: str,
        n: int,
        *,
        since: timedelta = timedelta(hours=24),
        end: datetime | None = None,
        version: int | None = None,
        low_confidence: float = LOW_CONFIDENCE,
        low_share: float = 0.5,
        seed: int | None = None,
    ) -> ReviewSample:
        """Rows of the window for human review, with their sampling weights."""
        m = self.registry.get_model(model)
        self.acting.check("monitor.read", m.owner, target=f"model:{model}")
        end = end or self.clock.now()
        schema = None
        if version is not None:  # read with the version's own column types
            schema = _version_schema(self.registry.get_version(f"{model}@{version}"))
        table = predlog.read_window(
            self.config.predictions_dir,
            model,
            version=version,
            start=end - since,
            end=end,
            schema=schema,
        )
        return sample_rows(table, n, low_confidence=low_confidence, low_share=low_share, seed=seed)

    @action("monitor.read")
    def drift_html(self, report: WindowReport) -> str:
        """A self-contained HTML drift report of one window."""
        self.acting.check("monitor.read", target=f"model:{report.model}")
        title = f"drift of {report.model}@{report.version}, {report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
        if report.drift is None:
            return render_drift_html(
                title, "no reference profile: no drift", (), list(report.notes)
            )
        feats = (*report.drift.features, *report.drift.prediction)
        notes = [
            *report.notes,
            f"{report.rows} rows; p-values adjusted across features ({report.drift.correction})",
        ]
        return render_drift_html(title, report.drift.summary, feats, notes)

    # -- stored runs and figures (ownloop.monitoring._results) -------------------------------

    @property
    def _stored(self) -> MonitorResults:
        """The stored runs and figures, through this monitor's store and clock (as set now)."""
        return MonitorResults(self.store, self.clock)

    def _store(self, rep: WindowReport) -> WindowReport:
        return self._stored.record(rep, self.actor.name)

    @action("monitor.read")
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
        """Stored monitor runs, newest window first (one query).

        ``model`` (None: every model), ``version``, ``arm`` (None: any arms; ``stable``,
        ``canary``, ``shadow``: runs that counted exactly that arm; ``default``: the default
        arms), ``since``/``until`` (the window's end, inclusive) and ``status`` (``ok``,
        ``no_data``) filter; ``limit`` and ``offset`` page.
        """
        if model is not None:
            validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}" if model else "models")
        return self._stored.runs(
            model,
            version=version,
            arm=arm,
            since=since,
            until=until,
            status=status,
            limit=limit,
            offset=offset,
        )

    @action("monitor.read")
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
        """Stored figures of ``model`` by ``(kind, name)`` key, oldest window first (one query).

        Keys are as stored, e.g. ``("system", "latency_p99_s")``,
        ``("estimated_performance", "accuracy")``, ``("dataset_drift", "share")``; every key is
        in the answer (an empty list when nothing was stored). Windows end in ``[since, until]``
        and counted the default arms (every arm but shadow) unless ``arm`` names one;
        ``version`` keeps one version's windows.
        """
        validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}")
        return self._stored.series(model, keys, since=since, until=until, arm=arm, version=version)

    @action("monitor.read")
    def feature_history(
        self,
        model: str,
        feature: str,
        *,
        since: datetime,
        until: datetime | None = None,
        kind: str = "feature_drift",
    ) -> list[FeatureWindow]:
        """One feature's drift figures and histogram per window, oldest first (one query).

        ``kind`` ``"prediction_drift"`` reads a prediction output (``predicted_class``,
        ``score_<class>``, ``predicted_value``). Windows end in ``[since, until]`` and counted
        the default arms.
        """
        validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}")
        return self._stored.feature_history(model, feature, since=since, until=until, kind=kind)

    @action("monitor.read")
    def results(
        self,
        model: str,
        *,
        kind: str | None = None,
        run_id: int | None = None,
        since: datetime | None = None,
    ) -> list[StoredResult]:
        """Stored per-window results, oldest window first (for dashboards and alert rules).

        Each figure carries its comparison (``reference``, ``bound``, ``compare``) and its window
        (``window_start``, ``window_end``); docs/alerts.md says what each kind is compared with.
        """
        validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}")
        return self._stored.results(model, kind=kind, run_id=run_id, since=since)

    @action("monitor.read")
    def latest_results(
        self,
        model: str,
        *,
        runs: int = 1,
        arm: str | None = None,
        version: int | None = None,
    ) -> list[tuple[MonitorRun, list[StoredResult]]]:
        """The last ``runs`` windows of ``model`` with their figures, newest window first.

        ``arm`` keeps runs whose window counted exactly that arm (None: the default arms, every
        arm but shadow); ``version`` keeps one version's runs. A rule that needs N consecutive
        windows reads them here: each run carries its window, version and arms
        (``summary["arms"]``), each figure its comparison.
        """
        if runs < 1:
            raise InvalidInputError(f"runs {runs} must be 1 or more, e.g. 3")
        select_arms(arm)
        validate_name("model", model)
        self.acting.check("monitor.read", target=f"model:{model}")
        return self._stored.latest_results(model, runs=runs, arm=arm, version=version)


def _canonical(values: pa.ChunkedArray) -> np.ndarray:
    """Class labels compared by value ('1.0' is '1': a CSV round trip turns 1 into 1.0).

    Each distinct value is keyed once: a window has many rows but few classes."""
    distinct = pc.unique(values)
    keys = predlog.label_keys(distinct.to_pylist()).astype(str)
    at = pc.index_in(values, value_set=distinct).to_numpy(zero_copy_only=False)
    out: np.ndarray = keys[at.astype(np.int64)]
    return out


def _reference_accuracy(profile: ReferenceProfile | None) -> float | None:
    perf = profile.prediction.performance if profile is not None else None
    return None if perf is None else perf.metrics.get("accuracy")


def _reference_metrics(profile: ReferenceProfile | None) -> dict[str, float | None]:
    """The reference profile's performance figures by metric (empty when it has none)."""
    perf = profile.prediction.performance if profile is not None else None
    return {} if perf is None else dict(perf.metrics)


def _no_trend(windows: int, span: timedelta) -> str:
    return (
        f"no confidence trend: it needs at least {TREND_MIN_WINDOWS} windows spanning at least "
        f"{TREND_MIN_SPAN.total_seconds() / 3600:g} h; there are {windows} spanning "
        f"{_span_text(span.total_seconds())}"
    )


def _span_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _stamps(seg: Path, arms: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``ts`` (microseconds) and prediction ids of one segment's ``arms`` ('' for a missing id)."""
    try:
        has_arm = "arm" in objectstore.read_schema(seg).names
        table = objectstore.read_table(seg, ["ts", "prediction_id", *(["arm"] if has_arm else [])])
        table = of_arms(table, arms)
        ts = table.column("ts").cast(predlog.TS).cast(pa.int64()).to_numpy()
    except _READ_ERRORS:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    ids = pc.fill_null(table.column("prediction_id"), "").to_numpy(zero_copy_only=False)
    return ts, np.asarray(ids, dtype=object)


def _with_skipped(rep: WindowReport, skipped: Sequence[predlog.SkippedSegment]) -> WindowReport:
    if not skipped:
        return rep
    names = tuple(dict.fromkeys(str(s) for s in skipped))
    note = f"{len(names)} log segment(s) left out (unreadable or of another type): " + "; ".join(
        names[:5]
    )
    return replace(rep, skipped_segments=names, notes=(*rep.notes, note))


class _WindowLabels:
    """The labels a window's rows can have, read once per window on first use.

    Only the label segments that can hold an id of the window are read (by the id times in
    their names against the window's id range); :meth:`may_hold` says which log segments can
    hold a labelled id, so the realised figures read those alone.
    """

    def __init__(
        self, root: Path, model: str, spans: Mapping[Path, tuple[str, str] | None]
    ) -> None:
        self.root, self.model, self.spans = root, model, spans
        self._table: pa.Table | None = None
        self._ids: pa.Array | None = None
        self._keys: np.ndarray | None = None
        self._none: bool | None = None

    @property
    def table(self) -> pa.Table:
        """The latest label per prediction id of the label segments that can hold the window's."""
        if self._table is None:
            known = list(self.spans.values())
            ids = None
            if known and all(k is not None for k in known):
                ids = (min(k[0] for k in known if k), max(k[1] for k in known if k))
            self._table = predlog.read_labels(self.root, self.model, ids=ids)
        return self._table

    @property
    def ids(self) -> pa.Array:
        """The labelled prediction ids, sorted."""
        if self._ids is None:
            found = self.table.column("prediction_id").drop_null().combine_chunks()
            self._ids = found.take(pc.sort_indices(found))
        return self._ids

    @property
    def keys(self) -> np.ndarray:
        """:attr:`ids` as a numpy array to search: fixed-width bytes viewing the Arrow buffer
        when every id has one length (ownloop's do), else Python strings."""
        if self._keys is None:
            ids = self.ids
            width = len(ids[0].as_py()) if len(ids) else 0
            if (
                width
                and ids.type == pa.string()
                and pc.all(pc.equal(pc.binary_length(ids), width)).as_py()
            ):
                _, offsets, data = ids.buffers()
                start = int(np.frombuffer(offsets, np.int32, count=1, offset=4 * ids.offset)[0])
                self._keys = np.frombuffer(data, dtype=f"S{width}", count=len(ids), offset=start)
            else:
                self._keys = ids.to_numpy(zero_copy_only=False)
        return self._keys

    def none(self) -> bool:
        """Whether the model has no label at all (then a window has no realised figures)."""
        if self._none is None:
            self._none = self.table.num_rows == 0 and not predlog.has_labels(self.root, self.model)
        return self._none

    def may_hold(self, span: tuple[str, str] | None) -> bool:
        """Whether a segment of prediction ids in ``span`` (None: unknown) can hold a labelled one."""
        if span is None:
            return True
        keys = self.keys
        lo, hi = (span[0].encode(), span[1].encode()) if keys.dtype.kind == "S" else span
        at = int(np.searchsorted(keys, lo))
        return at < keys.size and bool(keys[at] <= hi)


class _LogReader:
    """Reads a version's labelled rows of one window, adding segments it leaves out to ``skipped``.

    Only the segments that can hold a labelled id are read, a batch at a time, and only their
    labelled rows kept: memory follows the labelled rows, not the window's.
    """

    def __init__(
        self,
        labels: _WindowLabels,
        version: int,
        window: _Window,
        schema: pa.Schema | None,
        skipped: list[predlog.SkippedSegment],
    ) -> None:
        self.labels, self.version = labels, version
        self.window, self.schema, self.skipped = window, schema, skipped

    def __call__(self, columns: Sequence[str]) -> pa.Table:
        files = [seg for seg, span in self.labels.spans.items() if self.labels.may_hold(span)]
        value_set = self.labels.ids
        parts = [self._read(columns, [])]  # typed even when no segment is read
        for at in range(0, len(files), _READ_BATCH):
            part = self._read(columns, files[at : at + _READ_BATCH])
            parts.append(part.filter(pc.is_in(part.column("prediction_id"), value_set=value_set)))
        return pa.concat_tables(parts)

    def _read(self, columns: Sequence[str], files: Sequence[Path]) -> pa.Table:
        wanted = list(dict.fromkeys([*columns, "arm"]))
        try:
            read = self._read_log(wanted, files)
        except InvalidInputError:  # none of these segments has an arm: every row is stable
            read = self._read_log(list(columns), files)
        self.skipped.extend(read.skipped)
        return self.window.of_arms(read.table).select(list(columns))

    def _read_log(self, columns: list[str], files: Sequence[Path]) -> predlog.LogRead:
        return predlog.read_log(
            self.labels.root,
            self.labels.model,
            version=self.version,
            start=self.window.start,
            end=self.window.end,
            columns=columns,
            schema=self.schema,
            first_id=self.window.first_id,
            files=files,
        )


def _id_range(meta: pq.FileMetaData) -> tuple[str, str] | None:
    """The least and greatest prediction id of a segment from its Parquet statistics (None:
    unknown; rows without an id have no label to join)."""
    try:
        idx = meta.schema.names.index("prediction_id")
    except ValueError:
        return None
    lo: str | None = None
    hi: str | None = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            return None
        a, b = st.min, st.max
        if not isinstance(a, str) or not isinstance(b, str):
            return None
        lo = a if lo is None or a < lo else lo
        hi = b if hi is None or b > hi else hi
    return None if lo is None or hi is None else (lo, hi)


def _ts_range(meta: pq.FileMetaData) -> tuple[datetime | None, datetime | None]:
    """The min and max ``ts`` of a segment from its Parquet statistics (None when absent)."""
    try:
        idx = meta.schema.names.index("ts")
    except ValueError:
        return None, None
    lo: datetime | None = None
    hi: datetime | None = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            return None, None
        a, b = _aware(st.min), _aware(st.max)
        lo = a if lo is None or a < lo else lo
        hi = b if hi is None or b > hi else hi
    return lo, hi


def _int_range(meta: pq.FileMetaData, column: str) -> tuple[int, int] | None:
    """The min and max of an integer column from a segment's Parquet statistics (None: unknown)."""
    try:
        idx = meta.schema.names.index(column)
    except ValueError:
        return None
    lo: int | None = None
    hi: int | None = None
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(idx).statistics
        if st is None or not st.has_min_max:
            return None
        a, b = st.min, st.max
        if not isinstance(a, int) or not isinstance(b, int) or b - a > 1000:
            return None
        lo = a if lo is None or a < lo else lo
        hi = b if hi is None or b > hi else hi
    return None if lo is None or hi is None else (lo, hi)


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    raise InvalidInputError(f"unexpected ts statistic {value!r} in a prediction log segment")
