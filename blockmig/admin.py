"""Migrations and the audit trail in the Django admin: to look at, never to change.

A migration changes only through blockmig.lifecycle (which audits it), and an audit
event never changes at all, so no admin user, superusers included, gets add, change or
delete here: the has_*_permission methods answer False whatever the user's permissions.
"""

from django.contrib import admin

from blockmig.models import AuditEvent, Migration, MigrationDisk
from hosts.admin import ReadOnlyAdmin


class MigrationDiskInline(admin.TabularInline):
    model = MigrationDisk
    extra = 0
    can_delete = False
    fields = readonly_fields = ("target", "source_path", "destination", "created_destination", "cur", "end", "ready")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Migration)
class MigrationAdmin(ReadOnlyAdmin):
    list_display = ["id", "domain_name", "hypervisor", "state", "mode", "requested_by", "approved_by", "created_at"]
    list_filter = ["state", "mode", "hypervisor"]
    search_fields = ["domain_name", "domain_uuid"]
    date_hierarchy = "created_at"
    list_select_related = ["hypervisor", "requested_by", "approved_by"]
    inlines = [MigrationDiskInline]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_type",
        "actor_name",
        "hypervisor_name",
        "domain_name",
        "migration_id",
        "from_state",
        "to_state",
    ]
    list_filter = ["event_type", "to_state", "hypervisor_name"]
    search_fields = ["actor_name", "domain_name", "hypervisor_name"]
    date_hierarchy = "created_at"
    ordering = ["-created_at", "-id"]
