"""The one outbound client: private addresses refused at connect time, no redirects followed,
time and answer size bounded, secrets and answers never printed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ownloop import Config
from ownloop import outbound as outbound_module
from ownloop.outbound import (
    Outbound,
    OutboundFailed,
    OutboundRefused,
    check_address,
    redact_url,
)

if TYPE_CHECKING:
    from tests.receivers import WebhookReceiver


def _outbound(tmp_path: Path, *, allow_private: bool, timeout: float = 10.0) -> Outbound:
    config = Config(home=tmp_path, allow_private_webhooks=allow_private, outbound_timeout_s=timeout)
    return Outbound(config)


@pytest.fixture
def private_ok(tmp_path: Path) -> Outbound:
    out = _outbound(tmp_path, allow_private=True)
    yield out
    out.close()


@pytest.fixture
def strict(tmp_path: Path) -> Outbound:
    out = _outbound(tmp_path, allow_private=False)
    yield out
    out.close()


def test_posts_json_to_a_real_receiver(
    private_ok: Outbound, webhook_receiver: WebhookReceiver
) -> None:
    result = private_ok.post_json(webhook_receiver.url, {"a": 1}, headers={"X-Test": "yes"})
    assert result.status_code == 200
    [req] = webhook_receiver.requests
    assert req.json() == {"a": 1}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Test"] == "yes"
    assert req.headers["Host"] == webhook_receiver.url.split("/")[2]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "224.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "100.64.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_internal_addresses_are_named_as_such(address: str) -> None:
    assert check_address(address) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address: str) -> None:
    assert check_address(address) is None


def test_loopback_receiver_is_refused_and_never_reached(
    strict: Outbound, webhook_receiver: WebhookReceiver
) -> None:
    with pytest.raises(OutboundRefused, match="loopback address.*OWNLOOP_ALLOW_PRIVATE_WEBHOOKS"):
        strict.post_json(webhook_receiver.url, {"a": 1})
    with pytest.raises(OutboundRefused, match="loopback"):
        strict.post_json(webhook_receiver.url.replace("127.0.0.1", "localhost"), {"a": 1})
    assert webhook_receiver.requests == []


def test_a_name_resolving_to_the_metadata_address_is_refused(
    strict: Outbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["169.254.169.254"]

    monkeypatch.setattr(outbound_module, "_resolve", resolve)
    with pytest.raises(OutboundRefused, match="169.254.169.254 is a link-local"):
        strict.post_json("http://metadata.example.com/latest", {})
    assert asked == ["metadata.example.com"]


def test_rebinding_is_checked_on_the_address_actually_connected(
    strict: Outbound, webhook_receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once, where the socket is opened: a public answer for a first
    check and a private one for the connection cannot happen, because there is one answer."""
    answers = iter([["127.0.0.1"], ["93.184.215.14"]])
    monkeypatch.setattr(outbound_module, "_resolve", lambda host, port: next(answers))
    port = webhook_receiver.url.split(":")[2].split("/")[0]
    with pytest.raises(OutboundRefused, match="loopback"):
        strict.post_json(f"http://rebind.example.com:{port}/hook", {})
    assert webhook_receiver.requests == []


def test_mixed_answers_connect_only_to_public_addresses(
    strict: Outbound, monkeypatch: pytest.MonkeyPatch
) -> None:
    connected: list[str] = []

    def connect(self: object, host: str, port: int, *args: object, **kw: object) -> object:
        connected.append(host)
        raise outbound_module.httpcore.ConnectError("stop here")

    monkeypatch.setattr(
        outbound_module, "_resolve", lambda host, port: ["10.0.0.1", "93.184.215.14"]
    )
    monkeypatch.setattr(outbound_module.httpcore.SyncBackend, "connect_tcp", connect)
    with pytest.raises(OutboundFailed):
        strict.post_json("http://mixed.example.com/hook", {})
    assert connected == ["93.184.215.14"]


def test_a_redirect_is_refused_and_not_followed(
    private_ok: Outbound,
    webhook_receiver: WebhookReceiver,
    second_receiver: WebhookReceiver,
) -> None:
    webhook_receiver.redirect_to = second_receiver.url + "?token=secret"
    with pytest.raises(OutboundRefused, match=r"redirect to 127\.0\.0\.1; redirects are not") as e:
        private_ok.post_json(webhook_receiver.url, {"a": 1})
    assert "secret" not in str(e.value)
    assert len(webhook_receiver.requests) == 1
    assert second_receiver.requests == []


def test_a_5xx_is_a_failure_naming_only_the_status(
    private_ok: Outbound, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.status = 500
    webhook_receiver.answer = b"internal secret stack trace"
    with pytest.raises(OutboundFailed, match="answered HTTP 500") as e:
        private_ok.post_json(webhook_receiver.url, {})
    assert e.value.status_code == 500
    assert "secret" not in str(e.value)


def test_a_hanging_receiver_is_bounded_by_the_timeout(
    tmp_path: Path, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.hang_s = 60
    out = _outbound(tmp_path, allow_private=True, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(OutboundFailed, match="no answer within 0.5s"):
            out.post_json(webhook_receiver.url, {})
    finally:
        out.close()
    assert time.monotonic() - started < 30  # generous: bounded, not fast


def test_only_http_and_https(private_ok: Outbound) -> None:
    for url in ("ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "gopher://x"):
        with pytest.raises(OutboundRefused, match="not an http"):
            private_ok.post_json(url, {})


def test_a_replaced_transport_sees_the_request(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    out = Outbound(Config(home=tmp_path), transport=httpx.MockTransport(handler))
    assert out.post_json("https://hooks.example.com/x", {"k": "v"}).status_code == 202
    assert seen[0].url.host == "hooks.example.com"
    out.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/services/***"),
        ("http://u:p@h.example.com:8080/hook?token=1", "http://***@h.example.com:8080/hook?***"),
        ("https://h.example.com", "https://h.example.com"),
        ("https://[::1]:9/x", "https://[::1]:9/x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
