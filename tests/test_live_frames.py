"""One frame per audience: pushed fragments carry no CSRF token, so every user of one role
gets the same bytes from one render, and a form inside a pushed fragment still posts (htmx
sends the token from the page's <body hx-headers>). Real ASGI application, real Redis layer."""

from __future__ import annotations

import html
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, User
from django.test import Client
from django.test.signals import template_rendered
from django.utils import timezone

from blockmig.models import Migration
from blockmig.states import State
from tests.helpers import make_user
from tests.live_sockets import (
    TIMEOUT,
    change,
    connect,
    element,
    frame_until,
    people,
    private_channel_layer,
    seed,
    seq_of,
)

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN_FIELD = "csrfmiddlewaretoken"


@pytest.fixture
def renders():
    """The names of the templates (and partials) rendered while the test runs, in any thread."""
    names: list[str] = []

    def seen(sender, template, context, **kwargs) -> None:
        names.append(str(template.name))

    template_rendered.connect(seen)
    yield names
    template_rendered.disconnect(seen)


async def opened(path: str, user: User):
    comm = await connect(path, user)
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert connected, code
    catch_up = await comm.receive_from(timeout=TIMEOUT)
    return comm, catch_up


def pushed_pages(seed) -> list[str]:
    return [
        f"/ws/migrations/{seed['migration'].pk}/",
        "/ws/dashboard/",
        "/ws/hosts/lab/",
        f"/ws/hosts/lab/?domain={seed['domain'].uuid}",
        f"/ws/hosts/lab/?disk={seed['disk'].pk}",
    ]


async def test_no_pushed_frame_carries_a_csrf_token(seed, people):
    """Every page that is pushed, for every role, with the buttons that role gets: not one
    form field with a token, though the page's own forms post (next test)."""
    people = {**people, "admin": await sync_to_async(make_user)("admin", "admin")}
    m = seed["migration"]
    await change(m.pk, state=State.READY, ready_at=timezone.now())  # the approver's button shows
    for role, user in people.items():
        for path in pushed_pages(seed):
            comm, frame = await opened(path, user)
            assert frame.startswith("<!-- live "), frame[:80]
            assert TOKEN_FIELD not in frame, f"{path} as {role}"
            await comm.disconnect()
    comm, frame = await opened(f"/ws/migrations/{m.pk}/", people["approver"])
    assert re.search(r"<form[^>]*hx-boost=\"true\"[^>]*>", element(frame, f"migration-{m.pk}-actions"))
    await comm.disconnect()


def page_token(client: Client, path: str) -> str:
    """The token the page puts in <body hx-headers>, as the browser's htmx reads it."""
    page = client.get(path).content.decode()
    headers = re.search(r"<body hx-headers='([^']*)'>", page)
    assert headers, "the page's body holds no hx-headers"
    return json.loads(html.unescape(headers.group(1)))["X-CSRFToken"]


async def test_form_in_a_pushed_fragment_posts_with_only_the_header(seed, people):
    m = seed["migration"]
    operator = people["operator"]
    comm, frame = await opened(f"/ws/migrations/{m.pk}/", operator)
    await comm.disconnect()
    form = re.search(r'<form method="post" action="([^"]+)" class="mig-bandwidth"[^>]*>(.*?)</form>', frame, re.S)
    assert form, "the operator's pushed actions hold no bandwidth form"
    action, inside = form.groups()
    assert TOKEN_FIELD not in inside
    field = re.search(r'<input[^>]*name="(bandwidth_mib)"', inside).group(1)

    def post() -> tuple[int, int, int]:
        client = Client(enforce_csrf_checks=True)
        client.force_login(operator)
        token = page_token(client, f"/migrations/{m.pk}/")
        refused = client.post(action, {field: "40"}, headers={"HX-Request": "true"}).status_code
        done = client.post(action, {field: "50"}, headers={"HX-Request": "true", "X-CSRFToken": token}).status_code
        return refused, done, Migration.objects.get(pk=m.pk).bandwidth_mib

    refused, done, bandwidth = await sync_to_async(post)()
    assert refused == 403  # the check is real: without the header the post is refused
    assert done == 302 and bandwidth == 50


