"""Continuing a plan whose approval was interrupted (blockmig.plans.recovery): a plan left
`approved` with part of its migrations requested, as a process that died mid-approval leaves
it, is continued by an approver once it has been quiet for the grace period. Only its disks
without a migration are asked for, once, even when two people press at once; refused before
the grace, for a running plan, and for viewers and operators; the page and the API offer it
only when it would be accepted.

The host here is unreachable, so each request that Continue makes is refused by the host
and audited with the disks it asked for: that trail is what shows which disks were asked
for. The lab requests them for real (tests/lab/test_plan_continue_lab.py)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blockmig.api.tokens import token_create
from blockmig.errors import Refused
from blockmig.models import AuditEvent, Migration, Plan, PlanDisk
from blockmig.plans import recovery
from blockmig.plans.recovery import CONTINUE_AFTER, plan_continue
from tests.helpers import make_user
from tests.plan_factories import add_migrations, make_host, make_plan


def interrupted_plan(
    users, *, disks: int = 3, requested: int = 1, quiet: timedelta = CONTINUE_AFTER + timedelta(seconds=5), **fields
) -> Plan:
    """An approved plan whose first `requested` domains have their migration and the others
    none, its last sign of life `quiet` ago: what a web process that died while approving
    leaves."""
    last = timezone.now() - quiet
    plan = make_plan(users["operator"], state="approved", disks=disks, approved_by=users["approver"], approved_at=last,
                     requested_at=last, **fields)  # fmt: skip
    add_migrations(plan, ["requested"] * requested)
    return plan


def asked_for(plan: Plan) -> list[str]:
    """Domains a request was made for since the plan was built: the host refused each one
    (unreachable), and the lifecycle audited it with the domain it asked for."""
    refused = AuditEvent.objects.filter(event_type="refused", details__action="request", hypervisor_name=plan.hypervisor.name)
    names = dict(plan.items.values_list("domain_uuid", "domain_name"))
    return sorted(names[uuid] for uuid in refused.values_list("details__domain_uuid", flat=True))


@pytest.mark.django_db
def test_continue_requests_only_the_disks_without_a_migration_then_the_plan_runs(users):
    plan = interrupted_plan(users, disks=4, requested=2)
    first, orphan = (plan.items.get(domain_name=name).migration for name in ("vm0", "vm1"))
    # vm1: the process died right after vm1's migration was requested, before it noted it
    # on the plan's disk; vm2 was refused by the host during the approval; vm3 had no turn.
    PlanDisk.objects.filter(plan=plan, domain_name="vm1").update(migration=None)
    PlanDisk.objects.filter(plan=plan, domain_name="vm2").update(request_error="/new is full.")

    plan = plan_continue(plan=plan, user=users["approver"])

    assert asked_for(plan) == ["vm3"]  # not vm0 (requested), vm1 (its orphan), vm2 (refused), off0 (stays)
    items = {i.domain_name: i for i in plan.items.all()}
    assert items["vm0"].migration == first and items["vm1"].migration == orphan
    assert items["vm2"].request_error == "/new is full." and "unreachable" in items["vm3"].request_error
    assert Migration.objects.filter(plan=plan).count() == 2
    assert plan.state == "running"  # vm0's and vm1's migrations are active
    continued = AuditEvent.objects.get(event_type="plan_continued", details__plan=plan.pk)
    assert continued.actor_name == "approver" and (continued.from_state, continued.to_state) == ("approved", "approved")
    assert continued.details["requesting"] == ["vm3/vda"] and continued.details["already_requested"] == ["vm1/vda"]
    trail = list(AuditEvent.objects.filter(details__plan=plan.pk).values_list("event_type", flat=True))
    assert trail[-3:] == ["plan_continued", "plan_migration_refused", "plan_running"]


@pytest.mark.django_db
def test_a_continued_plan_with_nothing_active_is_done(users):
    plan = interrupted_plan(users, disks=2)
    Migration.objects.filter(plan=plan).update(state="completed")
    plan = plan_continue(plan=plan, user=users["approver"])
    assert asked_for(plan) == ["vm1"]
    assert plan.state == "done"
    assert AuditEvent.objects.filter(event_type="plan_done", details__plan=plan.pk).exists()


@pytest.mark.django_db
def test_continue_refused_within_the_grace_period(users):
    plan = interrupted_plan(users, quiet=CONTINUE_AFTER - timedelta(seconds=20))
    with pytest.raises(Refused, match=f"Plan #{plan.pk} is still requesting its migrations"):
        plan_continue(plan=plan, user=users["approver"])
    plan.refresh_from_db()
    assert plan.state == "approved" and asked_for(plan) == []
    refusal = AuditEvent.objects.get(event_type="refused", details__action="plan_continue")
    assert refusal.details["plan"] == plan.pk and "can be continued from" in refusal.details["reason"]
    assert not AuditEvent.objects.filter(event_type="plan_continued").exists()


@pytest.mark.django_db
def test_continue_refused_for_a_running_plan(users):
    plan = interrupted_plan(users)
    Plan.objects.filter(pk=plan.pk).update(state="running")
    with pytest.raises(Refused, match=f"Plan #{plan.pk} is running: only a plan whose approval was interrupted"):
        plan_continue(plan=plan, user=users["approver"])
    assert asked_for(plan) == []
    assert AuditEvent.objects.filter(event_type="refused", details__action="plan_continue", actor_name="approver").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_continue_refused_without_the_approver_role(users, role):
    plan = interrupted_plan(users)
    with pytest.raises(Refused, match="Only a user with the approver role can continue"):
        plan_continue(plan=plan, user=users[role])
    plan.refresh_from_db()
    assert plan.state == "approved" and asked_for(plan) == []
    assert AuditEvent.objects.filter(event_type="refused", details__action="plan_continue", actor_name=role).exists()


@pytest.mark.django_db
def test_the_plans_author_may_continue_what_another_approver_approved(users):
    author = make_user("author", "approver")
    plan = interrupted_plan(users)
    Plan.objects.filter(pk=plan.pk).update(author=author)
    assert plan_continue(plan=plan, user=author).state == "running"


@pytest.mark.django_db(transaction=True)
def test_two_presses_at_once_ask_for_each_disk_once(users, monkeypatch):
    """The first press is held right after it has claimed the plan, before it asks for any
    disk (the tightest race); the second press waits for the plan's row, finds it claimed,
    and is refused."""
    plan = interrupted_plan(users)
    second = make_user("approver2", "approver")
    real_run = recovery.request_and_run
    inside, release = threading.Event(), threading.Event()

    def run_held(plan: Plan, moving: list[PlanDisk]) -> Plan:
        if not inside.is_set():  # only the first press is held
            inside.set()
            assert release.wait(30), "the test never released the first press"
        return real_run(plan, moving)

    monkeypatch.setattr(recovery, "request_and_run", run_held)
    outcome: dict = {}

    def press_first():
        try:
            outcome["first"] = plan_continue(plan=plan, user=users["approver"]).state
        finally:
            connection.close()

    first = threading.Thread(target=press_first)
    first.start()
    assert inside.wait(30), "the first press never claimed the plan"
    try:
        with pytest.raises(Refused, match="is still requesting its migrations"):
            plan_continue(plan=plan, user=second)
    finally:
        release.set()
        first.join(60)
    assert outcome["first"] == "running"
    assert asked_for(plan) == ["vm1", "vm2"]  # each once
    assert AuditEvent.objects.filter(event_type="plan_continued").count() == 1
    assert AuditEvent.objects.filter(event_type="refused", details__action="plan_continue", actor_name="approver2").exists()


# -- the page and the API ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_page_offers_continue_only_when_it_would_be_accepted(client_for, users):
    stalled = interrupted_plan(users)
    fresh = interrupted_plan(users, quiet=timedelta(seconds=10), host=make_host("h2"))
    running = make_plan(users["operator"], state="running", approved_by=users["approver"], host=stalled.hypervisor,
                        approved_at=timezone.now() - timedelta(hours=1))  # fmt: skip
    button = "Continue plan #"

    def page(role: str, plan: Plan) -> str:
        return client_for(role).get(reverse("plan_detail", args=[plan.pk])).text

    assert button in page("approver", stalled) and button in page("admin", stalled)
    assert "only the 2 disks without a migration" in page("approver", stalled)
    for role in ("viewer", "operator"):
        assert button not in page(role, stalled)
    assert button not in page("approver", fresh) and button not in page("approver", running)
    assert "2 disks still without one" in page("viewer", stalled)


@pytest.mark.django_db
def test_continue_through_the_page(client_for, users):
    plan = interrupted_plan(users)
    assert client_for("operator").post(reverse("plan_continue", args=[plan.pk])).status_code == 403
    response = client_for("approver").post(reverse("plan_continue", args=[plan.pk]), follow=True)
    assert response.status_code == 200 and "Continued: the disks without a migration are requested" in response.text
    plan.refresh_from_db()
    assert plan.state == "running" and asked_for(plan) == ["vm1", "vm2"]
    again = client_for("approver").post(reverse("plan_continue", args=[plan.pk]), follow=True)
    assert f"Plan #{plan.pk} is running: only a plan whose approval was interrupted" in again.text


@pytest.mark.django_db
def test_continue_through_the_api(users):
    tokens = {role: token_create(user=users[role], name="continue")[1] for role in ("approver", "operator")}

    def post(role: str, plan: Plan):
        token = tokens[role]
        return Client().post(f"/api/v1/plans/{plan.pk}/continue/", "{}", content_type="application/json",
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    fresh = interrupted_plan(users, quiet=timedelta(seconds=10))
    refused = post("approver", fresh)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "too_soon"
    assert post("operator", fresh).json()["error"]["code"] == "permission_denied"

    plan = interrupted_plan(users, host=make_host("h2"))
    done = post("approver", plan)
    assert done.status_code == 200 and done.json()["state"] == "running"
    again = post("approver", plan)
    assert again.status_code == 409 and again.json()["error"]["code"] == "wrong_state"
