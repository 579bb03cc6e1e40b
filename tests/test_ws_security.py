"""Websocket hardening (issue 9), through the real ASGI application and the real Redis layer:
origins compared with their scheme and port, paths and ids that match nothing, sockets that
follow their session and roles, and the per-user cap on open sockets.

The same cases against real daphne processes are in tests/deploy/test_deploy_websockets.py."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from blockmig.asgi import application
from blockmig.live import reauth
from blockmig.live.consumer import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_NOT_LOGGED_IN
from blockmig.live.handshake import FULL_MEMORY_SECONDS, Slot
from blockmig.live.origin import origin_allowed
from blockmig.states import State
from tests.helpers import make_user
from tests.test_consumers import (  # noqa: F401  (fixtures)
    HOST,
    ORIGIN,
    TIMEOUT,
    change,
    element,
    people,
    private_channel_layer,
    seed,
    session_cookie,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def socket_for(path: str, user: User) -> tuple[WebsocketCommunicator, str]:
    """A communicator as the page opens it, and the session key it carries."""
    cookie = await sync_to_async(session_cookie)(user)
    return WebsocketCommunicator(application, path, headers=[ORIGIN, HOST, (b"cookie", cookie)]), cookie.decode().split("=", 1)[1]


async def opened(path: str, user: User) -> tuple[WebsocketCommunicator, str]:
    """A socket that is open and has had its catch-up frame."""
    comm, session_key = await socket_for(path, user)
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert connected, code
    assert (await comm.receive_output(timeout=TIMEOUT))["type"] == "websocket.send"
    return comm, session_key


async def closed_with(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> int:
    """The close code of the next message, which must be the close: no frame before it."""
    message = await comm.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", f"got a frame instead of the close: {message.get('text', '')[:80]}"
    return message["code"]


# ---- origin: scheme, host and port ----------------------------------------------------


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


async def test_foreign_port_refused_through_the_application(seed, people):
    cookie = await sync_to_async(session_cookie)(people["viewer"])
    path = f"/ws/migrations/{seed['migration'].pk}/"
    foreign = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1:8001"), HOST, (b"cookie", cookie)])
    assert (await foreign.connect(timeout=TIMEOUT))[0] is False
    same = WebsocketCommunicator(application, path, headers=[ORIGIN, HOST, (b"cookie", cookie)])
    assert (await same.connect(timeout=TIMEOUT))[0] is True
    await same.disconnect()


# ---- paths and ids that match nothing -------------------------------------------------


@pytest.mark.parametrize("path", [
    "/ws/nothing/",
    "/ws/migrations/abc/",
    "/ws/migrations/1",                                  # no trailing slash
    "/ws/migrations/999999999999999999999999999999/",    # beyond any bigint
    "/ws/migrations/-1/",
    "/ws/hosts/l%00ab/",
    "/ws/hosts/lab/extra/",
    "/",
])  # fmt: skip
async def test_unmatched_path_is_accepted_only_to_close_with_4404(seed, people, path):
    comm, _ = await socket_for(path, people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)  # an exception in the app would raise here
    assert connected
    assert await closed_with(comm) == CLOSE_NOT_FOUND


@pytest.mark.parametrize("query", [
    "disk=%C2%B2",                        # a digit to str.isdigit, not to int()
    "disk=999999999999999999999999",      # overflows SQLite and PostgreSQL integers
    "disk=1&disk=x",
    "domain=%00",                         # NUL: PostgreSQL refuses it in a query
    "domain=not-a-uuid",
    "q=te%00st",
    "page=1%00",
])  # fmt: skip
async def test_bad_query_value_refused_as_not_found(seed, people, query):
    comm, _ = await socket_for(f"/ws/hosts/lab/?{query}", people["viewer"])
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert (connected, code) == (False, CLOSE_NOT_FOUND)


async def test_large_but_valid_ids_are_simply_not_found(seed, people):
    comm, _ = await socket_for("/ws/migrations/999999999999999999/", people["viewer"])
    assert await comm.connect(timeout=TIMEOUT) == (False, CLOSE_NOT_FOUND)


# ---- sockets follow their session and roles -------------------------------------------


@pytest.fixture
def short_reauth(settings):
    settings.BLOCKMIG_WS_REAUTH_SECONDS = 0.3
    return 0.3


async def test_socket_closes_once_its_session_is_gone(seed, people, short_reauth):
    """What the HTTP logout does to the session row (the deploy tier logs out for real)."""
    comm, session_key = await opened("/ws/dashboard/", people["viewer"])
    await sync_to_async(Session.objects.filter(session_key=session_key).delete)()
    # Closed within the re-check period plus slack, or the wait gives up (no timing assertion).
    assert await closed_with(comm, timeout=short_reauth + 3) == CLOSE_NOT_LOGGED_IN


async def test_socket_closes_when_its_session_expired(seed, people, short_reauth):
    comm, session_key = await opened("/ws/dashboard/", people["viewer"])
    await sync_to_async(Session.objects.filter(session_key=session_key).update)(expire_date=timezone.now())
    assert await closed_with(comm) == CLOSE_NOT_LOGGED_IN


async def test_socket_closes_when_the_user_is_deactivated(seed, people, short_reauth):
    comm, _ = await opened(f"/ws/migrations/{seed['migration'].pk}/", people["viewer"])
    await sync_to_async(User.objects.filter(pk=people["viewer"].pk).update)(is_active=False)
    assert await closed_with(comm) == CLOSE_NOT_LOGGED_IN


async def test_socket_closes_when_the_password_changed(seed, people, short_reauth):
    """Another session changed the password: Django logs every other session out."""
    comm, _ = await opened("/ws/dashboard/", people["viewer"])

    def new_password():
        user = User.objects.get(pk=people["viewer"].pk)
        user.set_password("another-long-password")
        user.save()

    await sync_to_async(new_password)()
    assert await closed_with(comm) == CLOSE_NOT_LOGGED_IN


async def test_role_removed_next_event_not_delivered_and_closed_4403(seed, people, settings):
    settings.BLOCKMIG_WS_REAUTH_SECONDS = 600  # only the event can notice
    m = seed["migration"]
    comm, _ = await opened(f"/ws/migrations/{m.pk}/", people["viewer"])
    await change(m.pk, bytes_done=512 * 1024 * 1024)
    assert "50.0 %" in await comm.receive_from(timeout=TIMEOUT)  # still allowed: streamed

    await sync_to_async(people["viewer"].groups.clear)()
    await change(m.pk, bytes_done=768 * 1024 * 1024)
    assert await closed_with(comm) == CLOSE_FORBIDDEN


async def test_role_removed_closes_an_idle_socket_4403(seed, people, short_reauth):
    comm, _ = await opened("/ws/dashboard/", people["viewer"])
    await sync_to_async(people["viewer"].groups.clear)()
    assert await closed_with(comm) == CLOSE_FORBIDDEN


async def test_approver_made_viewer_gets_no_approve_button_on_the_next_frame(seed, people, settings):
    settings.BLOCKMIG_WS_REAUTH_SECONDS = 600
    m = seed["migration"]
    await change(m.pk, state=State.READY, ready_at=timezone.now())
    comm, _ = await socket_for(f"/ws/migrations/{m.pk}/", people["approver"])
    assert (await comm.connect(timeout=TIMEOUT))[0]
    first = await comm.receive_from(timeout=TIMEOUT)
    assert re.search(r"<button[^>]*>\s*Approve", element(first, f"migration-{m.pk}-actions"))

    def demote():
        approver = people["approver"]
        approver.groups.clear()
        approver.groups.add(Group.objects.get(name="viewer"))

    await sync_to_async(demote)()
    await change(m.pk, bytes_done=1024 * 1024 * 1024)
    frame = await comm.receive_from(timeout=TIMEOUT)
    assert "<button" not in element(frame, f"migration-{m.pk}-actions")
    await comm.disconnect()


def test_recheck_reads_do_not_grow_with_the_number_of_sockets(people):
    """One event on many sockets costs one batched read, not one per socket."""

    def sessions(n: int) -> list[tuple[str, int]]:
        keys = []
        for i in range(n):
            user = make_user(f"watcher{n}-{i}", "viewer" if i % 2 else "approver")
            keys.append((session_cookie(user).decode().split("=", 1)[1], user.pk))
        return keys

    few, many = sessions(2), sessions(40)
    with CaptureQueriesContext(connection) as small:
        verdicts = reauth.read_verdicts(few)
    with CaptureQueriesContext(connection) as large:
        reauth.read_verdicts(many)
    assert len(small) == len(large) == 4
    assert all(v.refusal("blockmig.view_migration") is None for v in verdicts.values())


async def test_concurrent_checks_share_one_read(seed, people):
    session_key = (await socket_for("/ws/dashboard/", people["viewer"]))[1]
    calls = []
    original = reauth.read_verdicts

    def counting(keys):
        calls.append(len(keys))
        return original(keys)

    reauth.read_verdicts = counting
    try:
        verdicts = await asyncio.gather(*(reauth.check(session_key, people["viewer"].pk) for _ in range(50)))
    finally:
        reauth.read_verdicts = original
    assert calls == [1] and all(v.logged_in for v in verdicts)


# ---- the per-user cap on open sockets ---------------------------------------------------


async def test_handshakes_beyond_the_cap_are_refused_and_freed_on_close(seed, people, settings):
    settings.BLOCKMIG_WS_MAX_PER_USER = 3
    path = f"/ws/migrations/{seed['migration'].pk}/"
    held = [(await opened(path, people["viewer"]))[0] for _ in range(3)]
    extra, _ = await socket_for(path, people["viewer"])
    assert (await extra.connect(timeout=TIMEOUT))[0] is False
    other, _ = await opened(path, people["operator"])  # someone else is not affected

    await held.pop().disconnect()
    await asyncio.sleep(0.2)  # the slot is released once the consumer has stopped
    again, _ = await opened(path, people["viewer"])
    for comm in (*held, other, again):
        await comm.disconnect()


async def test_refused_sockets_do_not_count(seed, people, settings):
    """A handshake the consumer refuses (no such page) gives its slot back."""
    settings.BLOCKMIG_WS_MAX_PER_USER = 2
    for _ in range(5):
        comm, _ = await socket_for("/ws/migrations/999999/", people["viewer"])
        assert await comm.connect(timeout=TIMEOUT) == (False, CLOSE_NOT_FOUND)
    a, _ = await opened("/ws/dashboard/", people["viewer"])
    b, _ = await opened("/ws/dashboard/", people["viewer"])
    await a.disconnect()
    await b.disconnect()


async def test_slot_of_a_vanished_process_lapses(settings):
    """A daphne killed with its sockets open never releases their slots: they lapse."""
    settings.BLOCKMIG_WS_MAX_PER_USER = 1
    settings.BLOCKMIG_WS_SLOT_SECONDS = 0.5
    user_id = f"lapse-{time.monotonic_ns()}"
    assert await Slot(user_id).take()  # taken, never renewed nor released
    assert not await Slot(user_id).take()
    # This process remembers the refusal a moment (handshake.FULL_MEMORY_SECONDS); Redis
    # forgets the slot after its lifetime.
    await asyncio.sleep(max(0.6, FULL_MEMORY_SECONDS + 0.1))
    assert await Slot(user_id).take()
