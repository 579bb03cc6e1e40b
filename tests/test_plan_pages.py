"""The plan pages and actions for each role: a viewer sees, an operator builds, pauses and
resumes, an approver approves (not their own), an admin may do all; refusals are 403 pages
that name the role, or messages that say what to fix. The list paginates and says what to do
when empty."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from blockmig.models import AuditEvent, Plan
from hosts.models import Domain
from tests.plan_factories import add_migrations, make_host, make_plan

pytestmark = pytest.mark.django_db

ROLES = ["viewer", "operator", "approver", "admin"]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_plans_list_and_a_plan(client_for, users, role):
    plan = make_plan(users["operator"])
    client = client_for(role)
    listing = client.get(reverse("plan_list"))
    assert listing.status_code == 200
    assert f"#{plan.pk}" in listing.text
    page = client.get(reverse("plan_detail", args=[plan.pk]))
    assert page.status_code == 200
    assert "vm0/vda" in page.text and "/new/vm0-vda.qcow2" in page.text
    assert "off0/vda" in page.text and "shutoff, not running" in page.text  # a disk that stays, with why
    assert f'ws-connect="/ws/plans/{plan.pk}/"' in page.text


def test_anonymous_is_sent_to_sign_in(client_for, users):
    plan = make_plan(users["operator"])
    for url in (reverse("plan_list"), reverse("plan_detail", args=[plan.pk])):
        response = client_for(None).get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_empty_list_says_how_to_build_a_plan(client_for, users):
    make_host("kvm01")
    text = client_for("operator").get(reverse("plan_list")).text
    assert "No evacuation plans yet" in text and reverse("plan_new", args=["kvm01"]) in text
    assert "An operator builds them" in client_for("viewer").get(reverse("plan_list")).text


def test_list_paginates(client_for, users):
    host = make_host()
    for _ in range(27):
        make_plan(users["operator"], host=host, disks=0, staying=0)
    first = client_for("viewer").get(reverse("plan_list")).text
    assert "Page 1 of 2" in first and "27 in all" in first
    second = client_for("viewer").get(reverse("plan_list") + "?page=2").text
    assert second.count('class="mig-row') == 2


@pytest.mark.parametrize(("role", "allowed"), [("viewer", False), ("approver", False), ("operator", True), ("admin", True)])
def test_only_operators_open_the_evacuate_form(client_for, role, allowed):
    make_host("kvm01")
    response = client_for(role).get(reverse("plan_new", args=["kvm01"]) + "?root=/old")
    if allowed:
        assert response.status_code == 200
        assert 'value="/old"' in response.text and "Build and check the plan" in response.text
    else:
        assert response.status_code == 403
        assert "operator" in response.text


def test_evacuate_form_shows_the_refusal_beside_its_field(client_for, users):
    make_host("kvm01")
    response = client_for("operator").post(
        reverse("plan_new", args=["kvm01"]),
        {"source_kind": "root", "source_root": "/new/sub", "target_root": "/new", "mode": "shallow", "pivot_policy": "each"},
    )
    assert response.status_code == 200
    assert "lies in /new/sub" not in response.text  # /new is not inside /new/sub …
    assert Plan.objects.count() == 0


def test_evacuate_form_refuses_a_window_that_ends_before_it_starts(client_for):
    make_host("kvm01")
    response = client_for("operator").post(
        reverse("plan_new", args=["kvm01"]),
        {
            "source_kind": "host", "target_root": "/new", "mode": "shallow", "pivot_policy": "plan",
            "window_start": "2030-01-02T10:00", "window_end": "2030-01-02T09:00",
        },
    )  # fmt: skip
    assert response.status_code == 200
    assert "The window must end after it starts." in response.text
    assert Plan.objects.count() == 0


def test_approve_button_only_for_an_approver_who_is_not_the_author(client_for, users):
    plan = make_plan(users["operator"])
    url = reverse("plan_detail", args=[plan.pk])
    assert "Approve plan" in client_for("approver").get(url).text
    for role in ("viewer", "operator"):
        assert "Approve plan" not in client_for(role).get(url).text
    assert "You can watch this plan" in client_for("viewer").get(url).text
    own = make_plan(users["approver"], host=plan.hypervisor)
    assert "another approver must approve it" in client_for("approver").get(reverse("plan_detail", args=[own.pk])).text


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_approve_refused_with_403_for_those_without_the_role(client_for, users, role):
    plan = make_plan(users["admin"])
    response = client_for(role).post(reverse("plan_approve", args=[plan.pk]))
    assert response.status_code == 403
    plan.refresh_from_db()
    assert plan.state == "draft"
    assert AuditEvent.objects.filter(details__action="plan_approve", actor_name=role).exists()


def test_own_plan_approval_is_a_message_not_a_403(client_for, users):
    plan = make_plan(users["approver"])
    response = client_for("approver").post(reverse("plan_approve", args=[plan.pk]), follow=True)
    assert response.status_code == 200
    assert "another approver must approve it (four eyes)" in response.text


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("approver", 403), ("operator", 200), ("admin", 200)])
def test_pause_and_resume_need_the_operator_role(client_for, users, role, status):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    add_migrations(plan, ["requested", "requested"])
    response = client_for(role).post(reverse("plan_pause", args=[plan.pk]), follow=True)
    assert response.status_code == status
    plan.refresh_from_db()
    assert plan.state == ("paused" if status == 200 else "running")
    if status == 200:
        assert "Paused: no new copies start" in response.text
        assert "Resume" in response.text
        client_for(role).post(reverse("plan_resume", args=[plan.pk]))
        plan.refresh_from_db()
        assert plan.state == "running"


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("approver", 200), ("operator", 200), ("admin", 200)])
def test_abort_all_needs_the_operator_or_approver_role(client_for, users, role, status):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    first, second = add_migrations(plan, ["requested", "requested"])
    response = client_for(role).post(reverse("plan_abort", args=[plan.pk]), follow=True)
    assert response.status_code == status
    first.refresh_from_db()
    plan.refresh_from_db()
    if status == 200:
        assert first.state == "aborted" and plan.state == "aborted"
        assert "This plan is over." in response.text
    else:
        assert first.state == "requested" and plan.state == "running"


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 200), ("approver", 200), ("admin", 200)])
def test_discard_a_draft(client_for, users, role, status):
    plan = make_plan(users["admin"])
    response = client_for(role).post(reverse("plan_discard", args=[plan.pk]))
    assert response.status_code in ((302,) if status == 200 else (403,))
    plan.refresh_from_db()
    assert plan.state == ("aborted" if status == 200 else "draft")


def test_window_is_entered_and_shown_in_the_users_timezone(client_for, users):
    plan = make_plan(users["operator"])
    client = client_for("operator")
    client.cookies["tz"] = "Europe/Paris"
    client.post(reverse("plan_window", args=[plan.pk]), {"window_start": "2030-06-01T22:00", "window_end": "2030-06-02T02:00"})
    plan.refresh_from_db()
    assert plan.window_start.isoformat() == "2030-06-01T20:00:00+00:00"  # CEST is UTC+2; stored in UTC
    page = client.get(reverse("plan_detail", args=[plan.pk])).text
    assert "2030-06-01 22:00" in page
    assert "Pivots wait for plan" in page


def test_window_of_a_running_plan_is_the_approvers_to_change(client_for, users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    response = client_for("operator").post(reverse("plan_window", args=[plan.pk]), {"window_start": "2030-06-01T22:00"})
    assert response.status_code == 403
    response = client_for("approver").post(reverse("plan_window", args=[plan.pk]), {"window_start": "2030-06-01T22:00"})
    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.window_start is not None


def test_plan_fragment_for_htmx(client_for, users):
    plan = make_plan(users["operator"])
    response = client_for("viewer").get(reverse("plan_detail", args=[plan.pk]) + "?fragment=plan_disks", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<section class="card" id="plan-{plan.pk}-disks"')


@pytest.mark.parametrize(("role", "offered"), [("viewer", False), ("operator", True), ("approver", False), ("admin", True)])
def test_host_and_domain_pages_offer_evacuate_to_operators(client_for, role, offered):
    host = make_host("kvm01")
    domain = Domain.objects.create(hypervisor=host, uuid="11111111-2222-4333-8444-555555555555", name="web1", state="running")
    host_page = client_for(role).get(reverse("hypervisor_detail", args=["kvm01"])).text
    domain_page = client_for(role).get(reverse("domain_detail", args=["kvm01", domain.uuid])).text
    assert ("Evacuate storage…" in host_page) is offered
    assert (f"{reverse('plan_new', args=['kvm01'])}?domain={domain.uuid}" in domain_page) is offered
    assert ">Plans</a>" in host_page  # every role may see plans


def test_a_plan_migration_approved_by_the_plan_offers_no_second_approval(client_for, users):
    plan = make_plan(users["operator"], state="running", pivot_policy="plan", approved_by=users["approver"],
                     window_start=timezone.now() + timedelta(hours=1))  # fmt: skip
    (migration,) = add_migrations(plan, ["ready"], done=2**30)
    page = client_for("approver").get(reverse("migration_detail", args=[migration.pk])).text
    assert "Approve and pivot" not in page
    assert f'href="/plans/{plan.pk}/">evacuation plan #{plan.pk}</a>' in page
    assert f"Plan #{plan.pk}&#x27;s approval (by approver) covers this pivot: it waits for the plan&#x27;s window." in page
    assert f"Pivots wait for plan #{plan.pk}&#x27;s maintenance window" in page
