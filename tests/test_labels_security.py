"""Labels under hostile input: a batch limit, bounded audit rows and answers, and a label post that
opens only the label files that can hold its ids (not every file ever written)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pytest

import ownloop
from ownloop import Config, InvalidInputError, Workspace, predlog
from ownloop.errors import PayloadTooLargeError
from ownloop.labels import labels_table, record_labels
from ownloop.predlog import BASE_SCHEMA, new_ids, read_labels, write_segment
from ownloop.server._app import _ownloop_error
from tests.servers import running


def _log(ws: Workspace, ids: list[str]) -> None:
    n, now = len(ids), ws.clock.now()
    table = pa.table(
        {
            **{f.name: pa.nulls(n, f.type) for f in BASE_SCHEMA},
            "prediction_id": ids,
            "ts": pa.array([now] * n, BASE_SCHEMA.field("ts").type),
            "model": ["churn"] * n,
            "version": pa.array([1] * n, pa.int32()),
        },
        schema=BASE_SCHEMA,
    )
    write_segment(ws.config.predictions_dir, "churn", table)


def _rows(ids: list[str]) -> list[dict[str, Any]]:
    return [{"prediction_id": p, "label": 1} for p in ids]


@pytest.fixture
def small(
    tmp_path: Path, db_url: str, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[Workspace]:
    """A workspace allowing 5 label rows a batch, with churn registered and 8 predictions logged."""
    config = Config(home=tmp_path / "home", db_url_override=db_url, user="tester", max_label_rows=5)
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        yield ws


def _label_writes(ws: Workspace) -> list[Any]:
    return [a for a in ws.registry.audit_log(model="churn") if a.action == "label.write"]


def test_a_batch_over_the_limit_is_refused_and_nothing_written(small: Workspace) -> None:
    ws = small
    ids = new_ids(6)
    _log(ws, ids)
    with pytest.raises(InvalidInputError, match=r"6 rows; the limit is 5 .*split it") as err:
        ownloop.record_labels("churn", _rows(ids), workspace=ws)
    assert isinstance(err.value, PayloadTooLargeError)
    table = labels_table(_rows(ids), at=ws.clock.now(), source="test")
    with pytest.raises(InvalidInputError, match="the limit is 3"):
        record_labels(ws.registry, ws.config.predictions_dir, "churn", table, max_rows=3)
    assert read_labels(ws.config.predictions_dir, "churn").num_rows == 0
    assert _label_writes(ws) == []
    assert ownloop.record_labels("churn", _rows(ids[:5]), workspace=ws).stored == 5


@pytest.fixture
def served(
    tmp_path_factory: pytest.TempPathFactory, churn_model: Any, churn_data: pd.DataFrame
) -> Iterator[tuple[Workspace, str]]:
    home = tmp_path_factory.mktemp("labsec") / "home"
    config = Config(home=home, user="tester", max_label_rows=100)
    with Workspace(config) as ws:
        ws.registry.add_team("risk", members=["tester"])
        v = ws.registry.register(
            churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
        )
        ws.deploy.set_production("churn", v.version, force=True, reason="set up")
        with running(ws) as url:
            yield ws, url


def test_http_batch_over_the_limit_is_413_and_documented(served: tuple[Workspace, str]) -> None:
    ws, url = served
    ids = new_ids(101)
    _log(ws, ids)
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/models/churn/labels", json=_rows(ids))
        assert r.status_code == 413, r.text
        assert r.json()["code"] == "payload_too_large"
        assert "101 rows; the limit is 100" in r.json()["error"]
        assert "split" in r.json()["error"]
        schema = c.get("/openapi.json").json()["components"]["schemas"]["LabelsRequest"]
        assert schema["maxItems"] == 100
        assert c.post("/models/churn/labels", json=_rows(ids[:100])).json()["stored"] == 100
    assert read_labels(ws.config.predictions_dir, "churn").num_rows == 100
    assert [a.after["received"] for a in _label_writes(ws)] == [100]


def test_a_huge_post_of_unknown_ids_gives_a_small_audit_row_and_answer(
    served: tuple[Workspace, str],
) -> None:
    ws, url = served
    before = len(_label_writes(ws))
    huge = [f"{i:02d}" + "x" * 100_000 for i in range(60)]  # 60 ids of 100 KB: a 6 MB body
    body = json.dumps(_rows(huge)).encode()
    assert len(body) > 6_000_000
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post(
            "/models/churn/labels", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text[:300]
        answer = r.json()
        assert len(r.content) < 6_000
        assert (answer["received"], answer["stored"], answer["unknown_count"]) == (60, 0, 60)
        assert len(answer["unknown"]) == 50
        assert all(len(p) <= 64 for p in answer["unknown"])
        assert answer["unknown"][0].startswith("00xxx")

        # a bad label quoting 100 KB of client text answers a short error
        bad = c.post(
            "/models/churn/labels",
            json=[{"prediction_id": "y" * 100_000, "label": "z" * 100_000}],
        )
        assert bad.status_code == 400
        assert len(bad.content) < 1_200, len(bad.content)
    rows = _label_writes(ws)[before:]
    assert len(rows) == 1
    after = rows[0].after
    assert len(json.dumps(after)) < 2_000
    assert (after["received"], after["stored"], after["unknown"]) == (60, 0, 60)
    assert len(after["unknown_ids"]) == 20
    assert all(len(p) <= 64 for p in after["unknown_ids"])


def test_an_error_answer_stops_at_a_thousand_characters() -> None:
    response = asyncio.run(_ownloop_error(None, InvalidInputError("x" * 5_000)))  # type: ignore[arg-type]
    message = json.loads(bytes(response.body))["error"]
    assert message == "x" * 1_000 + "… (truncated)"
    short = asyncio.run(_ownloop_error(None, InvalidInputError("short")))  # type: ignore[arg-type]
    assert json.loads(bytes(short.body))["error"] == "short"


# -- a post reads only the label files that can hold its ids ---------------------------------


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every Parquet file the log reader opens, in order (the real reader still reads it)."""
    seen: list[Path] = []
    real = predlog._read_segment

    def counting(path: Path, *args: Any, **kwargs: Any) -> pa.Table:
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(predlog, "_read_segment", counting)
    return seen


