"""A stateful property test: random register / alias / deploy / promote / abort / log / label
sequences on one real store keep the invariants (one production version and at most one active
rollout per model, every change audited, labels stored only for logged predictions)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sklearn.linear_model import LogisticRegression

from ownloop import Config, ConflictError, Workspace
from ownloop.deploy import ACTIVE_STATES
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import BASE_SCHEMA, new_ids, read_labels, write_segment
from ownloop.store import tables

pytestmark = pytest.mark.slow

MODELS = ("a", "b")
ALIASES = ("champion", "candidate")
_rng = np.random.default_rng(7)
DATA = pd.DataFrame({"x": _rng.normal(size=150), "z": _rng.normal(size=150)})
DATA["y"] = (DATA["x"] > 0).astype(int)
FITTED = LogisticRegression().fit(DATA[["x", "z"]], DATA["y"])  # one model object for every version


class Lifecycle(RuleBasedStateMachine):
    """The store under random operations, next to a plain model of what it should hold."""

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(prefix="ownloop-stateful-"))
        self.ws = Workspace(Config(home=self.home, user="tester"))
        self.ws.registry.add_team("risk", members=["tester"])
        self.versions: dict[str, int] = dict.fromkeys(MODELS, 0)
        self.production: dict[str, int | None] = dict.fromkeys(MODELS)
        self.active: dict[str, int | None] = dict.fromkeys(MODELS)  # candidate version
        self.logged: dict[str, list[str]] = {m: [] for m in MODELS}
        self.labelled: dict[str, set[str]] = {m: set() for m in MODELS}
        self.audited: Counter[tuple[str, str]] = Counter()  # (model, action) -> changes made

    def teardown(self) -> None:
        self.ws.close()
        shutil.rmtree(self.home, ignore_errors=True)

    # -- operations ---------------------------------------------------------------------------

    @initialize()
    def two_versions_of_a_in_production(self) -> None:
        """Start where rollouts are possible (a production version and another to roll out), so
        the rollout invariants are exercised in most examples, not only in lucky ones."""
        self.register("a")
        self.register("a")
        self.deploy("a", 0, direct=True)

    @rule(model=st.sampled_from(MODELS))
    def register(self, model: str) -> None:
        first = self.versions[model] == 0
        v = self.ws.registry.register(
            FITTED,
            name=model,
            owner="risk" if first else None,
            reference=DATA,
            target="y",
            code_commit="abc",
        )
        self.versions[model] += 1
        assert v.version == self.versions[model]
        self.audited[model, "version.register"] += 1
        if first:
            self.audited[model, "model.create"] += 1

    @rule(model=st.sampled_from(MODELS), alias=st.sampled_from(ALIASES), pick=st.integers(0, 9))
    def set_alias(self, model: str, alias: str, pick: int) -> None:
        if not self.versions[model]:
            return
        number = 1 + pick % self.versions[model]
        assert self.ws.registry.set_alias(model, alias, number).version == number
        self.audited[model, "alias.set"] += 1

    @rule(model=st.sampled_from(MODELS), pick=st.integers(0, 9), direct=st.booleans())
    def deploy(self, model: str, pick: int, direct: bool) -> None:
        if not self.versions[model]:
            return
        number = 1 + pick % self.versions[model]
        refused = self.active[model] is not None or self.production[model] == number
        try:
            self.ws.deploy.deploy(
                f"{model}@{number}",
                strategy="direct" if direct else "canary",
                force=True,
                reason="property test",
            )
        except ConflictError:
            assert refused, "a deploy the model allows was refused"
            return
        assert not refused, "a deploy the model refuses went through"
        if direct or self.production[model] is None:
            self.production[model] = number
            self.audited[model, "deploy.direct"] += 1
        else:
            self.active[model] = number
            self.audited[model, "deploy.start"] += 1

    @rule(model=st.sampled_from(MODELS), promote=st.booleans())
    def finish(self, model: str, promote: bool) -> None:
        if not self.versions[model]:
            return
        try:
            if promote:
                self.ws.deploy.promote(model, reason="property test")
            else:
                self.ws.deploy.abort(model, reason="property test")
        except ConflictError:
            assert self.active[model] is None
            return
        assert self.active[model] is not None
        if promote:
            self.production[model] = self.active[model]
        self.active[model] = None
        self.audited[model, "deploy.promote" if promote else "deploy.abort"] += 1

    @rule(model=st.sampled_from(MODELS), n=st.integers(1, 5))
    def log(self, model: str, n: int) -> None:
        if not self.versions[model]:
            return
        ids = new_ids(n)
        table = pa.table(
            {
                **{f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA},
                "prediction_id": ids,
                "ts": pa.array([self.ws.clock.now()] * n, BASE_SCHEMA.field("ts").type),
                "model": [model] * n,
                "version": pa.array([self.versions[model]] * n, pa.int32()),
            },
            schema=BASE_SCHEMA,
        )
        write_segment(self.ws.config.predictions_dir, model, table)
        self.logged[model] += ids

    @rule(
        model=st.sampled_from(MODELS),
        picks=st.lists(st.integers(0, 99), min_size=1, max_size=4),
        unknown=st.integers(0, 2),
    )
    def label(self, model: str, picks: list[int], unknown: int) -> None:
        if not self.versions[model]:
            return
        known = (
            [self.logged[model][p % len(self.logged[model])] for p in picks]
            if (self.logged[model])
            else []
        )
        strangers = new_ids(unknown)  # well-formed ids no prediction ever had
        rows: list[dict[str, Any]] = [
            {"prediction_id": pid, "label": i % 2} for i, pid in enumerate(known + strangers)
        ]
        if not rows:
            return
        table = labels_table(rows, at=self.ws.clock.now(), source="property")
        report = record_labels(self.ws.registry, self.ws.config.predictions_dir, model, table)
        assert sorted(report.unknown) == sorted(strangers)
        self.labelled[model] |= set(known)
        self.audited[model, "label.write"] += 1

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def one_production_version(self) -> None:
        with self.ws.store.read() as conn:
            rows = conn.execute(
                sa.select(tables.models.c.name, sa.func.count())
                .select_from(tables.aliases.join(tables.models))
                .where(tables.aliases.c.alias == "production")
                .group_by(tables.models.c.name)
            ).all()
        assert all(count == 1 for _, count in rows)
        for model in MODELS:
            if self.production[model] is not None:
                live = self.ws.registry.get_version(f"{model}@production").version
                assert live == self.production[model]

    @invariant()
    def at_most_one_active_rollout(self) -> None:
        for model in MODELS:
            if not self.versions[model]:
                continue
            active = [
                r for r in self.ws.deploy.rollouts(model, limit=1000) if r.state in ACTIVE_STATES
            ]
            assert len(active) <= 1
            if active:
                event("a model with an active rollout")  # shown by --hypothesis-show-statistics
            assert [r.candidate for r in active] == (
                [self.active[model]] if self.active[model] is not None else []
            )

    @invariant()
    def every_change_audited(self) -> None:
        seen = Counter(
            (e.model, e.action)
            for e in self.ws.registry.audit_log(limit=100_000)
            if e.model is not None
        )
        assert seen == +self.audited

    @invariant()
    def labels_only_for_logged_predictions(self) -> None:
        for model in MODELS:
            if not self.versions[model]:
                continue
            stored = set(
                read_labels(self.ws.config.predictions_dir, model)["prediction_id"].to_pylist()
            )
            assert stored == self.labelled[model]
            assert stored <= set(self.logged[model])


Lifecycle.TestCase.settings = settings(
    max_examples=int(os.environ.get("OWNLOOP_STATEFUL_EXAMPLES", "20")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_lifecycle = Lifecycle.TestCase
