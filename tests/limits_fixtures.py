"""What the copy-limit tests share: a host with two allowed roots, migrations of one disk (or
more) into a root, each requested a second after the previous one (`make`), and a row read
again with its host (`fresh`).

Rows are made directly (no libvirt needed for the rule); the race for slots across threads
on PostgreSQL is tests/test_limits_postgres.py, the real copies tests/lab/test_migration_limits.py.
Test modules import the fixtures they use by name."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from blockmig.models import Migration, MigrationDisk
from blockmig.states import State
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
