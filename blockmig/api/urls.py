"""/api/v1/…: the REST API, its OpenAPI schema and its docs (Swagger UI, served from
drf-spectacular-sidecar's static files: no CDN; Redoc's stock page loads web fonts from a
CDN, so it is not offered)."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from blockmig.api.views import account, audit, inventory, migrations, plans

app_name = "api"

urlpatterns = [
    path("me/", account.MeView.as_view(), name="me"),
    path("tokens/", account.TokenListCreateView.as_view(), name="tokens"),
    path("tokens/<str:prefix>/", account.TokenRevokeView.as_view(), name="token"),
    path("hypervisors/", inventory.HypervisorList.as_view(), name="hypervisor_list"),
    path("hypervisors/<slug:name>/", inventory.HypervisorDetail.as_view(), name="hypervisor_detail"),
    path("hypervisors/<slug:name>/domains/", inventory.DomainList.as_view(), name="domain_list"),
    path("hypervisors/<slug:name>/domains/<str:domain>/", inventory.DomainDetail.as_view(), name="domain_detail"),
    path("hypervisors/<slug:name>/domains/<str:domain>/disks/<str:target>/", inventory.DiskDetail.as_view(), name="disk_detail"),
    path("migrations/", migrations.MigrationListCreate.as_view(), name="migration_list"),
    path("migrations/<int:pk>/", migrations.MigrationDetail.as_view(), name="migration_detail"),
    path("migrations/<int:pk>/approve/", migrations.MigrationApprove.as_view(), name="migration_approve"),
    path("migrations/<int:pk>/abort/", migrations.MigrationAbort.as_view(), name="migration_abort"),
    path("migrations/<int:pk>/bandwidth/", migrations.MigrationBandwidth.as_view(), name="migration_bandwidth"),
    path("audit/", audit.AuditList.as_view(), name="audit_list"),
    path("plans/", plans.PlanList.as_view(), name="plan_list"),
    path("plans/<int:pk>/", plans.PlanDetail.as_view(), name="plan_detail"),
    path("plans/<int:pk>/approve/", plans.PlanApprove.as_view(), name="plan_approve"),
    path("plans/<int:pk>/continue/", plans.PlanContinue.as_view(), name="plan_continue"),
    path("plans/<int:pk>/pause/", plans.PlanPause.as_view(), name="plan_pause"),
    path("plans/<int:pk>/resume/", plans.PlanResume.as_view(), name="plan_resume"),
    path("plans/<int:pk>/abort/", plans.PlanAbort.as_view(), name="plan_abort"),
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="schema"),
    path(
        "docs/",
        login_not_required(SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="blockmig/api_docs.html")),
        name="docs",
    ),
]
