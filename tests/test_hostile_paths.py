"""Hostile names and paths from a client: refused with 400 (HTTP) or InvalidInputError (Python)
before any file is touched; links that leave the ownloop home are refused, not followed; model
files that would read other files or run code are refused (or, for an opted-in pickle, shown)."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest

import ownloop
from ownloop import Config, Workspace
from ownloop.errors import IntegrityError, InvalidInputError, UnsafeFormatError
from ownloop.formats import load_model
from ownloop.predlog import list_segments, read_labels
from ownloop.server import ROUTES
from ownloop.ui import UI_ROUTES
from tests.servers import running

# As they appear on the wire: each would reach a different file, or a file outside the home,
# if a name were ever joined to a path unchecked.
HOSTILE = [
    "..",
    ".",
    "..%2f..%2fetc",
    "..%2F..%2Fetc",
    "%2e%2e",
    "%252e%252e%252fetc",  # double-encoded
    "%2fetc%2fpasswd",  # absolute once decoded
    "a\\..\\b",
    "a%5cb",
    "churn;jsessionid=1",
    "churn%3bx",
    "churn%00",
    "churn%0a",  # trailing newline
    "churn%0d%0a",
    "churn%20",
    "x" * 300,  # over-long
    "%C3%A9t%C3%A9",  # not ASCII
]


def _routes_with(param: str) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in ROUTES if "{" + param + "}" in r.path]


def _pages_with(param: str) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in UI_ROUTES if "{" + param + "}" in r.path]


def _page_target(path: str, **values: str) -> str:
    plain = {"name": "churn", "eval_id": "1", "alert_id": "1", "team": "risk", "asset": "app.css"}
    plain.update(values)
    for key, value in plain.items():
        path = path.replace("{" + key + "}", value)
    return path


def send_raw(
    address: tuple[str, int], method: str, target: str, host: str = "t"
) -> tuple[int, bytes]:
    """One request with exactly this target on the wire (no client normalises it); status, body."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode("latin-1")
        )
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tuple[str, int], Path]]:
    home = tmp_path_factory.mktemp("hostile") / "home"
    with Workspace(Config(home=home, user="tester")) as ws, running(ws) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield (parts.hostname, parts.port), home


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_model_names_are_400_on_every_route(
    served: tuple[tuple[str, int], Path], name: str
) -> None:
    address, home = served
    before = tree(home)
    for method, path in _routes_with("name"):
        target = path.replace("{name}", name).replace("{version}", "1")
        status, body = send_raw(address, method, target)
        assert status == 400, (method, target, body)
        error = orjson.loads(body)
        assert set(error) == {"error", "code"} and error["code"] == "invalid_input", error
        assert "not allowed" in error["error"] or "characters" in error["error"], error
    assert tree(home) == before  # nothing was created, not even a folder


@pytest.mark.parametrize("version", ["..", "1%2f..", "1;x", "1.5", "-1", "9" * 40, "1%0a"])
def test_hostile_versions_are_400_on_every_route(
    served: tuple[tuple[str, int], Path], version: str
) -> None:
    address, _ = served
    for method, path in _routes_with("version"):
        status, body = send_raw(
            address, method, path.replace("{name}", "churn").replace("{version}", version)
        )
        assert status == 400, (method, path, version, body)
        assert orjson.loads(body)["code"] == "invalid_input"


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_and_teams_are_400_on_every_dashboard_route(
    served: tuple[tuple[str, int], Path], name: str
) -> None:
    address, home = served
    before = tree(home)
    routes = [(m, p, "name") for m, p in _pages_with("name")]
    routes += [(m, p, "team") for m, p in _pages_with("team")]
    assert len(routes) == 7
    for method, path, param in routes:
        target = _page_target(path, **{param: name})
        status, body = send_raw(address, method, target)
        assert status == 400, (method, target, body)
        assert orjson.loads(body)["code"] == "invalid_input"
    assert tree(home) == before


@pytest.mark.parametrize("number", ["..", "1%2f..", "1;x", "1.5", "-1", "9" * 40, "1%0a", "x"])
def test_hostile_evaluation_and_alert_ids_are_400(
    served: tuple[tuple[str, int], Path], number: str
) -> None:
    address, _ = served
    routes = [(m, p, "eval_id") for m, p in _pages_with("eval_id")]
    routes += [(m, p, "alert_id") for m, p in _pages_with("alert_id")]
    assert len(routes) == 3
    for method, path, param in routes:
        target = _page_target(path, **{param: number})
        status, body = send_raw(address, method, target)
        assert status == 400, (method, target, body)
        error = orjson.loads(body)
        assert error["code"] == "invalid_input", error
        assert "not a number" in error["error"] or "not allowed" in error["error"], error


