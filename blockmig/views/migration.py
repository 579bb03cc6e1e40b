"""One migration's page (`/migrations/<id>/`) and its approve, abort and bandwidth posts.

For the live console (issue 4): `migration_context(migration, user)` is the context every
fragment of `blockmig/migration_detail.html` renders from (partials `migration_status`,
`migration_actions`, `migration_timeline`, `migration_disks`). The posts go to the
lifecycle, which decides and audits every refusal.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from blockmig import lifecycle, progress, selectors
from blockmig.forms.bandwidth import BandwidthForm
from blockmig.models import Migration
from blockmig.plans.rules import pivot_wait_reason
from blockmig.preflight.nbd import is_network_destination
from blockmig.states import State
from blockmig.views.acting import act
from blockmig.views.actions import available_actions
from hosts.roles import deny
from hosts.views import wants_fragment

FRAGMENTS = {"migration_status", "migration_actions", "migration_timeline", "migration_disks"}


def migration_context(migration: Migration, user) -> dict:
    """Everything the migration page and its fragments render from. `migration` comes
    from `selectors.migration_for_page` (progress attached, disks and events prefetched)."""
    host = migration.hypervisor
    disks = list(migration.disks.all())
    return {
        "migration": migration,
        "progress": migration.progress,
        "phase": migration.phase,
        "growth_note": progress.growth_note(
            total_grew=migration.total_grew,
            synchronous_writes=migration.synchronous_writes,
            host_supports_sync=host.supports_sync_writes,
        ),
        "actions": available_actions(migration, user),
        # A ready migration of an evacuation plan whose window keeps its pivot back.
        "plan_wait": pivot_wait_reason(migration) if migration.plan_id and migration.state == State.READY else "",
        "bandwidth_form": BandwidthForm(initial={"bandwidth_mib": migration.bandwidth_mib}, auto_id="id_bw_%s"),
        "timeline": list(migration.events.all()),
        "disks": disks,
        # Disks whose destination this host cannot identify (no storage pool holds it), so
        # the pivot cannot first confirm that it is still the file the copy began with.
        "unverifiable_destinations": [
            d.destination for d in disks if d.job_started and not d.dest_identity and not is_network_destination(d.destination)
        ],
        # NBD exports report no identity at all: whatever serves the name at the pivot gets the guest.
        "network_destinations": [d.destination for d in disks if is_network_destination(d.destination)],
    }


def migration_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm("blockmig.view_migration"):
        deny("blockmig.view_migration", "Seeing migrations")
    try:
        migration = selectors.migration_for_page(pk)
    except Migration.DoesNotExist:
        raise Http404("No such migration.") from None
    context = migration_context(migration, request.user)
    template = "blockmig/migration_detail.html"
    if wants_fragment(request):
        fragment = request.GET.get("fragment", "migration_status")
        if fragment not in FRAGMENTS:
            raise Http404("No such fragment.")
        template += "#" + fragment
    return TemplateResponse(request, template, context)


def _action(request, pk: int, perm: str, call, done: str) -> HttpResponse:
    return act(request, get_object_or_404(Migration, pk=pk), perm, call, done, "migration_detail")


@require_POST
def migration_approve(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(
        request, pk, "blockmig.approve_migration",
        lambda m: lifecycle.migration_approve(migration=m, user=request.user),
        "Approved: the pivot follows now.",
    )  # fmt: skip


@require_POST
def migration_abort(request: HttpRequest, pk: int) -> HttpResponse:
    return _action(
        request, pk, "blockmig.abort_migration",
        lambda m: lifecycle.migration_abort(migration=m, user=request.user),
        "Aborting: the copy is cancelled and the VM stays on its source.",
    )  # fmt: skip


@require_POST
def migration_bandwidth(request: HttpRequest, pk: int) -> HttpResponse:
    # The value goes to the lifecycle as typed: it applies preflight's rule and audits a
    # refusal (an invalid value is an attempt worth recording too).
    raw = request.POST.get("bandwidth_mib", "").strip()
    done = "Bandwidth limit removed (unlimited)." if raw == "0" else f"Bandwidth limit set to {raw} MiB/s."
    return _action(
        request, pk, "blockmig.change_migration",
        lambda m: lifecycle.migration_set_bandwidth(migration=m, user=request.user, bandwidth_mib=raw),
        done,
    )  # fmt: skip
