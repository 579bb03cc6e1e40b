"""Which worker drives a migration: a lease on the row, claimed with a conditional UPDATE.

A worker renews its lease every heartbeat. A lease that runs out means its worker died (or
drained on SIGTERM, which expires it at once); the reaper in every worker then enqueues one
takeover task per expiry, and whichever worker claims the lease first reconciles.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import get_random_string

from blockmig.models import Migration
from blockmig.states import ACTIVE_STATES


def new_worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{get_random_string(8)}"


def lease_length() -> timedelta:
    return timedelta(seconds=settings.BLOCKMIG_LEASE_SECONDS)


@dataclass(frozen=True)
class Claim:
    previous_owner: str  # "" when nobody held it before

    @property
    def is_takeover(self) -> bool:
        return bool(self.previous_owner)


def lease_claim(migration_id: int, owner: str) -> Claim | None:
    """Take the lease if it is free, expired or already ours; None if another worker holds it."""
    now = timezone.now()
    with transaction.atomic():
        previous = Migration.objects.filter(pk=migration_id).values_list("lease_owner", flat=True).first()
        taken = (
            Migration.objects.filter(pk=migration_id, state__in=ACTIVE_STATES)
            .filter(Q(lease_owner="") | Q(lease_owner=owner) | Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
            .update(lease_owner=owner, lease_expires_at=now + lease_length(), takeover_enqueued_at=None)
        )
    if not taken:
        return None
    return Claim(previous_owner="" if previous in ("", owner) else previous)


def lease_renew(migration_id: int, owner: str) -> bool:
    """Heartbeat. False means the lease was lost (another worker took over): stop driving."""
    return bool(
        Migration.objects.filter(pk=migration_id, lease_owner=owner).update(
            lease_expires_at=timezone.now() + lease_length()
        )
    )


def lease_release(migration_id: int, owner: str, *, hand_over: bool = False) -> None:
    """Give the lease up. hand_over keeps our name but expires it now so the reaper of any
    live worker takes the migration over at once (SIGTERM drain)."""
    fields = {"lease_expires_at": timezone.now()} if hand_over else {"lease_owner": "", "lease_expires_at": None}
    Migration.objects.filter(pk=migration_id, lease_owner=owner).update(**fields)


def leases_expired(grace_seconds: float = 30) -> list[int]:
    """Active migrations nobody drives: lease ran out, or never claimed for a while."""
    now = timezone.now()
    expired = Q(lease_expires_at__lt=now) & (
        Q(takeover_enqueued_at__isnull=True) | Q(takeover_enqueued_at__lt=F("lease_expires_at"))
    )
    never_claimed = Q(lease_expires_at__isnull=True, takeover_enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=grace_seconds))
    return list(
        Migration.objects.filter(state__in=ACTIVE_STATES).filter(expired | never_claimed).values_list("pk", flat=True)
    )


def takeover_mark(migration_id: int) -> bool:
    """Conditional UPDATE: True for exactly one reaper per expiry."""
    now = timezone.now()
    return bool(
        Migration.objects.filter(pk=migration_id, state__in=ACTIVE_STATES)
        .filter(
            (Q(lease_expires_at__lt=now) & (Q(takeover_enqueued_at__isnull=True) | Q(takeover_enqueued_at__lt=F("lease_expires_at"))))
            | Q(lease_expires_at__isnull=True, takeover_enqueued_at__isnull=True)
        )
        .update(takeover_enqueued_at=now)
    )

