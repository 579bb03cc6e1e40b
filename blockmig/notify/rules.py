"""Which moments of a migration's life notify someone: a pure rule, tested without a database.

- awaiting approval: the migration reached `ready` and its host has no auto-pivot policy,
  the first time only (a mirror that falls out of sync and becomes ready again does not
  tell the approvers twice);
- failed: it reached `failed`, whoever or whatever failed it;
- aborted by someone else: a person other than its requester aborted it (the engine's own
  aborting → aborted step tells nobody again).
"""

from __future__ import annotations

from blockmig.notify.models import Event

ABORT_EVENT_TYPES = frozenset({"aborted", "abort_requested"})


def event_for_transition(
    *,
    to_state: str,
    event_type: str,
    actor_id: int | None,
    requester_id: int | None,
    auto_pivot: bool,
    awaited_before: bool,
) -> Event | None:
    """The notification this state change calls for, or None."""
    if to_state == "ready":
        return None if auto_pivot or awaited_before else Event.AWAITING_APPROVAL
    if to_state == "failed":
        return Event.FAILED
    if event_type in ABORT_EVENT_TYPES and actor_id is not None and actor_id != requester_id:
        return Event.ABORTED
    return None
