"""What the socket tests share: their own channel prefix on the real Redis layer, one user per
role, a seeded host with a copying migration, and sockets opened through the real ASGI
application with a session cookie, an Origin and a Host as a browser sends them.

Test modules import the fixtures they use by name (tests/test_live_*.py, tests/test_ws_*.py,
tests/test_live_frames.py); rows are created directly, so no libvirt is needed."""

from __future__ import annotations

import os
import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from blockmig.asgi import application
from blockmig.live import cache, publish
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.roles import setup_roles
from tests.helpers import make_user

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # a browser sends both; the Origin must match the Host
TIMEOUT = 5


# ---- fixtures ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def private_channel_layer(settings):
    """A channel prefix of our own: workers and other test runs share this Redis, and their
    migration ids collide with ours."""
    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = {**layer.get("CONFIG", {}), "prefix": f"blockmig-test-{os.getpid()}"}
    settings.CHANNEL_LAYERS = {"default": layer}  # channels resets its layers on this change
    yield


@pytest.fixture
def people(db):
    setup_roles()
    return {role: make_user(role, role) for role in ("viewer", "operator", "approver")}


@pytest.fixture
def seed(people):
    """testvm/vda on a lab-like host, with its chain, and a migration of it that is copying."""
    host = Hypervisor.objects.create(name="lab", uri="qemu:///system", allowed_roots=["/srv/backups"])
    domain = Domain.objects.create(hypervisor=host, uuid="0f0e0d0c-0000-4000-8000-000000000001", name="testvm", state="running")
    disk = Disk.objects.create(domain=domain, target="vda", format="qcow2", source="/srv/lab/snap2.qcow2")
    for depth, name in enumerate(("snap2", "snap1", "base")):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/srv/lab/{name}.qcow2", format="qcow2")
    migration = Migration.objects.create(
        hypervisor=host,
        domain_uuid=domain.uuid,
        domain_name=domain.name,
        requested_by=people["operator"],
        state=State.COPYING,
        bytes_done=256 * 1024 * 1024,
        bytes_total=1024 * 1024 * 1024,
        rate_bps=64 * 1024 * 1024,
    )
    MigrationDisk.objects.create(
        migration=migration,
        hypervisor=host,
        domain_uuid=domain.uuid,
        target="vda",
        source_path=disk.source,
        source_chain=[layer.path for layer in disk.layers.all()],
        destination="/srv/backups/copy.qcow2",
        cur=256 * 1024 * 1024,
        end=1024 * 1024 * 1024,
    )
    AuditEvent.objects.create(
        event_type="requested",
        actor=people["operator"],
        actor_name="operator",
        migration=migration,
        hypervisor_name=host.name,
        domain_name=domain.name,
        disk_targets="vda",
        to_state=State.REQUESTED,
    )
    cache.clear()
    return {"host": host, "domain": domain, "disk": disk, "migration": migration}


@pytest.fixture
def short_reauth(settings):
    settings.BLOCKMIG_WS_REAUTH_SECONDS = 0.3
    return 0.3


# ---- sockets and frames ------------------------------------------------------------


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(path: str, user: User | None = None) -> WebsocketCommunicator:
    headers = [ORIGIN, HOST]
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    return WebsocketCommunicator(application, path, headers=headers)


async def socket_for(path: str, user: User) -> tuple[WebsocketCommunicator, str]:
    """A communicator as the page opens it, and the session key it carries."""
    cookie = await sync_to_async(session_cookie)(user)
    return WebsocketCommunicator(application, path, headers=[ORIGIN, HOST, (b"cookie", cookie)]), cookie.decode().split("=", 1)[1]


async def opened(path: str, user: User) -> tuple[WebsocketCommunicator, str]:
    """A socket that is open and has had its catch-up frame."""
    comm, session_key = await socket_for(path, user)
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert connected, code
    assert (await comm.receive_output(timeout=TIMEOUT))["type"] == "websocket.send"
    return comm, session_key


async def closed_with(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> int:
    """The close code of the next message, which must be the close: no frame before it."""
    message = await comm.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", f"got a frame instead of the close: {message.get('text', '')[:80]}"
    return message["code"]


async def change(migration_id: int, **fields) -> None:
    """Commit a change the way the engine does, then publish it (after the commit)."""

    def write():
        Migration.objects.filter(pk=migration_id).update(**fields)
        publish.migration_changed(migration_id)

    await sync_to_async(write)()


async def frame_until(comm: WebsocketCommunicator, predicate, *, limit: int = 20) -> str:
    for _ in range(limit):
        frame = await comm.receive_from(timeout=TIMEOUT)
        if predicate(frame):
            return frame
    raise AssertionError("no matching frame")


def element(frame: str, element_id: str) -> str:
    """The HTML of the element with `element_id` (up to the next top-level fragment)."""
    match = re.search(rf'<[a-z]+[^>]*\bid="{re.escape(element_id)}"', frame)
    assert match, f"{element_id} not in frame"
    rest = frame[match.start() :]
    nxt = re.search(r'\n<[a-z]+[^>]*\bid="migration-\d+-', rest[1:])
    return rest if nxt is None else rest[: nxt.start() + 1]


def outer(frame: str, element_id: str) -> str:
    """The whole element with `element_id` (balanced tags of its own name)."""
    match = re.search(rf'<([a-z0-9]+)[^>]*\bid="{re.escape(element_id)}"', frame)
    assert match, f"{element_id} not in frame"
    tag, depth, pos = match.group(1), 0, match.start()
    for m in re.finditer(rf"<(/?){tag}\b[^>]*>", frame[pos:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            return frame[pos : pos + m.end()]
    raise AssertionError(f"{element_id} not closed")


def seq_of(frame: str, migration_id: int) -> int:
    match = re.search(rf"migration:{migration_id}=(\d+)", frame.split("\n", 1)[0])
    return int(match.group(1)) if match else 0


def add_chain(disk: Disk, names: list[str]) -> None:
    for depth, name in enumerate(names):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/srv/lab/{name}.qcow2", format="qcow2")
