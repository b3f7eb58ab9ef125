"""The dashboard's routes and handlers: who may open each page is declared once, in ``UI_ROUTES``.

The server wraps every handler in the same guard as its API routes (the caller, the access check,
the caller acting for the whole request); a browser's caller comes from its session cookie, which
only these routes honour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ownloop.access import Actor
from ownloop.config import Config
from ownloop.errors import AuthenticationError, InvalidInputError, NotFoundError
from ownloop.tokens import Session
from ownloop.ui import _eval_page, _model_page, _models_page, _runs_page, _team_page
from ownloop.ui._view import View, render
from ownloop.workspace import Workspace

__all__ = ["SESSION_COOKIE", "UI_ROUTES", "Dashboard", "UiRoute", "UiState", "local_next"]

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class UiRoute:
    """One dashboard route: method, path, the ``Dashboard`` method, the access action."""

    method: str
    path: str
    handler: str
    action: str
    summary: str


UI_ROUTES: tuple[UiRoute, ...] = (
    UiRoute("GET", "/", "models", "ui.read", "Dashboard: every model"),
    UiRoute("GET", "/ui/models/{name}", "model", "ui.read", "Dashboard: one model"),
    UiRoute("GET", "/ui/models/{name}/drift", "feature", "ui.read", "Dashboard: one feature"),
    UiRoute("GET", "/ui/evaluations/{eval_id}", "evaluation", "ui.read", "Dashboard: a gate run"),
    UiRoute("GET", "/ui/teams/{team}", "team", "ui.read", "Dashboard: a team's scorecard"),
    UiRoute("GET", "/ui/runs", "runs", "ui.read", "Dashboard: stored monitor runs"),
    UiRoute("GET", "/ui/login", "login_form", "ui.login", "Dashboard: sign in with a token"),
    UiRoute("POST", "/ui/login", "login", "ui.login", "Dashboard: open a session"),
    UiRoute("POST", "/ui/logout", "logout", "ui.login", "Dashboard: close the session"),
    UiRoute(
        "POST",
        "/ui/models/{name}/alerts/{alert_id}/ack",
        "ack",
        "alert.ack",
        "Dashboard: acknowledge an alert",
    ),
    UiRoute(
        "POST",
        "/ui/models/{name}/alerts/{alert_id}/resolve",
        "resolve",
        "alert.resolve",
        "Dashboard: resolve an alert",
    ),
    UiRoute("POST", "/ui/models/{name}/promote", "promote", "deploy.promote", "Dashboard: promote"),
    UiRoute("POST", "/ui/models/{name}/abort", "abort", "deploy.abort", "Dashboard: abort"),
    UiRoute("GET", "/ui/static/{asset}", "static", "ui.login", "Dashboard: stylesheet and script"),
)

_ASSETS = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
SESSION_COOKIE = "ownloop_session"
_DONE = {"ack": "acknowledged", "resolve": "resolved", "promote": "promoted", "abort": "aborted"}


@dataclass(frozen=True)
class UiState:
    """What the server's guard learnt about a dashboard request: the browser's session (None
    without one), the form token its pages carry, and the POST form once checked."""

    session: Session | None
    csrf: str
    form: Mapping[str, str] = field(default_factory=dict)


def _state(request: Request) -> UiState:
    state = getattr(request.state, "ui", None)
    return state if isinstance(state, UiState) else UiState(session=None, csrf="")


class Dashboard:
    """The dashboard's handlers over one workspace; the server's guard sets the caller."""

    def __init__(self, ws: Workspace, config: Config) -> None:
        self.ws = ws
        self.config = config

    def handler(self, route: UiRoute) -> Handler:
        fn: Handler = getattr(self, route.handler)
        return fn

    def _view(self, request: Request, actor: Actor | None = None) -> View:
        state = _state(request)
        return View(
            ws=self.ws,
            actor=self.ws.actor if actor is None else actor,
            query=dict(request.query_params),
            csrf=state.csrf,
            now=self.ws.clock.now(),
            path=request.url.path,
            extra={"session": state.session is not None},
        )

    async def _page(self, request: Request, fn: Callable[..., str], *args: object) -> Response:
        view = self._view(request)
        html = await run_in_threadpool(fn, view, *args)
        return HTMLResponse(html)

    def error(
        self, request: Request, status: int, message: str, actor: Actor | None = None
    ) -> Response:
        """An HTML error page with ``status`` and ``message`` (never a traceback)."""
        view = self._view(request, actor)
        html = render("error.html", view, status=status, message=message)
        return HTMLResponse(html, status_code=status)

    # -- pages ----------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        return await self._page(request, _models_page.models_page)

    async def model(self, request: Request) -> Response:
        return await self._page(request, _model_page.model_page, request.path_params["name"])

    async def feature(self, request: Request) -> Response:
        return await self._page(request, _model_page.feature_page, request.path_params["name"])

    async def evaluation(self, request: Request) -> Response:
        return await self._page(request, _eval_page.eval_page, int(request.path_params["eval_id"]))

    async def team(self, request: Request) -> Response:
        return await self._page(request, _team_page.team_page, request.path_params["team"])

    async def runs(self, request: Request) -> Response:
        return await self._page(request, _runs_page.runs_page)

    # -- sessions ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, request.query_params.get("next"), None, 200)

    def _login_page(
        self, request: Request, next_: str | None, message: str | None, status: int
    ) -> Response:
        view = self._view(request)
        html = render("login.html", view, next=local_next(next_), message=message)
        return HTMLResponse(html, status_code=status)

    async def login(self, request: Request) -> Response:
        form = _state(request).form
        next_ = local_next(form.get("next"))
        secret = form.get("token", "").strip()
        if not secret:
            return self._login_page(
                request,
                next_,
                "paste a token; an admin creates one with 'ownloop token create'",
                400,
            )
        try:
            opened = await run_in_threadpool(
                self.ws.tokens.open_session, secret, hours=self.config.session_hours
            )
        except AuthenticationError as exc:
            return self._login_page(request, next_, str(exc), 401)
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:  # signing in again replaces this browser's session
            await run_in_threadpool(self.ws.tokens.close_session, previous)
        response = RedirectResponse(next_, status_code=303)
        left = opened.session.expires_at - self.ws.clock.now()
        response.set_cookie(
            SESSION_COOKIE,
            opened.key,
            max_age=max(1, int(left.total_seconds())),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        key = request.cookies.get(SESSION_COOKIE)
        if key:
            await run_in_threadpool(self.ws.tokens.close_session, key)
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    # -- actions ----------------------------------------------------------------------------

    def _own_alert(self, name: str, alert_id: int) -> None:
        alert = self.ws.alerts.get(alert_id)
        if alert.model != name:
            raise NotFoundError(
                f"model '{name}' has no alert {alert_id}; open the alert from its model's page"
            )

    async def ack(self, request: Request) -> Response:
        name, alert_id = request.path_params["name"], int(request.path_params["alert_id"])
        note = _state(request).form.get("note", "").strip() or None

        def act() -> None:
            self._own_alert(name, alert_id)
            self.ws.alerts.ack(alert_id, note)

        await run_in_threadpool(act)
        return _done(name, "ack")

    async def resolve(self, request: Request) -> Response:
        name, alert_id = request.path_params["name"], int(request.path_params["alert_id"])
        note = _state(request).form.get("note", "").strip()
        if not note:
            raise InvalidInputError(
                f"resolving alert {alert_id} needs a note saying what was done; fill in the note"
            )

        def act() -> None:
            self._own_alert(name, alert_id)
            self.ws.alerts.resolve(alert_id, note)

        await run_in_threadpool(act)
        return _done(name, "resolve")

    async def promote(self, request: Request) -> Response:
        name = request.path_params["name"]
        reason = _state(request).form.get("reason", "").strip() or None
        await run_in_threadpool(lambda: self.ws.deploy.promote(name, reason=reason))
        return _done(name, "promote")

    async def abort(self, request: Request) -> Response:
        name = request.path_params["name"]
        reason = _state(request).form.get("reason", "").strip()
        if not reason:
            raise InvalidInputError(
                f"aborting the rollout of '{name}' needs a reason (kept in the audit log); "
                "fill in the reason"
            )
        await run_in_threadpool(lambda: self.ws.deploy.abort(name, reason=reason))
        return _done(name, "abort")

    async def static(self, request: Request) -> Response:
        asset = request.path_params["asset"]
        if asset not in _ASSETS:
            raise NotFoundError(
                f"no dashboard file '{asset[:64]}'; the files are {sorted(_ASSETS)}"
            )
        body = resources.files("ownloop.ui").joinpath("static", asset).read_bytes()
        return Response(body, media_type=_ASSETS[asset], headers={"Cache-Control": "no-cache"})


def _done(name: str, what: str) -> Response:
    return RedirectResponse(
        f"/ui/models/{quote(name, safe='')}?done={_DONE[what]}", status_code=303
    )


def local_next(value: str | None) -> str:
    """A path on this server to go to after signing in; anything else is the first page."""
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        return "/"
    return value
