"""Admins manage hypervisors here as well as on the inventory pages; domains, disks and
chains are what the last sync saw, so the admin shows them read-only."""

from django.contrib import admin
from django.db import transaction

from hosts.forms import HypervisorForm
from hosts.models import ChainLayer, Disk, Domain, Hypervisor
from hosts.signals import (
    announce_hypervisor_added,
    announce_hypervisor_deleted,
    announce_hypervisor_edited,
    hypervisor_values,
)


@admin.register(Hypervisor)
class HypervisorAdmin(admin.ModelAdmin):
    """The inventory's own form (URI, roots and connection checks), and the same audit
    events as the hypervisor pages."""

    form = HypervisorForm
    list_display = ["name", "uri", "enabled", "auto_pivot", "health", "last_sync_ok_at"]
    list_filter = ["enabled", "auto_pivot", "virt_type"]
    search_fields = ["name", "uri", "hostname"]
    # Facts come from the host; auto_pivot is an audited policy set on its policy page.
    readonly_fields = [
        "auto_pivot",
        "hostname",
        "driver",
        "libvirt_version",
        "hypervisor_version",
        "virt_type",
        "supports_transient_job",
        "supports_sync_writes",
        "last_sync_attempt_at",
        "last_sync_ok_at",
        "last_sync_error",
        "created_at",
    ]

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        if form.before is None:
            announce_hypervisor_added(obj, request.user, source="admin")
        else:
            announce_hypervisor_edited(obj, request.user, source="admin", before=form.before)

    def delete_model(self, request, obj) -> None:
        values = hypervisor_values(obj)
        super().delete_model(request, obj)
        announce_hypervisor_deleted(obj, request.user, source="admin", values=values)

    def delete_queryset(self, request, queryset) -> None:
        # "Delete selected": one transaction, one event per host deleted.
        with transaction.atomic():
            rows = list(queryset)
            super().delete_queryset(request, queryset)
            for obj in rows:
                announce_hypervisor_deleted(obj, request.user, source="admin", values=hypervisor_values(obj))


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows that only blockmig writes (inventory from syncs, migrations, audit)."""

    actions = None

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class DiskInline(admin.TabularInline):
    model = Disk
    fields = readonly_fields = ("target", "bus", "type", "format", "source", "job_type", "job_ready")
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Domain)
class DomainAdmin(ReadOnlyAdmin):
    list_display = ["name", "hypervisor", "state", "persistent", "autostart", "synced_at"]
    list_filter = ["hypervisor", "state", "persistent"]
    search_fields = ["name", "uuid"]
    list_select_related = ["hypervisor"]
    inlines = [DiskInline]


class ChainLayerInline(admin.TabularInline):
    model = ChainLayer
    fields = readonly_fields = ("depth", "path", "format", "capacity", "allocation", "missing")
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Disk)
class DiskAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "bus", "type", "format", "source", "job_type"]
    list_filter = ["type", "format", "bus"]
    search_fields = ["domain__name", "source", "target"]
    list_select_related = ["domain"]
    inlines = [ChainLayerInline]
