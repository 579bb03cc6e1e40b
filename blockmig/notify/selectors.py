"""Reads for the notification pages and the dashboard's banner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from blockmig.notify.models import Delivery

# Failed deliveries older than this no longer raise the dashboard's banner.
BANNER_DAYS = 7


def deliveries(status: str = "", channel: str = "") -> QuerySet:
    rows = Delivery.objects.select_related("notification", "notification__migration", "endpoint")
    if status:
        rows = rows.filter(status=status)
    if channel:
        rows = rows.filter(channel=channel)
    return rows.order_by("-created_at", "-id")


@dataclass(frozen=True)
class Trouble:
    failed: int
    retrying: int
    webhooks: int  # of those, how many are webhook deliveries
    latest_error: str

    @property
    def any(self) -> bool:
        return bool(self.failed or self.retrying)


def delivery_trouble() -> Trouble:
    """Deliveries that gave up in the last BANNER_DAYS, and those still retrying after a failure."""
    since = timezone.now() - timedelta(days=BANNER_DAYS)
    failing = Delivery.objects.filter(
        Q(status=Delivery.Status.FAILED, created_at__gte=since) | Q(status=Delivery.Status.PENDING, attempts__gte=1)
    )
    counts = {"failed": 0, "retrying": 0, "webhooks": 0}
    for status, channel in failing.values_list("status", "channel"):
        counts["failed" if status == Delivery.Status.FAILED else "retrying"] += 1
        counts["webhooks"] += channel == Delivery.Channel.WEBHOOK
    latest = failing.order_by("-id").values_list("last_error", flat=True).first() or ""
    return Trouble(latest_error=latest, **counts)
