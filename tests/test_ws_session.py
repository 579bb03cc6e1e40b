"""Websocket hardening (issue 9): a socket needs a login and follows its session: it closes
once the session is gone or expired, the user deactivated or the password changed; the
re-checks are one batched read however many sockets ask. The real ASGI application and the
real Redis layer; the deploy tier logs out for real (tests/deploy/test_deploy_websockets.py)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from blockmig.live import reauth
from blockmig.live.consumer import CLOSE_NOT_LOGGED_IN
from tests.helpers import make_user
from tests.live_sockets import (
    TIMEOUT,
    closed_with,
    connect,
    opened,
    people,
    private_channel_layer,
    seed,
    session_cookie,
    short_reauth,
    socket_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_socket_refused_without_login(seed):
    comm = await connect(f"/ws/migrations/{seed['migration'].pk}/")
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert not connected
    assert code == CLOSE_NOT_LOGGED_IN


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
