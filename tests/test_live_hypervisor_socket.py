"""The hypervisor page's socket (/ws/hosts/<name>/): health, the stale banner and the domain
table as the user is looking at it (their search and page) follow a sync; migration events
do not redraw it. Real Redis layer, the real ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from blockmig.live import publish
from blockmig.states import State
from hosts.models import Domain, Hypervisor
from tests.live_sockets import TIMEOUT, change, connect, frame_until, outer, people, private_channel_layer, seed

pytestmark = pytest.mark.django_db(transaction=True)


async def test_hypervisor_page_follows_a_sync(seed, people):
    """Health and the stale banner; the domain table as the user is looking at it (their
    search and page, from the socket's query)."""
    host = seed["host"]

    def healthy():
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_ok_at=timezone.now(), last_sync_attempt_at=timezone.now())

    await sync_to_async(healthy)()
    comm = await connect("/ws/hosts/lab/?q=test&page=1", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert ">ok</span>" in outer(first, "hypervisor-title")
    assert f'<div id="stale-{host.pk}" hidden' in first
    table = outer(first, "domain-table")
    assert 'hx-swap-oob="innerHTML"' in table.split(">", 1)[0]
    assert "1 domain match “test”" in table and ">testvm<" in table

    error = "Cannot reach qemu:///system: Connection refused."

    def synced_then_failed():  # a sync found two domains, the next one failed
        Domain.objects.create(hypervisor=host, uuid="0f0e0d0c-0000-4000-8000-000000000002", name="test-new", state="running")
        Domain.objects.create(hypervisor=host, uuid="0f0e0d0c-0000-4000-8000-000000000003", name="other", state="running")
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_error=error, last_sync_attempt_at=timezone.now())
        publish.inventory_changed(host.pk)

    await sync_to_async(synced_then_failed)()
    frame = await frame_until(comm, lambda f: "test-new" in f)
    table = outer(frame, "domain-table")
    assert "2 domains match “test”" in table and ">test-new<" in table and ">testvm<" in table
    assert ">other<" not in table  # not in the user's search
    banner = outer(frame, f"stale-{host.pk}")
    assert "<strong>Stale:</strong>" in banner and error in banner and 'hx-swap-oob="true"' in banner
    assert ">stale</span>" in outer(frame, "hypervisor-title")
    assert "Last attempt" in outer(frame, "hypervisor-facts")
    await comm.disconnect()


async def test_hypervisor_page_socket_renders_the_page_it_was_opened_for(seed, people):
    host = seed["host"]

    def many():
        Domain.objects.bulk_create(
            Domain(hypervisor=host, uuid=f"10000000-0000-4000-8000-{i:012d}", name=f"vm-{i:03d}", state="running")
            for i in range(60)
        )

    await sync_to_async(many)()
    comm = await connect("/ws/hosts/lab/?q=vm-&page=2", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    table = outer(await comm.receive_from(timeout=TIMEOUT), "domain-table")
    assert "60 domains match “vm-”" in table and "page 2 of 2" in table
    assert ">vm-050<" in table and ">vm-049<" not in table and ">testvm<" not in table
    # Migration events do not redraw the hypervisor page (the table shows libvirt's jobs).
    await change(seed["migration"].pk, state=State.READY, ready_at=timezone.now())
    assert await comm.receive_nothing(timeout=1.0)
    await comm.disconnect()
