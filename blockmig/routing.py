"""Websocket routes: one consumer per page kind (blockmig.consumers).

Ids in paths are at most 18 digits, so every one fits a database bigint and no lookup can
overflow. A path no route matches (a typo, a bad id, an old bookmark) gets the catch-all:
it closes with 4404 instead of an exception in daphne."""

from django.urls import path, re_path, register_converter

from blockmig import consumers


class DatabaseIdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(DatabaseIdConverter, "dbid")

websocket_urlpatterns: list = [
    path("ws/migrations/<dbid:migration_id>/", consumers.MigrationConsumer.as_asgi()),
    path("ws/dashboard/", consumers.DashboardConsumer.as_asgi()),
    path("ws/hosts/<slug:name>/", consumers.HostConsumer.as_asgi()),
    re_path(r"", consumers.NotFoundConsumer.as_asgi()),
]
