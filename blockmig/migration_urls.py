from django.urls import path

from blockmig import limits_views, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("migrations/", views.migration_list, name="migration_list"),
    path("migrations/dashboard-block/", views.migration_dashboard_block, name="migration_dashboard_block"),
    path("migrations/<int:pk>/", views.migration_detail, name="migration_detail"),
    path("migrations/<int:pk>/approve/", views.migration_approve, name="migration_approve"),
    path("migrations/<int:pk>/abort/", views.migration_abort, name="migration_abort"),
    path("migrations/<int:pk>/bandwidth/", views.migration_bandwidth, name="migration_bandwidth"),
    path(
        "hosts/<slug:name>/domains/<str:uuid>/disks/<str:target>/migrate/",
        views.migration_new_disk,
        name="migration_new_disk",
    ),
    path("hosts/<slug:name>/domains/<str:uuid>/migrate/", views.migration_new_domain, name="migration_new_domain"),
    path("hosts/<slug:name>/policy/", views.hypervisor_policy, name="hypervisor_policy"),
    path("hosts/<slug:name>/limits/", limits_views.hypervisor_limits, name="hypervisor_limits"),
    path("audit/", views.audit_list, name="audit_list"),
    path("audit/export/", views.audit_export, name="audit_export"),
]
