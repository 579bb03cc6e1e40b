"""Websocket hardening (issue 9): origins compared with their scheme, host and port, unit by
unit (blockmig.live.origin) and through the real ASGI application.

The same cases against real daphne processes are in tests/deploy/test_deploy_websockets.py."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from blockmig.asgi import application
from blockmig.live.origin import origin_allowed
from tests.live_sockets import HOST, ORIGIN, TIMEOUT, people, private_channel_layer, seed, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def scope(origin: str | None, host: str = "127.0.0.1:8000", server=("127.0.0.1", 8000), scheme: str = "ws") -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "server": server, "headers": headers}


@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:8001",      # another service on the same host: the case channels misses
    "http://127.0.0.1",           # port 80 of the same host
    "https://127.0.0.1:8000",     # same host and port, other scheme
    "http://localhost:8000",      # another host name
    "http://evil.example",
    "null",                       # a sandboxed frame
    "http://127.0.0.1:8000/path",
    "http://user@127.0.0.1:8000",
    "",
])  # fmt: skip
def test_origin_other_than_the_page_is_refused(origin):
    assert not origin_allowed(scope(origin))


def test_origin_missing_is_refused():
    assert not origin_allowed(scope(None))


def test_same_origin_is_accepted():
    assert origin_allowed(scope("http://127.0.0.1:8000"))
    assert origin_allowed(scope("HTTP://127.0.0.1:8000"))
    # A Host that names the default port explicitly is the same origin.
    assert origin_allowed(scope("http://localhost", host="localhost:80", server=("127.0.0.1", 8000)))


def test_daphne_address_is_an_origin_whatever_host_the_browser_used():
    assert origin_allowed(scope("http://127.0.0.1:8000", host="localhost:8000"))
    assert not origin_allowed(scope("http://127.0.0.1:9000", host="localhost:8000"))


def test_host_outside_allowed_hosts_gives_no_origin(settings):
    """DNS rebinding: evil.example resolving to this machine is not this site."""
    settings.ALLOWED_HOSTS = ["console.example.com"]
    assert not origin_allowed(scope("http://evil.example:8000", host="evil.example:8000", server=None))
    assert origin_allowed(scope("http://console.example.com:8000", host="console.example.com:8000", server=None))


def test_secure_socket_needs_an_https_origin(settings):
    assert origin_allowed(scope("https://127.0.0.1:8443", host="127.0.0.1:8443", scheme="wss", server=None))
    assert not origin_allowed(scope("http://127.0.0.1:8443", host="127.0.0.1:8443", scheme="wss", server=None))
    # Behind a TLS proxy that says so.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind = scope("https://127.0.0.1", host="127.0.0.1", server=None)
    behind["headers"].append((b"x-forwarded-proto", b"https"))
    assert origin_allowed(behind)


def test_trusted_origins_match_with_their_port(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.example.com", "https://*.ops.example.com:8443"]
    assert origin_allowed(scope("https://console.example.com"))
    assert not origin_allowed(scope("https://console.example.com:8443"))
    assert not origin_allowed(scope("http://console.example.com"))
    assert origin_allowed(scope("https://a.ops.example.com:8443"))
    assert not origin_allowed(scope("https://a.ops.example.com"))
    assert not origin_allowed(scope("https://a.ops.example.com.evil.example:8443"))


async def test_socket_refused_from_foreign_origin(seed, people):
    cookie = await sync_to_async(session_cookie)(people["viewer"])
    comm = WebsocketCommunicator(
        application,
        f"/ws/migrations/{seed['migration'].pk}/",
        headers=[(b"origin", b"http://evil.example"), HOST, (b"cookie", cookie)],
    )
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert not connected


async def test_foreign_port_refused_through_the_application(seed, people):
    cookie = await sync_to_async(session_cookie)(people["viewer"])
    path = f"/ws/migrations/{seed['migration'].pk}/"
    foreign = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1:8001"), HOST, (b"cookie", cookie)])
    assert (await foreign.connect(timeout=TIMEOUT))[0] is False
    same = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST, (b"cookie", cookie)])
    assert (await same.connect(timeout=TIMEOUT))[0] is True
    await same.disconnect()
