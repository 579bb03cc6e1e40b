"""Websocket hardening (issue 9): a socket follows its user's roles: a role removed closes it
with 4403 (on the next event or the next re-check), a role changed shows on the next frame.
The real ASGI application and the real Redis layer."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.utils import timezone

from blockmig.live.consumer import CLOSE_FORBIDDEN
from blockmig.states import State
from tests.live_sockets import (
    TIMEOUT,
    change,
    closed_with,
    element,
    opened,
    people,
    private_channel_layer,
    seed,
    short_reauth,
    socket_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
