"""Functions the browser tests run inside the live site (conftest's `site.call`), on its
database and Redis channels, as a web or worker process would. Module-level and importable
without pytest, because the call server imports them by name."""

from __future__ import annotations

PASSWORD = "pw-browser-tier"


def create_people() -> None:
    from django.contrib.auth.models import Group, User

    for name in ("operator", "approver", "viewer"):
        user = User.objects.create_user(name, password=PASSWORD)
        user.groups.add(Group.objects.get(name=name))


def register_domain(hypervisor_name: str, domain_uuid: str, allowed_root: str) -> dict:
    """A hypervisor for qemu:///system whose allowed root is the domain's backups dir, synced
    once so that the domain and disk pages exist."""
    from hosts.models import Disk, Hypervisor
    from hosts.sync import hypervisor_sync

    hypervisor = Hypervisor.objects.create(name=hypervisor_name, uri="qemu:///system", allowed_roots=[allowed_root])
    hypervisor_sync(hypervisor, force=True)
    disk = Disk.objects.get(domain__hypervisor=hypervisor, domain__uuid=domain_uuid, target="vda")
    return {"hypervisor": hypervisor.name, "disk_pk": disk.pk}


def request_migration(hypervisor_name: str, domain_uuid: str, destination: str, bandwidth_mib: int) -> int:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import DiskRequest, migration_request
    from hosts.models import Hypervisor

    migration = migration_request(
        user=User.objects.get(username="operator"), hypervisor=Hypervisor.objects.get(name=hypervisor_name),
        domain_uuid=domain_uuid, disks=[DiskRequest("vda", destination)], mode="shallow", bandwidth_mib=bandwidth_mib,
    )
    return migration.pk


def migration_for(domain_uuid: str) -> dict | None:
    from blockmig.models import Migration

    migration = Migration.objects.filter(domain_uuid=domain_uuid).order_by("-pk").first()
    if migration is None:
        return None
    return {"id": migration.pk, "state": migration.state, "failure_reason": migration.failure_reason}


def migration_state(migration_id: int) -> dict:
    from blockmig.models import Migration

    migration = Migration.objects.get(pk=migration_id)
    return {"state": migration.state, "failure_reason": migration.failure_reason}


def approve(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_approve
    from blockmig.models import Migration

    migration_approve(migration=Migration.objects.get(pk=migration_id), user=User.objects.get(username="approver"))


def abort_if_active(migration_id: int) -> None:
    from django.contrib.auth.models import User

    from blockmig.lifecycle import migration_abort
    from blockmig.models import Migration

    migration = Migration.objects.get(pk=migration_id)
    if migration.is_active:
        migration_abort(migration=migration, user=User.objects.get(username="operator"))


def inventory_rows(hypervisor_name: str, add: list[str] = (), remove: list[str] = (), sync_error: str = "") -> dict:
    """Change a host's inventory rows as a sync would (the host is created, unreachable, on
    first use), commit, and publish it: name → uuid of its domains afterwards."""
    from django.db import transaction
    from django.utils import timezone

    from blockmig import publish
    from hosts.models import Domain, Hypervisor

    with transaction.atomic():
        hypervisor, _ = Hypervisor.objects.get_or_create(
            name=hypervisor_name, defaults={"uri": "qemu+tcp://127.0.0.1:1/system", "last_sync_ok_at": timezone.now()}
        )
        count = Domain.objects.count()
        for i, name in enumerate(add):
            Domain.objects.create(hypervisor=hypervisor, uuid=f"0b0b0b0b-0000-4000-8000-{count + i:012d}", name=name, state="running")
        Domain.objects.filter(hypervisor=hypervisor, name__in=remove).delete()
        now = timezone.now()
        if sync_error:
            Hypervisor.objects.filter(pk=hypervisor.pk).update(last_sync_error=sync_error, last_sync_attempt_at=now)
        else:
            Hypervisor.objects.filter(pk=hypervisor.pk).update(last_sync_error="", last_sync_ok_at=now, last_sync_attempt_at=now)
        transaction.on_commit(lambda: publish.inventory_changed(hypervisor.pk))
    return dict(Domain.objects.filter(hypervisor=hypervisor).values_list("name", "uuid"))
