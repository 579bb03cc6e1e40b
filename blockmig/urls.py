from django.contrib import admin
from django.urls import include, path

from blockmig import health, metrics
from blockmig.api.profile import profile, profile_token_revoke

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("notifications/", include("blockmig.notify.urls")),
    path("api/v1/", include("blockmig.api.urls")),
    path("profile/", profile, name="profile"),
    path("profile/tokens/<str:prefix>/revoke/", profile_token_revoke, name="profile_token_revoke"),
    path("", include("blockmig.migration_urls")),
    path("", include("hosts.urls")),
]
