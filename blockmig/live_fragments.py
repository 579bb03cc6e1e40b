"""What the live consumers push: the pages' own fragments, rendered for one user.

Each function renders the same `{% partialdef %}` fragments the pages render, from the same
context builders, so a pushed fragment is exactly what a reload would show this user. Every
fragment's root element carries the id htmx swaps it into (out of band, by id).
Returns None when the subject is gone (the consumer then closes the socket).
"""

from __future__ import annotations

from django.db.models import Prefetch
from django.http import Http404
from django.template.loader import render_to_string

from blockmig import selectors, views
from blockmig.models import Migration
from hosts import selectors as host_selectors
from hosts.models import ChainLayer, Disk, Hypervisor
from hosts.views import disk_context, domain_context, hypervisor_context

MIGRATION_FRAGMENTS = ("migration_status", "migration_actions", "migration_timeline", "migration_disks")


def migration_page(request, migration_id: int, shared, user_key: tuple) -> str | None:
    """The four fragments of the migration page for `request.user`.

    Sockets that have seen the same seqs share the database read, and share the status,
    disks and timeline renders, which depend only on the migration and the timezone. The
    actions fragment is what differs by user: it is shared only between users who are
    offered the same actions, and a fragment with forms only by one user's sockets (their
    CSRF token). Anything user-specific must stay in `migration_actions`.
    """

    def load():
        try:
            return selectors.migration_for_page(migration_id)
        except Migration.DoesNotExist:
            return None

    migration = shared.get(("migration",), load)
    if migration is None:
        return None
    context = views.migration_context(migration, request.user)
    actions = context["actions"]

    def render(name: str) -> str:
        return render_to_string(f"blockmig/migration_detail.html#{name}", context, request=request).strip()

    parts = []
    for name in MIGRATION_FRAGMENTS:
        key = (name,)
        if name == "migration_actions":
            key = (name, actions, user_key if actions.any else None)
        parts.append(shared.get(key, lambda name=name: render(name)))
    return "\n".join(parts)


def dashboard(request, hosts: bool = False) -> str:
    """The dashboard's migrations block, from the same context the dashboard view gives it;
    with `hosts` (after a sync, and on every catch-up) also the header's totals and the host
    cards with their health, for a user who may see hypervisors."""
    hosts = hosts and request.user.has_perm("hosts.view_hypervisor")
    context = {
        "migration_dashboard": selectors.migration_dashboard(),
        "hypervisors": host_selectors.hypervisors_with_counts(),
        "totals": host_selectors.inventory_totals() if hosts else None,
    }
    parts = [render_to_string("live/dashboard_migrations.html", context, request=request).strip()]
    if hosts:
        parts.append(render_to_string("live/dashboard_hosts.html", context, request=request).strip())
    return "\n".join(parts)


def _render_all(request, context: dict, names: list[str]) -> str:
    return "\n".join(render_to_string(name, context, request=request).strip() for name in names)


def hypervisor_page(request, hypervisor_id: int, query: str, page_number) -> str | None:
    """The hypervisor page: health in the title, the stale banner, the facts and the page of
    the domain table the socket was opened for (search `query`, `page_number`), from the
    view's own context builder. Three queries: the host, the count and the page."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None
    context = {**hypervisor_context(hypervisor, query, page_number), "oob": True}
    return _render_all(
        request,
        context,
        [
            "hosts/hypervisor_detail.html#hypervisor_title",
            "hosts/_stale_banner.html",
            "hosts/hypervisor_detail.html#hypervisor_facts",
            "live/hypervisor_domains.html",
        ],
    )


DOMAIN_FRAGMENTS = ["domain_title", "domain_actions", "domain_gone", "domain_facts", "domain_disks"]


def domain_page(request, hypervisor_id: int, domain_uuid: str, last_seen=None) -> tuple[str | None, object]:
    """The domain page: title and state, actions, the stale banner, facts (state,
    persistent, autostart) and the disks block (table with sources, formats and job badges,
    and the small chain pictures), from the view's own context builder; a bounded number of
    queries whatever the number of disks and layers.

    A domain that a sync removed gets the "no longer exists" banner (and no actions); the
    rest of the page keeps its last-known state. Returns the frame and the domain's
    `synced_at` (its "last seen"; `last_seen` again when it is gone)."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None, last_seen
    try:
        domain = host_selectors.domain_with_disks(hypervisor, domain_uuid)
    except Http404:
        context = {"hypervisor": hypervisor, "gone": True, "last_seen": last_seen, "oob": True}
        names = ["hosts/_stale_banner.html", "hosts/domain_detail.html#domain_gone", "hosts/domain_detail.html#domain_actions"]
        return _render_all(request, context, names), last_seen
    context = {**domain_context(hypervisor, domain), "oob": True}
    names = ["hosts/_stale_banner.html", *(f"hosts/domain_detail.html#{name}" for name in DOMAIN_FRAGMENTS)]
    return _render_all(request, context, names), domain.synced_at


DISK_FRAGMENTS = ["disk_job", "disk_gone", "disk_facts", "chain_picture", "disk_layers"]


def disk_pages(request, hypervisor_id: int, disk_ids: list[int], labels: dict[int, str]) -> str | None:
    """The disk page of each of `disk_ids`: job badge, facts (source, format, "Mirroring
    to", actions), the chain picture and the layers table, and the host's stale banner;
    from the view's own context builder, in four queries whatever the number of layers.
    A disk that a sync removed gets the "no longer exists" banner (`labels` names it)."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None
    disks = list(
        Disk.objects.filter(domain__hypervisor_id=hypervisor_id, pk__in=disk_ids)
        .select_related("domain")
        .prefetch_related(Prefetch("layers", queryset=ChainLayer.objects.order_by("depth")))
    )
    owners = selectors.migration_jobs_of_domains(hypervisor, sorted({disk.domain.uuid for disk in disks})) if disks else {}
    parts = [_render_all(request, {"hypervisor": hypervisor, "oob": True}, ["hosts/_stale_banner.html"])]
    found = set()
    for disk in disks:
        found.add(disk.pk)
        disk.domain.hypervisor = hypervisor
        disk.migration_id = owners.get((disk.domain.uuid, disk.target))
        context = {**disk_context(hypervisor, disk), "oob": True}
        parts.append(_render_all(request, context, [f"hosts/disk_detail.html#{name}" for name in DISK_FRAGMENTS]))
    for pk in disk_ids:
        if pk not in found and pk in labels:
            context = {"hypervisor": hypervisor, "disk": Disk(pk=pk), "gone": labels[pk], "oob": True}
            parts.append(_render_all(request, context, ["hosts/disk_detail.html#disk_gone"]))
    return "\n".join(parts)
