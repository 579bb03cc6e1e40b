"""The plan page's socket, /ws/plans/<id>/: status with the totals, actions, each disk with
its live bar, the timeline; the page's own `{% partialdef %}` fragments
(templates/blockmig/plan_detail.html) from the view's context builder
(blockmig.views.plans.plan_context), so a pushed fragment is what a reload would show.

It listens to the plan's group, where the plan's own changes (`plan.changed`) and every
change of one of its migrations (`migration.changed`, progress included) arrive. One action
appears by time alone: *Continue* on a plan whose approval stopped, once it has been quiet
for blockmig.plans.recovery.CONTINUE_AFTER; no event announces that, so the consumer's
periodic resync (RESYNC_SECONDS) is what re-renders the actions and shows it."""

from __future__ import annotations

from typing import Any

from blockmig.live import frames, publish
from blockmig.live.cache import Shared
from blockmig.live.consumer import LiveConsumer
from blockmig.models import Plan
from blockmig.plans.selectors import plan_for_page
from blockmig.views.plans import plan_context

FRAGMENTS = ("plan_status", "plan_actions", "plan_disks", "plan_timeline")


def plan_page(request: Any, plan_id: int, shared: Shared) -> str | None:
    """The plan page's fragments for `request.user`'s audience; None when the plan is gone.
    Only the actions fragment depends on the audience (blockmig.views.plans.plan_actions)."""

    def load() -> Plan | None:
        try:
            return plan_for_page(plan_id)
        except Plan.DoesNotExist:
            return None

    plan = shared.get(("plan",), load)
    if plan is None:
        return None
    context = plan_context(plan, request.user)
    actions = context["actions"]

    def fragment(name: str) -> str:
        key: tuple = (name, actions) if name == "plan_actions" else (name,)
        template = f"blockmig/plan_detail.html#{name}"
        return shared.get(key, lambda: frames.render_fragment(template, context, request))

    return "\n".join(fragment(name) for name in FRAGMENTS)


class PlanConsumer(LiveConsumer):
    view_permission = "blockmig.view_plan"
    min_interval = 0.25  # many migrations' progress arrives here: one render per burst

    def resolve(self) -> bool:
        self.plan_id = int(self.scope["url_route"]["kwargs"]["plan_id"])
        row = Plan.objects.filter(pk=self.plan_id).values("author_id").first()
        if row is None:
            return False
        # The author is offered no approval (four eyes): their actions differ from their role's.
        self.is_author = row["author_id"] == self.user.pk
        return True

    def groups_to_join(self) -> list[str]:
        return [publish.plan_group(self.plan_id)]

    async def plan_changed(self, event: dict) -> None:
        if event.get("id") == self.plan_id:
            self.note(("plan", event["id"]), event["seq"])

    def wants(self, event: dict) -> bool:
        return event["type"] == "migration.changed"  # the group holds only this plan's migrations

    def page_key(self) -> tuple:
        return ("plan", self.plan_id)

    def audience(self) -> tuple:
        return (self.permissions, self.is_author)

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        return plan_page(request, self.plan_id, shared)