def test_a_label_post_opens_only_label_files_that_can_hold_its_ids(
    small: Workspace, opened: list[Path]
) -> None:
    ws = small
    root = ws.config.predictions_dir
    posts = []
    for _ in range(12):
        ids = new_ids(2)
        _log(ws, ids)
        posts.append(ids)
        ownloop.record_labels("churn", _rows(ids), workspace=ws)
    label_dir = root / "churn" / "labels"
    assert len(list(label_dir.rglob("*.parquet"))) == 12

    fresh = new_ids(3)
    _log(ws, fresh)
    opened.clear()
    report = ownloop.record_labels("churn", _rows(fresh), workspace=ws)
    assert (report.stored, report.replaced) == (3, 0)
    assert [p for p in opened if label_dir in p.parents] == []
    # and of the 13 prediction segments, only the one holding these ids
    assert len([p for p in opened if label_dir not in p.parents]) == 1

    # relabelling opens the files that can hold those ids, and still counts them as replaced
    opened.clear()
    report = ownloop.record_labels("churn", _rows([posts[4][0], posts[9][1]]), workspace=ws)
    assert (report.stored, report.replaced) == (2, 2)
    assert 2 <= len([p for p in opened if label_dir in p.parents]) <= 4


def test_label_files_written_before_their_names_carried_id_times_are_still_read(
    small: Workspace,
) -> None:
    ws = small
    root = ws.config.predictions_dir
    ids = new_ids(2)
    _log(ws, ids)
    ownloop.record_labels("churn", _rows(ids[:1]), workspace=ws)
    (written,) = list((root / "churn" / "labels").rglob("*.parquet"))
    old_name = "-".join(written.name.split("-")[:2]) + ".parquet"  # as earlier releases named it
    written.rename(written.with_name(old_name))
    report = ownloop.record_labels("churn", _rows(ids), workspace=ws)
    assert (report.stored, report.replaced) == (2, 1)
