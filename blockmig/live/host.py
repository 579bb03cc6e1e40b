"""What a hypervisor's inventory pages share: /ws/hosts/<name>/, and which page by the query.

    ?disk=<pk>        the disk page        (blockmig.live.disk)
    ?domain=<uuid>    the domain page      (blockmig.live.domain)
    ?q=…&page=…       the hypervisor page  (blockmig.live.hypervisor)

All of them redraw after every sync of the host (`inventory.changed`); the disk and domain
pages also on a migration's new phase (mirror started, pivoted), never on progress alone.
Every one also pushes the host's stale banner (`stale-<pk>`)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from blockmig.live import publish
from blockmig.live.consumer import LiveConsumer
from hosts.models import Hypervisor

# Query values a host page's socket accepts; anything else is no page of ours (4404), and
# never reaches a query (a NUL byte makes PostgreSQL raise, a 30-digit id overflows).
DATABASE_ID = re.compile(r"[0-9]{1,18}")
LIBVIRT_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def query_of(scope: Any) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode())


def query_valid(query: dict[str, list[str]]) -> bool:
    disks = query.get("disk", [])
    domain = query.get("domain", [""])[0].lower()
    text = query.get("q", [""])[0] + query.get("page", [""])[0]
    return (
        all(DATABASE_ID.fullmatch(v) for v in disks)
        and (not domain or LIBVIRT_UUID.fullmatch(domain) is not None)
        and not CONTROL_CHARACTERS.search(text)
    )


class HostPageConsumer(LiveConsumer):
    """A page of one hypervisor's inventory; subclasses render the page."""

    min_interval = 0.5

    @property
    def query(self) -> dict[str, list[str]]:
        return query_of(self.scope)

    def resolve(self) -> bool:
        if not query_valid(self.query):
            return False
        hypervisor = Hypervisor.objects.filter(name=self.scope["url_route"]["kwargs"]["name"]).first()
        if hypervisor is None:
            return False
        self.hypervisor_id = hypervisor.pk
        self.migration_states: dict[int, str | None] = {}
        return self.resolve_page(hypervisor)

    def resolve_page(self, hypervisor: Hypervisor) -> bool:
        """Look up what the page shows on `hypervisor`; False closes as not found."""
        return True

    def groups_to_join(self) -> list[str]:
        return [publish.hypervisor_group(self.hypervisor_id)]

    def wants(self, event: dict) -> bool:
        if event["type"] == "inventory.changed":
            return event["id"] == self.hypervisor_id
        # Progress does not change these pages; a new phase (mirror started, pivoted) does.
        changed = self.migration_states.get(event["id"]) != event.get("state")
        self.migration_states[event["id"]] = event.get("state")
        return changed


def host_pages(consumers: dict[str, Any], default: Any) -> Any:
    """One ASGI app for /ws/hosts/<name>/ that hands the socket to the page its query names:
    the first key of `consumers` present in the query, else `default`."""

    async def app(scope: dict, receive: Any, send: Any) -> Any:
        query = query_of(scope)
        page = next((consumer for key, consumer in consumers.items() if key in query), default)
        return await page(scope, receive, send)

    return app
