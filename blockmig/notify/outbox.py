"""Writing notifications into the outbox, inside the lifecycle's transaction.

`notify_transition` is called by `blockmig.lifecycle.migration_transition` right after the
state change and its audit event: the Notification and its Delivery rows commit with them,
or not at all. Nothing is sent here (blockmig.notify.sender does that, later, elsewhere).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from blockmig.models import Migration
from blockmig.notify.models import Delivery, Event, Notification, WebhookEndpoint
from blockmig.notify.recipients import audience
from blockmig.notify.rules import event_for_transition
from hosts.models import Hypervisor

log = logging.getLogger(__name__)


def migration_url(migration_id: int) -> str:
    return settings.BLOCKMIG_BASE_URL + reverse("migration_detail", args=[migration_id])


def notify_transition(migration: Migration, *, from_state: str, event_type: str, actor=None) -> Notification | None:
    """Queue the notification this state change calls for (see blockmig.notify.rules).

    Runs in a savepoint: a mistake here (a database error included) is logged and rolled
    back alone, and the migration's transition commits all the same."""
    requester_id = migration.requested_by_id
    actor_id = getattr(actor, "pk", None)
    to_state = str(migration.state)
    if to_state not in ("ready", "failed") and event_type not in ("aborted", "abort_requested"):
        return None  # the common case costs no query
    try:
        with transaction.atomic():
            event = event_for_transition(
                to_state=to_state,
                event_type=event_type,
                actor_id=actor_id,
                requester_id=requester_id,
                auto_pivot=_auto_pivot(migration.hypervisor_id) if to_state == "ready" else False,
                awaited_before=(
                    to_state == "ready"
                    and Notification.objects.filter(migration=migration, event=Event.AWAITING_APPROVAL).exists()
                ),
            )
            if event is None:
                return None
            return _queue(event, migration, actor, from_state)
    except Exception:
        log.exception("migration %s: notification for %s not queued", migration.pk, to_state)
        return None


def _auto_pivot(hypervisor_id: int) -> bool:
    # Read from the row: the engine pivots by the policy as it is now, not as it was loaded.
    return bool(Hypervisor.objects.filter(pk=hypervisor_id).values_list("auto_pivot", flat=True).first())


def _reason(event: Event, migration: Migration, actor) -> str:
    requester = migration.requested_by.get_username()
    if event == Event.AWAITING_APPROVAL:
        return f"Every mirror is ready: an approver other than {requester} must approve the pivot."
    if event == Event.FAILED:
        return migration.failure_reason or "The migration failed."
    return f"Aborted by {actor.get_username()} (requested by {requester})."


def payload(event: Event, migration: Migration, actor, reason: str, from_state: str = "") -> dict:
    """The JSON body every webhook receives (docs/operations.md describes each field)."""
    return {
        "event": f"migration.{event.value}",
        "occurred_at": timezone.now().isoformat(),
        "reason": reason,
        "actor": actor.get_username() if getattr(actor, "pk", None) else None,
        "migration": {
            "id": migration.pk,
            "url": migration_url(migration.pk),
            "state": str(migration.state),
            "previous_state": from_state,
            "host": migration.hypervisor.name,
            "domain": migration.domain_name,
            "domain_uuid": migration.domain_uuid,
            "mode": migration.mode,
            "requested_by": migration.requested_by.get_username(),
            "disks": [{"target": d.target, "source": d.source_path, "destination": d.destination} for d in migration.disks.all()],
        },
    }


SUBJECTS = {
    Event.AWAITING_APPROVAL: "[blockmig] #{id} {domain} on {host} awaits your approval",
    Event.FAILED: "[blockmig] #{id} {domain} on {host} failed",
    Event.ABORTED: "[blockmig] #{id} {domain} on {host} was aborted by {actor}",
}


def _queue(event: Event, migration: Migration, actor, from_state: str) -> Notification:
    reason = _reason(event, migration, actor)
    body = payload(event, migration, actor, reason, from_state)
    people = audience(event, migration)
    subject = SUBJECTS[event].format(
        id=migration.pk, domain=migration.domain_name, host=migration.hypervisor.name, actor=body["actor"]
    )
    text = render_to_string("blockmig/notification_email.txt", {"event": event, "body": body, "Event": Event})
    note = ""
    if people.without_email:
        note = f"Not emailed (no email address): {', '.join(people.without_email)}."
    notification = Notification.objects.create(
        event=event, migration=migration, payload=body, subject=subject, text=text, note=note
    )
    deliveries = [
        Delivery(notification=notification, channel=Delivery.Channel.EMAIL, recipient=r.email, recipient_name=r.username)
        for r in people.recipients
    ]
    for endpoint in WebhookEndpoint.objects.filter(enabled=True):
        if event.value in endpoint.events:
            deliveries.append(
                Delivery(
                    notification=notification,
                    channel=Delivery.Channel.WEBHOOK,
                    endpoint=endpoint,
                    recipient=endpoint.url,
                    recipient_name=endpoint.name,
                )
            )
    Delivery.objects.bulk_create(deliveries)
    return notification
