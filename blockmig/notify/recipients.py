"""Who is told what. The permission that makes someone an approver is the one the
lifecycle checks before an approval (hosts.roles gives it to the approver and admin roles),
so the people emailed are exactly those whose approval would be accepted."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from blockmig.models import Migration
from blockmig.notify.models import Event

APPROVE_PERMISSION = "blockmig.approve_migration"
# with_perm needs one backend named when several are configured (django-axes is one).
PERMISSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


@dataclass(frozen=True)
class Recipient:
    username: str
    email: str


@dataclass(frozen=True)
class Audience:
    recipients: list[Recipient]
    # People who would have been told but have no email address: shown to admins.
    without_email: list[str]


def approvers(exclude_user_id: int | None = None) -> QuerySet:
    """Active users whose approval the lifecycle would accept (the requester's is not)."""
    users = get_user_model().objects.with_perm(APPROVE_PERMISSION, backend=PERMISSION_BACKEND).filter(is_active=True)
    if exclude_user_id is not None:
        users = users.exclude(pk=exclude_user_id)
    return users.order_by("username")


def audience(event: Event, migration: Migration) -> Audience:
    """Approvers (not the requester: four eyes) for an awaited approval; the requester for a
    failure or an abort by someone else."""
    if event == Event.AWAITING_APPROVAL:
        people = list(approvers(exclude_user_id=migration.requested_by_id))
    else:
        requester = migration.requested_by
        people = [requester] if requester.is_active else []
    return Audience(
        recipients=[Recipient(p.get_username(), p.email) for p in people if p.email],
        without_email=[p.get_username() for p in people if not p.email],
    )
