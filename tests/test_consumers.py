"""The live push path: consumers behind session auth, fragments rendered per user, in order,
with catch-up on connect. Real Redis channel layer (`make services` starts it), the real ASGI
application; rows are created directly, so no libvirt is needed."""

from __future__ import annotations

import os
import re

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone

from blockmig.asgi import application
from blockmig.live import cache, publish
from blockmig.live.consumer import CLOSE_NOT_FOUND, CLOSE_NOT_LOGGED_IN
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import State
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.roles import setup_roles
from tests.helpers import make_user

pytestmark = pytest.mark.django_db(transaction=True)

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


def session_cookie(user: User) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def connect(path: str, user: User | None = None) -> WebsocketCommunicator:
    headers = [ORIGIN, HOST]
    if user is not None:
        headers.append((b"cookie", await sync_to_async(session_cookie)(user)))
    return WebsocketCommunicator(application, path, headers=headers)


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


def seq_of(frame: str, migration_id: int) -> int:
    match = re.search(rf"migration:{migration_id}=(\d+)", frame.split("\n", 1)[0])
    return int(match.group(1)) if match else 0


# ---- tests --------------------------------------------------------------------------


async def test_socket_refused_without_login(seed):
    comm = await connect(f"/ws/migrations/{seed['migration'].pk}/")
    connected, code = await comm.connect(timeout=TIMEOUT)
    assert not connected
    assert code == CLOSE_NOT_LOGGED_IN


async def test_socket_refused_from_foreign_origin(seed, people):
    cookie = await sync_to_async(session_cookie)(people["viewer"])
    comm = WebsocketCommunicator(
        application,
        f"/ws/migrations/{seed['migration'].pk}/",
        headers=[(b"origin", b"http://evil.example"), HOST, (b"cookie", cookie)],
    )
    connected, _ = await comm.connect(timeout=TIMEOUT)
    assert not connected


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


def add_chain(disk: Disk, names: list[str]) -> None:
    for depth, name in enumerate(names):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/srv/lab/{name}.qcow2", format="qcow2")


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


# ---- inventory pages follow a sync ------------------------------------------------------


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


def test_inventory_page_renders_do_not_grow_with_disks_or_domains(seed, people):
    """What a host socket reads per render is bounded whatever the size of the host."""
    from django.db import connection
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext

    from blockmig.live.disk import disk_pages
    from blockmig.live.domain import domain_page
    from blockmig.live.hypervisor import hypervisor_page

    host, domain, disk = seed["host"], seed["domain"], seed["disk"]
    request = RequestFactory().get("/hosts/lab/")
    request.user = people["operator"]
    request.user.has_perm("hosts.view_disk")  # warm the permission cache, as a socket's user is

    def count(render) -> int:
        with CaptureQueriesContext(connection) as captured:
            render()
        return len(captured)

    def renders():
        return (
            count(lambda: hypervisor_page(request, host.pk, "", "1")),
            count(lambda: domain_page(request, host.pk, domain.uuid)),
            count(lambda: disk_pages(request, host.pk, [disk.pk], {})),
        )

    small = renders()
    for i in range(30):
        extra = Disk.objects.create(domain=domain, target=f"vd{i:02d}", source=f"/srv/lab/x{i}.qcow2")
        add_chain(extra, [f"x{i}-{n}" for n in range(5)])
    Domain.objects.bulk_create(
        Domain(hypervisor=host, uuid=f"20000000-0000-4000-8000-{i:012d}", name=f"vm-{i:03d}", state="running") for i in range(120)
    )
    for depth in range(3, 12):
        ChainLayer.objects.create(disk=disk, depth=depth, path=f"/srv/lab/more-{depth}.qcow2", format="qcow2")
    assert renders() == small
    assert max(small) <= 8


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
