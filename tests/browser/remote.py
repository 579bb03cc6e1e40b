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
