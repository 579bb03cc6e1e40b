"""Webhooks against REAL local HTTP receivers (http.server threads on 127.0.0.1): the signature
a receiver can check, the retry after a 500, and endpoints that hang or refuse, which must
never hold up a migration."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from blockmig.lifecycle import migration_abort, migration_transition
from blockmig.models import Migration, MigrationDisk
from blockmig.notify.models import Delivery, Notification, WebhookEndpoint
from blockmig.notify.sender import DeliveryLoop, deliver_due
from blockmig.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature, verify
from blockmig.states import State
from hosts.models import Hypervisor
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
SECRET = "a-signing-secret-for-tests"


class Receiver:
    """A real HTTP server on 127.0.0.1 answering each POST with the next status of `statuses`
    (the last one repeats), keeping what it received."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append({"headers": dict(self.headers), "body": body})
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"receiver is down for maintenance" if status >= 500 else b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/blockmig"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingReceiver:
    """Accepts connections and never answers until released (a stuck endpoint)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hang"
        self.accepted = threading.Event()
        self.release = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.release.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.accepted.set()

    def close(self):
        self.release.set()
        for conn in self.connections:
            conn.close()
        self.sock.close()


def refused_url() -> str:
    """An address where nothing listens: the port of a socket just closed."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/refused"


def make_migration(users, name: str = "testvm") -> Migration:
    host, _ = Hypervisor.objects.get_or_create(name="kvm01", defaults={"uri": "test:///default", "allowed_roots": ["/b"]})
    m = Migration.objects.create(hypervisor=host, domain_uuid=f"uuid-{name}", domain_name=name, requested_by=users["operator"])
    MigrationDisk.objects.create(
        migration=m,
        hypervisor=host,
        domain_uuid=m.domain_uuid,
        target="vda",
        source_path="/i/vda.qcow2",
        destination="/b/vda.qcow2",
    )
    return m


