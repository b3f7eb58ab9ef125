"""Prediction ids: UUIDv7 (unguessable, sortable by millisecond), legacy ids still resolve, and the
label-poisoning attack of issue 13 (guessing another client's ids from one's own) finds nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

from ownloop import Config, Workspace
from ownloop.labels import id_time, labels_table, normal_id, record_labels
from ownloop.predlog import BASE_SCHEMA, id_ms, new_ids, read_labels, write_segment
from tests.servers import running

RANDOM_BITS = [*range(64, 76), *range(0, 62)]  # rand_a (12 bits), rand_b (62 bits): 74 in all


def _bits(pid: str) -> int:
    return int(pid, 16)


def test_ids_are_uuidv7_with_their_creation_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_ids(500)
    after = time.time_ns() // 1_000_000
    for pid in ids:
        assert len(pid) == 32 and pid == pid.lower() and int(pid, 16) >= 0
        u = uuid.UUID(pid)
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert pid[12] == "7" and pid[16] in "89ab"
        assert before <= int(pid[:12], 16) <= after
        assert id_ms(pid) == int(pid[:12], 16)
    assert len(set(ids)) == 500


def test_each_of_the_74_random_bits_flips_about_half_the_time() -> None:
    # one id per call, as separate requests get them (a batch's ids are handed out sorted)
    ids = [_bits(new_ids(1)[0]) for _ in range(4000)]
    pairs = [a ^ b for a, b in pairwise(ids)]
    for bit in RANDOM_BITS:
        flips = sum((x >> bit) & 1 for x in pairs) / len(pairs)
        # a fair bit flips with p = 1/2: 0.4..0.6 is over 12 standard deviations wide
        assert 0.4 < flips < 0.6, f"random bit {bit} flips in {flips:.1%} of consecutive ids"


def test_a_batch_of_ids_is_sorted_so_its_rows_keep_their_order() -> None:
    batch = new_ids(1000)
    assert batch == sorted(batch) and len(set(batch)) == 1000


def test_ids_sort_by_time_across_milliseconds() -> None:
    batches = []
    for _ in range(5):
        batches.append(new_ids(50))
        start = time.time_ns() // 1_000_000
        while time.time_ns() // 1_000_000 <= start + 1:  # wait for two millisecond ticks
            time.sleep(0.0005)
    for earlier, later in pairwise(batches):
        assert max(earlier) < min(later)
    flat = [p for b in batches for p in b]
    assert [id_ms(p) for p in sorted(flat)] == sorted(id_ms(p) for p in flat)  # type: ignore[type-var]


def _legacy(ms: int, process: str = "a1b2c3d4e5", counter: int = 7) -> str:
    return f"{ms:011x}{process}{counter:011x}"


def test_legacy_ids_keep_their_time_even_when_they_look_like_uuidv7() -> None:
    ms = 1_764_000_000_123  # 2025-11-24
    # a legacy process part can put '7' where UUIDv7 has its version and 8..b at the variant
    tricky = _legacy(ms, process="07a9b8c7d6", counter=0x8_0000_0001)
    assert tricky[12] == "7" and tricky[16] in "89ab"
    for pid in (_legacy(ms), tricky):
        assert id_ms(pid) == ms
        assert id_time(pid) == datetime.fromtimestamp(ms / 1000, tz=UTC)
    assert id_ms("not-an-id") is None
    assert id_ms("g" * 32) is None


def test_ids_with_dashes_or_capitals_are_the_same_id() -> None:
    pid = new_ids(1)[0]
    dashed = str(uuid.UUID(pid))
    assert normal_id(dashed) == pid
    assert normal_id(dashed.upper()) == pid
    assert normal_id(pid.upper()) == pid
    assert normal_id("order-17") == "order-17"  # not an ownloop id: left as given
    assert id_time(dashed) == id_time(pid)


def _log(ws: Workspace, ids: list[str], ts: list[datetime]) -> None:
    n = len(ids)
    table = pa.table(
        {
            **{f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA},
            "prediction_id": ids,
            "ts": pa.array(ts, BASE_SCHEMA.field("ts").type),
            "model": ["churn"] * n,
            "version": pa.array([1] * n, pa.int32()),
        },
        schema=BASE_SCHEMA,
    )
    write_segment(ws.config.predictions_dir, "churn", table)


@pytest.fixture
def registered(ws: Workspace, team: str, churn_model: Any, churn_data: pd.DataFrame) -> Workspace:
    ws.registry.register(
        churn_model, name="churn", owner=team, reference=churn_data, target="churned"
    )
    return ws


def _post(ws: Workspace, ids: list[str]) -> Any:
    rows = [{"prediction_id": p, "label": 1} for p in ids]
    table = labels_table(rows, at=ws.clock.now(), source="test")
    return record_labels(ws.registry, ws.config.predictions_dir, "churn", table)


def test_legacy_and_dashed_ids_resolve_against_the_log(registered: Workspace) -> None:
    ws = registered
    now = datetime.now(UTC)
    legacy = _legacy(int(now.timestamp() * 1000))
    fresh = new_ids(1)[0]
    _log(ws, [legacy, fresh], [now, now])
    report = _post(ws, [legacy, str(uuid.UUID(fresh)).upper()])
    assert (report.stored, report.unknown) == (2, [])
    stored = set(read_labels(ws.config.predictions_dir, "churn")["prediction_id"].to_pylist())
    assert stored == {legacy, fresh}


@pytest.mark.parametrize("offset", [timedelta(hours=-20), timedelta(hours=20)])
def test_a_row_stamped_across_midnight_from_its_id_still_resolves(
    registered: Workspace, offset: timedelta
) -> None:
    """The row's ``ts`` may be set before the id is made (or logged well after): a label finds
    it on the day either side of the id's own day."""
    ws = registered
    pid = new_ids(1)[0]
    made = id_time(pid)
    assert made is not None
    midnight = made.replace(hour=0, minute=0, second=0, microsecond=0)
    ts = midnight - timedelta(seconds=1) if offset < timedelta(0) else midnight + timedelta(days=1)
    _log(ws, [pid], [ts])
    report = _post(ws, [pid])
    assert (report.stored, report.unknown) == (1, [])


