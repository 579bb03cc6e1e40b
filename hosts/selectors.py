"""Reads for the inventory pages. Each returns a bounded number of queries, whatever the
number of hosts, domains, disks or layers."""

from django.db.models import Count, Prefetch, Q, QuerySet
from django.shortcuts import get_object_or_404

from hosts.models import ChainLayer, Disk, Domain, Hypervisor


def hypervisors_with_counts() -> QuerySet[Hypervisor]:
    return Hypervisor.objects.annotate(
        domain_count=Count("domains", distinct=True),
        running_count=Count("domains", filter=Q(domains__state="running"), distinct=True),
    )


def inventory_totals() -> dict[str, int]:
    """Numbers for the dashboard header, in two queries."""
    domains = Domain.objects.aggregate(total=Count("id"), running=Count("id", filter=Q(state="running")))
    jobs = Disk.objects.exclude(job_type="").count()
    return {"domains": domains["total"], "running": domains["running"], "jobs": jobs}


def hypervisor_by_name(name: str) -> Hypervisor:
    return get_object_or_404(Hypervisor, name=name)


def hypervisor_domains(hypervisor: Hypervisor, query: str = "") -> QuerySet[Domain]:
    """The host's domains with disk and block-job counts, filtered by name or uuid."""
    domains = hypervisor.domains.annotate(
        disk_count=Count("disks"),
        job_count=Count("disks", filter=~Q(disks__job_type="")),
    ).order_by("name", "uuid")
    query = query.strip()
    if query:
        domains = domains.filter(Q(name__icontains=query) | Q(uuid__istartswith=query))
    return domains


def domain_with_disks(hypervisor: Hypervisor, uuid: str) -> Domain:
    layers = Prefetch("layers", queryset=ChainLayer.objects.order_by("depth"))
    disks = Prefetch("disks", queryset=Disk.objects.prefetch_related(layers).order_by("target"))
    return get_object_or_404(
        Domain.objects.select_related("hypervisor").prefetch_related(disks),
        hypervisor=hypervisor,
        uuid=uuid.lower(),
    )


def disk_with_chain(hypervisor: Hypervisor, uuid: str, target: str) -> Disk:
    return get_object_or_404(
        Disk.objects.select_related("domain", "domain__hypervisor").prefetch_related(
            Prefetch("layers", queryset=ChainLayer.objects.order_by("depth"))
        ),
        domain__hypervisor=hypervisor,
        domain__uuid=uuid.lower(),
        target=target,
    )
