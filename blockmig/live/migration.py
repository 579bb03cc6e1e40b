"""The migration page's socket, /ws/migrations/<id>/: status with the progress bar, actions,
timeline and disks, the page's own `{% partialdef %}` fragments
(templates/blockmig/migration_detail.html), rendered from the view's context builder
(blockmig.views.migration.migration_context), so a pushed fragment is what a reload would show."""

from __future__ import annotations

from typing import Any

from blockmig import selectors
from blockmig.live import frames, publish
from blockmig.live.cache import Shared
from blockmig.live.consumer import LiveConsumer
from blockmig.models import Migration
from blockmig.views.migration import migration_context

FRAGMENTS = ("migration_status", "migration_actions", "migration_timeline", "migration_disks")


def migration_page(request: Any, migration_id: int, shared: Shared) -> str | None:
    """The four fragments of the migration page for `request.user`'s audience; None when
    the migration is gone.

    Sockets that have seen the same seqs share the database read, and share the status,
    disks and timeline renders, which depend only on the migration and the time zone. The
    actions fragment is what differs between audiences: it is shared between users who are
    offered the same actions. Anything that depends on the user must stay in
    `migration_actions`, and follow from `blockmig.views.actions.available_actions`."""

    def load() -> Migration | None:
        try:
            return selectors.migration_for_page(migration_id)
        except Migration.DoesNotExist:
            return None

    migration = shared.get(("migration",), load)
    if migration is None:
        return None
    context = migration_context(migration, request.user)
    actions = context["actions"]

    def fragment(name: str) -> str:
        key: tuple = (name, actions) if name == "migration_actions" else (name,)
        template = f"blockmig/migration_detail.html#{name}"
        return shared.get(key, lambda: frames.render_fragment(template, context, request))

    return "\n".join(fragment(name) for name in FRAGMENTS)


class MigrationConsumer(LiveConsumer):
    """The migration page: status with the progress bar, actions, timeline, disks."""

    def resolve(self) -> bool:
        self.migration_id = int(self.scope["url_route"]["kwargs"]["migration_id"])
        row = Migration.objects.filter(pk=self.migration_id).values("requested_by_id").first()
        if row is None:
            return False
        # The requester is offered no approval (four eyes): their actions differ from the
        # rest of their role's. (Who requested a migration never changes.)
        self.is_requester = row["requested_by_id"] == self.user.pk
        return True

    def groups_to_join(self) -> list[str]:
        return [publish.migration_group(self.migration_id)]

    def wants(self, event: dict) -> bool:
        return event["type"] == "migration.changed" and event["id"] == self.migration_id

    def page_key(self) -> tuple:
        return ("migration", self.migration_id)

    def audience(self) -> tuple:
        return (self.permissions, self.is_requester)

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        return migration_page(request, self.migration_id, shared)
