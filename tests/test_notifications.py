"""Notifications: who is told what, written in the lifecycle's own transaction, sent later by
the sender (Django's locmem email backend under pytest: mail.outbox is what left)."""

import pytest
from django.core import mail
from django.db import transaction

from blockmig.lifecycle import migration_abort, migration_transition
from blockmig.models import Migration, MigrationDisk
from blockmig.notify.models import Delivery, Event, Notification, WebhookEndpoint
from blockmig.notify.rules import event_for_transition
from blockmig.notify.sender import backoff_seconds, deliver_due
from blockmig.states import State
from hosts.models import Hypervisor
from tests.helpers import make_user

# ---- the rule, without a database -------------------------------------------------------


def rule(**overrides):
    values = {
        "to_state": "ready",
        "event_type": "ready",
        "actor_id": None,
        "requester_id": 1,
        "auto_pivot": False,
        "awaited_before": False,
    }
    return event_for_transition(**{**values, **overrides})


def test_rule_ready_awaits_approval_once_and_not_under_auto_pivot():
    assert rule() == Event.AWAITING_APPROVAL
    assert rule(awaited_before=True) is None
    assert rule(auto_pivot=True) is None


def test_rule_failure_always_notifies():
    assert rule(to_state="failed", event_type="failed") == Event.FAILED


def test_rule_abort_notifies_only_when_someone_else_aborts():
    assert rule(to_state="aborting", event_type="abort_requested", actor_id=2) == Event.ABORTED
    assert rule(to_state="aborted", event_type="aborted", actor_id=2) == Event.ABORTED
    assert rule(to_state="aborting", event_type="abort_requested", actor_id=1) is None  # the requester
    assert rule(to_state="aborted", event_type="aborted", actor_id=None) is None  # the engine's own step


def test_rule_other_steps_notify_nobody():
    for state in ("preflight", "copying", "pivoting", "completed"):
        assert rule(to_state=state, event_type=state) is None


