"""Which actions (approve, abort, bandwidth) a user may take on a migration.

Decided in `available_actions` from the lifecycle's own rules (blockmig.states), so a page
does not offer a button that cannot work. Separate from the pages because the migration
page, its live push and the API's serializer all ask the same question.
"""

from __future__ import annotations

from dataclasses import dataclass

from blockmig import states
from blockmig.models import Migration
from blockmig.plans.rules import pivot_covered


@dataclass(frozen=True)
class Actions:
    approve: bool = False
    abort: bool = False
    bandwidth: bool = False
    # Shown to an approver who may not approve this one, so the missing button is explained.
    approve_note: str = ""
    # False for a viewer: the empty panel then says the role only watches. Everything the
    # actions fragment shows is in here, so equal Actions render equal fragments.
    may_act: bool = False

    @property
    def any(self) -> bool:
        return self.approve or self.abort or self.bandwidth


def available_actions(migration: Migration, user) -> Actions:
    state = migration.state
    approver = user.has_perm("blockmig.approve_migration")
    own = migration.requested_by_id == user.pk
    note = ""
    if approver and own and states.may_approve(state):
        note = "You requested this migration, so another approver must approve its pivot (four eyes)."
    # A plan's migration approved while its window was shut (or covered by the plan's own
    # approval) needs no approval now: the pivot follows when the window opens.
    covered = migration.plan_id is not None and states.may_approve(state) and pivot_covered(migration)
    if covered and approver:
        note = covered
    return Actions(
        approve=approver and not own and states.may_approve(state) and not covered,
        abort=user.has_perm("blockmig.abort_migration") and states.may_abort(state),
        bandwidth=user.has_perm("blockmig.change_migration") and states.may_change_bandwidth(state),
        approve_note=note,
        may_act=approver or user.has_perm("blockmig.abort_migration") or user.has_perm("blockmig.change_migration"),
    )
