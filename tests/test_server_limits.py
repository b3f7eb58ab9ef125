"""Limits on what one client can hold of ``ownloop serve``: head size and header count (431), the
time to send a head (slowloris), keep-alive idle time, and open connections (503).

Each test runs a real uvicorn server on loopback and talks raw bytes over a socket.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from ownloop import Config, Workspace
from tests.servers import running

LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n"


@contextmanager
def server(tmp_path: Path, **limits: Any) -> Iterator[tuple[str, int]]:
    """A real server with these limits; yields its (host, port)."""
    config = replace(Config(home=tmp_path / "home", user="tester"), **limits)
    with Workspace(config) as ws, running(ws, log_predictions=False) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=30)
    return sock


def read_until_closed(sock: socket.socket, limit_s: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection (at most ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    got = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"the server kept the connection open for {limit_s} s; got {got[:200]!r}")


def read_response(sock: socket.socket) -> bytes:
    """One response head and its (small, Content-Length) body."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {got!r}"
        got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_huge_header_is_refused_not_answered(tmp_path: Path) -> None:
    with server(tmp_path) as address, connect(address) as sock:
        sock.sendall(LIVE + b"X-Big: ")
        try:
            for _ in range(50):  # 50 MB, in 1 MB pieces, unless the server hangs up first
                sock.sendall(b"a" * (1 << 20))
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_until_closed(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_a_head_over_the_byte_limit_is_answered_431(tmp_path: Path) -> None:
    with server(tmp_path, max_header_bytes=2048) as address, connect(address) as sock:
        sock.sendall(LIVE + b"X-Big: " + b"a" * 3000 + b"\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    error = orjson.loads(answer.partition(b"\r\n\r\n")[2])
    assert error["code"] == "request_head_too_large"
    assert "the limits are 2,048 bytes and 100 fields" in error["error"]


def test_too_many_header_fields_are_answered_431(tmp_path: Path) -> None:
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(30))
    with server(tmp_path, max_headers=20) as address:
        with connect(address) as sock:
            sock.sendall(LIVE + many + b"\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b"31 header fields" in answer and b"20 fields" in answer
        with connect(address) as sock:  # at the limit is fine
            sock.sendall(LIVE + many[: many.index(b"X-19")] + b"\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Slow: 1",  # slowloris: a head never ended
    ],
    ids=["silent", "partial-head"],
)
def test_a_client_that_does_not_finish_its_head_is_closed(tmp_path: Path, sent: bytes) -> None:
    with (
        server(tmp_path, header_timeout_s=0.5, keep_alive_s=600.0) as address,
        connect(address) as sock,
    ):
        sock.sendall(sent)
        assert read_until_closed(sock) == b""


def test_the_head_deadline_applies_again_on_a_kept_alive_connection(tmp_path: Path) -> None:
    with (
        server(tmp_path, header_timeout_s=0.5, keep_alive_s=600.0) as address,
        connect(address) as sock,
    ):
        sock.sendall(LIVE + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost")
        assert read_until_closed(sock) == b""


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    with (
        server(tmp_path, keep_alive_s=0.5, header_timeout_s=600.0) as address,
        connect(address) as sock,
    ):
        sock.sendall(LIVE + b"\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        assert read_until_closed(sock) == b""


def test_connections_over_the_cap_are_answered_503(tmp_path: Path) -> None:
    with server(tmp_path, max_connections=2) as address, ExitStack() as stack:
        held = [stack.enter_context(connect(address)) for _ in range(2)]
        held[0].sendall(LIVE + b"\r\n")
        assert read_response(held[0]).startswith(b"HTTP/1.1 200 ")  # two are served
        extra = stack.enter_context(connect(address))
        extra.sendall(LIVE + b"\r\n")
        assert read_until_closed(extra).startswith(b"HTTP/1.1 503 ")
        held[1].sendall(LIVE + b"\r\n")
        assert read_response(held[1]).startswith(b"HTTP/1.1 200 ")
