"""The queue: the decision under the host's lock (lifecycle.migration_start_or_queue) queues
with an audited reason and starts when a slot frees, claims skip waiting migrations, and
an abort removes a queued one from the queue."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from blockmig.leases import lease_claim_next, lease_release
from blockmig.lifecycle import migration_abort, migration_start_or_queue, migration_transition
from blockmig.limits import rules
from blockmig.models import AuditEvent, Migration
from blockmig.states import State
from tests.limits_fixtures import fresh, host, make


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