@pytest.mark.parametrize("asset", ["..%2f..%2fpyproject.toml", "%2e%2e", "app.css%00", "x.css"])
def test_only_the_dashboard_files_are_served_as_static(
    served: tuple[tuple[str, int], Path], asset: str
) -> None:
    status, body = send_raw(served[0], "GET", f"/ui/static/{asset}", host="127.0.0.1")
    assert status in (400, 404), body
    assert b"[project]" not in body and b"BEGIN layout" not in body


@pytest.mark.parametrize(
    "target", ["/v2/../v2/health/live", "/v2//health/live", "/%2e%2e/x", "/v2/health/live;x"]
)
def test_hostile_paths_outside_the_named_routes_are_400(
    served: tuple[tuple[str, int], Path], target: str
) -> None:
    status, body = send_raw(served[0], "GET", target)
    assert status == 400, body


def test_a_plain_name_still_reaches_the_route(served: tuple[tuple[str, int], Path]) -> None:
    status, body = send_raw(served[0], "GET", "/v2/models/churn.v2_a-1")
    assert status == 404 and b"is not served" in body, body


def test_the_app_itself_checks_paths_however_it_is_served(tmp_path: Path) -> None:
    """The check is part of the app (create_app), not only of ``ownloop serve``'s uvicorn setup."""
    from ownloop.server import create_app

    with Workspace(Config(home=tmp_path / "home", user="tester")) as ws:
        app = create_app(ws, log_predictions=False)
        transport = httpx.ASGITransport(app=app)

        async def get(path: str) -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                return await c.get(path)

        hostile = asyncio.run(get("/v2/models/a%2f..%2fb"))
        plain = asyncio.run(get("/v2/models/churn"))
    assert hostile.status_code == 400 and hostile.json()["code"] == "invalid_input"
    assert plain.status_code == 404  # a valid name reaches the route: it is not served


