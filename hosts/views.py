"""Inventory pages. Thin: reads come from hosts.selectors, layout from hosts.chain_picture.layout,
writes from hosts.sync and the hypervisor form."""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hosts import hooks, selectors
from hosts.chain_picture.layout import picture_for_disk
from hosts.forms import HypervisorForm
from hosts.models import Disk, Hypervisor
from hosts.roles import roles_with
from hosts.signals import announce_hypervisor_added, announce_hypervisor_edited
from hosts.sync.hypervisor import hypervisor_sync

DOMAINS_PER_PAGE = 50
# The small chain pictures on the domain page fold long chains into a "more layers" box.
MINI_PICTURE_ROWS = 4
MINI_PICTURE_WIDTH = 340


def permission_required(perm: str) -> Callable:
    """Like Django's permission_required(raise_exception=True), but the 403 page says which
    role would have been enough. Anonymous users never get here: LoginRequiredMiddleware
    sends them to the login page first."""
    roles = roles_with(perm)
    needed = " or ".join(roles) if roles else "a suitable"

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.has_perm(perm):
                raise PermissionDenied(f"This needs the {needed} role.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def wants_fragment(request: HttpRequest) -> bool:
    """htmx asked for a piece of the page (not a boosted or history-restoring full page)."""
    htmx = getattr(request, "htmx", None)  # django-htmx's middleware sets it
    if not htmx:
        return False
    return not htmx.boosted and not htmx.history_restore_request


@require_GET
@permission_required("hosts.view_hypervisor")
def hypervisor_list(request: HttpRequest) -> HttpResponse:
    return render(request, "hosts/hypervisor_list.html", {"hypervisors": selectors.hypervisors_with_counts()})


@require_GET
@permission_required("hosts.view_hypervisor")
def hypervisor_detail(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = selectors.hypervisor_by_name(name)
    context = hypervisor_context(hypervisor, request.GET.get("q", ""), request.GET.get("page"))
    template = "hosts/hypervisor_detail.html"
    if wants_fragment(request):
        template += "#domain_table"
    return render(request, template, context)


def hypervisor_context(hypervisor: Hypervisor, query: str, page_number) -> dict:
    """The hypervisor page's context (also the live console's):
    one page of the domain table for the search `query`. `live_url` is the socket of that
    table: it carries the search and page, so what the socket pushes is the page shown."""
    query = query.strip()
    page = Paginator(selectors.hypervisor_domains(hypervisor, query), DOMAINS_PER_PAGE).get_page(page_number)
    params: dict[str, str | int] = {"q": query} if query else {}
    if page.number > 1:
        params["page"] = page.number
    live_url = f"/ws/hosts/{hypervisor.name}/" + (f"?{urlencode(params)}" if params else "")
    return {"hypervisor": hypervisor, "q": query, "page": page, "live_url": live_url}


@require_POST
@permission_required("hosts.change_domain")
def hypervisor_refresh(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = selectors.hypervisor_by_name(name)
    if not hypervisor.enabled:
        messages.error(
            request,
            f"{hypervisor.name} is disabled, so blockmig does not connect to it: an admin can enable it on its edit page.",
        )
        return _back(request, hypervisor)
    result = hypervisor_sync(hypervisor, force=True)
    if result.ok:
        messages.success(request, f"{hypervisor.name} synced just now.")
    else:
        messages.error(request, f"Sync of {hypervisor.name} failed: {result.error} The last-known data is still shown.")
    return _back(request, hypervisor)


def _back(request: HttpRequest, hypervisor: Hypervisor) -> HttpResponse:
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("hypervisor_detail", name=hypervisor.name)


@require_http_methods(["GET", "POST"])
@permission_required("hosts.add_hypervisor")
def hypervisor_add(request: HttpRequest) -> HttpResponse:
    form = HypervisorForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        hypervisor = _save_hypervisor(request, form)
        messages.success(request, _connected_message(hypervisor, "Added"))
        return redirect("hypervisor_detail", name=hypervisor.name)
    return render(request, "hosts/hypervisor_form.html", {"form": form, "hypervisor": None})


@require_http_methods(["GET", "POST"])
@permission_required("hosts.change_hypervisor")
def hypervisor_edit(request: HttpRequest, name: str) -> HttpResponse:
    hypervisor = selectors.hypervisor_by_name(name)
    form = HypervisorForm(request.POST or None, instance=hypervisor, user=request.user)
    if request.method == "POST" and form.is_valid():
        hypervisor = _save_hypervisor(request, form)
        messages.success(request, _connected_message(hypervisor, "Saved") if form.facts else f"Saved {hypervisor.name}.")
        return redirect("hypervisor_detail", name=hypervisor.name)
    # The name in the URL, not a half-edited one from the form.
    hypervisor.name = name
    return render(request, "hosts/hypervisor_form.html", {"form": form, "hypervisor": hypervisor})


def _save_hypervisor(request: HttpRequest, form: HypervisorForm) -> Hypervisor:
    with transaction.atomic():
        hypervisor = form.save()
        if form.before is None:
            announce_hypervisor_added(hypervisor, request.user, source="form")
        else:
            announce_hypervisor_edited(hypervisor, request.user, source="form", before=form.before)
    return hypervisor


def _connected_message(hypervisor: Hypervisor, verb: str) -> str:
    facts = f"{hypervisor.driver} {hypervisor.hypervisor_version}, libvirt {hypervisor.libvirt_version}, {hypervisor.virt_type}"
    return f"{verb} {hypervisor.name}: connected ({facts}). Its domains appear after the next sync, or press Refresh now."


@require_GET
@permission_required("hosts.view_domain")
def domain_detail(request: HttpRequest, name: str, uuid: str) -> HttpResponse:
    hypervisor = selectors.hypervisor_by_name(name)
    domain = selectors.domain_with_disks(hypervisor, uuid)
    return render(request, "hosts/domain_detail.html", domain_context(hypervisor, domain))


def domain_context(hypervisor: Hypervisor, domain) -> dict:
    """The domain page's context (also the live console's): its disks with their small
    chain pictures and the migration, if any, that runs each disk's block job (hosts.hooks)."""
    owners = hooks.job_owners(hypervisor, [domain.uuid])
    disks = list(domain.disks.all())
    for disk in disks:
        disk.picture = small_picture_for_disk(disk)
        disk.migration_id = owners.get((domain.uuid, disk.target))
    return {
        "hypervisor": hypervisor,
        "domain": domain,
        "disks": disks,
        "domain_actions_panel": hooks.slot_templates("domain_actions"),
    }


@require_GET
@permission_required("hosts.view_disk")
def disk_detail(request: HttpRequest, name: str, uuid: str, target: str) -> HttpResponse:
    hypervisor = selectors.hypervisor_by_name(name)
    disk = selectors.disk_with_chain(hypervisor, uuid, target)
    disk.migration_id = hooks.job_owners(hypervisor, [disk.domain.uuid]).get((disk.domain.uuid, disk.target))
    return render(request, "hosts/disk_detail.html", disk_context(hypervisor, disk))


def disk_context(hypervisor: Hypervisor, disk: Disk) -> dict:
    """The disk page's context (also the live console's); `disk` comes with its domain,
    its layers and `migration_id` set."""
    return {
        "hypervisor": hypervisor,
        "domain": disk.domain,
        "disk": disk,
        "picture": picture_for_disk(disk),
        "disk_actions_panel": hooks.slot_templates("disk_actions"),
    }


def small_picture_for_disk(disk: Disk):
    """The small chain picture of the domain page (long chains folded)."""
    return picture_for_disk(disk, max_rows=MINI_PICTURE_ROWS, box_width=MINI_PICTURE_WIDTH)
