"""Evacuation plans without a host: which disks a plan takes and where they go, the free
space rule, the plan's state machine, its window, its totals, four eyes, pause/resume and
abort all (each through the lifecycle, audited), and the plan's end with its last migration."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from blockmig.errors import Refused
from blockmig.lifecycle import migration_approve, migration_transition
from blockmig.limits import rules
from blockmig.models import AuditEvent, Migration, Plan
from blockmig.plans.actions import plan_abort, plan_approve, plan_discard, plan_pause, plan_resume, plan_set_window
from blockmig.plans.build import plan_build
from blockmig.plans.building import DiskFacts, bytes_to_copy, destination_for, select_disks, space_problem
from blockmig.plans.progress import plan_totals
from blockmig.plans.rules import copy_wait_reason, pivot_allowed_by, plan_paused, window_problem
from blockmig.plans.states import IllegalPlanTransition, PlanState, plan_next_state
from hosts.adapter import open_block_jobs
from tests.plan_factories import GIB, add_migrations, make_host, make_plan

MIB = 2**20


def facts(name: str, chain: list[str], sizes=None, **kw) -> DiskFacts:
    return DiskFacts(
        domain_uuid=f"uuid-{name}",
        domain_name=name,
        target=kw.pop("target", "vda"),
        source=chain[0] if chain else "",
        chain=tuple(chain),
        sizes=tuple(sizes or [MIB] * len(chain)),
        **kw,
    )


# -- which disks, where to, how much ------------------------------------------------------------


def test_shallow_plan_takes_disks_whose_active_layer_is_in_the_root():
    disks = [
        facts("a", ["/old/a.qcow2", "/base/a-base.qcow2"]),
        facts("b", ["/elsewhere/b.qcow2", "/old/b-base.qcow2"]),
        facts("c", ["/elsewhere/c.qcow2"]),
        facts("d", ["/older/d.qcow2"]),  # a sibling directory, not inside /old
    ]
    chosen = {s.disk.domain_name: s.reason for s in select_disks(disks, kind="root", mode="shallow", root="/old")}
    assert set(chosen) == {"a", "b"}
    assert chosen["a"] == ""
    assert "only backing layers of b/vda lie in /old" in chosen["b"] and "full plan" in chosen["b"]


def test_full_plan_takes_only_disks_whose_whole_chain_is_in_the_root():
    disks = [facts("a", ["/old/a.qcow2", "/old/a-base.qcow2"]), facts("b", ["/old/b.qcow2", "/base/b-base.qcow2"])]
    chosen = {s.disk.domain_name: s.reason for s in select_disks(disks, kind="root", mode="full", root="/old")}
    assert chosen["a"] == ""
    assert "/base/b-base.qcow2, outside /old" in chosen["b"]


def test_cdroms_and_empty_drives_are_listed_with_why_they_stay():
    disks = [
        facts("a", ["/old/install.iso"], device="cdrom", target="sda"),
        facts("a", [], target="sdb"),
        facts("a", ["/old/a.qcow2"]),
    ]
    chosen = {s.disk.target: s.reason for s in select_disks(disks, kind="host", mode="shallow")}
    assert "is a cdrom" in chosen["sda"]
    assert "no source" in chosen["sdb"]
    assert chosen["vda"] == ""


def test_destination_names_are_derived_and_unique():
    taken = {"/new/vm-vda.qcow2"}
    disk = facts("vm", ["/old/vm.qcow2"])
    first = destination_for("/new", disk, taken, exists=lambda p: p == "/new/vm-vda-2.qcow2")
    second = destination_for("/new/", disk, taken)
    assert first == "/new/vm-vda-3.qcow2"
    assert second == "/new/vm-vda-2.qcow2"  # free on the host, and not yet taken by this plan
    odd = destination_for("/new", facts("we/ird name", ["/old/x.qcow2"]), set())
    assert odd == "/new/we_ird_name-vda.qcow2"


def test_bytes_to_copy_shallow_is_the_active_layer_full_is_the_chain_up_to_the_virtual_size():
    disk = facts("vm", ["/old/top.qcow2", "/old/mid.qcow2", "/old/base.qcow2"], sizes=[3 * MIB, 5 * MIB, 900 * MIB], capacity=GIB)
    assert bytes_to_copy(disk, "shallow") == 3 * MIB
    assert bytes_to_copy(disk, "full") == 908 * MIB
    big = facts("vm", ["/old/top.qcow2", "/old/base.qcow2"], sizes=[GIB, GIB], capacity=GIB)
    assert bytes_to_copy(big, "full") == GIB


def test_free_space_for_the_sum_is_required_and_the_refusal_says_what_to_do():
    assert space_problem(needed=GIB, free=2 * GIB, target_root="/new") == ""
    assert space_problem(needed=GIB, free=None, target_root="/new") == ""
    problem = space_problem(needed=3 * GIB, free=GIB, target_root="/new")
    assert "Not enough free space in /new" in problem
    assert "3.0 GiB" in problem and "1.0 GiB is free" in problem and "Free 2.0 GiB" in problem


# -- state machine, window, totals --------------------------------------------------------------


def test_plan_state_machine_refuses_skipping_review():
    assert plan_next_state("draft", "approved") == PlanState.APPROVED
    with pytest.raises(IllegalPlanTransition):
        plan_next_state("draft", "running")
    with pytest.raises(IllegalPlanTransition):
        plan_next_state("done", "running")


@pytest.mark.django_db
def test_window_keeps_pivots_back_until_it_opens_and_after_it_closes(users):
    now = timezone.now()
    plan = make_plan(users["operator"], window_start=now + timedelta(hours=1), window_end=now + timedelta(hours=2))
    assert "opens" in window_problem(plan, now)
    assert window_problem(plan, now + timedelta(minutes=61)) == ""
    assert "closed" in window_problem(plan, now + timedelta(hours=3))
    assert window_problem(make_plan(users["operator"], host=plan.hypervisor), now) == ""


@pytest.mark.django_db
def test_plan_approval_covers_pivots_only_inside_the_window(users):
    now = timezone.now()
    plan = make_plan(users["operator"], state="running", pivot_policy="plan", approved_by=users["approver"],
                     window_start=now + timedelta(hours=1))  # fmt: skip
    (migration,) = add_migrations(plan, ["ready"])
    assert pivot_allowed_by(migration, auto_pivot=False, now=now) is None
    allowed = pivot_allowed_by(migration, auto_pivot=False, now=now + timedelta(hours=2))
    assert allowed["policy"] == "plan_approval" and allowed["approved_by"] == "approver"


@pytest.mark.django_db
def test_each_pivot_policy_needs_the_migrations_own_approval(users):
    plan = make_plan(users["operator"], state="running", pivot_policy="each", approved_by=users["approver"])
    (migration,) = add_migrations(plan, ["ready"])
    assert pivot_allowed_by(migration, auto_pivot=False) is None
    migration.approved_by = users["approver"]
    migration.save()
    assert pivot_allowed_by(migration, auto_pivot=False)["policy"] == "approved_pivot"


@pytest.mark.django_db
def test_totals_count_disks_by_status_and_eta_comes_from_measured_rates(users):
    plan = make_plan(users["operator"], state="running", disks=3)
    add_migrations(plan, ["completed", "copying", "requested"], done=GIB // 2)
    items = list(plan.items.all())
    totals = plan_totals(items, {m.pk: m for m in Migration.objects.filter(plan=plan)})
    assert totals.counts["done"] == 1 and totals.counts["running"] == 1 and totals.counts["queued"] == 1
    assert totals.counts["stays"] == 1
    assert totals.bytes_done == GIB + GIB // 2  # the completed one counts whole
    assert totals.rate_bps == MIB
    # Left: half of the copying one and all of the queued one, at 1 MiB/s.
    assert totals.eta_seconds == pytest.approx((GIB // 2 + GIB) / MIB)


# -- building refusals that need no host ---------------------------------------------------------


@pytest.mark.django_db
def test_build_refusals_name_what_to_fix_and_save_nothing(users):
    host = make_host()
    operator = users["operator"]
    cases = [
        (users["viewer"], dict(source_kind="root", source_root="/old", target_root="/new"), "operator role"),
        (operator, dict(source_kind="root", source_root="/old", target_root="/elsewhere"), r"allowed roots \(/new\)"),
        (operator, dict(source_kind="root", source_root="/new/..", target_root="/new"), "without “..”"),
        (operator, dict(source_kind="root", source_root="/", target_root="/new"), "lies in /"),
        (operator, dict(source_kind="domains", target_root="/new"), "at least one domain"),
        (operator, dict(source_kind="host", target_root="/new", window_end=timezone.now() + timedelta(hours=1)), "start"),
        (
            operator,
            dict(
                source_kind="host",
                target_root="/new",
                window_start=timezone.now() - timedelta(hours=2),
                window_end=timezone.now() - timedelta(hours=1),
            ),  # fmt: skip
            "already ended",
        ),
    ]
    for user, kwargs, words in cases:
        with pytest.raises(Refused, match=words):
            plan_build(user=user, hypervisor=host, **kwargs)
    assert Plan.objects.count() == 0
    refused = AuditEvent.objects.filter(event_type="refused", details__action="plan_build")
    assert refused.count() == len(cases)


@pytest.mark.django_db
def test_build_refused_when_the_host_cannot_be_reached(users):
    with pytest.raises(Refused, match="unreachable"):
        plan_build(user=users["operator"], hypervisor=make_host(), source_kind="host", target_root="/new", timeout=2)
    assert Plan.objects.count() == 0


# -- review, pause, abort, the end -----------------------------------------------------------------


@pytest.mark.django_db
def test_author_cannot_approve_own_plan_and_operator_cannot_approve(users):
    admin = users["admin"]
    plan = make_plan(admin)
    with pytest.raises(Refused, match="four eyes"):
        plan_approve(plan=plan, user=admin)
    with pytest.raises(Refused, match="approver role"):
        plan_approve(plan=plan, user=users["operator"])
    plan.refresh_from_db()
    assert plan.state == "draft" and plan.approved_by is None
    reasons = list(AuditEvent.objects.filter(details__action="plan_approve").values_list("details__reason", flat=True))
    assert len(reasons) == 2 and all(reasons)


@pytest.mark.django_db
def test_pause_and_resume_are_audited_and_a_paused_plan_holds_copies_back(users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    (queued,) = add_migrations(plan, ["requested"])
    plan_pause(plan=plan, user=users["operator"])
    assert "paused" in copy_wait_reason(queued)
    with pytest.raises(Refused, match="only a running plan"):
        plan_pause(plan=plan, user=users["operator"])
    with pytest.raises(Refused, match="operator role"):
        plan_resume(plan=plan, user=users["viewer"])
    plan_resume(plan=plan, user=users["operator"])
    assert copy_wait_reason(queued) == ""
    types = list(AuditEvent.objects.filter(details__plan=plan.pk).values_list("event_type", "actor_name"))
    assert ("plan_paused", "operator") in types and ("plan_resumed", "operator") in types


@pytest.mark.django_db
def test_abort_all_aborts_each_migration_through_the_lifecycle_and_the_plan_ends_aborted(users):
    plan = make_plan(users["operator"], state="running", disks=2, approved_by=users["approver"])
    first, second = add_migrations(plan, ["requested", "requested"])
    plan_abort(plan=plan, user=users["approver"])
    for migration in (first, second):
        migration.refresh_from_db()
        assert migration.state == "aborted"
        assert AuditEvent.objects.filter(migration=migration, event_type="aborted", actor_name="approver").exists()
    plan.refresh_from_db()
    assert plan.state == "aborted" and plan.finished_at is not None
    steps = list(AuditEvent.objects.filter(details__plan=plan.pk).values_list("event_type", flat=True))
    assert steps[-2:] == ["plan_abort_requested", "plan_aborted"]


@pytest.mark.django_db
def test_plan_is_done_when_its_last_migration_ends(users):
    plan = make_plan(users["operator"], state="running", disks=2, approved_by=users["approver"])
    first, second = add_migrations(plan, ["pivoting", "pivoting"])
    migration_transition(first.pk, "completed")
    plan.refresh_from_db()
    assert plan.state == "running"
    migration_transition(second.pk, "failed", failure_reason="test")
    plan.refresh_from_db()
    assert plan.state == "done"
    done = AuditEvent.objects.get(event_type="plan_done", details__plan=plan.pk)
    assert done.details["migrations"] == {"completed": 1, "failed": 1}


@pytest.mark.django_db
def test_draft_can_be_discarded_but_not_paused(users):
    plan = make_plan(users["operator"])
    with pytest.raises(Refused, match="only a running plan"):
        plan_pause(plan=plan, user=users["operator"])
    plan_discard(plan=plan, user=users["operator"])
    plan.refresh_from_db()
    assert plan.state == "aborted"
    assert AuditEvent.objects.filter(event_type="plan_discarded", details__plan=plan.pk).exists()


@pytest.mark.django_db
def test_window_of_an_approved_plan_changes_only_by_an_approver(users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    start = timezone.now() + timedelta(hours=1)
    with pytest.raises(Refused, match="Only an approver"):
        plan_set_window(plan=plan, user=users["operator"], window_start=start, window_end=None)
    plan_set_window(plan=plan, user=users["approver"], window_start=start, window_end=None)
    plan.refresh_from_db()
    assert plan.window_start == start
    event = AuditEvent.objects.get(event_type="plan_window_changed", details__plan=plan.pk)
    assert event.details["from"] == [None, None] and "opens" in event.details["now"]


@pytest.mark.django_db
def test_the_limits_condition_holds_copies_of_a_paused_plan_only(users):
    plan = make_plan(users["operator"], state="paused", approved_by=users["approver"])
    (waiting,) = add_migrations(plan, ["requested"])
    assert "paused" in plan_paused(SimpleNamespace(id=waiting.pk), None, [])
    plan.state = "running"
    plan.save()
    assert plan_paused(SimpleNamespace(id=waiting.pk), None, []) is None


@pytest.mark.django_db
def test_a_pivot_approved_outside_the_window_is_recorded_and_waits(users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"],
                     window_start=timezone.now() + timedelta(hours=1))  # fmt: skip
    (migration,) = add_migrations(plan, ["ready"])
    migration_approve(migration=migration, user=users["approver"])
    migration.refresh_from_db()
    assert migration.state == "ready" and migration.approved_by == users["approver"]
    event = AuditEvent.objects.get(migration=migration, event_type="plan_pivot_window")
    assert event.actor_name == "approver" and "opens" in event.details["waits"]
    assert pivot_allowed_by(migration, auto_pivot=False) is None  # not before the window
    later = timezone.now() + timedelta(hours=2)
    assert pivot_allowed_by(migration, auto_pivot=False, now=later)["policy"] == "approved_pivot"


def test_free_space_at_a_remote_target_comes_from_its_libvirt_pool():
    # test:///default is not this machine's files: its one pool targets /default-pool.
    with open_block_jobs("test:///default") as host:
        free, total = host.free_space("/default-pool/vm-vda.qcow2")
        assert 0 < free <= total
        assert host.free_space("/elsewhere/vm-vda.qcow2") is None  # no pool holds it


@pytest.mark.django_db
def test_a_paused_plans_queued_copy_waits_in_the_limits_with_the_plans_reason(users):
    plan = make_plan(users["operator"], state="running", approved_by=users["approver"])
    (queued,) = add_migrations(plan, ["queued"])
    assert rules.slot_for(queued) is None  # no limit is reached: it may start
    plan_pause(plan=plan, user=users["operator"])
    wait = rules.slot_for(Migration.objects.get(pk=queued.pk))
    assert wait is not None and f"Plan #{plan.pk} is paused" in wait.reason
    assert queued.pk not in rules.startable_queued()
    plan_resume(plan=plan, user=users["operator"])
    assert queued.pk in rules.startable_queued()
