"""The one way out: every outbound HTTP request (alert webhooks, Slack, retrain triggers) goes
through one httpx client built here, whose transport tests can replace.

Webhook URLs are attacker-controlled input to a process inside the network: the host is resolved
at send time and loopback, private, link-local (cloud metadata) and multicast addresses are
refused unless ``OWNLOOP_ALLOW_PRIVATE_WEBHOOKS`` allows them; redirects are never followed; the
time and the size of the answer are bounded; an answer's body is never copied into logs or alerts.

The address check happens where the socket is opened (a network backend for httpcore), on the
very addresses the connection then uses, so a name that resolves to a public address when checked
and to 169.254.169.254 a moment later (DNS rebinding) cannot slip through. TLS still verifies the
certificate for the URL's host name (SNI and Host header come from the URL, not the address).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ownloop.config import Config
from ownloop.errors import OwnloopError

__all__ = [
    "Outbound",
    "OutboundError",
    "OutboundFailed",
    "OutboundRefused",
    "OutboundResult",
    "check_address",
    "redact_url",
]

MAX_ANSWER_BYTES = 4096  # read this much of an answer at most, then drop the connection
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(OwnloopError):
    """An outbound request did not deliver; the message names the host, never a response body."""

    code = "outbound_error"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class OutboundRefused(OutboundError):
    """Never sent, and sending again will not help: a private address, a redirect, a bad URL."""

    code = "outbound_refused"


class OutboundFailed(OutboundError):
    """Sent (or tried) and failed in a way that may pass: timeout, connection error, 5xx."""

    code = "outbound_failed"


@dataclass(frozen=True)
class OutboundResult:
    """A delivered request: the status code and how long it took (the answer's body is dropped)."""

    status_code: int
    elapsed_s: float


def redact_url(url: str) -> str:
    """The URL as it may be printed: no userinfo, no query or fragment, only the first path part.

    Webhook URLs carry their secret in the path (Slack), the query (``?token=``) or the userinfo.

    >>> redact_url("https://user:pw@hooks.example.com/services/T0/B0/XYZ?token=1")
    'https://***@hooks.example.com/services/***?***'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    user = "***@" if parts.username or parts.password else ""
    segments = [s for s in parts.path.split("/") if s]
    path = ""
    if segments:
        path = "/" + segments[0] + ("/***" if len(segments) > 1 else "")
    query = "?***" if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{user}{host}{port}{path}{query}"


def check_address(address: str) -> str | None:
    """Why an address may not be reached from inside the network, or None when it is public."""
    ip: _IP = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, hit in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata)", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    ):
        if hit:
            return f"{ip} is a {reason} address"
    return None


def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to now (tests replace this to script a resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _CheckedBackend(httpcore.SyncBackend):
    """Resolve, check each address, connect to a checked address: no window for rebinding."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = _resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise OutboundFailed(f"cannot resolve host '{host}': {exc}") from exc
        allowed: list[str] = []
        refused: list[str] = []
        for address in addresses:
            reason = None if self.allow_private else check_address(address)
            (refused if reason else allowed).append(reason or address)
        if not allowed:
            raise OutboundRefused(
                f"host '{host}' resolves to no public address ({'; '.join(refused) or 'none'}); alerts are not "
                "sent inside the network (set OWNLOOP_ALLOW_PRIVATE_WEBHOOKS=1 for local setups)"
            )
        error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in allowed:
            try:
                return super().connect_tcp(
                    address, port, timeout, local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that connects only to checked addresses."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__(trust_env=False, retries=0)
        # HTTPTransport takes no network backend; its pool is rebuilt with the checked one
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=20,
            max_keepalive_connections=5,
            network_backend=_CheckedBackend(allow_private),
        )


class Outbound:
    """The process's outbound HTTP client (one per workspace).

    >>> out = Outbound(Config.from_env({"OWNLOOP_HOME": "/tmp/x"}))  # doctest: +SKIP
    >>> out.post_json("https://alerts.example.com/hook", {"status": "firing"})  # doctest: +SKIP
    OutboundResult(status_code=200, elapsed_s=0.12)
    """

    def __init__(self, config: Config, *, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.transport = transport
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        """The one httpx client, built on first use: no redirects, no proxies from the env."""
        if self._client is None:
            transport = self.transport or _CheckedTransport(self.config.allow_private_webhooks)
            self._client = httpx.Client(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self.config.outbound_timeout_s),
                headers={"User-Agent": "ownloop-alerts"},
            )
        return self._client

    def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> OutboundResult:
        """POST ``body`` as JSON to ``url``; a 2xx answer is a result, anything else an error."""
        shown = redact_url(url)
        _check_url(url, shown)
        content = json.dumps(body, separators=(",", ":"), default=str).encode()
        limit = self.config.outbound_timeout_s
        started = time.monotonic()
        try:
            with self.client.stream(
                "POST",
                url,
                content=content,
                headers={"Content-Type": "application/json", **(headers or {})},
            ) as response:
                _drain(response, started + limit)
        except OutboundError:
            raise
        except httpx.TimeoutException as exc:
            raise OutboundFailed(f"{shown}: no answer within {limit:g}s") from exc
        except httpx.HTTPError as exc:
            raise OutboundFailed(f"{shown}: {type(exc).__name__}: {exc}") from exc
        elapsed = time.monotonic() - started
        return _judge(response, shown, elapsed)

    def close(self) -> None:
        """Close the underlying client."""
        if self._client is not None:
            self._client.close()
            self._client = None


def _check_url(url: str, shown: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise OutboundRefused(f"'{shown}' is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused(f"'{shown}' is not an http(s) URL with a host; fix the team's route")


def _drain(response: httpx.Response, deadline: float) -> None:
    """Read at most MAX_ANSWER_BYTES of the answer, and nothing past the deadline; keep none."""
    if response.is_stream_consumed:  # an in-memory answer (a replaced transport)
        return
    read = 0
    for chunk in response.iter_raw(1024):
        read += len(chunk)
        if read >= MAX_ANSWER_BYTES or time.monotonic() > deadline:
            break


def _judge(response: httpx.Response, shown: str, elapsed: float) -> OutboundResult:
    code = response.status_code
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        try:
            target = httpx.URL(location).host or urlsplit(shown).hostname or "?"
        except httpx.InvalidURL:
            target = "an unparseable location"
        raise OutboundRefused(
            f"{shown} answered {code}, a redirect to {target}; redirects are not followed, "
            "set the final URL on the team",
            status_code=code,
        )
    if not 200 <= code < 300:
        raise OutboundFailed(f"{shown} answered HTTP {code}", status_code=code)
    return OutboundResult(status_code=code, elapsed_s=elapsed)
