from django.urls import path

from blockmig import limits_views
from blockmig.views import audit_trail, dashboard, listing, migration, pivot_policy, request_form

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("migrations/", listing.migration_list, name="migration_list"),
    path("migrations/dashboard-block/", dashboard.migration_dashboard_block, name="migration_dashboard_block"),
    path("migrations/<int:pk>/", migration.migration_detail, name="migration_detail"),
    path("migrations/<int:pk>/approve/", migration.migration_approve, name="migration_approve"),
    path("migrations/<int:pk>/abort/", migration.migration_abort, name="migration_abort"),
    path("migrations/<int:pk>/bandwidth/", migration.migration_bandwidth, name="migration_bandwidth"),
    path(
        "hosts/<slug:name>/domains/<str:uuid>/disks/<str:target>/migrate/",
        request_form.migration_new_disk,
        name="migration_new_disk",
    ),
    path("hosts/<slug:name>/domains/<str:uuid>/migrate/", request_form.migration_new_domain, name="migration_new_domain"),
    path("hosts/<slug:name>/policy/", pivot_policy.hypervisor_policy, name="hypervisor_policy"),
    path("hosts/<slug:name>/limits/", limits_views.hypervisor_limits, name="hypervisor_limits"),
    path("audit/", audit_trail.audit_list, name="audit_list"),
    path("audit/export/", audit_trail.audit_export, name="audit_export"),
]
