"""Websocket hardening (issue 9): paths, ids and query values that match nothing are accepted
only to close with 4404 (or refused as not found), never an error in the application.
The real ASGI application and the real Redis layer."""

from __future__ import annotations

import pytest

from blockmig.live.consumer import CLOSE_NOT_FOUND
from tests.live_sockets import TIMEOUT, closed_with, people, private_channel_layer, seed, socket_for

pytestmark = pytest.mark.django_db(transaction=True)


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
