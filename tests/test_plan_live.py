"""The plan page's socket (/ws/plans/<id>/): catch-up on connect, every progress change of one
of the plan's migrations redraws its bar and the totals, the plan's own changes (pause) redraw
its status and actions; a viewer gets no buttons; Continue reaches approvers only. Real Redis and the real ASGI application;
rows are made directly, so no libvirt is needed."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from blockmig.asgi import application
from blockmig.live import cache, publish
from blockmig.live.consumer import CLOSE_NOT_FOUND
from blockmig.models import Migration, MigrationDisk
from blockmig.plans.actions import plan_pause
from blockmig.plans.recovery import CONTINUE_AFTER, plan_continue
from tests.plan_factories import GIB, add_migrations, make_plan

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
TIMEOUT = 5


@pytest.fixture(autouse=True)
def private_channel_layer(settings):
    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = {**layer.get("CONFIG", {}), "prefix": f"blockmig-plan-test-{os.getpid()}"}
    settings.CHANNEL_LAYERS = {"default": layer}
    cache.clear()
    yield


@pytest.fixture
def running_plan(users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"], disks=2)
    first, second = add_migrations(plan, ["copying", "requested"], done=GIB // 4)
    return plan, first, second


def cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(path: str, user) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, path, headers=[*HEADERS, (b"cookie", await sync_to_async(cookie)(user))])
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert connected
    return comm


async def frame_until(comm, predicate, limit: int = 20) -> str:
    for _ in range(limit):
        frame = await comm.receive_from(timeout=TIMEOUT)
        if predicate(frame):
            return frame
    raise AssertionError("no matching frame")


def bar_of(frame: str, plan_id: int, item_pk: int) -> str:
    row = re.search(rf'<tr id="plan-{plan_id}-disk-{item_pk}".*?</tr>', frame, re.S)
    assert row, "the disk's row is not in the frame"
    return re.search(r'aria-valuenow="(\d+)"', row.group(0)).group(1)


async def test_plan_page_bars_and_totals_follow_progress(running_plan, users):
    plan, first, _second = running_plan
    item = await sync_to_async(lambda: first.plan_disks.get())()
    comm = await connect(f"/ws/plans/{plan.pk}/", users["viewer"])
    catch_up = await comm.receive_from(timeout=TIMEOUT)
    assert bar_of(catch_up, plan.pk, item.pk) == "25"
    assert f'id="plan-{plan.pk}-status"' in catch_up and "Running" in catch_up
    assert "Pause" not in catch_up  # a viewer's actions carry no buttons

    def progress():
        Migration.objects.filter(pk=first.pk).update(bytes_done=3 * GIB // 4)
        MigrationDisk.objects.filter(migration=first).update(cur=3 * GIB // 4)
        publish.migration_changed(first.pk)

    await sync_to_async(progress)()
    frame = await frame_until(comm, lambda f: 'aria-valuenow="75"' in f)
    assert bar_of(frame, plan.pk, item.pk) == "75"
    assert "768.0 MiB of 2.0 GiB" in frame  # the totals moved with it
    await comm.disconnect()


async def test_pausing_is_pushed_to_the_plan_page(running_plan, users):
    plan, _first, _second = running_plan
    comm = await connect(f"/ws/plans/{plan.pk}/", users["operator"])
    catch_up = await comm.receive_from(timeout=TIMEOUT)
    assert "Pause (no new copies)" in catch_up
    await sync_to_async(plan_pause)(plan=plan, user=users["operator"])
    frame = await frame_until(comm, lambda f: "Paused — no new copies start" in f)
    assert ">Resume</button>" in frame and "Pause (no new copies)" not in frame
    await comm.disconnect()


async def test_socket_for_a_missing_plan_closes_as_not_found(users):
    comm = WebsocketCommunicator(
        application, "/ws/plans/999999/", headers=[*HEADERS, (b"cookie", await sync_to_async(cookie)(users["viewer"]))]
    )
    connected, code = await comm.connect(timeout=TIMEOUT)
    if connected:
        code = (await comm.receive_output(timeout=TIMEOUT)).get("code")
    assert code == CLOSE_NOT_FOUND


async def test_continue_is_pushed_to_approvers_only_and_goes_once_the_plan_runs(users):
    quiet = timezone.now() - CONTINUE_AFTER - timedelta(seconds=5)

    def interrupted():
        plan = make_plan(users["operator"], state="approved", approved_by=users["approver"], approved_at=quiet,
                         requested_at=quiet)  # fmt: skip
        add_migrations(plan, ["requested"])
        return plan

    plan = await sync_to_async(interrupted)()
    viewer = await connect(f"/ws/plans/{plan.pk}/", users["viewer"])
    assert f"Continue plan #{plan.pk}" not in await viewer.receive_from(timeout=TIMEOUT)
    approver = await connect(f"/ws/plans/{plan.pk}/", users["approver"])
    assert f"Continue plan #{plan.pk}" in await approver.receive_from(timeout=TIMEOUT)
    await sync_to_async(plan_continue)(plan=plan, user=users["approver"])
    frame = await frame_until(approver, lambda f: 'mig-state--running">Running<' in f)
    assert f"Continue plan #{plan.pk}" not in frame
    await viewer.disconnect()
    await approver.disconnect()
