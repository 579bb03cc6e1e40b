"""Which worker drives a migration: a fenced lease on the row itself.

A worker with a free slot claims an active migration directly: a conditional UPDATE that
succeeds only while the lease is free or expired, and that bumps `lease_epoch`, a number
that only grows (on PostgreSQL the candidate row is picked with FOR UPDATE SKIP LOCKED, so
two workers never wait on each other). The (owner, epoch) pair is the fencing token: every
write the driver makes is conditional on it, and before anything it cannot undo the driver
renews the lease and checks that enough of it is left (Kleppmann's fencing, applied to
libvirt calls that have no token of their own). A worker that was paused, cut off or slowed
by a locked database therefore never acts on a migration someone else has claimed since.

There is no queue: the Migration row is the work item, and an expired lease is noticed by
every worker's slow poll (wake-ups over Redis make a new migration start at once).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import get_random_string

from blockmig.limits.rules import startable_queued
from blockmig.models import Migration
from blockmig.states import ACTIVE_STATES, State


class LeaseLost(Exception):
    """Another worker holds the migration now (its epoch is newer): stop driving at once."""


def new_worker_id() -> str:
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{get_random_string(8)}"


def lease_seconds() -> float:
    return settings.BLOCKMIG_LEASE_SECONDS


@dataclass
class Lease:
    """A claim on one migration. `valid_until` is on this process's monotonic clock and is
    conservative: it counts from before the write that set the expiry was sent."""

    migration_id: int
    owner: str
    epoch: int
    previous_owner: str = ""
    valid_until: float = field(default=0.0)

    @property
    def is_takeover(self) -> bool:
        return bool(self.previous_owner) and self.previous_owner != self.owner

    def left(self) -> float:
        return self.valid_until - time.monotonic()

    def fence(self) -> Q:
        """The condition every write of the holder is made under."""
        return Q(pk=self.migration_id, lease_owner=self.owner, lease_epoch=self.epoch)

    def audit(self) -> dict:
        return {"worker": self.owner, "epoch": self.epoch}


def _claimable(now) -> Q:
    return Q(lease_owner="") | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def lease_claim_next(owner: str, exclude: set[int] | frozenset[int] = frozenset()) -> Lease | None:
    """Claim the oldest active migration nobody holds; None when there is none. A queued
    migration is claimed only once the copy limits would let it start (blockmig.limits), so
    waiting ones hold no driver."""
    startable = startable_queued() if Migration.objects.filter(state=State.QUEUED).exists() else []

    def unclaimed():
        return (
            Migration.objects.filter(Q(state__in=ACTIVE_STATES - {State.QUEUED}) | Q(pk__in=startable))
            .filter(_claimable(timezone.now()))
            .exclude(pk__in=exclude)
            .order_by("created_at", "pk")
        )

    # Look first without a transaction: on SQLite every transaction here takes the write
    # lock, and most polls find nothing.
    if not unclaimed().exists():
        return None
    with transaction.atomic():
        candidates = unclaimed()
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        row = candidates.values("pk", "lease_owner", "lease_epoch").first()
        if row is None:
            return None
        # The expiry is computed after the lock is held (IMMEDIATE transactions on SQLite,
        # the row lock on PostgreSQL), so a wait for the lock never stores one already past.
        sent = time.monotonic()
        now = timezone.now()
        taken = (
            Migration.objects.filter(pk=row["pk"], lease_epoch=row["lease_epoch"], state__in=ACTIVE_STATES)
            .filter(_claimable(now))
            .update(
                lease_owner=owner, lease_epoch=F("lease_epoch") + 1, lease_expires_at=now + timedelta(seconds=lease_seconds())
            )
        )
    if not taken:
        return None  # another worker got there first
    return Lease(row["pk"], owner, row["lease_epoch"] + 1, previous_owner=row["lease_owner"], valid_until=sent + lease_seconds())


def lease_renew(lease: Lease, also: Callable[[], object] | None = None) -> bool:
    """Extend the lease; `also` runs in the same transaction, so a write that must hold the
    lease costs no second round trip. False: the lease was lost (a newer epoch exists), stop
    driving. A database error propagates: the caller retries, and `lease.left()` says how
    long it may still act."""
    with transaction.atomic():
        if not Migration.objects.select_for_update().filter(lease.fence()).exists():
            return False
        sent = time.monotonic()
        now = timezone.now()
        Migration.objects.filter(lease.fence()).update(lease_expires_at=now + timedelta(seconds=lease_seconds()))
        if also is not None:
            also()
    lease.valid_until = sent + lease_seconds()
    return True


def lease_release(lease: Lease, *, hand_over: bool = False) -> None:
    """Give the lease up. hand_over (SIGTERM drain) keeps our name but expires it now, so any
    live worker's next poll takes the migration over."""
    fields = {"lease_expires_at": timezone.now()} if hand_over else {"lease_owner": "", "lease_expires_at": None}
    Migration.objects.filter(lease.fence()).update(**fields)
    lease.valid_until = 0.0
