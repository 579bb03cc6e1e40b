"""Websocket routes: one consumer per page kind (blockmig.consumers)."""

from django.urls import path

from blockmig import consumers

websocket_urlpatterns: list = [
    path("ws/migrations/<int:migration_id>/", consumers.MigrationConsumer.as_asgi()),
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
    path("ws/hosts/<slug:name>/", consumers.HostConsumer.as_asgi()),
]
