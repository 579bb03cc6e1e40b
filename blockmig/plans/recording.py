"""How a plan action is recorded: a refusal audited (and raised), an audit event naming the
plan, a move through the plan's state machine with its event. Shared by building a plan
(blockmig.plans.build) and what is done to it afterwards (blockmig.plans.actions)."""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction

from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.models import Plan
from blockmig.plans.progress import plan_changed_on_commit
from blockmig.plans.states import plan_next_state
from hosts.models import Hypervisor


def audit_and_refuse(
    *, user, hypervisor: Hypervisor, action: str, message: str, plan: Plan | None = None, field=None, extra: dict | None = None
) -> NoReturn:
    """A refused plan action is audited (committed although the action fails), then raised."""
    with transaction.atomic():
        audit_record(
            event_type="refused",
            actor=user,
            hypervisor_name=hypervisor.name,
            details={"action": action, "reason": message, **({"plan": plan.pk} if plan else {}), **(extra or {})},
        )
    raise Refused(message, field)


def audit_plan(plan: Plan, event_type: str, *, user=None, from_state: str = "", details: dict | None = None) -> None:
    audit_record(
        event_type=event_type,
        actor=user,
        hypervisor_name=plan.hypervisor.name,
        from_state=from_state,
        to_state=plan.state,
        details={"plan": plan.pk, **(details or {})},
    )


def move_plan(plan: Plan, to: str, *, event_type: str, user=None, details: dict | None = None, **fields) -> Plan:
    """Move a plan through its state machine with its audit event (caller's transaction)."""
    locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
    previous = locked.state
    locked.state = plan_next_state(previous, to)
    for name, value in fields.items():
        setattr(locked, name, value)
    locked.save(update_fields=["state", *fields])
    audit_plan(locked, event_type, user=user, from_state=previous, details=details)
    plan_changed_on_commit(locked.pk)
    return locked
