"""Copy limits and the queue: the rule (blockmig.limits), its words, the decision under the
host's lock (lifecycle.migration_start_or_queue), claims that skip waiting migrations, the
abort of a queued one, the bandwidth share, and the admin's limits on the policy page.

Rows are made directly (no libvirt needed for the rule); the race for slots across threads
on PostgreSQL is tests/test_limits_postgres.py, the real copies tests/lab/test_migration_limits.py.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from blockmig.api.tokens import token_create
from blockmig.errors import Refused
from blockmig.leases import lease_claim_next, lease_release
from blockmig.lifecycle import migration_abort, migration_start_or_queue, migration_transition
from blockmig.limits import rules, setting
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.states import TRANSITIONS, State, abort_target, next_state
from hosts.models import Hypervisor

ROOT_A, ROOT_B = "/srv/a", "/srv/b"
_uuids = itertools.count(1)


@pytest.fixture
def host(db) -> Hypervisor:
    return Hypervisor.objects.create(name="local", uri="test:///default", allowed_roots=[ROOT_A, ROOT_B])


@pytest.fixture
def make(host, users):
    """make(state, root=ROOT_A, **fields) → a migration of one disk into `root`, requested a
    second after the previous one (request order = creation order)."""
    start = timezone.now() - timedelta(hours=1)

    def build(state=State.COPYING, root=ROOT_A, *, targets=("vda",), **fields) -> Migration:
        n = next(_uuids)
        m = Migration.objects.create(
            hypervisor=host,
            domain_uuid=f"uuid-{n}",
            domain_name=f"vm{n}",
            state=state,
            requested_by=users["operator"],
            **{"created_at": start + timedelta(seconds=n), **fields},
        )
        for target in targets:
            MigrationDisk.objects.create(
                migration=m,
                hypervisor=host,
                domain_uuid=m.domain_uuid,
                target=target,
                source_path=f"/images/{m.domain_name}-{target}.qcow2",
                destination=f"{root}/{m.domain_name}-{target}.qcow2",
                active=state not in (State.COMPLETED, State.ABORTED, State.FAILED),
            )
        return Migration.objects.select_related("hypervisor").get(pk=m.pk)

    return build


def fresh(m: Migration) -> Migration:
    return Migration.objects.select_related("hypervisor").get(pk=m.pk)


# -- the state machine -------------------------------------------------------------------------


def test_queued_sits_between_preflight_and_copying_and_aborts_at_once():
    assert State.QUEUED in TRANSITIONS[State.PREFLIGHT]
    assert TRANSITIONS[State.QUEUED] == {State.COPYING, State.FAILED, State.ABORTED}
    assert abort_target(State.QUEUED) == State.ABORTED
    assert State.QUEUED.label == "Queued"
    with pytest.raises(Exception, match="cannot become"):
        next_state(State.QUEUED, State.READY)


# -- the rule and its words ----------------------------------------------------------------------


def test_third_copy_waits_with_its_position_and_the_copy_that_frees_a_slot(make):
    first = make(State.COPYING, bytes_done=10, bytes_total=100)
    second = make(State.COPYING, bytes_done=70, bytes_total=100)
    third = make(State.PREFLIGHT, root=ROOT_B)
    wait = rules.slot_for(third)
    assert wait.position == 1
    assert wait.reason == f"2 copies already run on local (limit 2); next slot when #{second.pk} finishes"
    assert wait.text.startswith("1st in the queue: 2 copies already run on local")
    assert set(wait.behind) == {first.pk, second.pk}


def test_a_ready_mirror_is_named_as_the_next_to_free_a_slot(make):
    ready = make(State.READY, bytes_done=5, bytes_total=100)
    make(State.COPYING, bytes_done=99, bytes_total=100)
    assert rules.slot_for(make(State.PREFLIGHT)).reason.endswith(f"next slot when #{ready.pk} finishes")


def test_under_the_limit_a_migration_starts(make):
    make(State.COPYING)
    make(State.COMPLETED)
    make(State.QUEUED, root=ROOT_B)  # later than the one asking: not ahead of it
    assert rules.slot_for(make(State.PREFLIGHT, root=ROOT_B, created_at=timezone.now() - timedelta(hours=2))) is None


def test_request_order_a_later_request_never_takes_the_slot_an_earlier_one_waits_for(make):
    make(State.COPYING)
    earlier = make(State.QUEUED, root=ROOT_B)
    later = make(State.PREFLIGHT, root=ROOT_B)
    assert rules.slot_for(earlier) is None  # one slot free: the earlier one gets it
    wait = rules.slot_for(later)
    assert wait.position == 2
    assert wait.reason == f"1 earlier request waits for local first (#{earlier.pk}); 1 of 2 copies run there"
    assert rules.startable_queued() == [earlier.pk]


def test_positions_follow_request_order(make, host):
    host.max_copies = 1
    host.save()
    make(State.COPYING)
    queued = [make(State.QUEUED, root=ROOT_B) for _ in range(3)]
    waits = rules.waits_of([fresh(m) for m in queued])
    assert [waits[m.pk].position for m in queued] == [1, 2, 3]
    assert waits[queued[2].pk].text.startswith("3rd in the queue")


def test_root_limit_holds_copies_into_one_root_while_another_root_has_room(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    running = make(State.COPYING, root=ROOT_A)
    into_a = make(State.PREFLIGHT, root=ROOT_A)
    into_b = make(State.PREFLIGHT, root=ROOT_B)
    assert rules.slot_for(into_a).reason == (
        f"1 copy already writes into {ROOT_A} (limit 1); next slot when #{running.pk} finishes"
    )
    assert rules.slot_for(into_b) is None


def test_an_earlier_request_waiting_for_a_full_root_does_not_hold_back_another_root(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    make(State.COPYING, root=ROOT_A)
    waiting_for_a = make(State.QUEUED, root=ROOT_A)
    into_b = make(State.QUEUED, root=ROOT_B)
    assert rules.startable_queued() == [into_b.pk]
    assert rules.slot_for(waiting_for_a) is not None


def test_zero_means_no_limit(make, host):
    host.max_copies = 0
    host.root_limits = {ROOT_A: {"max_copies": 0, "bandwidth_mib": 0}}
    host.save()
    for _ in range(5):
        make(State.COPYING)
    assert rules.slot_for(make(State.PREFLIGHT)) is None


def test_a_limit_lowered_below_the_running_copies_says_how_many_must_finish(make, host):
    host.max_copies = 1
    host.save()
    a, b = make(State.COPYING, bytes_done=9, bytes_total=10), make(State.COPYING, bytes_done=1, bytes_total=10)
    reason = rules.slot_for(make(State.PREFLIGHT, root=ROOT_B)).reason
    assert reason == f"2 copies already run on local (limit 1); next slot when 2 of them finish (#{a.pk}, #{b.pk} are furthest)"


def test_a_network_destination_counts_against_the_host_only(make, host):
    host.max_copies = 3
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    make(State.COPYING, root=ROOT_A)
    nbd = make(State.PREFLIGHT, root="nbd://10.0.0.5:10809")
    assert rules.slot_for(nbd) is None


def test_another_condition_can_be_added_to_the_rule(make, monkeypatch):
    """The contract for other rules (a paused plan, a maintenance window): one function more."""
    monkeypatch.setattr(rules, "CONDITIONS", [*rules.CONDITIONS, lambda me, usage, ahead: "the plan is paused"])
    wait = rules.slot_for(make(State.PREFLIGHT))
    assert wait.reason == "the plan is paused"


def test_a_migration_a_gate_holds_keeps_its_place_but_holds_back_no_one(make, host, monkeypatch):
    """A paused plan's queued copy (a gate's reason) must not reserve a seat at the limits."""
    host.max_copies = 1
    host.save()
    held = make(State.QUEUED)
    later = make(State.QUEUED, root=ROOT_B)
    monkeypatch.setattr(rules, "GATES", [lambda me, usage, ahead: "the plan is paused" if me.id == held.pk else None])
    assert rules.slot_for(fresh(held)).reason == "the plan is paused"
    assert rules.slot_for(fresh(later)) is None  # the one free slot goes to the later request
    assert rules.startable_queued() == [later.pk]
    make(State.COPYING)
    wait = rules.slot_for(fresh(later))
    assert wait.position == 2 and wait.reason.startswith("1 copy already runs on local (limit 1)")


# -- the decision under the lock -------------------------------------------------------------------


def test_over_the_limit_the_migration_queues_with_an_audited_reason_and_starts_when_a_slot_frees(make):
    running = [make(State.COPYING), make(State.COPYING)]
    m = make(State.PREFLIGHT)
    wait = migration_start_or_queue(m.pk, lease=None, saved_definition="<domain/>", definition_strategy="transient_job")
    assert isinstance(wait, rules.Wait)
    row = fresh(m)
    assert (row.state, row.saved_definition) == (State.QUEUED, "")  # nothing saved, nothing done
    event = AuditEvent.objects.get(migration=m, event_type="queued")
    assert event.details["position"] == 1 and event.details["reason"].startswith("2 copies already run on local")
    # Asked again while still full: it stays queued and writes nothing more.
    assert isinstance(migration_start_or_queue(m.pk, lease=None), rules.Wait)
    assert AuditEvent.objects.filter(migration=m, event_type="queued").count() == 1
    migration_transition(running[0].pk, State.ABORTING)
    migration_transition(running[0].pk, State.ABORTED)
    started = migration_start_or_queue(m.pk, lease=None, saved_definition="<domain/>", definition_strategy="transient_job")
    assert isinstance(started, Migration)
    row = fresh(m)
    assert (row.state, row.saved_definition, row.definition_strategy) == (State.COPYING, "<domain/>", "transient_job")


def test_a_waiting_queued_migration_is_not_claimed_and_a_startable_one_is(make):
    running = [make(State.COPYING, lease_owner="w0", lease_expires_at=timezone.now() + timedelta(hours=1)) for _ in range(2)]
    queued = make(State.QUEUED)
    assert lease_claim_next("w1") is None
    Migration.objects.filter(pk=running[0].pk).update(state=State.COMPLETED)
    lease = lease_claim_next("w1")
    assert lease is not None and lease.migration_id == queued.pk
    lease_release(lease)


def test_aborting_a_queued_migration_removes_it_from_the_queue(make, users):
    make(State.COPYING)
    make(State.COPYING)
    first = make(State.QUEUED)
    second = make(State.QUEUED)
    assert rules.slot_for(second).position == 2
    migration_abort(migration=first, user=users["operator"])
    assert fresh(first).state == State.ABORTED
    event = AuditEvent.objects.get(migration=first, event_type="aborted")
    assert event.details == {"removed_from_queue": True, "position": 1}
    assert event.actor_name == "operator"
    assert rules.slot_for(fresh(second)).position == 1


# -- bandwidth shared in a root ---------------------------------------------------------------------


def test_a_roots_total_is_shared_among_its_running_copies(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 5, "bandwidth_mib": 100}}
    host.save()
    a = make(State.COPYING, bandwidth_mib=0)
    b = make(State.COPYING, bandwidth_mib=30)
    c = make(State.COPYING, root=ROOT_B, bandwidth_mib=0)
    assert rules.bandwidth_for(fresh(a), list(a.disks.all())) == {"vda": 50}
    assert rules.bandwidth_for(fresh(b), list(b.disks.all())) == {"vda": 30}  # its own limit is lower
    assert rules.bandwidth_for(fresh(c), list(c.disks.all())) == {"vda": 0}  # no total on that root
    make(State.COPYING, targets=("vda", "vdb"))  # two more copies into the root
    assert rules.bandwidth_for(fresh(a), list(a.disks.all())) == {"vda": 25}


def test_without_a_total_each_copy_keeps_its_own_limit(make):
    m = make(State.COPYING, bandwidth_mib=7, targets=("vda", "vdb"))
    assert rules.bandwidth_for(fresh(m), list(m.disks.all())) == {"vda": 7, "vdb": 7}


# -- admins set the limits ------------------------------------------------------------------------


def test_admin_sets_limits_audited_with_what_changed(host, users):
    setting.hypervisor_set_limits(hypervisor=host, user=users["admin"], max_copies=4, roots={ROOT_A: (1, 200), ROOT_B: (2, 0)})
    host.refresh_from_db()
    assert host.max_copies == 4 and host.root_limit(ROOT_A) == (1, 200) and host.root_limit(ROOT_B) == (2, 0)
    event = AuditEvent.objects.get(event_type="limits_changed")
    assert event.actor_name == "admin" and event.hypervisor_name == "local"
    assert event.details["changed"] == {
        "max_copies": {"from": 2, "to": 4},
        ROOT_A: {"from": {"max_copies": 2, "bandwidth_mib": 0}, "to": {"max_copies": 1, "bandwidth_mib": 200}},
    }


@pytest.mark.parametrize(
    ("role", "max_copies", "roots", "message"),
    [
        ("operator", 3, {}, "Only an admin can change a host's copy limits."),
        ("admin", -1, {}, "Copies at once on the host must be a whole number from 0 (no limit) to 1000."),
        ("admin", 2, {"/elsewhere": (1, 0)}, "/elsewhere is not an allowed root of local: add it to the host first."),
        ("admin", 2, {ROOT_A: (1, -5)}, f"The bandwidth total of {ROOT_A} must be a whole number of MiB/s"),
    ],
)
def test_refused_limit_changes_are_audited_and_change_nothing(host, users, role, max_copies, roots, message):
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        setting.hypervisor_set_limits(hypervisor=host, user=users[role], max_copies=max_copies, roots=roots)
    host.refresh_from_db()
    assert (host.max_copies, host.root_limits) == (2, {})
    event = AuditEvent.objects.get(event_type="refused")
    assert event.details["action"] == "set_limits" and event.details["reason"].startswith(message)


def test_policy_page_offers_the_limits_form_to_an_admin_only(host, client_for):
    admin_page = client_for("admin").get(reverse("hypervisor_policy", args=[host.name])).content.decode()
    assert 'action="/hosts/local/limits/"' in admin_page and f'aria-label="Copies at once into {ROOT_A}"' in admin_page
    viewer_page = client_for("viewer").get(reverse("hypervisor_policy", args=[host.name])).content.decode()
    assert "Copy limits" in viewer_page and "Save limits" not in viewer_page
    assert "Only an admin can change them." in viewer_page


def test_policy_page_saves_limits_and_the_host_page_shows_them(host, client_for):
    admin = client_for("admin")
    data = {"max_copies": "3", "root_0_copies": "1", "root_0_bandwidth": "120", "root_1_copies": "2", "root_1_bandwidth": "0"}
    response = admin.post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.max_copies == 3 and host.root_limit(ROOT_A) == (1, 120)
    page = admin.get(reverse("hypervisor_detail", args=[host.name])).content.decode()
    assert "3 at once on the host" in page and "1 at once, 120 MiB/s shared" in page


def test_policy_page_shows_field_errors_and_keeps_the_limits(host, client_for):
    data = {"max_copies": "-2", "root_0_copies": "x", "root_0_bandwidth": "0", "root_1_copies": "2", "root_1_bandwidth": "0"}
    response = client_for("admin").post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 400
    page = response.content.decode()
    assert "Copies cannot be negative; use 0 for no limit." in page and "Give a whole number of copies" in page
    host.refresh_from_db()
    assert host.max_copies == 2


def test_non_admin_cannot_post_limits(host, client_for):
    data = {"max_copies": "9", "root_0_copies": "9", "root_0_bandwidth": "0", "root_1_copies": "9", "root_1_bandwidth": "0"}
    response = client_for("operator").post(reverse("hypervisor_limits", args=[host.name]), data)
    assert response.status_code == 403
    host.refresh_from_db()
    assert host.max_copies == 2
    assert AuditEvent.objects.get(event_type="refused").details["action"] == "set_limits"


# -- the queue on the pages ------------------------------------------------------------------------


def test_migration_page_and_dashboard_show_the_queue_position_and_reason(make, client_for):
    make(State.COPYING)
    busy = make(State.COPYING, bytes_done=50, bytes_total=100)
    queued = make(State.QUEUED)
    client = client_for("viewer")
    page = client.get(reverse("migration_detail", args=[queued.pk])).content.decode()
    assert "Queued — waiting for a copy slot" in page
    assert f"1st in the queue: 2 copies already run on local (limit 2); next slot when #{busy.pk} finishes" in page
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert f'id="dashboard-queue-{queued.pk}"' in dashboard
    assert f"next slot when #{busy.pk} finishes" in dashboard
    listing = client.get(reverse("migration_list") + "?state=queued").content.decode()
    assert f"1st in the queue: 2 copies already run on local (limit 2); next slot when #{busy.pk} finishes" in listing


def test_the_api_gives_a_queued_migration_its_place_and_reason_and_others_none(make, users):
    make(State.COPYING)
    busy = make(State.COPYING, bytes_done=50, bytes_total=100)
    first, second = make(State.QUEUED), make(State.QUEUED)
    _, token = token_create(user=users["viewer"], name="queue-watcher")
    headers = {"Authorization": f"Bearer {token}"}
    detail = Client().get(f"/api/v1/migrations/{second.pk}/", headers=headers).json()
    assert detail["state"] == "queued"
    assert detail["queue"]["position"] == 2
    assert detail["queue"]["reason"] == f"2 copies already run on local (limit 2); next slot when #{busy.pk} finishes"
    assert detail["queue"]["waits_for"] == list(rules.slot_for(fresh(second)).behind) != []  # the rule's own answer
    rows = Client().get("/api/v1/migrations/", headers=headers).json()["results"]
    queues = {row["id"]: row["queue"] for row in rows}
    assert queues[first.pk]["position"] == 1
    assert queues[busy.pk] is None