def test_signed_delivery_is_retried_after_a_500_and_the_row_shows_both(users, settings):
    settings.BLOCKMIG_NOTIFY_RETRY_SECONDS = 0  # the retry is due at once (backoff itself: test_notifications)
    with Receiver([500, 200]) as receiver:
        WebhookEndpoint.objects.create(name="chat", url=receiver.url, secret=SECRET)
        m = make_migration(users)
        migration_transition(m.pk, State.FAILED, failure_reason="the destination's disk is full")

        (first,) = deliver_due()
        assert (first.status, first.attempts) == (Delivery.Status.PENDING, 1)
        assert first.last_error.startswith("HTTP 500") and "down for maintenance" in first.last_error
        (second,) = deliver_due()

    row = Delivery.objects.get(pk=first.pk)
    assert (row.status, row.attempts) == (Delivery.Status.SENT, 2)
    assert [(h["ok"], h["status"]) for h in row.history] == [(False, 500), (True, 200)]
    assert row.last_error.startswith("HTTP 500")  # what went wrong stays visible after the success

    assert len(receiver.received) == 2
    for request in receiver.received:
        headers, body = request["headers"], request["body"]
        assert verify(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        assert not verify("another secret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER])
        assert headers["X-Blockmig-Event"] == "migration.failed"
        assert headers["X-Blockmig-Delivery"] == str(row.pk)
    assert receiver.received[0]["body"] == receiver.received[1]["body"]  # the same bytes each attempt

    sent = json.loads(receiver.received[1]["body"])
    assert sent["event"] == "migration.failed"
    assert sent["reason"] == "the destination's disk is full"
    assert sent["migration"]["id"] == m.pk and sent["migration"]["host"] == "kvm01"
    assert sent["migration"]["domain"] == "testvm" and sent["migration"]["state"] == "failed"
    assert sent["migration"]["previous_state"] == "requested"
    assert sent["migration"]["url"].endswith(f"/migrations/{m.pk}/")
    assert sent["migration"]["disks"] == [{"target": "vda", "source": "/i/vda.qcow2", "destination": "/b/vda.qcow2"}]


def test_signature_covers_the_timestamp_so_an_old_request_cannot_be_replayed():
    body = b'{"event":"migration.failed"}'
    old = "1000000000"
    assert not verify(SECRET, body, old, signature(SECRET, old, body))  # correct, but too old
    now = 2_000_000_000
    stamp = str(now)
    assert verify(SECRET, body, stamp, signature(SECRET, stamp, body), now=now)
    # Moving the signature onto a fresh timestamp breaks it.
    assert not verify(SECRET, body, str(now + 1), signature(SECRET, stamp, body), now=now)


def test_delivery_gives_up_after_the_last_attempt(users, settings):
    settings.BLOCKMIG_NOTIFY_RETRY_SECONDS = 0
    settings.BLOCKMIG_NOTIFY_MAX_ATTEMPTS = 3
    WebhookEndpoint.objects.create(name="gone", url=refused_url(), secret=SECRET)
    migration_transition(make_migration(users).pk, State.FAILED, failure_reason="boom")
    for _ in range(4):
        deliver_due()
    row = Delivery.objects.get()
    assert (row.status, row.attempts) == (Delivery.Status.FAILED, 3)
    assert "connection refused" in row.last_error


def test_a_hanging_and_a_refusing_endpoint_do_not_hold_up_transitions(transactional_db, users, settings):
    """The sender thread is stuck on the hanging endpoint while the lifecycle moves other
    migrations on: transitions only write the outbox, they never wait for a send."""
    settings.BLOCKMIG_WEBHOOK_TIMEOUT = 30  # longer than this whole test takes
    settings.BLOCKMIG_NOTIFY_POLL_SECONDS = 0.1
    hanging = HangingReceiver()
    WebhookEndpoint.objects.create(name="stuck", url=hanging.url, secret=SECRET)
    WebhookEndpoint.objects.create(name="refusing", url=refused_url(), secret=SECRET)
    stopping = threading.Event()
    loop = DeliveryLoop("test-sender", stopping)
    loop.start()
    try:
        first = make_migration(users, "vm1")
        migration_transition(first.pk, State.FAILED, failure_reason="first failure")
        assert hanging.accepted.wait(20), "the sender never reached the hanging endpoint"

        # The sender now holds an open, unanswered request. Move other migrations meanwhile.
        second = make_migration(users, "vm2")
        migration_transition(second.pk, State.PREFLIGHT)
        migration_transition(second.pk, State.COPYING)
        migration_transition(second.pk, State.READY)
        migration_abort(migration=second, user=users["approver"])
        third = make_migration(users, "vm3")
        migration_transition(third.pk, State.FAILED, failure_reason="third failure")
        assert not hanging.release.is_set()  # still hanging: none of that waited for it

        second.refresh_from_db()
        third.refresh_from_db()
        assert (second.state, third.state) == (State.ABORTING, State.FAILED)
        assert set(Notification.objects.values_list("migration__domain_name", "event")) == {
            ("vm1", "failed"),
            ("vm2", "awaiting_approval"),
            ("vm2", "aborted"),
            ("vm3", "failed"),
        }
        refused = wait_until(
            lambda: Delivery.objects.filter(recipient_name="refusing", attempts__gte=1).first(), "a refused attempt"
        )
        assert "connection refused" in refused.last_error
    finally:
        stopping.set()
        hanging.close()
        loop.join(40)


@pytest.mark.parametrize("status", [301, 404])
def test_a_redirect_or_client_error_is_a_failed_attempt_named_as_such(users, settings, status):
    settings.BLOCKMIG_NOTIFY_RETRY_SECONDS = 0
    with Receiver([status]) as receiver:
        WebhookEndpoint.objects.create(name="x", url=receiver.url, secret=SECRET)
        migration_transition(make_migration(users).pk, State.FAILED, failure_reason="boom")
        (row,) = deliver_due()
    assert row.status == Delivery.Status.PENDING and row.attempts == 1
    assert row.last_error.startswith(f"HTTP {status}")


def test_a_real_worker_process_delivers_the_webhook(transactional_db, users, tmp_path):
    """The sender runs inside `manage.py run_worker`: a failure committed here reaches a real
    receiver through a real worker process, signed."""
    with Receiver([200]) as receiver:
        WebhookEndpoint.objects.create(name="chat", url=receiver.url, secret=SECRET)
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
            "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
            "BLOCKMIG_NOTIFY_POLL_SECONDS": "0.2",
            # Its heartbeat and wake-ups apart from other test runs sharing this Redis.
            "BLOCKMIG_CHANNEL_PREFIX": f"test-webhooks-{os.getpid()}",
        }
        log = open(tmp_path / "worker.log", "w")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            m = make_migration(users)
            migration_transition(m.pk, State.FAILED, failure_reason="the host went away")
            wait_until(lambda: receiver.received, "the worker's POST", timeout=60)
            row = wait_until(
                lambda: Delivery.objects.filter(status=Delivery.Status.SENT).first(), "the delivery marked sent", timeout=30
            )
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
    request = receiver.received[0]
    assert verify(SECRET, request["body"], request["headers"][TIMESTAMP_HEADER], request["headers"][SIGNATURE_HEADER])
    assert json.loads(request["body"])["reason"] == "the host went away"
    assert row.attempts == 1, (tmp_path / "worker.log").read_text()


def test_admin_sends_a_signed_test_post_and_sees_the_answer(client_for, users):
    from blockmig.models import AuditEvent

    with Receiver([200]) as receiver:
        endpoint = WebhookEndpoint.objects.create(name="chat", url=receiver.url, secret=SECRET)
        response = client_for("admin").post(f"/notifications/webhooks/{endpoint.pk}/test/", follow=True)
    assert "chat answered HTTP 200 to a signed test POST" in response.content.decode()
    (request,) = receiver.received
    assert verify(SECRET, request["body"], request["headers"][TIMESTAMP_HEADER], request["headers"][SIGNATURE_HEADER])
    assert json.loads(request["body"])["event"] == "test"
    assert AuditEvent.objects.get(event_type="webhook_tested").details["ok"] is True
    assert client_for("operator").post(f"/notifications/webhooks/{endpoint.pk}/test/").status_code == 403


def test_a_test_post_to_a_dead_endpoint_says_why(client_for, users):
    endpoint = WebhookEndpoint.objects.create(name="gone", url=refused_url(), secret=SECRET)
    response = client_for("admin").post(f"/notifications/webhooks/{endpoint.pk}/test/", follow=True)
    assert "gone did not take the test POST: connection refused" in response.content.decode()
