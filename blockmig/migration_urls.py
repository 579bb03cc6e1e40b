from django.urls import path

from blockmig.views import audit_trail, dashboard, limits, listing, migration, pivot_policy, plans, request_form

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
    path("hosts/<slug:name>/limits/", limits.hypervisor_limits, name="hypervisor_limits"),
    path("plans/", plans.plan_list, name="plan_list"),
    path("plans/<int:pk>/", plans.plan_detail, name="plan_detail"),
    path("plans/<int:pk>/approve/", plans.plan_approve, name="plan_approve"),
    path("plans/<int:pk>/continue/", plans.plan_continue, name="plan_continue"),
    path("plans/<int:pk>/discard/", plans.plan_discard, name="plan_discard"),
    path("plans/<int:pk>/pause/", plans.plan_pause, name="plan_pause"),
    path("plans/<int:pk>/resume/", plans.plan_resume, name="plan_resume"),
    path("plans/<int:pk>/abort/", plans.plan_abort, name="plan_abort"),
    path("plans/<int:pk>/window/", plans.plan_window, name="plan_window"),
    path("hosts/<slug:name>/evacuate/", plans.plan_new, name="plan_new"),
    path("audit/", audit_trail.audit_list, name="audit_list"),
    path("audit/export/", audit_trail.audit_export, name="audit_export"),
]
