"""Migration pages: the dashboard, request form, migration page with its actions, list,
audit trail, host pivot policy.

Views stay thin: reads come from `blockmig.selectors`, writes go through
`blockmig.lifecycle`, which decides and audits every refusal; its `Refused.message` is
what the person sees. Which buttons a user gets is decided in `available_actions`, from
the lifecycle's own rules (blockmig.states), so a page does not offer a button that cannot
work.

For the live console (issue 4): `migration_context(migration, user)` is the context every
fragment of `blockmig/migration_detail.html` renders from (partials `migration_status`,
`migration_actions`, `migration_timeline`, `migration_disks`), and
`blockmig/migration_list.html#migration_row` renders from `{"migration": m}` after
`selectors.with_progress([m])`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.template.response import TemplateResponse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from blockmig import lifecycle, plan_rules, progress, selectors, states
from blockmig.errors import Refused
from blockmig.forms import (
    AuditFilterForm,
    AutoPivotForm,
    BandwidthForm,
    MigrationRequestForm,
    block_storage,
    storage_roots,
)
from blockmig.limits_form import CopyLimitsForm
from blockmig.models import AuditEvent, Migration
from blockmig.preflight import host as preflight_host
from blockmig.preflight.nbd import is_network_destination
from blockmig.states import State
from hosts import selectors as host_selectors
from hosts.models import Disk, Domain, Hypervisor
from hosts.roles import deny
from hosts.views import permission_required, wants_fragment

MIGRATIONS_PER_PAGE = 25
EVENTS_PER_PAGE = 50
FRAGMENTS = {"migration_status", "migration_actions", "migration_timeline", "migration_disks"}
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
# Disks that hold no guest data worth moving (install media, floppies): preflight's rule.
NOT_MIGRATABLE_DEVICES = set(preflight_host.NOT_MIGRATABLE_DEVICES)


# ---- which actions a user may use -----------------------------------------------------


@dataclass(frozen=True)
class Actions:
    approve: bool = False
    abort: bool = False
    bandwidth: bool = False
    # Shown to an approver who may not approve this one, so the missing button is explained.
    approve_note: str = ""
    # False for a viewer: the empty panel then says the role only watches. Everything the
    # actions fragment shows is in here, so equal Actions render equal fragments.
    may_act: bool = False

    @property
    def any(self) -> bool:
        return self.approve or self.abort or self.bandwidth


def available_actions(migration: Migration, user) -> Actions:
    state = migration.state
    approver = user.has_perm("blockmig.approve_migration")
    own = migration.requested_by_id == user.pk
    note = ""
    if approver and own and states.may_approve(state):
        note = "You requested this migration, so another approver must approve its pivot (four eyes)."
    # A plan's migration approved while its window was shut (or covered by the plan's own
    # approval) needs no approval now: the pivot follows when the window opens.
    covered = migration.plan_id is not None and states.may_approve(state) and plan_rules.pivot_covered(migration)
    if covered and approver:
        note = covered
    return Actions(
        approve=approver and not own and states.may_approve(state) and not covered,
        abort=user.has_perm("blockmig.abort_migration") and states.may_abort(state),
        bandwidth=user.has_perm("blockmig.change_migration") and states.may_change_bandwidth(state),
        approve_note=note,
        may_act=approver or user.has_perm("blockmig.abort_migration") or user.has_perm("blockmig.change_migration"),
    )


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
        "plan_wait": plan_rules.pivot_wait_reason(migration) if migration.plan_id and migration.state == State.READY else "",
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


# ---- request form ------------------------------------------------------------------


def migration_new_disk(request: HttpRequest, name: str, uuid: str, target: str) -> HttpResponse:
    if not request.user.has_perm("blockmig.add_migration"):
        deny("blockmig.add_migration", "Starting a migration")
    hypervisor = get_object_or_404(Hypervisor, name=name)
    domain = get_object_or_404(Domain, hypervisor=hypervisor, uuid=uuid)
    disk = get_object_or_404(Disk.objects.prefetch_related("layers"), domain=domain, target=target)
    return _request_page(request, hypervisor, domain, [disk], single=True)


def migration_new_domain(request: HttpRequest, name: str, uuid: str) -> HttpResponse:
    if not request.user.has_perm("blockmig.add_migration"):
        deny("blockmig.add_migration", "Starting a migration")
    hypervisor = get_object_or_404(Hypervisor, name=name)
    domain = get_object_or_404(Domain, hypervisor=hypervisor, uuid=uuid)
    all_disks = list(domain.disks.prefetch_related("layers"))
    disks = [d for d in all_disks if d.device not in NOT_MIGRATABLE_DEVICES]
    skipped = [d for d in all_disks if d.device in NOT_MIGRATABLE_DEVICES]
    return _request_page(request, hypervisor, domain, disks, single=False, skipped=skipped)


def _request_page(request, hypervisor, domain, disks, *, single: bool, skipped=()) -> HttpResponse:
    form = MigrationRequestForm(request.POST or None, hypervisor=hypervisor, disks=disks, single=single)
    if request.method == "POST" and disks and not form.is_valid():
        # Refused by the form itself (the lifecycle audits its own refusals).
        lifecycle.migration_request_invalid(
            user=request.user,
            hypervisor=hypervisor,
            domain_uuid=domain.uuid,
            errors={f: [str(m) for m in ms] for f, ms in form.errors.items()},
        )
    elif request.method == "POST" and disks:
        try:
            migration = lifecycle.migration_request(
                user=request.user,
                hypervisor=hypervisor,
                domain_uuid=domain.uuid,
                disks=[lifecycle.DiskRequest(target=t, destination=d) for t, d in form.destinations()],
                **form.lifecycle_kwargs(),
            )
        except Refused as refused:
            form.add_refusal(refused.message, refused.field)
        else:
            messages.success(request, f"Migration #{migration.pk} requested; the copy starts on a worker.")
            return redirect("migration_detail", pk=migration.pk)
    if form.is_bound:
        form.focus_first_error()
    warnings = []
    if not domain.is_running:
        warnings.append(
            f"{domain.name} is {domain.state or 'not running'} (as of the last sync): preflight will refuse until it runs."
        )
    warnings += [
        f"{d.target} already has a {d.job_type} block job: preflight will refuse until it ends." for d in disks if d.has_job
    ]
    block_pools, block_pools_unknown = block_storage(hypervisor)
    return render(
        request,
        "blockmig/migration_form.html",
        {
            "form": form,
            "hypervisor": hypervisor,
            "domain": domain,
            "disks": disks,
            "single": single,
            "roots": storage_roots(hypervisor),
            "block_pools": block_pools,
            "block_pools_unknown": block_pools_unknown,
            "warnings": warnings,
            "skipped": skipped,
        },
        status=200,
    )


# ---- migration page and its actions -------------------------------------------------


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
    """Run a lifecycle action. The lifecycle decides (and audits a refusal); a refusal
    for lack of the role is a 403, any other is a message on the migration page."""
    migration = get_object_or_404(Migration, pk=pk)
    try:
        call(migration)
    except Refused as refused:
        if not request.user.has_perm(perm):
            raise PermissionDenied(refused.message) from None
        messages.error(request, refused.message)
    else:
        messages.success(request, done)
    return redirect("migration_detail", pk=pk)


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


# ---- dashboard ----------------------------------------------------------------------


@require_GET
@permission_required("hosts.view_hypervisor")
def dashboard(request: HttpRequest) -> HttpResponse:
    """Hosts with their health, and the migrations block for those who may see migrations
    (live: blockmig.live.dashboard)."""
    context: dict[str, object] = {
        "hypervisors": host_selectors.hypervisors_with_counts(),
        "totals": host_selectors.inventory_totals(),
    }
    if request.user.has_perm("blockmig.view_migration"):
        context["migration_dashboard"] = selectors.migration_dashboard()
    return render(request, "blockmig/dashboard.html", context)


# ---- list ---------------------------------------------------------------------------


def migration_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("blockmig.view_migration"):
        deny("blockmig.view_migration", "Seeing migrations")
    state = request.GET.get("state", "")
    if state not in State.values:
        state = ""
    page = Paginator(selectors.migrations_for_list(state), MIGRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    selectors.with_progress(page.object_list)
    return render(
        request,
        "blockmig/migration_list.html",
        {
            "page": page,
            "state": state,
            "states": State.choices,
            "hypervisors": Hypervisor.objects.only("name", "auto_pivot").order_by("name"),
            "may_set_policy": request.user.has_perm("hosts.change_hypervisor"),
        },
    )


def migration_dashboard_block(request: HttpRequest) -> HttpResponse:
    """The dashboard's migrations block on its own (the dashboard loads it when its view
    did not put `migration_dashboard` in the context; the live console may render it too)."""
    if not request.user.has_perm("blockmig.view_migration"):
        deny("blockmig.view_migration", "Seeing migrations")
    return render(request, "blockmig/_dashboard_migrations.html", {"migration_dashboard": selectors.migration_dashboard()})


# ---- host pivot policy ----------------------------------------------------------------


def hypervisor_policy(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = get_object_or_404(Hypervisor, name=name)
    may_set = request.user.has_perm("hosts.change_hypervisor")
    if request.method == "POST":
        form = AutoPivotForm(request.POST)
        if not form.is_valid() and not may_set:
            deny("hosts.change_hypervisor", "Setting a host's pivot policy")
        if form.is_valid():
            enabled = form.cleaned_data["auto_pivot"]
            try:
                # The lifecycle refuses (and audits) a user who may not set the policy.
                lifecycle.hypervisor_set_auto_pivot(hypervisor=hypervisor, user=request.user, enabled=enabled)
            except Refused as refused:
                if not may_set:
                    deny("hosts.change_hypervisor", "Setting a host's pivot policy")
                messages.error(request, refused.message)
            else:
                messages.success(
                    request,
                    f"{hypervisor.name}: "
                    + ("pivots automatically when ready." if enabled else "every pivot needs an approver again."),
                )
            nxt = request.POST.get("next", "")
            if url_has_allowed_host_and_scheme(nxt, allowed_hosts={request.get_host()}):
                return redirect(nxt)
            return redirect("hypervisor_policy", name=name)
    else:
        form = AutoPivotForm(initial={"auto_pivot": hypervisor.auto_pivot})
    return render(
        request,
        "blockmig/hypervisor_policy.html",
        {
            "hypervisor": hypervisor,
            "form": form,
            "limits_form": CopyLimitsForm(hypervisor=hypervisor),
            "may_set_policy": may_set,
        },
    )


# ---- audit trail ------------------------------------------------------------------


def audit_list(request: HttpRequest) -> HttpResponseBase:
    if not request.user.has_perm("blockmig.view_auditevent"):
        deny("blockmig.view_auditevent", "Reading the audit trail")
    form = AuditFilterForm(request.GET or None, **selectors.audit_filter_choices())
    filters = form.filters() if form.is_bound else {}
    events = selectors.audit_events(**filters)
    fmt = request.GET.get("format", "")
    if fmt:
        return _export(request, form, events, fmt)
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    selectors.with_words(page.object_list)
    return render(request, "blockmig/audit_list.html", {"form": form, "page": page, "filtered": bool(filters)})


def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The filtered audit trail as a file: `/audit/export/?format=csv|json&<filters>`."""
    if not request.user.has_perm("blockmig.view_auditevent"):
        deny("blockmig.view_auditevent", "Reading the audit trail")
    form = AuditFilterForm(request.GET or None, **selectors.audit_filter_choices())
    events = selectors.audit_events(**(form.filters() if form.is_bound else {}))
    return _export(request, form, events, request.GET.get("format", "csv"))


def _export(request: HttpRequest, form: AuditFilterForm, events: QuerySet[AuditEvent], fmt: str) -> HttpResponseBase:
    if fmt not in EXPORT_TYPES:
        return HttpResponse("format must be csv or json\n", status=400, content_type="text/plain")
    if form.is_bound and form.errors:
        # Never export a bigger set than the person asked for because one filter was bad.
        text = "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items())
        return HttpResponse(f"Fix the filters first: {text}\n", status=400, content_type="text/plain")
    content: Iterator[str] | AsyncIterator[str]
    if isinstance(request, ASGIRequest):
        content = selectors.export_audit_async(events, fmt)
    else:
        content = selectors.export_audit_sync(events, fmt)
    response = StreamingHttpResponse(content, content_type=EXPORT_TYPES[fmt])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="blockmig-audit-{stamp}.{fmt}"'
    return response
