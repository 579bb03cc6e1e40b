"""Fenced leases: a claim bumps the epoch, and a holder whose epoch is stale can write nothing."""

import sqlite3
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from blockmig.leases import LeaseLost, lease_claim_next, lease_release, lease_renew
from blockmig.lifecycle import migration_note, migration_record_progress, migration_transition
from blockmig.models import AuditEvent, Migration
from blockmig.states import State
from hosts.models import Hypervisor


@pytest.fixture
def migration(users) -> Migration:
    host = Hypervisor.objects.create(name="h1", uri="test:///default")
    return Migration.objects.create(hypervisor=host, domain_uuid="u-1", domain_name="vm1", requested_by=users["operator"])


def expire(migration: Migration) -> None:
    Migration.objects.filter(pk=migration.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_claim_takes_a_free_migration_and_bumps_the_epoch(migration):
    lease = lease_claim_next("w1")
    assert (lease.migration_id, lease.owner, lease.epoch, lease.is_takeover) == (migration.pk, "w1", 1, False)
    row = Migration.objects.get(pk=migration.pk)
    assert (row.lease_owner, row.lease_epoch) == ("w1", 1)
    assert row.lease_expires_at > timezone.now()


def test_a_held_lease_is_not_claimed_again(migration):
    assert lease_claim_next("w1") is not None
    assert lease_claim_next("w2") is None
    assert lease_claim_next("w1", exclude={migration.pk}) is None


def test_terminal_migrations_are_never_claimed(migration):
    Migration.objects.filter(pk=migration.pk).update(state=State.COMPLETED)
    assert lease_claim_next("w1") is None


def test_oldest_migration_is_claimed_first(migration, users):
    newer = Migration.objects.create(
        hypervisor=migration.hypervisor, domain_uuid="u-2", domain_name="vm2", requested_by=users["operator"]
    )
    assert lease_claim_next("w1").migration_id == migration.pk
    assert lease_claim_next("w1", exclude={migration.pk}).migration_id == newer.pk


def test_expired_lease_is_taken_over_with_a_newer_epoch(migration):
    first = lease_claim_next("w1")
    expire(migration)
    second = lease_claim_next("w2")
    assert second.epoch == first.epoch + 1
    assert second.is_takeover and second.previous_owner == "w1"


def test_stale_holder_can_neither_renew_nor_write(migration):
    stale = lease_claim_next("w1")
    expire(migration)
    current = lease_claim_next("w2")
    assert lease_renew(stale) is False
    with pytest.raises(LeaseLost):
        migration_transition(migration.pk, State.PREFLIGHT, lease=stale)
    with pytest.raises(LeaseLost):
        migration_note(migration.pk, "verified", {"ok": True}, lease=stale)
    with pytest.raises(LeaseLost):
        migration_record_progress(migration.pk, totals={"bytes_done": 99}, disks={}, lease=stale)
    row = Migration.objects.get(pk=migration.pk)
    assert (row.state, row.bytes_done, row.lease_owner) == (State.REQUESTED, 0, "w2")
    assert not AuditEvent.objects.filter(migration=migration).exists()
    assert lease_renew(current) is True


def test_same_owner_with_an_old_epoch_is_fenced_out_too(migration):
    """A worker that re-claims after a pause holds a new epoch; its old driver must not write."""
    old = lease_claim_next("w1")
    expire(migration)
    new = lease_claim_next("w1")
    assert new.epoch == old.epoch + 1
    with pytest.raises(LeaseLost):
        migration_transition(migration.pk, State.PREFLIGHT, lease=old)
    migration_transition(migration.pk, State.PREFLIGHT, lease=new)
    event = AuditEvent.objects.get(migration=migration)
    assert event.details == {"worker": "w1", "epoch": new.epoch}


def test_expired_but_unclaimed_lease_may_still_be_renewed(migration):
    """A worker slowed past its lease (a locked database) carries on if nobody claimed since."""
    lease = lease_claim_next("w1")
    expire(migration)
    assert lease_renew(lease) is True
    assert Migration.objects.get(pk=migration.pk).lease_expires_at > timezone.now()


def test_hand_over_expires_the_lease_at_once_for_the_next_worker(migration):
    lease = lease_claim_next("w1")
    lease_release(lease, hand_over=True)
    takeover = lease_claim_next("w2")
    assert takeover is not None and takeover.previous_owner == "w1"


def test_release_frees_the_lease(migration):
    lease = lease_claim_next("w1")
    lease_release(lease)
    row = Migration.objects.get(pk=migration.pk)
    assert (row.lease_owner, row.lease_expires_at) == ("", None)


@pytest.mark.django_db(transaction=True)
def test_renewal_that_waited_for_a_locked_database_stores_a_future_expiry(users, settings):
    """The expiry is computed once the lock is held, not before waiting for it."""
    settings.BLOCKMIG_LEASE_SECONDS = 3
    host = Hypervisor.objects.create(name="h1", uri="test:///default")
    migration = Migration.objects.create(hypervisor=host, domain_uuid="u-1", domain_name="vm1", requested_by=users["operator"])
    lease = lease_claim_next("w1")
    path = connection.settings_dict["NAME"]
    locker = sqlite3.connect(path, timeout=5, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(2.0, lambda: locker.execute("ROLLBACK"))
    release.start()
    try:
        assert lease_renew(lease) is True
        returned = timezone.now()
    finally:
        release.join()
        locker.close()
    stored = Migration.objects.get(pk=migration.pk).lease_expires_at
    # Computed before the 2 s wait, it would end about 1 s after the renewal returned.
    assert stored - returned > timedelta(seconds=2.5)