# -- the attack: one client guesses another's ids from its own ------------------------------


@pytest.fixture
def served(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[Workspace, str]]:
    home = tmp_path_factory.mktemp("ids") / "home"
    with Workspace(Config(home=home, user="tester")) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        with running(ws) as url:
            yield ws, url


def _candidates(before: str, after: str) -> list[str]:
    """Ids an attacker derives from two of its own: every millisecond between them, with the
    non-time part read as the legacy layout (process part + counter) and as a UUIDv7 suffix
    counted on from the first id and back from the second."""
    out: list[str] = []
    lo, hi = int(before[:11], 16), int(after[:11], 16)
    process, c0, c1 = before[11:21], int(before[21:], 16), int(after[21:], 16)
    if 0 <= c1 - c0 <= 200:
        out += [f"{ms:011x}{process}{c:011x}" for ms in range(lo, hi + 1) for c in range(c0, c1)]
    lo7, hi7 = int(before[:12], 16), int(after[:12], 16)
    s0, s1 = int(before[12:], 16), int(after[12:], 16)
    for ms in range(lo7, hi7 + 1):
        out += [f"{ms:012x}{s0 + k:020x}" for k in range(-20, 21)]
        out += [f"{ms:012x}{s1 - k:020x}" for k in range(-20, 21)]
    return [p for p in dict.fromkeys(out) if p not in (before, after)]  # not its own


@pytest.mark.slow
def test_guessing_ids_from_ones_own_labels_nothing(
    served: tuple[Workspace, str], churn_data: pd.DataFrame
) -> None:
    ws, url = served
    rows = churn_data.drop(columns="churned").head(40).to_dict("records")
    with (
        httpx.Client(base_url=url, timeout=30) as attacker,
        httpx.Client(base_url=url, timeout=30) as victim,
    ):

        def predict(c: httpx.Client, row: dict[str, Any]) -> str:
            r = c.post("/models/churn/predict", json={"instances": [row]})
            assert r.status_code == 200, r.text
            return str(r.json()["prediction_ids"][0])

        first = predict(attacker, rows[0])
        theirs = [predict(victim, row) for row in rows]
        last = predict(attacker, rows[-1])
        candidates = _candidates(first, last)
        assert len(candidates) > 1000
        stored = 0
        for i in range(0, len(candidates), 10_000):
            batch = [{"prediction_id": p, "label": 1} for p in candidates[i : i + 10_000]]
            r = attacker.post("/models/churn/labels", json=batch)
            assert r.status_code == 200, r.text
            stored += r.json()["stored"]
    assert stored == 0
    labelled = set(read_labels(ws.config.predictions_dir, "churn")["prediction_id"].to_pylist())
    assert not labelled & set(theirs)
