"""Websocket routes: one consumer per page (blockmig.live).

Ids in paths are at most 18 digits, so every one fits a database bigint and no lookup can
overflow. A path no route matches (a typo, a bad id, an old bookmark) gets the catch-all:
it closes with 4404 instead of an exception in daphne."""

from typing import Any

from django.urls import URLPattern, path, re_path, register_converter

from blockmig.live.consumer import NotFoundConsumer
from blockmig.live.dashboard import DashboardConsumer
from blockmig.live.disk import DiskConsumer
from blockmig.live.domain import DomainConsumer
from blockmig.live.host import host_pages
from blockmig.live.hypervisor import HypervisorConsumer
from blockmig.live.migration import MigrationConsumer
from blockmig.live.plan import PlanConsumer


class DatabaseIdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(DatabaseIdConverter, "dbid")


def ws(route: str, app: Any, regex: bool = False) -> URLPattern:
    """A websocket route (channels' URLRouter takes Django's patterns with ASGI apps in them,
    which Django's type stubs, written for views, do not know)."""
    return (re_path if regex else path)(route, app)


websocket_urlpatterns: list = [
    ws("ws/migrations/<dbid:migration_id>/", MigrationConsumer.as_asgi()),
    ws("ws/dashboard/", DashboardConsumer.as_asgi()),
    ws("ws/plans/<dbid:plan_id>/", PlanConsumer.as_asgi()),
    # One path for a host's three pages; the query says which (?disk=, ?domain=, else the host).
    ws(
        "ws/hosts/<slug:name>/",
        host_pages({"disk": DiskConsumer.as_asgi(), "domain": DomainConsumer.as_asgi()}, default=HypervisorConsumer.as_asgi()),
    ),
    ws(r"", NotFoundConsumer.as_asgi(), regex=True),
]
