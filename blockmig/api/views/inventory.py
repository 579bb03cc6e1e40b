"""Hypervisors, their domains and disks (with backing chains), read from the selectors
the pages use."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound

from blockmig.api import serializers as s
from blockmig.api.errors import ApiError
from blockmig.api.views.base import ApiView, Pages
from hosts import selectors as host_selectors
from hosts.models import Disk, Domain, Hypervisor


def find_hypervisor(name: str) -> Hypervisor:
    hypervisor = Hypervisor.objects.filter(name=name).first()
    if hypervisor is None:
        raise NotFound(f"No hypervisor named {name}: `blockmig hosts` lists them.")
    return hypervisor


def find_domain(hypervisor: Hypervisor, ident: str) -> Domain:
    """A domain by UUID, or by name where the name is unique on the host."""
    domains = Domain.objects.filter(hypervisor=hypervisor)
    found = domains.filter(uuid=ident.lower()).first()
    if found is not None:
        return found
    named = list(domains.filter(name=ident)[:2])
    if len(named) > 1:
        raise ApiError(
            "invalid",
            f"{hypervisor.name} has more than one domain named {ident}: give its UUID.",
            {"domain": ["Ambiguous name."]},
        )
    if not named:
        raise NotFound(f"No domain {ident} on {hypervisor.name} (as of the last sync): check the name, or refresh the host.")
    return named[0]


class HypervisorList(ApiView, generics.ListAPIView):
    perm, doing = "hosts.view_hypervisor", "Seeing hypervisors"
    serializer_class = s.HypervisorSerializer
    pagination_class = Pages

    def get_queryset(self) -> QuerySet[Hypervisor]:
        return host_selectors.hypervisors_with_counts().order_by("name")


class HypervisorDetail(ApiView, generics.RetrieveAPIView):
    perm, doing = "hosts.view_hypervisor", "Seeing hypervisors"
    serializer_class = s.HypervisorSerializer

    def get_object(self) -> Hypervisor:
        hypervisor = host_selectors.hypervisors_with_counts().filter(name=self.kwargs["name"]).first()
        if hypervisor is None:
            raise NotFound(f"No hypervisor named {self.kwargs['name']}: `blockmig hosts` lists them.")
        return hypervisor


@extend_schema(parameters=[OpenApiParameter("q", OpenApiTypes.STR, description="Part of the name, or the start of the UUID.")])
class DomainList(ApiView, generics.ListAPIView):
    perm, doing = "hosts.view_domain", "Seeing domains"
    serializer_class = s.DomainSerializer
    pagination_class = Pages

    def get_queryset(self) -> QuerySet[Domain]:
        hypervisor = find_hypervisor(self.kwargs["name"])
        return host_selectors.hypervisor_domains(hypervisor, self.request.query_params.get("q", "")).select_related("hypervisor")


class DomainDetail(ApiView, generics.RetrieveAPIView):
    perm, doing = "hosts.view_domain", "Seeing domains"
    serializer_class = s.DomainDetailSerializer

    def get_object(self) -> Domain:
        hypervisor = find_hypervisor(self.kwargs["name"])
        return host_selectors.domain_with_disks(hypervisor, find_domain(hypervisor, self.kwargs["domain"]).uuid)


class DiskDetail(ApiView, generics.RetrieveAPIView):
    """One disk with its backing chain (active layer first; `chain_text` reads base ← … ← active)."""

    perm, doing = "hosts.view_disk", "Seeing disks"
    serializer_class = s.DiskSerializer

    def get_object(self) -> Disk:
        hypervisor = find_hypervisor(self.kwargs["name"])
        domain = find_domain(hypervisor, self.kwargs["domain"])
        disk = Disk.objects.filter(domain=domain, target=self.kwargs["target"]).first()
        if disk is None:
            targets = ", ".join(domain.disks.values_list("target", flat=True)) or "none"
            raise NotFound(f"{domain.name} has no disk {self.kwargs['target']} (it has {targets}).")
        return host_selectors.disk_with_chain(hypervisor, domain.uuid, disk.target)
