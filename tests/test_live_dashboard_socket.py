"""The dashboard's socket: a migration that becomes ready and the approval count, and the host
cards redrawn after a sync (not on progress). Real Redis layer, the real ASGI application."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from blockmig.live import publish
from blockmig.states import State
from hosts.models import Hypervisor
from tests.live_sockets import TIMEOUT, change, connect, frame_until, people, private_channel_layer, seed

pytestmark = pytest.mark.django_db(transaction=True)


async def test_dashboard_shows_new_migration_and_approval_count(seed, people):
    m = seed["migration"]
    comm = await connect("/ws/dashboard/", people["approver"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert f'id="migration-row-{m.pk}"' in first or "testvm" in first
    await change(m.pk, state=State.READY, ready_at=timezone.now())
    frame = await frame_until(comm, lambda f: re.search(r'id="approval-count"[^>]*>\s*1\b', f) is not None)
    assert "testvm" in frame
    await comm.disconnect()


def host_card(frame: str, host_pk: int) -> str:
    """The dashboard's card of one host (an <article> holds no nested article)."""
    match = re.search(rf'<article[^>]*\bid="host-{host_pk}".*?</article>', frame, re.S)
    assert match, f"host-{host_pk} not in frame"
    return match.group(0)


async def test_dashboard_host_card_redrawn_after_sync(seed, people):
    host = seed["host"]

    def healthy():
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_ok_at=timezone.now(), last_sync_attempt_at=timezone.now())

    await sync_to_async(healthy)()
    comm = await connect("/ws/dashboard/", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    # The catch-up carries the host cards too: a reconnect after a failed sync shows it.
    assert "host-card--ok" in host_card(first, host.pk)
    assert 'id="dashboard-hosts" hx-swap-oob="innerHTML"' in first

    # Progress alone does not redraw the hosts.
    await change(seed["migration"].pk, bytes_done=512 * 1024 * 1024)
    frame = await frame_until(comm, lambda f: "50.0 %" in f)
    assert f'id="host-{host.pk}"' not in frame

    error = "Cannot reach qemu:///system: Connection refused."

    def sync_failed():  # what hosts.sync.hypervisor._record_failure commits, then publishes
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_error=error, last_sync_attempt_at=timezone.now())
        publish.inventory_changed(host.pk)

    await sync_to_async(sync_failed)()
    frame = await frame_until(comm, lambda f: f'id="host-{host.pk}"' in f)
    card = host_card(frame, host.pk)
    assert "host-card--stale" in card and ">stale</span>" in card and error in card
    assert 'id="dashboard-summary" hx-swap-oob="true"' in frame
    await comm.disconnect()
