"""What is to be sent, to whom, and how each delivery went (the outbox's rows)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Event(models.TextChoices):
    """Moments when a person must act (or must know), each with the words people read."""

    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted by someone else"


def all_events() -> list[str]:
    return list(Event.values)


class WebhookEndpoint(models.Model):
    """An admin-configured receiver: every notification of its events is POSTed to it as JSON,
    signed with its secret (blockmig.notify.signing)."""

    name = models.CharField(max_length=64, unique=True)
    url = models.URLField(max_length=1024, help_text="http:// or https:// address that receives a POST per notification.")
    secret = models.CharField(max_length=128, help_text="Signs each body (HMAC-SHA256); the receiver checks it.")
    enabled = models.BooleanField(default=True)
    events = models.JSONField(default=all_events, help_text="Which events this endpoint receives.")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def event_labels(self) -> list[str]:
        return [str(Event(e).label) for e in self.events if e in Event.values]


class Notification(models.Model):
    """One moment to tell people about, with the JSON body every webhook receives (fixed
    when the event happened, so a retry sends exactly the same bytes)."""

    event = models.CharField(max_length=32, choices=Event.choices, db_index=True)
    migration = models.ForeignKey("blockmig.Migration", on_delete=models.CASCADE, related_name="notifications")
    payload = models.JSONField()
    subject = models.CharField(max_length=255)
    text = models.TextField(help_text="The email body.")
    # Why some people who would have been told were not (no email address, say): for admins.
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_event_display()} #{self.migration_id}"


class Delivery(models.Model):
    """One notification to one recipient through one channel, retried until sent or failed."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    endpoint = models.ForeignKey(WebhookEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    # The email address, or the endpoint's URL when the delivery was made (kept if it is deleted).
    recipient = models.CharField(max_length=1024)
    recipient_name = models.CharField(max_length=150, blank=True, help_text="User name or endpoint name.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Each attempt: {"at", "ok", "error" | "status"}; the page shows them.
    history = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    # A sender holds a delivery while it sends; a sender that died lets it go when this passes.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=96, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]

    def __str__(self) -> str:
        return f"{self.channel} → {self.recipient_name or self.recipient} ({self.status})"
