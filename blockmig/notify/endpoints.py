"""Admins' writes to notifications: webhook endpoints and retrying a delivery. Each change
and its audit event commit together; the secret never goes into the audit trail."""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from blockmig.audit import audit_record
from blockmig.notify.models import Delivery, WebhookEndpoint
from blockmig.notify.sender import Outcome, send_test

AUDITED_FIELDS = ("name", "url", "enabled", "events")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _values(endpoint: WebhookEndpoint) -> dict:
    return {name: getattr(endpoint, name) for name in AUDITED_FIELDS}


def webhook_create(*, user, name: str, url: str, secret: str, enabled: bool, events: list[str]) -> WebhookEndpoint:
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            name=name, url=url, secret=secret or new_secret(), enabled=enabled, events=list(events), created_by=user
        )
        audit_record(event_type="webhook_added", actor=user, details={"webhook": endpoint.pk, **_values(endpoint)})
    return endpoint


def webhook_update(*, user, endpoint: WebhookEndpoint, secret: str = "", **values) -> WebhookEndpoint:
    """`secret` empty keeps the one it has; a new one is audited as "secret replaced" only."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        before = _values(locked)
        for name in AUDITED_FIELDS:
            if name in values:
                setattr(locked, name, values[name])
        changes: dict[str, object] = {
            n: {"from": before[n], "to": getattr(locked, n)} for n in AUDITED_FIELDS if before[n] != getattr(locked, n)
        }
        if secret and secret != locked.secret:
            locked.secret = secret
            changes["secret"] = "replaced"
        if changes:
            locked.save()
            audit_record(
                event_type="webhook_changed", actor=user, details={"webhook": locked.pk, "name": locked.name, "changes": changes}
            )
    return locked


def webhook_delete(*, user, endpoint: WebhookEndpoint) -> None:
    """Its past deliveries stay listed (with the URL they went to)."""
    with transaction.atomic():
        values = _values(endpoint)
        pk = endpoint.pk
        endpoint.delete()
        audit_record(event_type="webhook_deleted", actor=user, details={"webhook": pk, **values})


def webhook_test(*, user, endpoint: WebhookEndpoint) -> Outcome:
    """Send a signed test POST now and audit how it went (the admin waits for the answer,
    at most BLOCKMIG_WEBHOOK_TIMEOUT)."""
    outcome = send_test(endpoint.url, endpoint.secret, sent_by=user.get_username())
    with transaction.atomic():
        audit_record(
            event_type="webhook_tested",
            actor=user,
            details={
                "webhook": endpoint.pk,
                "name": endpoint.name,
                "ok": outcome.ok,
                "status": outcome.status,
                "error": outcome.error,
            },
        )
    return outcome


def delivery_retry(*, user, delivery: Delivery) -> Delivery:
    """A failed delivery gets a fresh series of attempts, starting at the sender's next pass
    (its history is kept)."""
    with transaction.atomic():
        locked = Delivery.objects.select_for_update().get(pk=delivery.pk)
        previous = {"status": locked.status, "attempts": locked.attempts, "last_error": locked.last_error}
        Delivery.objects.filter(pk=locked.pk).update(
            status=Delivery.Status.PENDING, attempts=0, next_attempt_at=timezone.now(), claimed_until=None, claimed_by=""
        )
        audit_record(
            event_type="delivery_retried",
            actor=user,
            migration=locked.notification.migration,
            details={
                "delivery": locked.pk,
                "channel": locked.channel,
                "recipient": locked.recipient_name or locked.recipient,
                **previous,
            },
        )
    locked.refresh_from_db()
    return locked
