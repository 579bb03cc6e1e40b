"""What holds on a real deployment: PostgreSQL, Redis, two workers, two daphne.

Functions named `on_deployment_*` run inside the deployment (conftest's `deployment.call`),
against its PostgreSQL database and its Redis channels; the tests drive HTTP and websockets
from outside, as a browser would.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from http.cookiejar import CookieJar
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, ProxyHandler, build_opener

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import make_people, migration_row, wait_for_state, wait_until

PASSWORD = "pw-deploy-tier"
MiB = 2**20
TAKEOVER_SECONDS = 30  # what issue 3 allows between a worker's death and the takeover


# -- run inside the deployment ------------------------------------------------------------------


def on_deployment_create_people() -> None:
    make_people([("operator", "operator"), ("approver", "approver"), ("viewer", "viewer")], password=PASSWORD)


def on_deployment_publish_inventory_change(name: str) -> dict:
    """A new host (libvirt's test:///default) synced by the real sync, which publishes the
    change once its rows are stored, as a worker's or the sync loop's sync does."""
    from blockmig.live import publish
    from hosts.models import Hypervisor
    from hosts.sync.hypervisor import hypervisor_sync

    hypervisor = Hypervisor.objects.create(name=name, uri="test:///default")
    result = hypervisor_sync(hypervisor, force=True)
    assert result.ok, result.error
    return {"id": hypervisor.pk, "seq": publish.current_seq(f"hypervisor:{hypervisor.pk}")}


def on_deployment_request_migration(
    domain_uuid: str, destination: str, allowed_root: str, bandwidth_mib: int, extra_wakeups: int = 0
) -> int:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import DiskRequest, migration_request
    from blockmig.wake import wake_workers
    from hosts.models import Hypervisor

    hypervisor = Hypervisor.objects.create(name=f"lab-{domain_uuid[:8]}", uri="qemu:///system", allowed_roots=[allowed_root])
    migration = migration_request(
        user=User.objects.get(username="operator"),
        hypervisor=hypervisor,
        domain_uuid=domain_uuid,
        disks=[DiskRequest("vda", destination)],
        bandwidth_mib=bandwidth_mib,
    )
    for _ in range(extra_wakeups):  # both workers race to claim it: one must drive it, once
        wake_workers(migration.pk)
    return migration.pk


def on_deployment_approve(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_approve
    from blockmig.models import Migration

    migration_approve(migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username="approver"))


def on_deployment_set_bandwidth(migration_id: int, bandwidth_mib: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_set_bandwidth
    from blockmig.models import Migration

    migration_set_bandwidth(
        migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username="operator"), bandwidth_mib=bandwidth_mib
    )


# -- a browser's view ---------------------------------------------------------------------------


def opener(jar: CookieJar | None = None):
    return build_opener(ProxyHandler({}), HTTPCookieProcessor(jar if jar is not None else CookieJar()))


def login(daphne, username: str) -> str:
    """Sign in through the login form; returns the Cookie header a browser would send."""
    jar = CookieJar()
    browser = opener(jar)
    page = browser.open(f"{daphne.url}/accounts/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urlencode({"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token}).encode()
    landed = browser.open(f"{daphne.url}/accounts/login/", form, timeout=10)
    assert "/accounts/login/" not in landed.url, f"login as {username} failed"
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


class LiveSocket:
    """A websocket as the page opens it; frames are collected by a reader thread."""

    def __init__(self, daphne, path: str, cookie: str | None):
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(
            connect(
                daphne.ws_url(path),
                origin=daphne.url,
                additional_headers={"Cookie": cookie} if cookie else {},
                proxy=None,
                open_timeout=10,
            )
        )
        self.frames: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                self.frames.append(message)
        except ConnectionClosed:
            pass

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in list(self.frames):
                if predicate(frame):
                    return frame
            time.sleep(0.05)
        heads = [f.split("\n", 1)[0] for f in self.frames]
        raise AssertionError(f"no matching frame within {timeout} s; frames seen: {heads}")

    def close(self) -> None:
        self.stack.close()
        self.reader.join(5)

    def __enter__(self) -> LiveSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_mark(frame: str, subject: str) -> int:
    """The seq a frame covers for `subject`, from its first line `<!-- live … subject=N -->`."""
    match = re.search(rf"\b{re.escape(subject)}=(\d+)\b", frame.split("\n", 1)[0])
    return int(match.group(1)) if match else 0


@pytest.fixture(scope="session")
def people(deployment_session) -> None:
    deployment_session.call(on_deployment_create_people)


# -- web tier -----------------------------------------------------------------------------------


def test_both_daphnes_serve_the_login_page(deployment):
    for daphne in deployment.daphnes:
        with opener().open(f"{daphne.url}/accounts/login/", timeout=10) as response:
            assert response.status == 200
            assert "Sign in to blockmig" in response.read().decode()


def test_session_from_one_daphne_works_on_the_other(deployment, people):
    """Sessions live in the database, so a proxy needs no sticky sessions."""
    first, second = deployment.daphnes
    cookie = login(first, "viewer")
    request = opener()
    request.addheaders = [("Cookie", cookie)]
    with request.open(f"{second.url}/", timeout=10) as response:
        assert "/accounts/login/" not in response.url
        assert re.search(r'class="user"[^>]*>viewer</a>', response.read().decode())


def test_logged_in_websocket_on_each_daphne_gets_the_current_page(deployment, people):
    cookie = login(deployment.daphnes[0], "viewer")
    for daphne in deployment.daphnes:
        with LiveSocket(daphne, "/ws/dashboard/", cookie) as socket:
            frame = socket.wait_for(lambda f: f.startswith("<!-- live dashboard"))
            assert 'id="dashboard-migrations"' in frame


def test_anonymous_websocket_is_refused_on_each_daphne(deployment):
    for daphne in deployment.daphnes:
        with pytest.raises(InvalidStatus) as refused:
            LiveSocket(daphne, "/ws/dashboard/", cookie=None)
        assert refused.value.response.status_code == 403


def test_change_published_by_another_process_reaches_sockets_on_both_daphnes(deployment, people):
    """Fan-out across processes: the publisher is neither daphne; Redis carries the event."""
    cookie = login(deployment.daphnes[0], "viewer")
    sockets = [LiveSocket(daphne, "/ws/dashboard/", cookie) for daphne in deployment.daphnes]
    try:
        for socket in sockets:
            socket.wait_for(lambda f: f.startswith("<!-- live dashboard"))  # joined its groups
        published = deployment.call(on_deployment_publish_inventory_change, name="fanout-host")
        subject = f"hypervisor:{published['id']}"
        for socket in sockets:
            socket.wait_for(lambda f: frame_mark(f, subject) >= published["seq"])
    finally:
        for socket in sockets:
            socket.close()


# -- the engine on PostgreSQL with two workers ----------------------------------------------


def lease_pid(row: dict) -> int:
    """Worker ids are `host:pid:random` (blockmig.leases.new_worker_id)."""
    return int(row["lease_owner"].split(":")[1])


def count(row: dict, **match) -> int:
    """Audit events matching all of `match`; `type` is the event type (notes such as a
    takeover carry the current state as to_state, so states are counted by type)."""
    return sum(all(event[k] == v for k, v in match.items()) for event in row["events"])


@pytest.mark.lab
def test_two_workers_drive_a_migration_exactly_once(deployment, people, lab_domains):
    vm = lab_domains.images("once", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 8M")])
    copy = str(vm.backups / "copy.qcow2")
    migration_id = deployment.call(
        on_deployment_request_migration,
        domain_uuid=vm.uuid,
        destination=copy,
        allowed_root=str(vm.backups),
        bandwidth_mib=0,
        extra_wakeups=2,
    )
    row = wait_for_state(migration_id, {"ready", "failed"}, on=deployment)
    assert row["state"] == "ready", row["failure_reason"]
    assert lease_pid(row) in {w.pid for w in deployment.workers}
    assert vm.sources()["vda"] == str(vm.disks[0].path)  # no pivot before the approval

    deployment.call(on_deployment_approve, migration_id=migration_id)
    row = wait_for_state(migration_id, {"completed", "failed"}, on=deployment)
    assert row["state"] == "completed", row["failure_reason"]
    assert count(row, type="preflight") == 1
    assert count(row, type="copying") == 1
    assert count(row, type="approved", actor="approver") == 1
    assert count(row, type="takeover") == 0
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy


@pytest.mark.lab
def test_kill9_of_the_copying_worker_the_other_takes_over(deployment, people, lab_domains):
    vm = lab_domains.images("kill9", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    copy = str(vm.backups / "copy.qcow2")
    # 1 MiB/s keeps 32 MiB copying for half a minute: long enough to kill the worker mid-copy.
    migration_id = deployment.call(
        on_deployment_request_migration,
        domain_uuid=vm.uuid,
        destination=copy,
        allowed_root=str(vm.backups),
        bandwidth_mib=1,
    )
    # The approver watches the migration page on the daphne the login did not go through.
    cookie = login(deployment.daphnes[0], "approver")
    with LiveSocket(deployment.daphnes[1], f"/ws/migrations/{migration_id}/", cookie) as page:
        row = wait_for_state(migration_id, {"copying"}, timeout=30, on=deployment)
        driver = deployment.worker_with_pid(lease_pid(row))
        survivor = next(w for w in deployment.workers if w is not driver)
        page.wait_for(lambda f: "mig-status--copying" in f)

        driver.kill9()

        def taken_over():
            row = deployment.call(migration_row, migration_id=migration_id)
            return row if row["lease_owner"] and lease_pid(row) == survivor.pid and count(row, type="takeover") else None

        row = wait_until(taken_over, f"the takeover of #{migration_id} by worker {survivor.pid}", timeout=TAKEOVER_SECONDS)
        assert row["state"] == "copying"

        deployment.call(on_deployment_set_bandwidth, migration_id=migration_id, bandwidth_mib=0)
        row = wait_for_state(migration_id, {"ready", "failed"}, on=deployment)
        assert row["state"] == "ready", row["failure_reason"]
        page.wait_for(lambda f: "mig-status--ready" in f)
        deployment.call(on_deployment_approve, migration_id=migration_id)
        row = wait_for_state(migration_id, {"completed", "failed"}, on=deployment)
        assert row["state"] == "completed", row["failure_reason"]
        page.wait_for(lambda f: "mig-status--completed" in f)

    assert count(row, type="copying") == 1  # the takeover reconciled; it never restarted the copy
    takeover = next(e for e in row["events"] if e["type"] == "takeover")
    assert f":{driver.pid}:" in takeover["details"]["previous_worker"]
    assert f":{survivor.pid}:" in takeover["details"]["worker"]
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy
