"""The queue is pushed live: a queued migration's page hears it when a slot frees (its reason
changes although its own row did not), through the real ASGI app and the real Redis layer."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from blockmig.asgi import application
from blockmig.lifecycle import migration_transition
from blockmig.models import Migration, MigrationDisk
from blockmig.states import State
from hosts.models import Hypervisor

pytestmark = pytest.mark.django_db(transaction=True)
HEADERS = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
TIMEOUT = 5


@pytest.fixture(autouse=True)
def private_channel_layer(settings):
    """A channel prefix of our own: workers and other test runs share this Redis."""
    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = {**layer.get("CONFIG", {}), "prefix": f"blockmig-limits-{os.getpid()}"}
    settings.CHANNEL_LAYERS = {"default": layer}
    yield


def make_rows(users) -> dict[str, Migration]:
    host = Hypervisor.objects.create(name="local", uri="test:///default", allowed_roots=["/srv/a"], max_copies=1)
    start = timezone.now() - timedelta(minutes=5)
    made = {}
    for n, (label, state) in enumerate((("running", State.COPYING), ("queued", State.QUEUED))):
        m = Migration.objects.create(
            hypervisor=host,
            domain_uuid=f"u-{n}",
            domain_name=f"vm{n}",
            state=state,
            requested_by=users["operator"],
            created_at=start + timedelta(seconds=n),
        )
        MigrationDisk.objects.create(
            migration=m,
            hypervisor=host,
            domain_uuid=m.domain_uuid,
            target="vda",
            source_path=f"/i/{n}",
            destination=f"/srv/a/{n}",
        )
        made[label] = m
    return made


def cookie_of(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_a_queued_migrations_page_hears_when_a_slot_frees(users):
    rows = await sync_to_async(make_rows)(users)
    running, queued = rows["running"], rows["queued"]
    headers = [*HEADERS, (b"cookie", await sync_to_async(cookie_of)(users["viewer"]))]
    comm = WebsocketCommunicator(application, f"/ws/migrations/{queued.pk}/", headers=headers)
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert f"1 copy already runs on local (limit 1); next slot when #{running.pk} finishes" in first

    # The running copy ends; nothing writes the queued row, yet its page is told.
    await sync_to_async(migration_transition)(running.pk, State.FAILED, failure_reason="gone")
    frame = await comm.receive_from(timeout=TIMEOUT)
    assert "Queued — waiting for a copy slot" in frame
    assert "next slot when" not in frame and "A copy slot is free" in frame
    await comm.disconnect()
