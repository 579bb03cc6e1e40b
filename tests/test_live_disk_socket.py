"""The disk page's socket (/ws/hosts/<name>/?disk=<pk>): the chain picture, facts and job badge
follow the copy and the pivot; a disk the sync removed gets a banner. Real Redis layer, the
real ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from blockmig.live import publish
from blockmig.models import Migration
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Hypervisor
from tests.live_sockets import TIMEOUT, connect, frame_until, outer, people, private_channel_layer, seed

pytestmark = pytest.mark.django_db(transaction=True)


async def test_chain_picture_redrawn_on_inventory_change(seed, people):
    disk = seed["disk"]
    comm = await connect(f"/ws/hosts/lab/?disk={disk.pk}", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert f'id="chain-{disk.pk}"' in first and "snap2.qcow2" in first

    def pivot():
        ChainLayer.objects.filter(disk=disk, depth=0).update(path="/srv/backups/copy.qcow2")
        Disk.objects.filter(pk=disk.pk).update(source="/srv/backups/copy.qcow2")
        publish.inventory_changed(seed["host"].pk)

    await sync_to_async(pivot)()
    frame = await frame_until(comm, lambda f: "copy.qcow2" in f)
    assert "snap1.qcow2" in frame and "base.qcow2" in frame and "snap2.qcow2" not in frame
    await comm.disconnect()


async def test_disk_page_facts_follow_a_sync(seed, people):
    disk = seed["disk"]
    comm = await connect(f"/ws/hosts/lab/?disk={disk.pk}", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    facts = outer(first, f"disk-facts-{disk.pk}")
    assert "/srv/lab/snap2.qcow2" in facts and "Mirroring to" not in facts
    assert "block job" not in outer(first, f"disk-job-{disk.pk}")

    def copy_started():  # what the engine's refresh after the block copy stores
        Disk.objects.filter(pk=disk.pk).update(job_type="copy", job_cur=1, job_end=4, job_mirror_path="/srv/backups/copy.qcow2")
        publish.inventory_changed(seed["host"].pk)

    await sync_to_async(copy_started)()
    frame = await frame_until(comm, lambda f: "Mirroring to" in f)
    facts = outer(frame, f"disk-facts-{disk.pk}")
    assert '<dt>Mirroring to</dt><dd class="mono break">/srv/backups/copy.qcow2</dd>' in facts
    badge = outer(frame, f"disk-job-{disk.pk}")
    assert f"block job (copy, 25%) — blockmig migration #{seed['migration'].pk}" in badge

    def pivoted():  # the migration finished; the sync after the pivot stores the new chain
        Migration.objects.filter(pk=seed["migration"].pk).update(state=State.COMPLETED, finished_at=timezone.now())
        Disk.objects.filter(pk=disk.pk).update(job_type="", job_mirror_path="", source="/srv/backups/copy.qcow2", format="raw")
        ChainLayer.objects.filter(disk=disk, depth=0).update(path="/srv/backups/copy.qcow2", format="raw")
        publish.inventory_changed(seed["host"].pk)

    await sync_to_async(pivoted)()
    frame = await frame_until(comm, lambda f: "Mirroring to" not in f and "/srv/backups/copy.qcow2" in f)
    facts = outer(frame, f"disk-facts-{disk.pk}")
    assert "/srv/backups/copy.qcow2" in facts and "<dd>raw</dd>" in facts and "snap2" not in facts
    assert "block job" not in outer(frame, f"disk-job-{disk.pk}")
    assert "/srv/backups/copy.qcow2" in outer(frame, f"layers-{disk.pk}")
    await comm.disconnect()


async def test_disk_removed_by_a_sync_gets_a_banner(seed, people):
    disk, host = seed["disk"], seed["host"]
    comm = await connect(f"/ws/hosts/lab/?disk={disk.pk}", people["operator"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    first = await comm.receive_from(timeout=TIMEOUT)
    assert f'id="disk-gone-{disk.pk}" hidden' in first

    def detached():
        Disk.objects.filter(pk=disk.pk).delete()
        Hypervisor.objects.filter(pk=host.pk).update(last_sync_ok_at=timezone.now(), last_sync_attempt_at=timezone.now())
        publish.inventory_changed(host.pk)

    await sync_to_async(detached)()
    frame = await frame_until(comm, lambda f: "no longer exists" in f)
    banner = outer(frame, f"disk-gone-{disk.pk}")
    assert "This disk (vda on testvm) no longer exists on lab" in banner and "did not find it" in banner
    assert "Migrate this disk" not in outer(frame, "disk-actions")
    await comm.disconnect()
