"""What the live consumers push: the pages' own fragments, rendered for one user.

Each function renders the same `{% partialdef %}` fragments the pages render, from the same
context builders, so a pushed fragment is exactly what a reload would show this user. Every
fragment's root element carries the id htmx swaps it into (out of band, by id).
Returns None when the subject is gone (the consumer then closes the socket).
"""

from __future__ import annotations

from django.template.loader import render_to_string

from blockmig.models import Migration

MIGRATION_FRAGMENTS = ("migration_status", "migration_actions", "migration_timeline", "migration_disks")


def migration_page(request, migration_id: int, shared, user_key: tuple) -> str | None:
    """The four fragments of the migration page for `request.user`.

    Sockets that have seen the same seqs share the database read, and share the status,
    disks and timeline renders, which depend only on the migration and the timezone. The
    actions fragment is what differs by user: it is shared only between users who are
    offered the same actions, and a fragment with forms only by one user's sockets (their
    CSRF token). Anything user-specific must stay in `migration_actions`.
    """
    from blockmig import selectors, views

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
    from blockmig import selectors
    from hosts import selectors as host_selectors
    from hosts.views import DASHBOARD_MIGRATIONS

    hosts = hosts and request.user.has_perm("hosts.view_hypervisor")
    context = {
        "migration_dashboard": selectors.migration_dashboard(),
        "hypervisors": host_selectors.hypervisors_with_counts(),
        "totals": host_selectors.inventory_totals() if hosts else None,
        "migrations_panel": DASHBOARD_MIGRATIONS,
    }
    parts = [render_to_string("live/dashboard_migrations.html", context, request=request).strip()]
    if hosts:
        parts.append(render_to_string("live/dashboard_hosts.html", context, request=request).strip())
    return "\n".join(parts)


def host_pages(request, hypervisor_id: int, disk_ids: list[int], domain_uuid: str = "") -> str:
    """Chain pictures: full size for the disk page's `disk_ids`, small (as the domain page
    draws them) for every disk of `domain_uuid`."""
    from hosts.models import Disk
    from hosts.views import render_chain_picture

    on_host = Disk.objects.filter(domain__hypervisor_id=hypervisor_id).prefetch_related("layers")
    parts = [render_chain_picture(disk, oob=True, request=request).strip() for disk in on_host.filter(pk__in=disk_ids)]
    if domain_uuid:
        disks = on_host.filter(domain__uuid=domain_uuid).order_by("target")
        parts += [render_chain_picture(disk, oob=True, request=request, small=True).strip() for disk in disks]
    return "\n".join(parts)
