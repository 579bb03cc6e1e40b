"""Websocket hardening (issue 9): the per-user cap on open sockets: handshakes beyond it are
refused, slots are freed on close and by refused handshakes, and a vanished process's slots
lapse. The real ASGI application and the real Redis layer."""

from __future__ import annotations

import asyncio
import time

import pytest

from blockmig.live.consumer import CLOSE_NOT_FOUND
from blockmig.live.handshake import FULL_MEMORY_SECONDS, Slot
from tests.live_sockets import TIMEOUT, opened, people, private_channel_layer, seed, socket_for

pytestmark = pytest.mark.django_db(transaction=True)


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
