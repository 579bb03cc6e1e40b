"""The migration page's socket: catch-up on connect, progress and state pushed as they are
committed, rendered per user (which buttons whom), in order, older events dropped.
Real Redis channel layer (`make services` starts it), the real ASGI application."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.utils import timezone

from blockmig.states import State
from tests.live_sockets import TIMEOUT, change, connect, element, frame_until, people, private_channel_layer, seed, seq_of

pytestmark = pytest.mark.django_db(transaction=True)


async def test_catch_up_on_connect_shows_current_state(seed, people):
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["viewer"])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    frame = await comm.receive_from(timeout=TIMEOUT)
    status = element(frame, f"migration-{m.pk}-status")
    assert "25.0 %" in status and "Copying" in status
    for part in ("actions", "timeline", "disks"):
        assert f'id="migration-{m.pk}-{part}"' in frame
    await comm.disconnect()


async def test_viewer_receives_progress_without_action_buttons(seed, people):
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["viewer"])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_from(timeout=TIMEOUT)

    await change(m.pk, bytes_done=768 * 1024 * 1024)
    frame = await frame_until(comm, lambda f: "75.0 %" in f)
    assert "<button" not in element(frame, f"migration-{m.pk}-actions")

    await change(m.pk, state=State.READY, bytes_done=1024 * 1024 * 1024, ready_at=timezone.now())
    frame = await frame_until(comm, lambda f: "awaiting approval" in f)
    assert "<button" not in element(frame, f"migration-{m.pk}-actions")
    await comm.disconnect()


async def test_approver_receives_approve_button_when_ready(seed, people):
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["approver"])
    await comm.connect(timeout=TIMEOUT)
    first = await comm.receive_from(timeout=TIMEOUT)
    assert "Approve" not in element(first, f"migration-{m.pk}-actions")

    await change(m.pk, state=State.READY, bytes_done=1024 * 1024 * 1024, ready_at=timezone.now())
    frame = await frame_until(comm, lambda f: "awaiting approval" in f)
    actions = element(frame, f"migration-{m.pk}-actions")
    assert re.search(r"<button[^>]*>\s*Approve", actions)
    await comm.disconnect()


async def test_requester_gets_no_approve_button_for_own_migration(seed, people):
    m = seed["migration"]
    await sync_to_async(people["operator"].groups.add)(await sync_to_async(Group.objects.get)(name="approver"))
    comm = await connect(f"/ws/migrations/{m.pk}/", people["operator"])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_from(timeout=TIMEOUT)
    await change(m.pk, state=State.READY, ready_at=timezone.now())
    frame = await frame_until(comm, lambda f: "awaiting approval" in f)
    assert not re.search(r"<button[^>]*>\s*Approve", element(frame, f"migration-{m.pk}-actions"))
    await comm.disconnect()


async def test_messages_for_one_migration_arrive_in_order(seed, people):
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["viewer"])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_from(timeout=TIMEOUT)

    mib = 1024 * 1024
    steps = [300, 400, 500, 600, 700, 800, 900, 1024]
    for done in steps:
        await change(m.pk, bytes_done=done * mib)
    seqs, percents = [], []
    while not percents or percents[-1] < 100.0:
        frame = await comm.receive_from(timeout=TIMEOUT)
        seqs.append(seq_of(frame, m.pk))
        shown = re.search(r"(\d+(?:\.\d)?) %", element(frame, f"migration-{m.pk}-status"))
        percents.append(float(shown.group(1)))
    # Bursts may be coalesced, never reordered: both sequences only go up.
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert percents == sorted(percents)
    assert percents[-1] == 100.0
    await comm.disconnect()


async def test_older_event_is_dropped(seed, people):
    """An event that arrives late from another process must not trigger a render."""
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["viewer"])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_from(timeout=TIMEOUT)
    await change(m.pk, bytes_done=512 * 1024 * 1024)
    frame = await comm.receive_from(timeout=TIMEOUT)
    seq = seq_of(frame, m.pk)
    await comm.send_input({"type": "migration.changed", "id": m.pk, "seq": seq - 1, "state": State.COPYING})
    assert await comm.receive_nothing(timeout=0.5)
    await comm.disconnect()


async def test_failure_reason_pushed_as_it_happens(seed, people):
    m = seed["migration"]
    comm = await connect(f"/ws/migrations/{m.pk}/", people["viewer"])
    await comm.connect(timeout=TIMEOUT)
    await comm.receive_from(timeout=TIMEOUT)
    reason = "The destination directory /srv/backups is full: free 2.0 GiB or choose another root."
    await change(m.pk, state=State.FAILED, failure_reason=reason, finished_at=timezone.now())
    frame = await frame_until(comm, lambda f: "Failed" in f)
    assert "free 2.0 GiB or choose another root" in element(frame, f"migration-{m.pk}-status")
    await comm.disconnect()