async def test_users_of_one_role_share_one_render_and_each_role_gets_its_actions(seed, people, renders):
    m = seed["migration"]
    users = {**people, "viewer2": await sync_to_async(make_user)("viewer2", "viewer")}
    sockets = {}
    for name, user in users.items():
        sockets[name], _ = await opened(f"/ws/migrations/{m.pk}/", user)
    renders.clear()  # the catch-ups are each socket's own; count what one change costs

    await change(m.pk, state=State.READY, bytes_done=1024 * 1024 * 1024, ready_at=timezone.now())
    frames = {name: await frame_until(comm, lambda f: "awaiting approval" in f) for name, comm in sockets.items()}
    seqs = {seq_of(frame, m.pk) for frame in frames.values()}
    assert len(seqs) == 1  # all of them show the one change

    assert frames["viewer"] == frames["viewer2"]  # byte for byte
    actions = {name: element(frame, f"migration-{m.pk}-actions") for name, frame in frames.items()}
    assert "<button" not in actions["viewer"] and "You can watch this migration" in actions["viewer"]
    assert re.search(r"<button[^>]*>\s*Set", actions["operator"]) and "Approve" not in actions["operator"]
    assert re.search(r"<button[^>]*>\s*Approve and pivot", actions["approver"])
    assert len({actions["viewer"], actions["operator"], actions["approver"]}) == 3

    # One render of the actions per audience (viewer, operator, approver), one status for all.
    actions_renders = [name for name in renders if name == "migration_actions"]
    status_renders = [name for name in renders if name == "migration_status"]
    assert len(actions_renders) == 3, renders
    assert len(status_renders) == 1, renders
    for comm in sockets.values():
        await comm.disconnect()


async def test_requester_who_may_approve_gets_a_frame_of_their_own(seed, people):
    """Four eyes: the requester's actions differ from the other approvers', even in one role."""
    m = seed["migration"]
    requester = people["operator"]
    await sync_to_async(requester.groups.set)(await sync_to_async(list)(Group.objects.filter(name="approver")))
    other = await sync_to_async(make_user)("approver2", "approver")
    comm_requester, _ = await opened(f"/ws/migrations/{m.pk}/", requester)
    comm_other, _ = await opened(f"/ws/migrations/{m.pk}/", other)
    comm_approver, _ = await opened(f"/ws/migrations/{m.pk}/", people["approver"])
    await change(m.pk, state=State.READY, ready_at=timezone.now())
    mine = await frame_until(comm_requester, lambda f: "awaiting approval" in f)
    theirs = await frame_until(comm_other, lambda f: "awaiting approval" in f)
    approver = await frame_until(comm_approver, lambda f: "awaiting approval" in f)
    assert theirs == approver
    assert not re.search(r"<button[^>]*>\s*Approve", element(mine, f"migration-{m.pk}-actions"))
    assert "another approver must approve" in element(mine, f"migration-{m.pk}-actions")
    assert re.search(r"<button[^>]*>\s*Approve", element(theirs, f"migration-{m.pk}-actions"))
    for comm in (comm_requester, comm_other, comm_approver):
        await comm.disconnect()


async def test_dashboard_frames_are_shared_by_viewers(seed, people, renders):
    viewers = [people["viewer"], await sync_to_async(make_user)("viewer2", "viewer")]
    sockets = [(await opened("/ws/dashboard/", user))[0] for user in viewers]
    renders.clear()
    await change(seed["migration"].pk, bytes_done=512 * 1024 * 1024)
    frames = [await frame_until(comm, lambda f: "50.0 %" in f) for comm in sockets]
    assert frames[0] == frames[1]
    assert renders.count("live/dashboard_migrations.html") == 1, renders
    for comm in sockets:
        await comm.disconnect()
