"""Four real processes register, move an alias, deploy, promote and label one model at once, on
SQLite and PostgreSQL: every write succeeds or is refused with a clear error (a race says
"retry"/"run it again"; a rule says why), and afterwards there is one production version, at most
one active rollout, and every change has its audit row."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from ownloop import Config, Workspace
from ownloop.deploy import ACTIVE_STATES
from ownloop.predlog import new_ids, read_labels, write_segment
from ownloop.store import tables
from tests import _kill_child as child
from tests.conftest import env_for

pytestmark = pytest.mark.slow

PROCESSES = 4
ROUNDS = 3
MODEL = "race"
CHILD = Path(__file__).with_name("_race_child.py")

# Refusals by a rule of the domain, named in their message (not races, not failures).
RULES = (
    "is already production; nothing to deploy",  # two deploys of the same version
    "has an active rollout (#",  # another process's rollout runs: wait, promote or abort it
    "has no active rollout to promote",  # another process promoted it first
)
RETRY = ("retry", "run it again", "try again")


def _acceptable(op: str, kind: str, message: str) -> bool:
    if kind in ("ConcurrentChangeError", "StoreUnavailableError"):
        return any(word in message for word in RETRY)
    if kind == "ConflictError" and op in ("deploy", "promote"):
        return any(rule in message for rule in RULES)
    return False


def test_concurrent_writers_leave_one_production_and_a_full_audit(
    config: Config, tmp_path: Path
) -> None:
    data = child.frame(0)
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=[config.user])
        ws.registry.register(
            child.fitted(data, 1.0), name=MODEL, owner="risk", reference=data, target="y"
        )
        ws.deploy.set_production(MODEL, 1, force=True, reason="set up")
        write_segment(ws.config.predictions_dir, MODEL, child.predictions(new_ids(60), ws))
    env = {**env_for(config), "PYTHONPATH": str(CHILD.parent.parent)}
    # one process imports ownloop and forks the writers, so they start together and the test
    # does not pay the imports four times
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(PROCESSES), str(ROUNDS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    summaries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(summaries) == PROCESSES
    done: Counter[str] = Counter()
    refused: list[tuple[str, str, str]] = []
    for summary in summaries:
        done.update(summary["done"])
        refused += [tuple(r) for r in summary["refused"]]
    unclear = [r for r in refused if not _acceptable(*r)]
    assert not unclear, f"refusals without a clear reason or retry: {unclear[:5]}"
    print(f"done {dict(done)}; refused {Counter((op, kind) for op, kind, _ in refused)}")
    assert done["register"] == PROCESSES * ROUNDS, "a register never conflicts: it must succeed"
    assert done["label"] == PROCESSES * ROUNDS

    with Workspace(config) as ws:
        with ws.store.read() as conn:
            production = conn.execute(
                sa.select(sa.func.count())
                .select_from(tables.aliases)
                .where(tables.aliases.c.alias == "production")
            ).scalar_one()
        assert production == 1
        active = [r for r in ws.deploy.rollouts(MODEL, limit=1000) if r.state in ACTIVE_STATES]
        assert len(active) <= 1
        versions = ws.registry.list_versions(MODEL)
        assert [v.version for v in versions] == list(range(1, 1 + PROCESSES * ROUNDS + 1))
        audit = Counter(e.action for e in ws.registry.audit_log(model=MODEL, limit=100_000))
        assert audit["version.register"] == len(versions)
        assert (
            audit["alias.set"] == done["alias"] == len(ws.registry.alias_history(MODEL, "champion"))
        )
        assert audit["deploy.start"] + audit["deploy.direct"] == done["deploy"] + 1  # + set-up
        assert audit["deploy.promote"] == done["promote"]
        assert audit["label.write"] == done["label"]
        assert read_labels(ws.config.predictions_dir, MODEL).num_rows > 0