def test_backoff_doubles_up_to_the_cap(settings):
    settings.BLOCKMIG_NOTIFY_RETRY_SECONDS = 10
    settings.BLOCKMIG_NOTIFY_RETRY_MAX_SECONDS = 60
    assert [backoff_seconds(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]


# ---- through the lifecycle --------------------------------------------------------------


@pytest.fixture
def people(users):
    """The role fixtures with email addresses, and a second approver."""
    for name, user in users.items():
        user.email = f"{name}@example.org"
        user.save()
    users["approver2"] = make_user("approver2", "approver", email="approver2@example.org")
    return users


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/backups"])


@pytest.fixture
def migration(host, people) -> Migration:
    m = Migration.objects.create(hypervisor=host, domain_uuid="uuid-1", domain_name="testvm", requested_by=people["operator"])
    MigrationDisk.objects.create(
        migration=m,
        hypervisor=host,
        domain_uuid="uuid-1",
        target="vda",
        source_path="/images/vda.qcow2",
        destination="/backups/vda-copy.qcow2",
    )
    return m


def to_ready(m: Migration) -> Migration:
    for state in (State.PREFLIGHT, State.COPYING, State.READY):
        m = migration_transition(m.pk, state)
    return m


def emailed(event: str) -> dict[str, str]:
    """recipient address → subject, of the emails sent for `event` (after one sender pass)."""
    deliver_due()
    notification = Notification.objects.get(event=event)
    return {m.to[0]: m.subject for m in mail.outbox if m.subject == notification.subject}


def test_ready_emails_every_approver_but_not_the_requester_or_viewer(migration, people):
    to_ready(migration)
    notification = Notification.objects.get()
    assert notification.event == Event.AWAITING_APPROVAL
    sent = emailed(Event.AWAITING_APPROVAL)
    # The admin holds the approver permission too; the operator requested it; the viewer cannot approve.
    assert set(sent) == {"approver@example.org", "approver2@example.org", "admin@example.org"}
    assert all("awaits your approval" in subject and "testvm" in subject for subject in sent.values())
    body = mail.outbox[0].body
    assert f"/migrations/{migration.pk}/" in body and "/backups/vda-copy.qcow2" in body


def test_an_approver_who_requested_it_is_not_asked(host, people):
    m = Migration.objects.create(hypervisor=host, domain_uuid="u-2", domain_name="vm2", requested_by=people["approver"])
    to_ready(m)
    assert "approver@example.org" not in emailed(Event.AWAITING_APPROVAL)


def test_ready_again_after_falling_out_of_sync_does_not_ask_twice(migration):
    to_ready(migration)
    migration_transition(migration.pk, State.COPYING)
    migration_transition(migration.pk, State.READY)
    assert Notification.objects.filter(event=Event.AWAITING_APPROVAL).count() == 1


def test_auto_pivot_host_asks_nobody(migration, host):
    Hypervisor.objects.filter(pk=host.pk).update(auto_pivot=True)
    to_ready(migration)
    assert not Notification.objects.exists()


def test_failure_emails_the_requester_with_the_reason(migration):
    migration_transition(migration.pk, State.PREFLIGHT)
    migration_transition(migration.pk, State.FAILED, failure_reason="kvm01 is unreachable: connection refused")
    sent = emailed(Event.FAILED)
    assert list(sent) == ["operator@example.org"]
    assert "kvm01 is unreachable: connection refused" in mail.outbox[0].body
    assert Notification.objects.get().payload["reason"] == "kvm01 is unreachable: connection refused"


def test_abort_by_someone_else_emails_the_requester(migration, people):
    migration_transition(migration.pk, State.PREFLIGHT)
    migration_transition(migration.pk, State.COPYING)
    migration_abort(migration=migration, user=people["approver"])
    sent = emailed(Event.ABORTED)
    assert list(sent) == ["operator@example.org"]
    assert "aborted by approver" in next(iter(sent.values()))


def test_abort_by_the_requester_tells_nobody(migration, people):
    migration_abort(migration=migration, user=people["operator"])
    migration.refresh_from_db()
    assert migration.state == State.ABORTED
    assert not Notification.objects.exists()


def test_people_without_an_email_address_are_named_for_admins(migration, people):
    people["approver2"].email = ""
    people["approver2"].save()
    to_ready(migration)
    notification = Notification.objects.get()
    assert "approver2" in notification.note
    assert not notification.deliveries.filter(recipient_name="approver2").exists()


def test_webhook_deliveries_follow_each_endpoints_events(migration):
    WebhookEndpoint.objects.create(name="all", url="http://127.0.0.1:9/all", secret="s" * 20)
    WebhookEndpoint.objects.create(name="failures", url="http://127.0.0.1:9/f", secret="s" * 20, events=["failed"])
    WebhookEndpoint.objects.create(name="off", url="http://127.0.0.1:9/off", secret="s" * 20, enabled=False)
    to_ready(migration)
    hooks = Delivery.objects.filter(channel=Delivery.Channel.WEBHOOK)
    assert list(hooks.values_list("recipient_name", flat=True)) == ["all"]
    migration_transition(migration.pk, State.FAILED, failure_reason="boom")
    assert sorted(hooks.filter(notification__event="failed").values_list("recipient_name", flat=True)) == ["all", "failures"]


def test_outbox_rows_roll_back_with_the_transition(migration):
    """Written in the transition's transaction: no state change, no notification."""
    migration_transition(migration.pk, State.PREFLIGHT)
    with pytest.raises(RuntimeError), transaction.atomic():
        migration_transition(migration.pk, State.FAILED, failure_reason="boom")
        raise RuntimeError("the caller's transaction fails after the transition")
    migration.refresh_from_db()
    assert migration.state == State.PREFLIGHT
    assert not Notification.objects.exists() and not Delivery.objects.exists()


def test_a_broken_notification_never_fails_the_transition(migration, monkeypatch):
    from blockmig.notify import outbox

    def broken(*args, **kwargs):
        raise ValueError("a bug in the notification code")

    monkeypatch.setattr(outbox, "_queue", broken)
    to_ready(migration)
    migration.refresh_from_db()
    assert migration.state == State.READY
    assert not Notification.objects.exists()


def test_email_that_is_refused_is_retried_then_marked_failed(migration, settings):
    settings.MAILERS = {"default": {"BACKEND": "tests.test_notifications.RefusingBackend"}}
    settings.BLOCKMIG_NOTIFY_RETRY_SECONDS = 0
    settings.BLOCKMIG_NOTIFY_MAX_ATTEMPTS = 2
    migration_transition(migration.pk, State.FAILED, failure_reason="boom")
    deliver_due()
    first = Delivery.objects.get()
    assert (first.status, first.attempts) == (Delivery.Status.PENDING, 1)
    assert "relay access denied" in first.last_error
    deliver_due()
    first.refresh_from_db()
    assert (first.status, first.attempts, len(first.history)) == (Delivery.Status.FAILED, 2, 2)


class RefusingBackend:
    """An email backend whose server refuses every message (a real SMTP error type)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        import smtplib

        raise smtplib.SMTPRecipientsRefused({m.to[0]: (554, b"relay access denied") for m in messages})
