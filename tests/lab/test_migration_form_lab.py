"""The request form hands a valid request to the real lifecycle: an operator posts the form
(a Django test Client) against a running lab guest, preflight asks the real libvirtd, and
the Migration and MigrationDisk rows and the `requested` audit event hold what was posted.

No worker runs, so each migration stays requested and no block job starts; what is left
active is aborted through the lifecycle at the end. The form's own refusals, which never
reach the lifecycle, are in tests/test_migration_form_refusals.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.test import Client
from django.urls import reverse

from blockmig.lifecycle import migration_abort
from blockmig.models import AuditEvent, Migration
from blockmig.states import TERMINAL_STATES, State
from hosts.models import Hypervisor
from hosts.sync.hypervisor import hypervisor_sync
from tests.lab.engine_helpers import has_block_job, make_hypervisor, run

if TYPE_CHECKING:
    from tests.lab.engine_helpers import TestDomain  # not imported at run time: pytest would try to collect it

pytestmark = pytest.mark.lab
MiB = 2**20


@pytest.fixture
def operator(client: Client, people) -> Iterator[Client]:
    """The test Client logged in as the operator; afterwards every migration still active is
    aborted through the lifecycle (none runs: no worker picks them up)."""
    client.force_login(people["operator"])
    yield client
    for migration in Migration.objects.exclude(state__in=TERMINAL_STATES):
        migration_abort(migration=migration, user=people["operator"])
    assert not Migration.objects.exclude(state__in=TERMINAL_STATES).exists()


def synced_host(vm: TestDomain) -> tuple[Hypervisor, Path]:
    """A hypervisor on the lab's libvirtd with two roots (the guest's backups and a spare
    directory beside it), synced so that the form pages find the guest and its disks."""
    spare = vm.directory / "spare"
    spare.mkdir()
    host = make_hypervisor([vm.backups, spare])
    assert hypervisor_sync(host).ok
    return host, spare


def two_disk_guest(domains) -> TestDomain:
    return domains.images("form2", [("vda", "qcow2", 16 * MiB, None), ("vdb", "qcow2", 16 * MiB, None)])


def requested_event(migration: Migration) -> AuditEvent:
    (event,) = AuditEvent.objects.filter(migration=migration)
    assert (event.event_type, event.actor_name, event.to_state) == ("requested", "operator", State.REQUESTED)
    return event


def nothing_started(vm: TestDomain) -> bool:
    return not any(has_block_job(vm.name, disk.target) for disk in vm.disks)


def test_valid_request_goes_to_lifecycle_and_redirects_to_the_migration(domains, people, operator):
    vm = domains.images("form", [("vda", "qcow2", 16 * MiB, None)])
    host, _ = synced_host(vm)
    # "Reuse" needs a destination that exists: prepared as an operator would, raw, of the disk's size.
    prepared = vm.backups / "sub" / "copy.qcow2"
    prepared.parent.mkdir()
    run("qemu-img", "create", "-q", "-f", "raw", prepared, str(16 * MiB))
    response = operator.post(
        reverse("migration_new_disk", args=[host.name, vm.uuid, "vda"]),
        {
            "destination": f"{vm.backups}/sub/./copy.qcow2", "mode": "full", "dest_format": "raw",
            "bandwidth_mib": "40", "reuse_destination": "on", "granularity": "65536", "buf_size": "1048576",
        },
    )  # fmt: skip
    migration = Migration.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("migration_detail", args=[migration.pk])
    assert migration.requested_by == people["operator"] and migration.hypervisor == host
    assert (migration.domain_uuid, migration.domain_name, migration.state) == (vm.uuid, vm.name, State.REQUESTED)
    disks = [(d.target, d.source_path, d.destination, d.active) for d in migration.disks.all()]
    assert disks == [("vda", str(vm.disks[0].path), str(prepared), True)]  # the destination normalised
    assert (migration.mode, migration.dest_format, migration.reuse_destination) == ("full", "raw", True)
    assert (migration.bandwidth_mib, migration.granularity, migration.buf_size) == (40, 65536, 1048576)
    assert migration.synchronous_writes is False
    details = requested_event(migration).details
    assert details["disks"] == {"vda": {"source": str(vm.disks[0].path), "destination": str(prepared), "kind": "file"}}
    assert {key: details[key] for key in ("mode", "dest_format", "reuse_destination", "bandwidth_mib")} == {
        "mode": "full",
        "dest_format": "raw",
        "reuse_destination": True,
        "bandwidth_mib": 40,
    }
    assert (details["granularity"], details["buf_size"], details["synchronous_writes"]) == (65536, 1048576, False)
    assert nothing_started(vm)


def test_domain_form_sends_one_destination_per_chosen_disk(domains, people, operator):
    vm = two_disk_guest(domains)
    host, spare = synced_host(vm)
    response = operator.post(
        reverse("migration_new_domain", args=[host.name, vm.uuid]),
        {
            "migrate_vda": "on", "destination_vda": f"{vm.backups}/a.qcow2",
            "migrate_vdb": "on", "destination_vdb": f"{spare}/b.qcow2",
            "mode": "shallow", "dest_format": "qcow2", "bandwidth_mib": "0",
        },
    )  # fmt: skip
    migration = Migration.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("migration_detail", args=[migration.pk])
    disks = sorted((d.target, d.source_path, d.destination) for d in migration.disks.all())
    assert disks == [
        ("vda", str(vm.disks[0].path), f"{vm.backups}/a.qcow2"),
        ("vdb", str(vm.disks[1].path), f"{spare}/b.qcow2"),
    ]
    assert (migration.mode, migration.dest_format, migration.state) == ("shallow", "qcow2", State.REQUESTED)
    event = requested_event(migration)
    assert sorted(event.disk_targets.split(",")) == ["vda", "vdb"]
    assert {t: d["destination"] for t, d in event.details["disks"].items()} == {
        "vda": f"{vm.backups}/a.qcow2",
        "vdb": f"{spare}/b.qcow2",
    }
    assert nothing_started(vm)


def test_domain_form_ignores_unchosen_disks(domains, people, operator):
    vm = two_disk_guest(domains)
    host, spare = synced_host(vm)
    response = operator.post(
        reverse("migration_new_domain", args=[host.name, vm.uuid]),
        {"migrate_vdb": "on", "destination_vdb": f"{spare}/b.qcow2", "destination_vda": "not/even/valid",
         "mode": "shallow", "dest_format": "qcow2", "bandwidth_mib": "0"},
    )  # fmt: skip
    migration = Migration.objects.get()
    assert response.status_code == 302
    assert [(d.target, d.destination) for d in migration.disks.all()] == [("vdb", f"{spare}/b.qcow2")]
    event = requested_event(migration)
    assert event.disk_targets == "vdb" and list(event.details["disks"]) == ["vdb"]
    assert not Path(f"{spare}/b.qcow2").exists()  # requested only: nothing is created before a worker copies
    assert nothing_started(vm)
