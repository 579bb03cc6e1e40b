"""The domain page's socket (/ws/hosts/<name>/?domain=<uuid>): facts, disks table, small chain
pictures and actions follow a sync; a domain the sync removed gets a banner; an unknown
domain is refused. Real Redis layer, the real ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from blockmig.live import publish
from blockmig.live.consumer import CLOSE_NOT_FOUND
from hosts.models import Disk, Domain, Hypervisor
from tests.live_sockets import TIMEOUT, add_chain, connect, frame_until, outer, people, private_channel_layer, seed

pytestmark = pytest.mark.django_db(transaction=True)


async def test_domain_page_small_chain_pictures_redrawn_on_inventory_change(seed, people):
    disk, domain = seed["disk"], seed["domain"]

    def second_disk():
        vdb = Disk.objects.create(domain=domain, target="vdb", format="qcow2", source="/srv/lab/d5.qcow2")
        add_chain(vdb, ["d5", "d4", "d3", "d2", "d1", "d0"])  # long: the small picture folds it
        return vdb

    vdb = await sync_to_async(second_disk)()
    comm = await connect(f"/ws/hosts/lab/?domain={domain.uuid.upper()}", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert f'id="chain-{disk.pk}"' in first and f'id="chain-{vdb.pk}"' in first
    assert "snap2.qcow2" in first and "copy.qcow2" not in first
    assert "folded; the disk page shows them all" in first  # the domain page's small variant

    def copy_started():  # what the engine's refresh after the block copy stores
        Disk.objects.filter(pk=disk.pk).update(job_type="copy", job_cur=1, job_end=4, job_mirror_path="/srv/backups/copy.qcow2")
        publish.inventory_changed(seed["host"].pk)

    await sync_to_async(copy_started)()
    frame = await frame_until(comm, lambda f: "copy.qcow2" in f)
    picture = frame[frame.index(f'id="chain-{disk.pk}"') : frame.index(f'id="chain-{vdb.pk}"')]
    assert "mirroring to /srv/backups/copy.qcow2" in picture and 'hx-swap-oob="true"' in frame
    await comm.disconnect()


async def test_domain_socket_for_unknown_domain_is_refused(seed, people):
    comm = await connect("/ws/hosts/lab/?domain=00000000-0000-4000-8000-00000000dead", people["viewer"])
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert not connected
    assert code == CLOSE_NOT_FOUND


async def test_domain_page_follows_a_sync(seed, people):
    """State, persistence and autostart; the disks table with sources, formats and job
    badges (blockmig's and others'); a disk the sync added; the actions for the new state."""
    disk, domain = seed["disk"], seed["domain"]
    comm = await connect(f"/ws/hosts/lab/?domain={domain.uuid}", people["operator"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert ">running</span>" in outer(first, "domain-title")
    assert "<dt>State</dt><dd>running</dd>" in outer(first, "domain-facts")
    assert "Migrate disks…</a>" in outer(first, "domain-actions")  # the operator may start one
    row = outer(first, f"disk-{disk.pk}")
    assert "/srv/lab/snap2.qcow2" in row and "block job" not in row
    assert 'id="domain-gone" hidden' in first

    def synced():  # what a sync commits: the guest shut down, a virsh job on a new disk
        Domain.objects.filter(pk=domain.pk).update(state="shutoff", persistent=False, autostart=True)
        Disk.objects.filter(pk=disk.pk).update(job_type="copy", job_cur=1, job_end=4, job_mirror_path="/srv/backups/copy.qcow2")
        vdb = Disk.objects.create(
            domain=domain, target="vdb", format="raw", source="/dev/vg0/data", job_type="commit", job_cur=1, job_end=2
        )
        publish.inventory_changed(seed["host"].pk)
        return vdb

    vdb = await sync_to_async(synced)()
    frame = await frame_until(comm, lambda f: "shutoff" in f)
    assert ">shutoff</span>" in outer(frame, "domain-title")
    facts = outer(frame, "domain-facts")
    assert "<dt>State</dt><dd>shutoff</dd>" in facts and "no (transient)" in facts and "<dt>Autostart</dt><dd>yes</dd>" in facts
    table = outer(frame, "disk-table")
    assert f"blockmig migration #{seed['migration'].pk}" in outer(table, f"disk-{disk.pk}")
    new_row = outer(table, f"disk-{vdb.pk}")
    assert "/dev/vg0/data" in new_row and ">raw<" in new_row and "block job (commit, 50%) — not started by blockmig" in new_row
    assert f'id="chain-{vdb.pk}"' in frame  # the new disk's small picture too
    actions = outer(frame, "domain-actions")
    assert "Migrate disks…</a>" not in actions and "The domain is shutoff" in actions
    assert 'hx-swap-oob="true"' in outer(frame, "domain-disks").split(">", 1)[0]
    await comm.disconnect()


async def test_domain_removed_by_a_sync_gets_a_banner(seed, people):
    domain, host = seed["domain"], seed["host"]
    comm = await connect(f"/ws/hosts/lab/?domain={domain.uuid}", people["operator"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    await comm.receive_from(timeout=TIMEOUT)

    def removed():  # the guest was undefined; the next sync deletes its rows
        Domain.objects.filter(pk=domain.pk).delete()
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_ok_at=timezone.now(), last_sync_attempt_at=timezone.now())
        publish.inventory_changed(host.pk)

    await sync_to_async(removed)()
    frame = await frame_until(comm, lambda f: "no longer exists" in f)
    banner = outer(frame, "domain-gone")
    assert "This domain no longer exists on lab" in banner and "last seen <time" in banner
    assert 'hx-swap-oob="true"' in banner and 'role="alert"' in banner
    assert "Migrate disks" not in outer(frame, "domain-actions")
    # The socket stays open and keeps serving the banner.
    await sync_to_async(publish.inventory_changed)(host.pk)
    again = await comm.receive_from(timeout=TIMEOUT)
    assert "This domain no longer exists on lab" in again
    await comm.disconnect()
