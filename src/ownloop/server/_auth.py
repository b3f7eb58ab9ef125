"""Who is calling: a bearer token, the local user (auth off), or nobody; and when serving is safe.

Auth is on when the configuration asks for it (``OWNLOOP_AUTH=1``, ``ownloop serve --auth``) and
always off loopback. Without auth, a request without a token acts as the workspace's own actor
(the local admin); with auth, it is ``ANONYMOUS`` and may only read health (and infer, with
``public_inference``). A presented token is always verified, so a bad one is a 401 either way.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import orjson
from starlette.responses import Response

from ownloop.access import Actor, Role, required_role
from ownloop.config import Config
from ownloop.errors import AuthenticationError, InvalidInputError
from ownloop.workspace import Workspace

__all__ = [
    "ANONYMOUS",
    "CSRF_COOKIE",
    "UI_HEADERS",
    "allowed_host",
    "anonymous",
    "check_exposure",
    "loopback",
    "presented_secret",
    "public",
    "same_origin",
    "unauthenticated",
]

ANONYMOUS = Actor.anonymous()
REALM = 'Bearer realm="ownloop"'


def loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(ws: Workspace, host: str) -> None:
    """Refuse to serve off loopback before any token exists: everything but health needs one."""
    if loopback(host) or ws.tokens.any_active():
        return
    raise InvalidInputError(
        f"refusing to serve on {host}: off loopback every route but health needs a token, and "
        "no active token exists; create one with 'ownloop token create --team TEAM "
        "--role owner', or serve on 127.0.0.1"
    )


def presented_secret(authorization: list[str]) -> str | None:
    """The secret of the ``Authorization: Bearer`` header, None when there is no header."""
    if not authorization:
        return None
    if len(authorization) > 1:  # a proxy might read the other one: refuse the ambiguity
        raise AuthenticationError(
            f"{len(authorization)} Authorization headers were sent; send exactly one"
        )
    scheme, _, secret = authorization[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationError(
            "the Authorization header must be 'Bearer <token>'; create a token with "
            "'ownloop token create'"
        )
    return secret.strip()


def anonymous(config: Config, action: str) -> Actor:
    """The actor of a request without a token on a server with auth on: anonymous, allowed
    health (and inference, with ``public_inference``); anything else is a 401."""
    if required_role(action) is Role.ANYONE or public(config, action):
        return ANONYMOUS
    raise AuthenticationError(
        f"this server requires a token for {action}: send 'Authorization: Bearer <token>' "
        "(an admin creates one with 'ownloop token create')"
    )


def public(config: Config, action: str) -> bool:
    """Whether ``action`` is open to anyone on this server (inference, when told so)."""
    return action == "model.predict" and config.public_inference


def unauthenticated(exc: AuthenticationError, *, presented: bool) -> Response:
    """A 401 in the one error shape, saying how to authenticate (RFC 6750); never the token."""
    challenge = REALM + (', error="invalid_token"' if presented else "")
    return Response(
        orjson.dumps(exc.to_dict()),
        status_code=exc.http_status,
        media_type="application/json",
        headers={"WWW-Authenticate": challenge},
    )


# -- the dashboard's browser guards ------------------------------------------------------------

CSRF_COOKIE = "ownloop_csrf"  # the double-submit form token when no session exists (auth off)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)
UI_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if ":" in header else header


def allowed_host(header: str, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header names this machine (or a name the configuration allows): a
    page on another name reached through DNS rebinding must not read or act on the dashboard."""
    host = host_name(header)
    return bool(host) and (loopback(host) or host in allowed)


def same_origin(origin: str | None, referer: str | None, scheme: str, host: str) -> bool:
    """Whether a POST comes from a page of this server: its ``Origin`` (or, without one, its
    ``Referer``) has the request's own scheme and host."""
    source = origin if origin else referer
    if not source or not host:
        return False
    parts = urlsplit(source)
    return parts.scheme == scheme and parts.netloc.lower() == host.strip().lower()