@pytest.fixture
def home_ws(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace on SQLite: names and links are checked before any database is asked."""
    with Workspace(Config(home=tmp_path / "home", user="tester")) as ws:
        ws.registry.add_team("risk", members=["tester"])
        yield ws


DECODED = ["..", "../etc", "/etc/passwd", "a\\b", "churn;x", "churn\x00", "churn\n", "x" * 300, ""]


@pytest.mark.parametrize("name", DECODED, ids=range(len(DECODED)))
def test_hostile_names_are_refused_by_the_python_api(home_ws: Workspace, name: str) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: home_ws.registry.get_model(name),
        lambda: home_ws.registry.list_versions(name),
        lambda: home_ws.registry.get_version(f"{name}@1"),
        lambda: ownloop.record_labels(
            name, [{"prediction_id": "p", "label": 1}], workspace=home_ws
        ),
        lambda: home_ws.monitor.run(name),
        lambda: list_segments(home_ws.config.predictions_dir, name),
        lambda: read_labels(home_ws.config.predictions_dir, name),
    ]
    before = tree(home_ws.config.home)
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert tree(home_ws.config.home) == before


# -- links out of the home ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_linked_model_folder_that_leaves_the_home_is_refused(
    home_ws: Workspace,
    tmp_path: Path,
    churn_model: Any,
    churn_data: pd.DataFrame,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    predictions = home_ws.config.predictions_dir
    predictions.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, predictions / "churn")
    with pytest.raises(IntegrityError, match="leads outside .* symbolic link"):
        list_segments(predictions, "churn")
    home_ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    with pytest.raises(IntegrityError, match="symbolic link"):
        ownloop.record_labels("churn", [{"prediction_id": "p", "label": 1}], workspace=home_ws)
    assert list(outside.iterdir()) == []


def test_a_linked_segment_that_leaves_the_home_is_refused(
    home_ws: Workspace, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.parquet"
    secret.write_bytes(b"PAR1")
    day = home_ws.config.predictions_dir / "churn" / "date=2026-01-01"
    day.mkdir(parents=True)
    os.symlink(secret, day / "0000000000000001-abcd.parquet")
    with pytest.raises(IntegrityError, match="symbolic link"):
        list_segments(home_ws.config.predictions_dir, "churn")


def test_a_linked_artifact_that_leaves_the_home_is_refused(
    home_ws: Workspace,
    tmp_path: Path,
    churn_model: Any,
    churn_data: pd.DataFrame,
) -> None:
    v = home_ws.registry.register(
        churn_model, name="churn", owner="risk", reference=churn_data, target="churned"
    )
    stored = home_ws.artifacts.path(v.artifact_digest)
    copy = tmp_path / "copy"
    copy.write_bytes(stored.read_bytes())
    stored.unlink()
    os.symlink(copy, stored)
    with pytest.raises(IntegrityError, match="symbolic link"):
        home_ws.registry.load(v.ref)


@pytest.mark.parametrize("name", ["artifacts", "predictions", "ownloop.db"])
def test_a_home_folder_linked_outside_the_home_is_refused(tmp_path: Path, name: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / f"elsewhere-{name}"
    target.mkdir()
    os.symlink(target, home / name)
    with pytest.raises(IntegrityError, match=f"{name} leads outside"):
        Config(home=home).ensure_home()


# -- hostile model files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def numeric() -> tuple[pd.DataFrame, Any]:
    """A small network: its ONNX graph keeps weights in initializers, which can live outside."""
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = (X["a"] + 0.5 * X["b"] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence does not matter here
        model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=50, random_state=0).fit(X, y)
    return X.assign(y=y), model


def _onnx_with_external_data(folder: Path, model: Any, location: str) -> Path:
    """A real ONNX model whose weights are in an external file, then pointed at ``location``."""
    import onnx
    from skl2onnx import to_onnx

    graph = to_onnx(model, np.zeros((1, 2), np.float32))
    for tensor in graph.graph.initializer:  # as raw bytes, which onnx can move to a file
        tensor.CopyFrom(
            onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name)
        )
    path = folder / "m.onnx"
    onnx.save_model(
        graph, str(path), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    saved = onnx.load(str(path), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(saved):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(saved, str(path))
    return path


def test_onnx_external_data_beside_the_model_is_checked_and_included(
    home_ws: Workspace, tmp_path: Path, numeric: tuple[pd.DataFrame, Any]
) -> None:
    data, model = numeric
    path = _onnx_with_external_data(tmp_path, model, "w.bin")
    v = home_ws.registry.register(name="lr", path=path, owner="risk", reference=data, target="y")
    (tmp_path / "w.bin").unlink()  # the stored model is one self-contained file
    X = data[["a", "b"]].head(20)
    loaded = home_ws.registry.load(v.ref)
    assert np.allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-5)


@pytest.mark.parametrize("location", ["../w.bin", "sub/../../w.bin", "/etc/hostname", "link.bin"])
def test_onnx_external_data_outside_the_folder_or_through_a_link_is_refused(
    home_ws: Workspace, tmp_path: Path, numeric: tuple[pd.DataFrame, Any], location: str
) -> None:
    data, model = numeric
    folder = tmp_path / "model"
    folder.mkdir()
    path = _onnx_with_external_data(folder, model, location)
    (tmp_path / "w.bin").write_bytes((folder / "w.bin").read_bytes())  # the data, one level up
    os.symlink(tmp_path / "w.bin", folder / "link.bin")
    with pytest.raises(InvalidInputError, match="outside the model's folder|symbolic link"):
        home_ws.registry.register(name="lr", path=path, owner="risk", reference=data, target="y")
    assert home_ws.registry.list_models() == []


def test_onnx_bytes_that_point_at_external_data_are_never_loaded(
    tmp_path: Path, numeric: tuple[pd.DataFrame, Any]
) -> None:
    path = _onnx_with_external_data(tmp_path, numeric[1], "w.bin")
    with pytest.raises(InvalidInputError, match="points at external data"):
        load_model(path.read_bytes(), "onnx")


class Sneaky:
    """A type nobody trusted; building it would leave a mark."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("ran")


def test_a_skops_file_with_an_untrusted_type_is_refused_without_building_it(
    home_ws: Workspace, tmp_path: Path
) -> None:
    import skops.io as sio

    marker = tmp_path / "ran"
    (tmp_path / "m.skops").write_bytes(sio.dumps({"model": Sneaky(str(marker))}))
    with pytest.raises(UnsafeFormatError, match=r"types nobody has trusted: .*Sneaky"):
        home_ws.registry.register(name="s", path=tmp_path / "m.skops", owner="risk")
    with pytest.raises(UnsafeFormatError, match="Sneaky"):
        load_model((tmp_path / "m.skops").read_bytes(), "skops")
    assert not marker.exists()


def test_an_opted_in_pickle_is_shown_on_every_load_and_in_served_metadata(
    home_ws: Workspace,
    tmp_path: Path,
    numeric: tuple[pd.DataFrame, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, model = numeric
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    v = home_ws.registry.register(
        name="lr",
        path=tmp_path / "m.pkl",
        owner="risk",
        reference=data,
        target="y",
        allow_unsafe_pickle=True,
    )
    audit = home_ws.registry.audit_log("lr")
    assert any(a.action == "version.register" and a.after["unsafe_pickle"] for a in audit)
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ownloop.formats"):
            home_ws.registry.load(v.ref)
        assert "lr@1, a pickle file registered with allow_unsafe_pickle" in caplog.text
    home_ws.deploy.set_production("lr", v.version, force=True, reason="test")
    with running(home_ws) as url:
        meta = httpx.get(f"{url}/v2/models/lr").json()
    assert meta["parameters"]["unsafe_pickle"] is True
