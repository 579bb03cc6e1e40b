"""The request form pages: migrate one disk, or some disks of a domain.

The form refuses what needs no host; `lifecycle.migration_request` runs preflight against
the host and its `Refused(message, field)` is put beside the field it names.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from blockmig import lifecycle
from blockmig.errors import Refused
from blockmig.forms.migration_request import MigrationRequestForm
from blockmig.forms.storage import block_storage, storage_roots
from blockmig.preflight import host as preflight_host
from hosts.models import Disk, Domain, Hypervisor
from hosts.roles import deny

# Disks that hold no guest data worth moving (install media, floppies): preflight's rule.
NOT_MIGRATABLE_DEVICES = set(preflight_host.NOT_MIGRATABLE_DEVICES)


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
