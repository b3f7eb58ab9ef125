"""The dashboard's routes and handlers: who may open each page is declared once, in ``UI_ROUTES``.

The server wraps every handler in the same guard as its API routes (the caller, the access check,
the caller acting for the whole request); a browser's caller comes from its session cookie, which
only these routes honour.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ownloop.config import Config
from ownloop.errors import NotFoundError
from ownloop.ui import _eval_page, _model_page, _models_page, _runs_page, _team_page
from ownloop.ui._view import View
from ownloop.workspace import Workspace

__all__ = ["UI_ROUTES", "Dashboard", "UiRoute"]

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


class Dashboard:
    """The dashboard's handlers over one workspace; the server's guard sets the caller."""

    def __init__(self, ws: Workspace, config: Config) -> None:
        self.ws = ws
        self.config = config

    def handler(self, route: UiRoute) -> Handler:
        fn: Handler = getattr(self, route.handler)
        return fn

    def _view(self, request: Request) -> View:
        return View(
            ws=self.ws,
            actor=self.ws.actor,
            query=dict(request.query_params),
            csrf="",
            now=self.ws.clock.now(),
            path=request.url.path,
        )

    async def _page(self, request: Request, fn: Callable[..., str], *args: object) -> Response:
        view = self._view(request)
        html = await run_in_threadpool(fn, view, *args)
        return HTMLResponse(html)

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

    # -- sessions and actions (to be built) -------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        raise NotImplementedError

    async def login(self, request: Request) -> Response:
        raise NotImplementedError

    async def logout(self, request: Request) -> Response:
        raise NotImplementedError

    async def ack(self, request: Request) -> Response:
        raise NotImplementedError

    async def resolve(self, request: Request) -> Response:
        raise NotImplementedError

    async def promote(self, request: Request) -> Response:
        raise NotImplementedError

    async def abort(self, request: Request) -> Response:
        raise NotImplementedError

    async def static(self, request: Request) -> Response:
        asset = request.path_params["asset"]
        if asset not in _ASSETS:
            raise NotFoundError(
                f"no dashboard file '{asset[:64]}'; the files are {sorted(_ASSETS)}"
            )
        body = resources.files("ownloop.ui").joinpath("static", asset).read_bytes()
        return Response(body, media_type=_ASSETS[asset])
