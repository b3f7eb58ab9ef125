"""The dashboard's routes as a browser calls them: the Host check, the caller (a token, the
session cookie or the local user), the form's Origin and CSRF token, the same access check as the
API, then the page; errors are HTML pages and every answer carries the browser headers."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from ownloop.access import Role, required_role
from ownloop.errors import (
    AuthenticationError,
    InvalidInputError,
    OwnloopError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from ownloop.server import _decode
from ownloop.server._auth import (
    ANONYMOUS,
    CSRF_COOKIE,
    REALM,
    UI_HEADERS,
    allowed_host,
    host_name,
    presented_secret,
    same_origin,
)
from ownloop.server._decode import bounded
from ownloop.tokens import Session
from ownloop.ui import SESSION_COOKIE, UiState

if TYPE_CHECKING:
    from ownloop.server._app import RouteSpec, _Server

__all__ = ["Pages", "browser_headers", "ui_path"]

log = logging.getLogger("ownloop.server")
Handler = Callable[[Request], Awaitable[Response]]

# A dashboard form (a note, a reason, a token) is never larger than this.
_FORM_BYTES = 16 * 1024
_CSRF = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


class Pages:
    """The guard of every dashboard route of one server."""

    def __init__(self, server: _Server) -> None:
        self.server = server

    def endpoint(self, spec: RouteSpec, handler: Handler) -> Handler:
        """A dashboard route's endpoint: the page guards around the same caller and access
        checks as the API; errors are HTML pages; every answer carries the browser headers."""

        async def endpoint(request: Request) -> Response:
            try:
                try:
                    response = await self._checked(request, spec, handler)
                except AuthenticationError as exc:
                    actor = getattr(request.state, "actor", ANONYMOUS)
                    response = self.server.dashboard.error(
                        request, exc.http_status, str(exc), actor
                    )
                    response.headers["WWW-Authenticate"] = REALM
                except OwnloopError as exc:
                    actor = getattr(request.state, "actor", ANONYMOUS)  # the page names them
                    message = bounded(_decode.printable(str(exc)))
                    response = self.server.dashboard.error(request, exc.http_status, message, actor)
            except Exception:  # the HTTP boundary: a bug becomes a logged 500 page
                response = self._internal(request)
            static = spec.handler == "static" and response.status_code == 200
            return browser_headers(response, static=static)

        endpoint.__name__ = spec.handler
        return endpoint

    def _internal(self, request: Request) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        message = "internal server error; the server log has the details"
        try:
            return self.server.dashboard.error(request, 500, message, ANONYMOUS)
        except Exception:  # the error page itself failed: plain text, still no traceback
            return PlainTextResponse(message, status_code=500)

    async def _checked(self, request: Request, spec: RouteSpec, handler: Handler) -> Response:
        """Host, caller (token, session cookie, local user), CSRF and Origin, access, handler."""
        host = request.headers.get("host", "")
        if not self.server.auth and not allowed_host(host, self.server.config.allowed_hosts):
            raise PermissionDeniedError(
                f"this dashboard answers only loopback host names, not "
                f"'{_decode.printable(host_name(host))[:64]}'; to reach it by that name add it "
                "to OWNLOOP_ALLOWED_HOSTS (comma-separated) or serve with auth on"
            )
        session: Session | None = None
        secret = presented_secret(request.headers.getlist("authorization"))
        if secret is not None:
            actor = await run_in_threadpool(self.server.ws.tokens.verify, secret)
        else:
            key = request.cookies.get(SESSION_COOKIE)
            if key:
                with suppress(AuthenticationError):  # a stale cookie is no session
                    session = await run_in_threadpool(self.server.ws.tokens.session, key)
            if session is not None:
                actor = session.actor
            elif not self.server.auth:
                actor = self.server.ws.acting.default
            elif required_role(spec.action) is Role.ANYONE:
                actor = ANONYMOUS
            elif request.method == "GET":
                query = request.url.query
                here = request.url.path + (f"?{query}" if query else "")
                return RedirectResponse(f"/ui/login?next={quote(here, safe='')}", status_code=303)
            else:
                raise AuthenticationError(
                    f"{request.url.path} needs a signed-in browser; sign in at /ui/login"
                )
        request.state.actor = actor
        new_csrf: str | None = None
        if session is not None:
            csrf = session.csrf
        else:
            csrf = request.cookies.get(CSRF_COOKIE, "")
            if not _CSRF.fullmatch(csrf):
                csrf = new_csrf = secrets.token_urlsafe(32)
        form: dict[str, str] = {}
        if request.method == "POST":
            form = await self._form(request)
            origin_ok = same_origin(
                request.headers.get("origin"),
                request.headers.get("referer"),
                request.url.scheme,
                host,
            )
            if not origin_ok:
                raise PermissionDeniedError(
                    "this form was not sent from a page of this server (its Origin or Referer "
                    "differs); submit it from the dashboard itself"
                )
            if new_csrf is not None or not hmac.compare_digest(
                form.get("csrf", "").encode(), csrf.encode()
            ):
                raise PermissionDeniedError(
                    "the form's CSRF token is missing or does not match this browser's; "
                    "reload the page and submit the form again"
                )
        request.state.ui = UiState(session=session, csrf=csrf, form=form)
        with self.server.ws.acting_as(actor):
            name = request.path_params.get("name")
            owner = await self.server.owner(name, spec.action)
            self.server.ws.acting.check(spec.action, owner, target=name)
            try:
                response = await handler(request)
            except OwnloopError:
                raise
            except Exception:  # the HTTP boundary: a bug becomes a logged 500 page
                return self._internal(request)
        if new_csrf is not None:
            response.set_cookie(
                CSRF_COOKIE,
                new_csrf,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="strict",
            )
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        """A dashboard form (``application/x-www-form-urlencoded``, at most ``_FORM_BYTES``):
        its fields, the first value of each; any other body is no form at all."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return {}  # not a dashboard form: no CSRF token, so refused as forged
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > _FORM_BYTES:
                raise PayloadTooLargeError(
                    f"a dashboard form is at most {_FORM_BYTES} bytes; shorten the note"
                )
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace")
        try:
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=20)
        except ValueError as exc:
            raise InvalidInputError(
                f"the form has too many fields ({exc}); submit it again from the dashboard"
            ) from None
        form: dict[str, str] = {}
        for k, v in pairs:
            form.setdefault(k, _decode.printable(v))
        return form


def browser_headers(response: Response, *, static: bool) -> Response:
    """The headers every dashboard answer carries (CSP and friends); pages are never cached."""
    response.headers.update(UI_HEADERS)
    response.headers["Cache-Control"] = "no-cache" if static else "no-store"
    return response


def ui_path(path: str) -> bool:
    return path == "/" or path.startswith("/ui/")
