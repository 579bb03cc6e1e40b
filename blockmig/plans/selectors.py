"""Reads for the plan pages: one plan with its disks, migrations, totals and timeline; the
list; the directories a host's disks live in (what *Evacuate* offers)."""

from __future__ import annotations

import posixpath

from django.db.models import Count, Q, QuerySet

from blockmig import progress
from blockmig.models import AuditEvent, Migration, Plan
from blockmig.plans.progress import PlanTotals, plan_totals
from blockmig.selectors import with_words
from hosts.models import ChainLayer, Hypervisor


def plan_for_page(pk: int) -> Plan:
    """The plan with `.item_list` (each disk with `.status` and `.progress`), `.totals` and
    `.timeline`. A fixed number of queries, whatever the number of disks."""
    plan = Plan.objects.select_related("hypervisor", "author", "approved_by").get(pk=pk)
    items = list(plan.items.all())
    migrations = {
        m.pk: m for m in Migration.objects.filter(plan=plan).select_related("hypervisor", "approved_by").prefetch_related("disks")
    }
    plan.totals = plan_totals(items, migrations)
    for item in items:
        migration = migrations.get(item.migration_id) if item.migration_id else None
        item.migration_row = migration
        item.progress = None
        if migration is not None:
            disk = next((d for d in migration.disks.all() if d.target == item.target), None)
            if disk is not None:
                item.progress = progress.of_disk(disk, migration.state)
            item.phase = progress.phase_label(migration.state, auto_pivot=migration.hypervisor.auto_pivot)
    plan.item_list = items
    plan.timeline = plan_events(plan)
    return plan


def plan_events(plan: Plan) -> list[AuditEvent]:
    """The plan's own events and those of its migrations, oldest first."""
    ids = list(Migration.objects.filter(plan=plan).values_list("pk", flat=True))
    events = list(
        AuditEvent.objects.filter(Q(details__plan=plan.pk) | Q(migration_id__in=ids))
        .select_related("actor")
        .order_by("created_at", "id")
    )
    with_words(events)
    return events


def plans_for_list(state: str = "") -> QuerySet[Plan]:
    qs = (
        Plan.objects.select_related("hypervisor", "author", "approved_by")
        .annotate(
            disk_count=Count("items", filter=Q(items__blocked_reason="")),
            staying_count=Count("items", filter=~Q(items__blocked_reason="")),
        )
        .order_by("-created_at", "-id")
    )
    return qs.filter(state=state) if state else qs


def disk_directories(hypervisor: Hypervisor) -> list[tuple[str, int]]:
    """(directory, number of disks whose active layer is in it), most used first."""
    counts: dict[str, int] = {}
    paths = ChainLayer.objects.filter(disk__domain__hypervisor=hypervisor, depth=0).exclude(path="")
    for path in paths.values_list("path", flat=True):
        if path.startswith("/"):
            directory = posixpath.dirname(path)
            counts[directory] = counts.get(directory, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def totals_of(plan: Plan) -> PlanTotals:
    return plan_for_page(plan.pk).totals
