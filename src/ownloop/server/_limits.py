"""Limits on what a client sends before any handler runs.

The request path: names and versions in it are checked (``..``, encoded or double-encoded
separators, backslashes, ``;`` parameters, NUL, newlines, over-long names) and refused with 400
before routing, so no client text reaches a file path.

uvicorn's h11 protocol with limits on the request head: its size, its header count, its time.

uvicorn already caps a head that arrives in pieces (``h11_max_incomplete_event_size``) but answers
it 400, lets a head that arrives whole be any size, counts no header fields, and gives a client
that never finishes its head all the time it wants (slowloris). Here a head over the size or count
is answered 431 and closed, and a connection whose head is not complete in time is closed.
"""

from __future__ import annotations

import asyncio
import http
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

import h11
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ownloop.errors import InvalidInputError
from ownloop.names import validate_name

__all__ = ["CheckedPaths", "limited_protocol"]

# In the raw path: a separator or a dot written as %XX, a %-escape of %, a backslash, a path
# parameter, a control character, or an empty segment. Ownloop's routes never need any of them.
_HOSTILE = re.compile(rb"%(2[fFeE5]|5[cC]|00|0[aAdD])|[\\;\x00-\x20\x7f]|//")


def _route_patterns(paths: Iterable[str]) -> list[list[str]]:
    return [path.strip("/").split("/") for path in paths if "{" in path]


def _check_path(raw: bytes, patterns: list[list[str]]) -> None:
    """Raise InvalidInputError for a hostile path or a bad name/version in a route's path."""
    shown = raw[:80].decode("ascii", "replace") + ("..." if len(raw) > 80 else "")
    if _HOSTILE.search(raw) or b"/../" in raw + b"/" or b"/./" in raw + b"/":
        raise InvalidInputError(
            f"request path '{shown}' is not allowed: it has a '..' or '.' segment, an encoded "
            "'/', '\\' or '.', '%25', ';', a control character or an empty segment; call the "
            "route with a plain name"
        )
    segments = raw.strip(b"/").split(b"/")
    for pattern in patterns:
        if len(pattern) != len(segments) or any(
            p[0] != "{" and p.encode() != s for p, s in zip(pattern, segments, strict=True)
        ):
            continue
        for p, s in zip(pattern, segments, strict=True):
            text = unquote_to_bytes(s).decode("utf-8", "replace")
            if p in ("{version}", "{eval_id}", "{alert_id}"):
                if not (text.isascii() and text.isdigit() and len(text) <= 18):
                    what = p.strip("{}").replace("_", " ")
                    raise InvalidInputError(
                        f"{what} '{text[:40]}' in the request path is not a number; "
                        "use digits, like /versions/3"
                    )
            elif p in ("{name}", "{team}", "{alias}"):
                validate_name(p.strip("{}").replace("name", "model"), text)


class CheckedPaths:
    """ASGI middleware: every HTTP request path is checked before routing (400 in the one error
    shape). Part of the app itself (``create_app``), so every way of serving it checks paths."""

    def __init__(self, app: ASGIApp, route_paths: Iterable[str]) -> None:
        self.app = app
        self.patterns = _route_patterns(route_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
            try:
                _check_path(raw.partition(b"?")[0], self.patterns)
            except InvalidInputError as exc:
                body = orjson.dumps(exc.to_dict())
                await send(
                    {
                        "type": "http.response.start",
                        "status": exc.http_status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _LimitedConnection(h11.Connection):
    """An h11 server connection that refuses a request head over ``max_bytes`` or ``max_headers``."""

    def __init__(self, max_bytes: int, max_headers: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_bytes)
        self.max_bytes = max_bytes
        self.max_headers = max_headers
        self.refusal: str | None = None  # why a head was refused 431 (None: not by a limit)

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self.refusal = (
                    f"request head longer than {self.max_bytes:,} bytes, the limit "
                    "(OWNLOOP_MAX_HEADER_BYTES); send fewer or shorter headers"
                )
            raise
        if isinstance(event, h11.Request):
            self._check_head(event)
        return event

    def _check_head(self, request: h11.Request) -> None:
        fields = len(request.headers)
        size = len(request.method) + len(request.target) + 12  # " ", " HTTP/1.1\r\n", "\r\n"
        size += sum(len(name) + len(value) + 4 for name, value in request.headers)
        if fields > self.max_headers or size > self.max_bytes:
            self.refusal = (
                f"request head too large ({size:,} bytes, {fields} header fields); the limits "
                f"are {self.max_bytes:,} bytes and {self.max_headers} fields "
                "(OWNLOOP_MAX_HEADER_BYTES, OWNLOOP_MAX_HEADERS); send fewer or shorter headers"
            )
            raise h11.RemoteProtocolError(self.refusal, error_status_hint=431)


class _LimitedH11Protocol(H11Protocol):
    max_bytes = 16 * 1024
    max_headers = 100
    header_timeout_s = 10.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.conn = _LimitedConnection(self.max_bytes, self.max_headers)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # a request head starts arriving (again, on a kept-alive connection): it has a deadline
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete (or refused)
            self._cancel_head_timer()

    def send_400_response(self, msg: str) -> None:
        refusal = self.conn.refusal if isinstance(self.conn, _LimitedConnection) else None
        if refusal is None:
            super().send_400_response(msg)
            return
        self.logger.warning("refused a request: %s", refusal)
        # the one error shape, though no handler ran: the head never reached the app
        body = orjson.dumps({"error": refusal, "code": "request_head_too_large"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        for event in (
            h11.Response(status_code=status, headers=headers, reason=status.phrase.encode()),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closed a connection that sent no complete request head in time")
            self.transport.close()


def limited_protocol(
    max_bytes: int, max_headers: int, header_timeout_s: float
) -> type[H11Protocol]:
    """The h11 protocol class for uvicorn's ``http=``, with these limits on every request head."""
    return type(
        "LimitedH11Protocol",
        (_LimitedH11Protocol,),
        {"max_bytes": max_bytes, "max_headers": max_headers, "header_timeout_s": header_timeout_s},
    )
