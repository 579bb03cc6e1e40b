"""Reads for the migration pages, the dashboard block and the audit trail.

Each returns a QuerySet (or plain objects) with what its page needs joined in, so a
page costs a fixed number of queries however many rows it shows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db.models import Case, IntegerField, Prefetch, Q, QuerySet, Value, When
from django.utils import timezone

from blockmig import progress
from blockmig.audit import EventType, event_label
from blockmig.limits.rules import waits_of
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import ACTIVE_STATES, TERMINAL_STATES, State
from hosts.models import Hypervisor

EXPORT_CHUNK = 2000
RECENT_DAYS = 7
SYSTEM_ACTOR = "-"  # how the audit filter names events no user caused (the page, export and API)


# ---- migrations -------------------------------------------------------------------


def migration_jobs_of_domains(hypervisor: Hypervisor, domain_uuids: Sequence[str]) -> dict[tuple[str, str], int]:
    """(domain uuid, target) → migration id for the disks blockmig is migrating on these
    domains now, in one query (the inventory pages' job badges, through hosts.hooks).

    A block job on any other disk was started outside blockmig (plain virsh) and is shown
    as such, never touched.
    """
    rows = MigrationDisk.objects.filter(
        migration__hypervisor=hypervisor,
        migration__domain_uuid__in=list(domain_uuids),
        migration__state__in=[str(s) for s in ACTIVE_STATES],
    ).values_list("migration__domain_uuid", "target", "migration_id")
    return {(uuid, target): migration_id for uuid, target, migration_id in rows}


def with_progress(migrations):
    """Attach `.progress` (blockmig.progress.Progress) to each migration and its
    prefetched disks, which is what the templates read; and `.wait` (blockmig.limits.rules.Wait,
    its place in the queue and why) to a queued one, else None."""
    waits = waits_of(migrations)
    for m in migrations:
        m.wait = waits.get(m.pk)
        m.progress = progress.of_migration(m)
        m.phase = progress.phase_label(m.state, auto_pivot=m.hypervisor.auto_pivot)
        for d in m.disks.all():
            d.progress = progress.of_disk(d, m.state)
    return migrations


def migrations_for_list(state: str | None = None) -> QuerySet[Migration]:
    """Active migrations first (newest first), then the rest (newest first)."""
    qs = (
        Migration.objects.select_related("hypervisor", "requested_by", "approved_by")
        .prefetch_related("disks")
        .annotate(
            active_rank=Case(
                When(state__in=[s.value for s in ACTIVE_STATES], then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            )
        )
        .order_by("active_rank", "-created_at", "-id")
    )
    if state:
        qs = qs.filter(state=state)
    return qs


def with_words(events):
    """Attach `.label` (blockmig.audit.EventType) and `.items` (blockmig.progress wording)
    to audit events."""
    for event in events:
        event.label = event_label(event.event_type)
        event.items = progress.detail_items(event.details)
    return events


def migration_for_page(pk: int) -> Migration:
    """One migration with its host, people, disks and timeline (events oldest first)."""
    m = (
        Migration.objects.select_related("hypervisor", "requested_by", "approved_by")
        .prefetch_related(
            "disks",
            Prefetch("events", queryset=AuditEvent.objects.select_related("actor").order_by("created_at", "id")),
        )
        .get(pk=pk)
    )
    with_progress([m])
    with_words(m.events.all())
    return m


@dataclass
class MigrationDashboard:
    active: list[Migration]
    awaiting: list[Migration]
    recent: list[Migration]

    @property
    def awaiting_count(self) -> int:
        return len(self.awaiting)


def migration_dashboard(*, recent_limit: int = 10, active_limit: int = 50) -> MigrationDashboard:
    """Active migrations on all hosts, those awaiting approval, recently finished ones.
    Three queries plus their disks, whatever the number of hosts."""
    base = Migration.objects.select_related("hypervisor", "requested_by").prefetch_related("disks")
    active = list(base.filter(state__in=[s.value for s in ACTIVE_STATES]).order_by("-created_at")[:active_limit])
    since = timezone.now() - timedelta(days=RECENT_DAYS)
    recent = list(
        base.filter(state__in=[s.value for s in TERMINAL_STATES], finished_at__gte=since).order_by("-finished_at")[:recent_limit]
    )
    with_progress(active)
    with_progress(recent)
    awaiting = [m for m in active if m.state == State.READY]
    return MigrationDashboard(active=active, awaiting=awaiting, recent=recent)


# ---- audit ---------------------------------------------------------------------------


def audit_events(
    *,
    host: str = "",
    domain: str = "",
    user: str = "",
    state: str = "",
    event_type: str = "",
    migration: int | None = None,
    since=None,
    until=None,
) -> QuerySet[AuditEvent]:
    """The audit trail, newest first, narrowed by the filters given."""
    qs = AuditEvent.objects.select_related("actor").order_by("-created_at", "-id")
    if host:
        qs = qs.filter(hypervisor_name=host)
    if domain:
        qs = qs.filter(domain_name__icontains=domain)
    if user == SYSTEM_ACTOR:
        qs = qs.filter(actor__isnull=True)
    elif user:
        qs = qs.filter(actor_name=user)
    if state:
        qs = qs.filter(to_state=state)
    if event_type:
        qs = qs.filter(event_type=event_type)
    if migration:
        qs = qs.filter(migration_id=migration)
    if since:
        qs = qs.filter(created_at__gte=since)
    if until:
        qs = qs.filter(created_at__lte=until)
    return qs


def audit_filter_choices(recent: int = 1000) -> dict[str, list[str]]:
    """Choices for the filter selects, without scanning the trail: hosts and users from
    their own (small) tables, event types from the known ones plus those seen lately."""
    seen = AuditEvent.objects.order_by("-id").values_list("event_type", flat=True)[:recent]
    return {
        "hosts": list(Hypervisor.objects.order_by("name").values_list("name", flat=True)),
        # People only: the engine's own events are the "(system)" choice.
        "users": list(get_user_model().objects.order_by("username").values_list("username", flat=True)),
        "event_types": sorted(set(EventType.values) | set(seen)),
    }


EXPORT_COLUMNS = [
    "id",
    "created_at",
    "event_type",
    "user",
    "host",
    "domain",
    "disks",
    "migration",
    "from_state",
    "to_state",
    "details",
]


def audit_row(event: AuditEvent) -> dict:
    """One event as exported: times in UTC ISO 8601, details as JSON."""
    return {
        "id": event.pk,
        "created_at": event.created_at.astimezone(UTC).isoformat(),
        "event_type": event.event_type,
        "user": event.actor_name or (event.actor.get_username() if event.actor else ""),
        "host": event.hypervisor_name,
        "domain": event.domain_name,
        "disks": event.disk_targets,
        "migration": event.migration_id,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "details": event.details,
    }


def _chunks(qs: QuerySet[AuditEvent]) -> Iterator[list[AuditEvent]]:
    """Keyset pages over (-created_at, -id): each page is its own short query, so an export
    of millions of rows holds no cursor open and never loads the set into memory."""
    qs = qs.order_by("-created_at", "-id")
    last = None
    while True:
        page = qs
        if last is not None:
            page = qs.filter(Q(created_at__lt=last.created_at) | Q(created_at=last.created_at, id__lt=last.id))
        rows = list(page[:EXPORT_CHUNK])
        if not rows:
            return
        yield rows
        if len(rows) < EXPORT_CHUNK:
            return
        last = rows[-1]


def _spreadsheet_safe(value):
    # A cell starting with = + - @ is a formula to a spreadsheet; quote it (OWASP CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_lines(chunk: list[AuditEvent], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    if header:
        writer.writerow(EXPORT_COLUMNS)
    for event in chunk:
        row = audit_row(event)
        row["details"] = json.dumps(row["details"], sort_keys=True, default=str)
        writer.writerow([_spreadsheet_safe(row[c]) if c != "details" else row[c] for c in EXPORT_COLUMNS])
    return buf.getvalue()


def _json_part(chunk: list[AuditEvent], first: bool) -> str:
    body = ",\n".join(json.dumps(audit_row(e), default=str) for e in chunk)
    return body if first else ",\n" + body


def export_audit_sync(qs: QuerySet[AuditEvent], fmt: str) -> Iterator[str]:
    """Yield the export of `qs` as text pieces (fmt "csv" or "json")."""
    if fmt == "csv":
        yield _csv_lines([], header=True)
        for chunk in _chunks(qs):
            yield _csv_lines(chunk, header=False)
        return
    yield "[\n"
    first = True
    for chunk in _chunks(qs):
        yield _json_part(chunk, first)
        first = False
    yield "\n]\n"


async def export_audit_async(qs: QuerySet[AuditEvent], fmt: str) -> AsyncIterator[str]:
    """The same export for ASGI (daphne): Django would otherwise buffer a sync iterator
    whole before sending it. Each chunk is fetched in the sync thread."""
    pieces = export_audit_sync(qs, fmt)
    # None marks the end: the export yields only strings.
    pull = sync_to_async(lambda: next(pieces, None), thread_sensitive=True)
    while (piece := await pull()) is not None:
        yield piece
