"""What the plan page's browser test runs inside the live site (conftest's `site.call`), on
its database: build a plan as the operator, approve it and open its window as the approver.
Module-level and importable without pytest (the call server imports them by name)."""

from __future__ import annotations


def build_plan(hypervisor_name: str, domain_uuid: str, target_root: str, window_in_hours: float) -> int:
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from blockmig.plans.build import plan_build
    from hosts.models import Hypervisor

    start = timezone.now() + timedelta(hours=window_in_hours)
    plan = plan_build(
        user=User.objects.get(username="operator"),
        hypervisor=Hypervisor.objects.get(name=hypervisor_name),
        source_kind="domains",
        domain_uuids=[domain_uuid],
        target_root=target_root,
        pivot_policy="plan",
        window_start=start,
        window_end=start + timedelta(hours=1),
    )
    return plan.pk


def approve_plan(plan_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.models import Plan
    from blockmig.plans.actions import plan_approve

    plan_approve(plan=Plan.objects.get(pk=plan_id), user=User.objects.get(username="approver"))


def open_window(plan_id: int) -> None:
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from blockmig.models import Plan
    from blockmig.plans.actions import plan_set_window

    plan_set_window(
        plan=Plan.objects.get(pk=plan_id),
        user=User.objects.get(username="approver"),
        window_start=timezone.now() - timedelta(minutes=1),
        window_end=None,
    )


def plan_migrations(plan_id: int) -> list[dict]:
    from blockmig.models import Migration

    return list(Migration.objects.filter(plan_id=plan_id).values("id", "state", "failure_reason"))
